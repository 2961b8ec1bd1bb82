//! Reads: plan under a short read lock (which records, which positions), then `pread` the
//! records and decode only the events asked for, without holding the lock.
//!
//! A stream read of one user that was created in a batch reads the batch's whole record (a
//! transaction of up to 100 users); the [`RecordCache`] keeps the last records stream reads
//! verified, so loading that batch's other users (a bulk task's chunk, a page of commands)
//! decodes them from memory. Durable records never change, so the cache is never stale.

use super::state::State;
use super::storage::StorageFile;
use crate::record::{self, HEADER_LEN};
use crate::{LogError, Position, RecordedEvent, Version};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Contiguous records are read with one `pread` up to this many bytes.
const MAX_RUN_BYTES: u64 = 8 << 20;
/// Bytes of verified record payloads the [`RecordCache`] keeps.
const RECORD_CACHE_BYTES: usize = 32 << 20;

/// Where a record is: its segment's first position and its offset there.
type RecordAt = (Position, u64);

/// Verified payloads of the records stream reads read last, first in first out, bounded in
/// bytes.
#[derive(Default)]
pub(crate) struct RecordCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    payloads: HashMap<RecordAt, Bytes>,
    order: VecDeque<RecordAt>,
    bytes: usize,
}

impl RecordCache {
    fn get(&self, at: RecordAt) -> Option<Bytes> {
        self.inner.lock().payloads.get(&at).cloned()
    }

    fn insert(&self, at: RecordAt, payload: Bytes) {
        if payload.len() > RECORD_CACHE_BYTES / 4 {
            return;
        }
        let mut inner = self.inner.lock();
        inner.bytes += payload.len();
        if let Some(old) = inner.payloads.insert(at, payload) {
            inner.bytes -= old.len();
        } else {
            inner.order.push_back(at);
        }
        while inner.bytes > RECORD_CACHE_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.payloads.remove(&oldest) {
                inner.bytes -= evicted.len();
            }
        }
    }
}

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

/// Reads and decodes the planned records (blocking). With a `cache`, records found there are
/// not read again, and those read are added to it.
pub(crate) fn execute(
    items: &[ReadItem],
    cache: Option<&RecordCache>,
) -> Result<Vec<RecordedEvent>, LogError> {
    let mut out = Vec::new();
    let cached = |it: &ReadItem| cache.and_then(|c| c.get((it.segment_name, it.offset)));
    let mut i = 0;
    while i < items.len() {
        let start = &items[i];
        if let Some(payload) = cached(start) {
            record::decode_events(&payload, start.lo, start.hi, &mut out)
                .map_err(|e| corrupt(start, e.0))?;
            i += 1;
            continue;
        }
        // Extend the run while the next record follows this one in the same file.
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
            let (len, crc) = record::parse_header(&buf[at..at + HEADER_LEN]);
            if len != it.len {
                return Err(corrupt(it, "frame length differs from the index"));
            }
            let payload = buf.slice(at + HEADER_LEN..at + HEADER_LEN + len as usize);
            if !record::crc_ok(&payload, crc) {
                return Err(corrupt(it, "checksum mismatch"));
            }
            record::decode_events(&payload, it.lo, it.hi, &mut out)
                .map_err(|e| corrupt(it, e.0))?;
            if let Some(cache) = cache {
                // A copy: a slice would keep the whole run's buffer alive.
                let own = if j - i == 1 {
                    payload
                } else {
                    Bytes::copy_from_slice(&payload)
                };
                cache.insert((it.segment_name, it.offset), own);
            }
        }
        i = j;
    }
    Ok(out)
}

fn corrupt(it: &ReadItem, reason: &str) -> LogError {
    LogError::Corrupt(format!(
        "segment {:020}.seg at offset {}: {reason}",
        it.segment_name, it.offset
    ))
}

fn frame_end(item: &ReadItem) -> u64 {
    item.offset + HEADER_LEN as u64 + u64::from(item.len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_cache_keeps_its_byte_budget_evicting_the_oldest_first() {
        let cache = RecordCache::default();
        let size = RECORD_CACHE_BYTES / 8;
        for n in 0..10u64 {
            cache.insert((1, n), Bytes::from(vec![n as u8; size]));
        }
        let inner = cache.inner.lock();
        assert!(inner.bytes <= RECORD_CACHE_BYTES);
        assert_eq!(inner.payloads.len(), 8);
        drop(inner);
        assert!(cache.get((1, 0)).is_none() && cache.get((1, 1)).is_none());
        assert_eq!(cache.get((1, 9)).unwrap()[0], 9);
        // A record too big to be worth keeping is not kept.
        cache.insert((2, 0), Bytes::from(vec![0; RECORD_CACHE_BYTES / 2]));
        assert!(cache.get((2, 0)).is_none());
    }
}
