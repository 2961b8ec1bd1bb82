//! Reads: plan under a short read lock (which records, which positions), then `pread` the
//! records and decode only the events asked for, without holding the lock.

use super::state::State;
use super::storage::StorageFile;
use crate::record::{self, HEADER_LEN};
use crate::{LogError, Position, RecordedEvent, Version};
use bytes::Bytes;
use std::sync::Arc;

/// Contiguous records are read with one `pread` up to this many bytes.
const MAX_RUN_BYTES: u64 = 8 << 20;

/// One record to read, and the positions wanted from it.
pub(crate) struct ReadItem {
    file: Arc<dyn StorageFile>,
    segment: u32,
    /// The segment's first position, which names its file (for error messages).
    segment_name: Position,
    offset: u64,
    len: u32,
    lo: Position,
    hi: Position,
}

/// Records holding positions `after+1 ..= after+limit` (capped at the head).
pub(crate) fn plan_all(state: &State, after: Position, limit: usize) -> Vec<ReadItem> {
    if after >= state.head || limit == 0 {
        return Vec::new();
    }
    let last = state.head.min(after.saturating_add(limit as u64));
    let mut items = Vec::new();
    let mut i = state.record_index(after + 1);
    while state
        .records
        .get(i)
        .is_some_and(|r| r.first_position <= last)
    {
        items.push(item(state, i, after + 1, last));
        i += 1;
    }
    items
}

/// Records holding the stream's events from `from_version`, at most `limit` of them.
pub(crate) fn plan_stream(
    state: &State,
    key: &crate::validate::Key,
    from_version: Version,
    limit: usize,
) -> Vec<ReadItem> {
    let Some(entry) = state.streams.get(key) else {
        return Vec::new();
    };
    let skip = from_version.max(1) - 1;
    let Some(positions) = usize::try_from(skip)
        .ok()
        .and_then(|skip| entry.positions.get(skip..))
    else {
        return Vec::new();
    };
    let mut items: Vec<ReadItem> = Vec::new();
    let mut record_end = 0; // first position after the current item's record
    for &p in positions.iter().take(limit) {
        match items.last_mut() {
            // A stream's events within one transaction have consecutive positions.
            Some(last) if p < record_end => last.hi = p,
            _ => {
                let i = state.record_index(p);
                record_end = state
                    .records
                    .get(i + 1)
                    .map_or(Position::MAX, |r| r.first_position);
                items.push(item(state, i, p, p));
            }
        }
    }
    items
}

fn item(state: &State, index: usize, lo: Position, hi: Position) -> ReadItem {
    let r = &state.records[index];
    let segment = &state.segments[r.segment as usize];
    ReadItem {
        file: segment.file.clone(),
        segment: r.segment,
        segment_name: segment.first_position,
        offset: r.offset,
        len: r.len,
        lo,
        hi,
    }
}

/// Whether a plan is big enough to be worth moving off the async runtime.
pub(crate) fn is_large(items: &[ReadItem]) -> bool {
    items.len() > 4
}

/// Reads and decodes the planned records (blocking).
pub(crate) fn execute(items: &[ReadItem]) -> Result<Vec<RecordedEvent>, LogError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        // Extend the run while the next record follows this one in the same file.
        let start = &items[i];
        let mut j = i + 1;
        let mut end = frame_end(start);
        while let Some(next) = items.get(j) {
            if next.segment != start.segment
                || next.offset != end
                || frame_end(next) - start.offset > MAX_RUN_BYTES
            {
                break;
            }
            end = frame_end(next);
            j += 1;
        }
        let mut buf = vec![0; (end - start.offset) as usize];
        start.file.read_at(&mut buf, start.offset)?;
        let buf = Bytes::from(buf);
        for it in &items[i..j] {
            let at = (it.offset - start.offset) as usize;
            let corrupt = |reason: &str| {
                LogError::Corrupt(format!(
                    "segment {:020}.seg at offset {}: {reason}",
                    it.segment_name, it.offset
                ))
            };
            let (len, crc) = record::parse_header(&buf[at..at + HEADER_LEN]);
            if len != it.len {
                return Err(corrupt("frame length differs from the index"));
            }
            let payload = buf.slice(at + HEADER_LEN..at + HEADER_LEN + len as usize);
            if !record::crc_ok(&payload, crc) {
                return Err(corrupt("checksum mismatch"));
            }
            record::decode_events(&payload, it.lo, it.hi, &mut out).map_err(|e| corrupt(e.0))?;
        }
        i = j;
    }
    Ok(out)
}

fn frame_end(item: &ReadItem) -> u64 {
    item.offset + HEADER_LEN as u64 + u64::from(item.len)
}
