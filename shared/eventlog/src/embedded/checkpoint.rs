//! Checkpoints: the in-memory state up to a position, saved so that `open` scans only the
//! log's tail. A checkpoint is a cache: a missing or unreadable one costs a full scan, never
//! data.
//!
//! File `{head:020}.ckpt`, written as `.tmp`, fsynced, renamed, directory fsynced. Layout
//! (`v` = varint, `s` = string):
//! ```text
//! magic "RSTRCKP3" | head u64 | last_time i64 | end_offset u64 | v segments
//!   per segment: v first_position | v records | per record: v payload_len | v events
//! v streams: key [16] | v events | per event: v position delta
//! v reservations: key [16] | s owner | v position | u8 has_expiry | i64 expires_at
//!   | v sharers | per sharer: s owner
//! ```
//! Keys are the index's 128-bit digests of the stream and reservation keys. Version 2 wrote
//! the keys' text (`s key` where version 3 has `key [16]`); it is still read. The layout:
//! ```text
//! crc32 u32 of everything before
//! ```
//! The last listed segment is where the next record goes, at `end_offset`.

use super::state::{RecordLoc, State, Streams};
use super::writer::{PROBE_INTERVAL, Request};
use super::{Shared, checkpoint_path};
use crate::codec::{DecodeError, Reader, put_bytes, put_i64, put_u64, put_varint};
use crate::record::HEADER_LEN;
use crate::validate::{Key, KeyMap};
use crate::{Micros, Position, ReservationInfo};
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use tokio::sync::mpsc::WeakSender;

/// Version 3 holds keys as digests; version 2 (keys as text) is still read; a version-1
/// checkpoint (no sharers) is unreadable, which costs one full scan.
const MAGIC: &[u8; 8] = b"RSTRCKP3";
const MAGIC_V2: &[u8; 8] = b"RSTRCKP2";
/// How many checkpoints to keep: the newest, and one to fall back on if it is unreadable.
const KEEP: usize = 2;

/// A decoded checkpoint, checked for internal consistency (not yet against the segments).
pub(crate) struct Checkpoint {
    pub head: Position,
    pub last_time: Micros,
    pub end_offset: u64,
    /// First position of each segment the checkpoint covers, in order.
    pub segments: Vec<Position>,
    pub records: Vec<RecordLoc>,
    pub streams: Streams,
    pub reservations: KeyMap<ReservationInfo>,
}

/// Serializes the parts of `state` a restart needs.
pub(crate) fn encode(state: &State) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 + state.records.len() * 4 + state.streams.len() * 40);
    buf.extend_from_slice(MAGIC);
    put_u64(&mut buf, state.head);
    put_i64(&mut buf, state.last_time);
    put_u64(&mut buf, state.end_offset);
    let segments = &state.segments[..=state.end_segment as usize];
    put_varint(&mut buf, segments.len() as u64);
    let mut next = 0;
    for (index, segment) in segments.iter().enumerate() {
        put_varint(&mut buf, segment.first_position);
        let count = state.records[next..]
            .iter()
            .take_while(|r| r.segment as usize == index)
            .count();
        put_varint(&mut buf, count as u64);
        for i in next..next + count {
            let r = &state.records[i];
            let following = state
                .records
                .get(i + 1)
                .map_or(state.head + 1, |n| n.first_position);
            put_varint(&mut buf, u64::from(r.len));
            put_varint(&mut buf, following - r.first_position);
        }
        next += count;
    }
    put_varint(&mut buf, state.streams.len() as u64);
    for entry in state.streams.iter() {
        buf.extend_from_slice(&entry.key.to_bytes());
        put_varint(&mut buf, entry.positions.len() as u64);
        let mut previous = 0;
        for &p in &entry.positions {
            put_varint(&mut buf, p - previous);
            previous = p;
        }
    }
    put_varint(&mut buf, state.reservations.len() as u64);
    for (key, info) in &state.reservations {
        buf.extend_from_slice(&key.to_bytes());
        put_bytes(&mut buf, info.owner.as_bytes());
        put_varint(&mut buf, info.position);
        buf.push(u8::from(info.expires_at.is_some()));
        put_i64(&mut buf, info.expires_at.unwrap_or(0));
        put_varint(&mut buf, info.sharers.len() as u64);
        for sharer in &info.sharers {
            put_bytes(&mut buf, sharer.as_bytes());
        }
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// Decodes and checks a checkpoint file's bytes.
pub(crate) fn decode(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
    let body_len = bytes.len().checked_sub(4).ok_or(DecodeError("too short"))?;
    let (body, crc) = bytes.split_at(body_len);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(DecodeError("checksum mismatch"));
    }
    let mut r = Reader::new(body);
    let v2 = match r.take(8)? {
        magic if magic == MAGIC => false,
        magic if magic == MAGIC_V2 => true,
        _ => return Err(DecodeError("not a checkpoint")),
    };
    let head = r.u64()?;
    let last_time = r.i64()?;
    let end_offset = r.u64()?;

    let segment_count = r.count()?;
    if segment_count == 0 {
        return Err(DecodeError("no segments"));
    }
    let mut segments = Vec::with_capacity(segment_count);
    let mut records = Vec::new();
    let mut position = 1;
    let mut offset = 0;
    for index in 0..segment_count {
        let first_position = r.varint()?;
        if first_position != position {
            return Err(DecodeError("segment does not follow the previous one"));
        }
        segments.push(first_position);
        offset = 0;
        for _ in 0..r.count()? {
            let len = u32::try_from(r.varint()?).map_err(|_| DecodeError("record length"))?;
            let events = r.varint()?;
            if events == 0 {
                return Err(DecodeError("empty record"));
            }
            records.push(RecordLoc {
                first_position: position,
                offset,
                segment: index as u32,
                len,
            });
            position += events;
            offset += HEADER_LEN as u64 + u64::from(len);
        }
    }
    if position != head + 1 || offset != end_offset {
        return Err(DecodeError("records do not add up to the head"));
    }

    let stream_count = r.count()?;
    let mut streams = Streams::with_capacity(stream_count);
    for _ in 0..stream_count {
        let entry = streams.get_or_insert(read_key(&mut r, v2)?);
        let count = r.count()?;
        if !entry.positions.is_empty() || count == 0 {
            return Err(DecodeError("a stream twice, or without events"));
        }
        let mut p = 0u64;
        for _ in 0..count {
            p = p
                .checked_add(r.varint()?)
                .filter(|&p| p <= head)
                .ok_or(DecodeError("stream position beyond head"))?;
            entry.positions.push(p);
        }
    }
    let reservation_count = r.count()?;
    let mut reservations = KeyMap::with_capacity_and_hasher(reservation_count, Default::default());
    for _ in 0..reservation_count {
        let key = read_key(&mut r, v2)?;
        let owner = r.str()?.to_owned();
        let position = r.varint()?;
        let has_expiry = r.u8()? != 0;
        let at = r.i64()?;
        let sharers = (0..r.count()?)
            .map(|_| r.str().map(str::to_owned))
            .collect::<Result<_, _>>()?;
        let info = ReservationInfo {
            owner,
            position,
            expires_at: has_expiry.then_some(at),
            sharers,
        };
        reservations.insert(key, info);
    }
    if !r.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(Checkpoint {
        head,
        last_time,
        end_offset,
        segments,
        records,
        streams,
        reservations,
    })
}

/// Writes a checkpoint of the current state, unless it would repeat the last one.
pub(crate) fn write(shared: &Shared) -> io::Result<()> {
    let _one_at_a_time = shared.checkpoint_lock.lock();
    let (bytes, head) = {
        let state = shared.state.read();
        if state.closed
            || state.head == 0
            || state.head == shared.checkpointed_head.load(Ordering::Acquire)
        {
            return Ok(());
        }
        // Encoding under the read lock delays the writer's next publish (not its IO, nor
        // readers) for as long as the state takes to serialize.
        (encode(&state), state.head)
    };
    let storage = &shared.storage;
    let path = checkpoint_path(&shared.dir, head);
    let tmp = path.with_extension("ckpt.tmp");
    let file = storage.create_file(&tmp)?;
    file.write_at(&bytes, 0)?;
    file.sync_data()?;
    drop(file);
    storage.rename(&tmp, &path)?;
    storage.sync_dir(&shared.dir)?;
    shared.checkpointed_head.store(head, Ordering::Release);
    prune(shared, &shared.dir);
    Ok(())
}

/// Removes all but the newest [`KEEP`] checkpoints. Failing to remove one is harmless.
fn prune(shared: &Shared, dir: &Path) {
    let Ok(names) = shared.storage.list_dir(dir) else {
        return;
    };
    let mut positions: Vec<Position> = names.iter().filter_map(|n| parse_name(n)).collect();
    positions.sort_unstable_by(|a, b| b.cmp(a));
    for &old in positions.iter().skip(KEEP) {
        let _ = shared.storage.remove_file(&checkpoint_path(dir, old));
    }
}

/// The head position in a checkpoint file name, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<Position> {
    let digits = name.strip_suffix(".ckpt")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The checkpoint thread: writes one whenever the writer nudges it, until the writer exits.
/// While the log cannot write, it also asks the writer to probe the disk once per
/// [`PROBE_INTERVAL`], so that the log resumes by itself once space returns.
pub(crate) fn run(shared: &Shared, nudges: Receiver<()>, probes: &WeakSender<Request>) {
    loop {
        match nudges.recv_timeout(PROBE_INTERVAL) {
            Ok(()) => {
                if let Err(e) = write(shared) {
                    tracing::warn!(dir = %shared.dir.display(), error = %e, "writing a checkpoint failed");
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if shared.unavailable.lock().is_some()
                    && let Some(writer) = probes.upgrade()
                {
                    // Full: the writer has work queued, which tries the disk anyway.
                    let _ = writer.try_send(Request::Probe);
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// A key as the checkpoint holds it: 16 bytes, or (version 2) the key's text, digested now.
fn read_key(r: &mut Reader<'_>, v2: bool) -> Result<Key, DecodeError> {
    if v2 {
        return Ok(Key::of(r.str()?));
    }
    let bytes: [u8; 16] = r.take(16)?.try_into().expect("take(16) returns 16 bytes");
    Ok(Key::from_bytes(bytes))
}
