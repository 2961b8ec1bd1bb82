//! What this process knows of the log, built by consuming the JetStream stream in order:
//! stream versions and event positions, reservations, which message holds which positions,
//! and a cache of the newest message payloads.

use super::message::{self, Kind, Origin};
use crate::record::{self, Summary};
use crate::validate::{CommittedState, Key, KeyMap, Streams, apply_summary};
use crate::{LogError, Micros, Position, ReservationInfo, Version};
use bytes::Bytes;
use std::collections::VecDeque;

/// Where the events of one message are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MessageLoc {
    /// Position of the message's first event.
    pub first_position: Position,
    /// The message's JetStream stream sequence.
    pub seq: u64,
}

/// How many recent messages remember who wrote them (for resolving lost acknowledgements).
const RECENT_ORIGINS: usize = 4096;

/// The newest message payloads, a contiguous run of sequences, bounded in bytes.
#[derive(Default)]
pub(crate) struct MessageCache {
    entries: VecDeque<(u64, Bytes)>,
    bytes: usize,
    limit: usize,
}

impl MessageCache {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    fn push(&mut self, seq: u64, payload: Bytes) {
        if self.limit == 0 {
            return;
        }
        self.bytes += payload.len();
        self.entries.push_back((seq, payload));
        while self.bytes > self.limit {
            match self.entries.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }

    pub fn get(&self, seq: u64) -> Option<Bytes> {
        let first = self.entries.front()?.0;
        let (s, payload) = self
            .entries
            .get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        (*s == seq).then(|| payload.clone())
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// Everything readers and the writer need, behind one `RwLock`.
pub(crate) struct State {
    pub streams: Streams,
    pub reservations: KeyMap<ReservationInfo>,
    /// One entry per message holding events, sorted by position (and sequence).
    pub messages: Vec<MessageLoc>,
    /// Position of the last applied event.
    pub head: Position,
    /// Time of the last applied event (the writer never goes below it).
    pub last_time: Micros,
    /// JetStream sequence of the last applied message (0: none, not even the genesis).
    pub last_seq: u64,
    /// Who wrote the most recent messages: `(seq, origin)`.
    recent: VecDeque<(u64, Origin)>,
    pub cache: MessageCache,
    /// Set by `close`: reads fail with [`LogError::Closed`].
    pub closed: bool,
    /// Set when the stream held something this log cannot follow; every call fails with it.
    pub failed: Option<String>,
}

impl State {
    pub fn new(cache_bytes: usize) -> Self {
        Self {
            streams: Streams::default(),
            reservations: KeyMap::default(),
            messages: Vec::new(),
            head: 0,
            last_time: 0,
            last_seq: 0,
            recent: VecDeque::new(),
            cache: MessageCache::new(cache_bytes),
            closed: false,
            failed: None,
        }
    }

    pub fn version(&self, key: &Key) -> Option<Version> {
        self.streams
            .get(key)
            .map(|s| s.positions.len() as Version)
            .filter(|&v| v > 0)
    }

    /// Index into `messages` of the message holding `position` (in `1..=head`).
    pub fn message_index(&self, position: Position) -> usize {
        self.messages
            .partition_point(|m| m.first_position <= position)
            .saturating_sub(1)
    }

    /// Who wrote message `seq`, if it is recent enough to be remembered.
    pub fn origin_of(&self, seq: u64) -> Option<Origin> {
        self.recent
            .iter()
            .rev()
            .find(|(s, _)| *s == seq)
            .map(|(_, o)| *o)
    }

    /// An error if the log cannot be used: closed, or failed.
    pub fn check(&self) -> Result<(), LogError> {
        if self.closed {
            return Err(LogError::Closed);
        }
        match &self.failed {
            Some(reason) => Err(LogError::Corrupt(reason.clone())),
            None => Ok(()),
        }
    }

    /// Applies message `seq`, unless it was applied already (the writer applies its own
    /// messages on acknowledgement; the consumer then sees them again). Returns whether the
    /// head moved. A message that does not follow the last one, or that does not decode, is
    /// an error and changes nothing.
    pub fn apply_message(&mut self, seq: u64, payload: Bytes) -> Result<bool, String> {
        if seq <= self.last_seq {
            return Ok(false);
        }
        if seq != self.last_seq + 1 {
            return Err(format!(
                "stream sequence {seq} follows {}: messages of the log were deleted or purged",
                self.last_seq
            ));
        }
        let corrupt = |what: &str| format!("message {seq}: {what}");
        let (kind, origin) = message::parse(&payload).map_err(corrupt)?;
        if seq == 1 && kind != Kind::Genesis {
            return Err(corrupt(
                "the stream does not start with the log's genesis message",
            ));
        }
        if kind == Kind::Genesis {
            if seq != 1 {
                return Err(corrupt("a genesis message after the first"));
            }
            self.last_seq = seq;
            return Ok(false);
        }
        let summaries: Vec<Summary> = message::records(&payload)
            .map_err(corrupt)?
            .iter()
            .map(|r| record::decode_summary(r))
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt(e.0))?;
        // Check the whole message before changing anything.
        let mut expected = self.head + 1;
        for s in &summaries {
            if s.first_position != expected {
                return Err(corrupt("positions do not follow the previous message"));
            }
            expected += s.event_count;
        }
        let first_position = self.head + 1;
        for s in &summaries {
            apply_summary(&mut self.streams, &mut self.reservations, self.head, s)
                .map_err(corrupt)?;
            self.head = s.first_position + s.event_count - 1;
            self.last_time = self.last_time.max(s.time);
        }
        self.messages.push(MessageLoc {
            first_position,
            seq,
        });
        self.last_seq = seq;
        if self.recent.len() == RECENT_ORIGINS {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, origin));
        self.cache.push(seq, payload);
        Ok(true)
    }

    /// Forgets everything (on close).
    pub fn release(&mut self) {
        self.streams = Streams::default();
        self.reservations = KeyMap::default();
        self.messages = Vec::new();
        self.recent.clear();
        self.cache.clear();
        self.closed = true;
    }
}

impl CommittedState for State {
    fn version(&self, key: &Key) -> Option<Version> {
        State::version(self, key)
    }

    fn reservation(&self, key: &Key) -> Option<&ReservationInfo> {
        self.reservations.get(key)
    }
}
