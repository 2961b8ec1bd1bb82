//! The in-memory state of the embedded log: stream versions and event positions,
//! reservations, and where each record lives. Rebuilt on open from a checkpoint plus the
//! log's tail; changed only by the writer thread, after the fsync covering the change.

use super::record::{self, AppendSummary, Effect, Summary};
use super::storage::StorageFile;
use crate::{
    AppendError, ExpectedVersion, Micros, Position, Reservation, ReservationInfo, Transaction,
    Version,
};
use hashbrown::{HashTable, hash_table};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::Arc;

/// The map key of a stream: `org/name` (unambiguous because an org has no `/`).
pub(crate) fn stream_key(org: &str, name: &str) -> String {
    let mut key = String::with_capacity(org.len() + 1 + name.len());
    key.push_str(org);
    key.push('/');
    key.push_str(name);
    key
}

/// One stream: its key and the positions of its events; its version is their count. Most
/// user streams hold a handful of events, so they stay inline (no second allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    pub key: Box<str>,
    pub positions: SmallVec<[Position; 4]>,
}

/// Streams by key. The hash table holds only 4-byte indices into a dense `Vec` of entries:
/// a `HashMap` would keep whole entries in a table that is up to half empty after growing,
/// nearly doubling the memory of a million streams.
#[derive(Default)]
pub(crate) struct Streams {
    index: HashTable<u32>,
    entries: Vec<StreamEntry>,
    hasher: RandomState,
}

impl Streams {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            index: HashTable::with_capacity(n),
            entries: Vec::with_capacity(n),
            hasher: RandomState::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &StreamEntry> {
        self.entries.iter()
    }

    pub fn get(&self, key: &str) -> Option<&StreamEntry> {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        self.index
            .find(hash, |&i| &*entries[i as usize].key == key)
            .map(|&i| &entries[i as usize])
    }

    /// The entry of `key`, created empty if missing.
    pub fn get_or_insert(&mut self, key: &str) -> &mut StreamEntry {
        let hash = self.hasher.hash_one(key);
        let (entries, hasher) = (&mut self.entries, &self.hasher);
        let slot = match self.index.entry(
            hash,
            |&i| &*entries[i as usize].key == key,
            |&i| hasher.hash_one(&*entries[i as usize].key),
        ) {
            hash_table::Entry::Occupied(e) => *e.get(),
            hash_table::Entry::Vacant(e) => {
                let i = u32::try_from(entries.len()).expect("fewer than 2^32 streams");
                entries.push(StreamEntry {
                    key: key.into(),
                    positions: SmallVec::new(),
                });
                *e.insert(i).get()
            }
        };
        &mut entries[slot as usize]
    }
}

/// Where one record (one transaction) is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordLoc {
    /// Position of the record's first event.
    pub first_position: Position,
    /// Offset of the frame header in its segment.
    pub offset: u64,
    /// Index into [`State::segments`].
    pub segment: u32,
    /// Payload length (the frame is `HEADER_LEN + len` bytes).
    pub len: u32,
}

impl RecordLoc {
    /// Offset just past this record's frame.
    pub fn end(&self) -> u64 {
        self.offset + record::HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// A segment file, named after the position of its first record.
pub(crate) struct Segment {
    pub first_position: Position,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
}

/// Everything readers and the writer need to know, behind one `RwLock`.
pub(crate) struct State {
    pub streams: Streams,
    pub reservations: HashMap<String, ReservationInfo>,
    /// One entry per record, sorted by position.
    pub records: Vec<RecordLoc>,
    pub segments: Vec<Segment>,
    /// Position of the last durable event.
    pub head: Position,
    /// Time of the last durable event (times never decrease).
    pub last_time: Micros,
    /// Where the next record goes: segment index and offset.
    pub end_segment: u32,
    pub end_offset: u64,
    /// Set by `close`: reads fail with `LogError::Closed` and the files are released.
    pub closed: bool,
}

impl State {
    /// An empty log whose only segment is `segments[0]`.
    pub fn new(segments: Vec<Segment>) -> Self {
        Self {
            streams: Streams::default(),
            reservations: HashMap::new(),
            records: Vec::new(),
            segments,
            head: 0,
            last_time: 0,
            end_segment: 0,
            end_offset: 0,
            closed: false,
        }
    }

    pub fn version(&self, key: &str) -> Option<Version> {
        self.streams
            .get(key)
            .map(|s| s.positions.len() as Version)
            .filter(|&v| v > 0)
    }

    /// Index of the record holding `position` (which must be in `1..=head`).
    pub fn record_index(&self, position: Position) -> usize {
        self.records
            .partition_point(|r| r.first_position <= position)
            .saturating_sub(1)
    }

    /// Applies a durable record. Checks continuity, so recovery detects a record that does
    /// not follow its predecessor (the writer never produces one).
    pub fn apply(&mut self, s: &Summary, loc: RecordLoc) -> Result<(), &'static str> {
        if s.first_position != self.head + 1 || loc.first_position != s.first_position {
            return Err("record position does not follow the previous record");
        }
        for a in &s.appends {
            let current = self.version(&a.key).unwrap_or(0);
            if a.first_version != current + 1 {
                return Err("stream version does not follow the previous event");
            }
        }
        let mut position = s.first_position;
        for a in &s.appends {
            let entry = self.streams.get_or_insert(&a.key);
            entry.positions.extend(position..position + a.count);
            position += a.count;
        }
        for effect in &s.effects {
            match effect {
                Effect::Claim {
                    key,
                    owner,
                    expires_at,
                } => {
                    let info = ReservationInfo {
                        owner: owner.clone(),
                        position: s.first_position,
                        expires_at: *expires_at,
                    };
                    self.reservations.insert(key.clone(), info);
                }
                Effect::Release { key } => {
                    self.reservations.remove(key);
                }
            }
        }
        self.records.push(loc);
        self.head = s.first_position + s.event_count - 1;
        self.last_time = self.last_time.max(s.time);
        self.end_segment = loc.segment;
        self.end_offset = loc.end();
        Ok(())
    }
}

/// Whether a claim has lapsed at `now`.
pub(crate) fn expired(info: &ReservationInfo, now: Micros) -> bool {
    info.expires_at.is_some_and(|at| at <= now)
}

/// Checks what can be checked without state: shape and size. Returns the size bound of the
/// transaction's record.
pub(crate) fn validate_shape(
    tx: &Transaction,
    max_record_size: usize,
) -> Result<usize, AppendError> {
    let invalid = |msg: String| Err(AppendError::Invalid(msg));
    if tx.appends.is_empty() {
        return invalid("a transaction needs at least one event".into());
    }
    for (i, a) in tx.appends.iter().enumerate() {
        if a.events.is_empty() {
            return invalid(format!("stream {} has no events", a.stream));
        }
        if a.stream.org.contains('/') {
            return invalid(format!("org {:?} contains '/'", a.stream.org));
        }
        if tx.appends[..i].iter().any(|b| b.stream == a.stream) {
            return invalid(format!("stream {} appears twice", a.stream));
        }
    }
    let size = record::max_framed_len(&tx.appends, &tx.reservations);
    if size > max_record_size {
        return invalid(format!(
            "transaction of about {size} bytes exceeds the maximum record size {max_record_size}"
        ));
    }
    Ok(size)
}

/// The effects of the transactions already accepted in the writer's current batch: not yet
/// durable, so not in [`State`], but later transactions of the batch must see them.
#[derive(Default)]
pub(crate) struct BatchOverlay {
    versions: HashMap<Box<str>, Version>,
    reservations: HashMap<String, Option<ReservationInfo>>,
}

impl BatchOverlay {
    /// Validates `tx` against `state` plus this batch and, if it passes, records its effects
    /// here. A rejected transaction leaves the overlay untouched.
    pub fn accept(
        &mut self,
        state: &State,
        tx: &Transaction,
        first_position: Position,
        time: Micros,
    ) -> Result<Summary, AppendError> {
        let mut appends = Vec::with_capacity(tx.appends.len());
        for a in &tx.appends {
            let key = stream_key(&a.stream.org, &a.stream.name).into_boxed_str();
            let actual = match self.versions.get(&key) {
                Some(&v) => Some(v),
                None => state.version(&key),
            };
            let ok = match a.expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => actual.is_none(),
                ExpectedVersion::Exact(v) => actual == Some(v),
            };
            if !ok {
                return Err(AppendError::WrongExpectedVersion {
                    stream: a.stream.clone(),
                    expected: a.expected,
                    actual,
                });
            }
            appends.push(AppendSummary {
                key,
                first_version: actual.unwrap_or(0) + 1,
                count: a.events.len() as u64,
            });
        }

        // Reservations apply in order; `local` holds this transaction's own changes so that a
        // failure halfway leaves nothing behind.
        let mut local: HashMap<&str, Option<ReservationInfo>> = HashMap::new();
        let mut effects = Vec::new();
        for r in &tx.reservations {
            let (key, owner) = match r {
                Reservation::Claim { key, owner, .. }
                | Reservation::ClaimIfFree { key, owner }
                | Reservation::Release { key, owner } => (key.as_str(), owner.as_str()),
            };
            let current = match local.get(key) {
                Some(v) => v.clone(),
                None => match self.reservations.get(key) {
                    Some(v) => v.clone(),
                    None => state.reservations.get(key).cloned(),
                },
            };
            let live = current.filter(|info| !expired(info, time));
            let claim = |expires_at| ReservationInfo {
                owner: owner.to_owned(),
                position: first_position,
                expires_at,
            };
            match r {
                Reservation::Claim { expires_at, .. } => {
                    if let Some(held) = live.filter(|held| held.owner != owner) {
                        return Err(AppendError::ReservationHeld {
                            key: key.to_owned(),
                            owner: held.owner,
                            position: held.position,
                        });
                    }
                    local.insert(key, Some(claim(*expires_at)));
                    effects.push(Effect::Claim {
                        key: key.to_owned(),
                        owner: owner.to_owned(),
                        expires_at: *expires_at,
                    });
                }
                Reservation::ClaimIfFree { .. } => {
                    if live.is_none() {
                        local.insert(key, Some(claim(None)));
                        effects.push(Effect::Claim {
                            key: key.to_owned(),
                            owner: owner.to_owned(),
                            expires_at: None,
                        });
                    }
                }
                Reservation::Release { .. } => {
                    if live.is_some_and(|held| held.owner == owner) {
                        local.insert(key, None);
                        effects.push(Effect::Release {
                            key: key.to_owned(),
                        });
                    }
                }
            }
        }

        for a in &appends {
            self.versions
                .insert(a.key.clone(), a.first_version + a.count - 1);
        }
        for (key, value) in local {
            self.reservations.insert(key.to_owned(), value);
        }
        let event_count = appends.iter().map(|a| a.count).sum();
        Ok(Summary {
            first_position,
            event_count,
            time,
            appends,
            effects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("linux");
        let pages: u64 = statm
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("rss");
        pages * 4096
    }

    /// The memory budget: about 150 MB for a million one-event streams (map entry, key,
    /// inline positions and the record index). Run with `--ignored --nocapture`.
    #[test]
    #[ignore = "measures process memory; run alone"]
    fn a_million_streams_fit_the_budget() {
        let mut state = State::new(Vec::new());
        let before = resident_bytes();
        for i in 0..1_000_000u64 {
            let key = stream_key(
                "org-0001",
                &format!("user-{}", ulid::Ulid::from_parts(i, 0)),
            );
            let summary = Summary {
                first_position: i + 1,
                event_count: 1,
                time: 0,
                appends: vec![AppendSummary {
                    key: key.into_boxed_str(),
                    first_version: 1,
                    count: 1,
                }],
                effects: Vec::new(),
            };
            let loc = RecordLoc {
                first_position: i + 1,
                offset: i * 300,
                segment: 0,
                len: 292,
            };
            state.apply(&summary, loc).expect("continuous");
        }
        let used = resident_bytes() - before;
        println!("1M streams: {} MB resident", used / 1_000_000);
        assert!(used < 150_000_000, "{used} bytes");
    }
}
