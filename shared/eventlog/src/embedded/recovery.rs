//! Opening a log directory: load the newest usable checkpoint, scan the tail verifying every
//! checksum, truncate a torn tail of the last segment, and refuse damage anywhere else.

use super::checkpoint::{self, Checkpoint};
use super::state::{RecordLoc, Segment, State};
use super::storage::{Storage, StorageFile};
use super::{EmbeddedOptions, checkpoint_path, segment_path};
use crate::record::{self, HEADER_LEN};
use crate::{LogError, Position};
use std::io;
use std::path::Path;

/// Read-ahead of the tail scan.
const SCAN_CHUNK: usize = 4 << 20;

/// What `open` found.
pub(crate) struct Recovered {
    pub state: State,
    /// Head of the checkpoint that was loaded (0 if none).
    pub checkpoint_head: Position,
    /// Bytes of log scanned after it.
    pub scanned_bytes: u64,
    /// Bytes of torn tail cut off the last segment.
    pub truncated_bytes: u64,
}

pub(crate) fn recover(dir: &Path, options: &EmbeddedOptions) -> Result<Recovered, LogError> {
    let storage = &*options.storage;
    let names = storage.list_dir(dir)?;
    for name in names.iter().filter(|n| n.ends_with(".tmp")) {
        // A checkpoint that never got renamed into place.
        storage.remove_file(&dir.join(name))?;
    }
    let mut positions: Vec<Position> = names.iter().filter_map(|n| parse_segment(n)).collect();
    positions.sort_unstable();

    if positions.is_empty() {
        let path = segment_path(dir, 1);
        let file = storage.create_file(&path)?;
        storage.sync_dir(dir)?;
        let segment = Segment {
            first_position: 1,
            path,
            file,
        };
        return Ok(Recovered {
            state: State::new(vec![segment]),
            checkpoint_head: 0,
            scanned_bytes: 0,
            truncated_bytes: 0,
        });
    }

    let mut segments = Vec::with_capacity(positions.len());
    for &first_position in &positions {
        let path = segment_path(dir, first_position);
        let file = storage.open_file(&path)?;
        segments.push(Segment {
            first_position,
            path,
            file,
        });
    }

    let mut checkpoints: Vec<Position> = names
        .iter()
        .filter_map(|n| checkpoint::parse_name(n))
        .collect();
    checkpoints.sort_unstable_by(|a, b| b.cmp(a));
    let mut loaded = None;
    for head in checkpoints {
        let path = checkpoint_path(dir, head);
        match load_checkpoint(storage, &path, &segments) {
            Ok(cp) => {
                loaded = Some(cp);
                break;
            }
            Err(reason) => tracing::warn!(
                checkpoint = %path.display(),
                reason,
                "ignoring unusable checkpoint"
            ),
        }
    }

    let (mut state, checkpoint_head) = match loaded {
        Some(cp) => {
            let head = cp.head;
            let mut state = State::new(segments);
            state.head = cp.head;
            state.last_time = cp.last_time;
            state.end_segment = (cp.segments.len() - 1) as u32;
            state.end_offset = cp.end_offset;
            state.records = cp.records;
            state.streams = cp.streams;
            state.reservations = cp.reservations;
            (state, head)
        }
        None => (State::new(segments), 0),
    };
    let (scanned_bytes, truncated_bytes) = scan_tail(&mut state)?;
    Ok(Recovered {
        state,
        checkpoint_head,
        scanned_bytes,
        truncated_bytes,
    })
}

fn parse_segment(name: &str) -> Option<Position> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Reads a checkpoint and checks it against the segment files present.
fn load_checkpoint(
    storage: &dyn Storage,
    path: &Path,
    segments: &[Segment],
) -> Result<Checkpoint, String> {
    let read = || -> io::Result<Vec<u8>> {
        let file = storage.open_file(path)?;
        let mut bytes = vec![0; usize::try_from(file.size()?).map_err(io::Error::other)?];
        file.read_at(&mut bytes, 0)?;
        Ok(bytes)
    };
    let bytes = read().map_err(|e| e.to_string())?;
    let cp = checkpoint::decode(&bytes).map_err(|e| e.to_string())?;
    if cp.segments.len() > segments.len()
        || cp
            .segments
            .iter()
            .zip(segments)
            .any(|(&p, s)| p != s.first_position)
    {
        return Err("its segments are not the ones on disk".into());
    }
    let end = &segments[cp.segments.len() - 1];
    let len = end.file.size().map_err(|e| e.to_string())?;
    if len < cp.end_offset {
        return Err(format!(
            "segment {} is shorter than the checkpoint says",
            end.path.display()
        ));
    }
    Ok(cp)
}

/// Applies every record after the state's end, verifying checksums and continuity.
/// Returns the bytes scanned and the bytes truncated.
fn scan_tail(state: &mut State) -> Result<(u64, u64), LogError> {
    let last = state.segments.len() - 1;
    let (mut scanned, mut truncated) = (0, 0);
    for index in state.end_segment as usize..=last {
        let start = if index == state.end_segment as usize {
            state.end_offset
        } else {
            0
        };
        let segment = &state.segments[index];
        let (path, file) = (segment.path.clone(), segment.file.clone());
        if start == 0 && segment.first_position != state.head + 1 {
            return Err(LogError::Corrupt(format!(
                "{} should start at position {}",
                path.display(),
                state.head + 1
            )));
        }
        let file_len = file.size()?;
        let mut scanner = Scanner::new(&*file, file_len);
        let mut offset = start;
        loop {
            let frame = match scanner.frame(offset)? {
                Frame::End => break,
                Frame::Bad(reason) if index == last => {
                    // Only the last write can be torn, and nothing in it was acknowledged
                    // (its fsync never returned), so dropping it loses nothing promised.
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        dropped_bytes = file_len - offset,
                        reason,
                        "truncating torn tail of the event log"
                    );
                    file.set_len(offset)?;
                    file.sync_data()?;
                    truncated = file_len - offset;
                    break;
                }
                Frame::Bad(reason) => {
                    return Err(LogError::Corrupt(format!(
                        "{} at offset {offset}: {reason} (not the last segment)",
                        path.display()
                    )));
                }
                Frame::Record(payload) => payload,
            };
            let corrupt = |reason: &str| {
                LogError::Corrupt(format!("{} at offset {offset}: {reason}", path.display()))
            };
            let summary = record::decode_summary(frame).map_err(|e| corrupt(e.0))?;
            let loc = RecordLoc {
                first_position: summary.first_position,
                offset,
                segment: index as u32,
                len: frame.len() as u32,
            };
            state.apply(&summary, loc).map_err(corrupt)?;
            offset = loc.end();
        }
        scanned += offset - start;
        state.end_segment = index as u32;
        state.end_offset = offset;
    }
    Ok((scanned, truncated))
}

enum Frame<'a> {
    Record(&'a [u8]),
    End,
    Bad(&'static str),
}

/// Sequential frame reader with read-ahead, so small records cost no syscall each.
struct Scanner<'a> {
    file: &'a dyn StorageFile,
    file_len: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> Scanner<'a> {
    fn new(file: &'a dyn StorageFile, file_len: u64) -> Self {
        Self {
            file,
            file_len,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    fn frame(&mut self, offset: u64) -> io::Result<Frame<'_>> {
        if offset == self.file_len {
            return Ok(Frame::End);
        }
        if self.file_len - offset < HEADER_LEN as u64 {
            return Ok(Frame::Bad("short frame header"));
        }
        let (len, crc) = record::parse_header(self.get(offset, HEADER_LEN)?);
        if len == 0 {
            // Zero-filled space (a file extended but never written) reads as len 0, crc 0.
            return Ok(Frame::Bad("empty frame"));
        }
        if self.file_len - offset - (HEADER_LEN as u64) < u64::from(len) {
            return Ok(Frame::Bad("frame runs past the end of the file"));
        }
        let payload = self.get(offset + HEADER_LEN as u64, len as usize)?;
        if !record::crc_ok(payload, crc) {
            return Ok(Frame::Bad("checksum mismatch"));
        }
        Ok(Frame::Record(payload))
    }

    /// `n` bytes at `offset`, which the caller has checked lie within the file.
    fn get(&mut self, offset: u64, n: usize) -> io::Result<&[u8]> {
        let buf_end = self.buf_start + self.buf.len() as u64;
        if offset < self.buf_start || offset + n as u64 > buf_end {
            let want = (n.max(SCAN_CHUNK) as u64).min(self.file_len - offset) as usize;
            self.buf.resize(want, 0);
            self.file.read_at(&mut self.buf, offset)?;
            self.buf_start = offset;
        }
        let at = (offset - self.buf_start) as usize;
        Ok(&self.buf[at..at + n])
    }
}
