//! The in-memory state of the embedded log: stream versions and event positions,
//! reservations, and where each record lives. Rebuilt on open from a checkpoint plus the
//! log's tail; changed only by the writer thread, after the fsync covering the change.

use super::storage::StorageFile;
use crate::record::{self, Summary};
use crate::validate::{CommittedState, Key, KeyMap, apply_summary};
use crate::{Micros, Position, ReservationInfo, Version};
use std::path::PathBuf;
use std::sync::Arc;

pub(crate) use crate::validate::{BatchOverlay, Streams, expired, stream_key, validate_shape};

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
    pub reservations: KeyMap<ReservationInfo>,
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
            reservations: KeyMap::default(),
            records: Vec::new(),
            segments,
            head: 0,
            last_time: 0,
            end_segment: 0,
            end_offset: 0,
            closed: false,
        }
    }

    pub fn version(&self, key: &Key) -> Option<Version> {
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
        if loc.first_position != s.first_position {
            return Err("record position does not follow the previous record");
        }
        apply_summary(&mut self.streams, &mut self.reservations, self.head, s)?;
        self.records.push(loc);
        self.head = s.first_position + s.event_count - 1;
        self.last_time = self.last_time.max(s.time);
        self.end_segment = loc.segment;
        self.end_offset = loc.end();
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AppendSummary;

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
                    key,
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
