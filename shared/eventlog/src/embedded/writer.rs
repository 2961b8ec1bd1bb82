//! The single writer thread: validates, batches (group commit), writes, syncs, publishes and
//! acknowledges. A dedicated OS thread because it blocks on file IO.
//!
//! A failed write or fsync (a full disk, an I/O error) is a pause, not the end of the log:
//! the batch is answered with [`LogError::Unavailable`] and never acknowledged, and the
//! writer *reopens* the log from what is on disk before it writes again — a fresh file
//! descriptor, the unacknowledged bytes cut off, segments created for them removed, all of it
//! synced. After a failed fsync the page cache of those bytes cannot be trusted (the kernel
//! may have dropped them and reports the error once: PostgreSQL's "fsyncgate"), so nothing
//! written before the failure is ever retried or assumed durable. Until a probe (a block of
//! [`PROBE_BYTES`] written past the end, synced and cut off again) succeeds, the log reports
//! itself unavailable ([`crate::EventLog::writable`]) — appends are still tried meanwhile, and
//! those that fit are acknowledged. The checkpoint thread sends a probe every
//! [`PROBE_INTERVAL`], so the log comes back by itself once space returns, with or without
//! traffic.

use super::state::{BatchOverlay, RecordLoc, Segment};
use super::storage::StorageFile;
use super::{AckInfo, Shared, segment_path};
use crate::record::{self, HEADER_LEN};
use crate::{AppendError, Committed, LogError, Micros, Position, Transaction};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How often an unavailable log tries the disk again without being asked.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes a probe writes (and cuts off again) past the end of the log.
const PROBE_BYTES: usize = 64 << 10;

/// What the writer is asked to do.
pub(crate) enum Request {
    /// Append a transaction.
    Append(AppendRequest),
    /// The log is unavailable: reopen it and try a write, to find out whether it can resume.
    Probe,
}

/// One append waiting for the writer.
pub(crate) struct AppendRequest {
    pub tx: Transaction,
    /// Upper bound of the framed size, for bounding batches.
    pub size: usize,
    /// The time its events carry, assigned as it was sent (never below an earlier request's).
    pub time: Micros,
    pub reply: oneshot::Sender<Result<Committed, AppendError>>,
}

/// A transaction that passed validation in the current batch.
struct Accepted {
    request: AppendRequest,
    summary: record::Summary,
    committed: Committed,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    head: watch::Sender<Position>,
    /// Nudges the checkpoint thread; capacity 1, so a busy checkpointer just skips a turn.
    checkpoint: SyncSender<()>,
    segment_index: u32,
    segment_file: Arc<dyn StorageFile>,
    segment_path: PathBuf,
    segment_len: u64,
    next_position: Position,
    last_time: i64,
    bytes_since_checkpoint: u64,
    /// A write or sync failed and the log has not been reopened since: the files may hold
    /// bytes past the last acknowledged record, and the current descriptor is suspect.
    must_reopen: bool,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        requests: mpsc::Receiver<Request>,
        head: watch::Sender<Position>,
        checkpoint: SyncSender<()>,
    ) -> Self {
        let (segment_index, segment_file, segment_path, segment_len, next_position, last_time) = {
            let state = shared.state.read();
            let segment = &state.segments[state.end_segment as usize];
            (
                state.end_segment,
                segment.file.clone(),
                segment.path.clone(),
                state.end_offset,
                state.head + 1,
                state.last_time,
            )
        };
        Self {
            shared,
            requests,
            head,
            checkpoint,
            segment_index,
            segment_file,
            segment_path,
            segment_len,
            next_position,
            last_time,
            bytes_since_checkpoint: 0,
            must_reopen: false,
        }
    }

    /// Runs until every sender is gone (the log was closed or dropped) and the queue is empty.
    pub fn run(mut self) {
        while let Some(first) = self.requests.blocking_recv() {
            let options = &self.shared.options;
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut probe = false;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Append(a) => {
                        bytes += a.size;
                        batch.push(a);
                    }
                    Request::Probe => probe = true,
                }
                if batch.len() < options.max_batch_count && bytes < options.max_batch_bytes {
                    next = self.requests.try_recv().ok();
                }
            }
            if batch.is_empty() {
                if probe {
                    self.probe();
                }
            } else {
                self.process(batch);
            }
        }
    }

    fn process(&mut self, batch: Vec<AppendRequest>) {
        if self.must_reopen
            && let Err(e) = self.reopen()
        {
            let reason = format!("reopening the log after a failed write: {e}");
            self.mark_unavailable(&reason);
            for request in batch {
                let _ = request.reply.send(Err(unavailable(&reason, true).into()));
            }
            return;
        }

        let mut last_time = self.last_time;
        let mut accepted = Vec::with_capacity(batch.len());
        let first_position = self.next_position;
        {
            let state = self.shared.state.read();
            let mut overlay = BatchOverlay::default();
            for request in batch {
                // Requests are sent in time order (see `EmbeddedLog::submit`).
                debug_assert!(request.time >= last_time, "append times went backwards");
                let time = request.time;
                match overlay.accept(&*state, &request.tx, self.next_position, time) {
                    Ok(summary) => {
                        let committed = Committed {
                            first_position: summary.first_position,
                            last_position: summary.first_position + summary.event_count - 1,
                            time,
                            versions: summary
                                .appends
                                .iter()
                                .map(|a| a.first_version + a.count - 1)
                                .collect(),
                        };
                        self.next_position += summary.event_count;
                        last_time = time;
                        accepted.push(Accepted {
                            request,
                            summary,
                            committed,
                        });
                    }
                    // Nothing of a rejected transaction is in the overlay: answer at once.
                    Err(e) => {
                        let _ = request.reply.send(Err(e));
                    }
                }
            }
        }
        if accepted.is_empty() {
            return;
        }

        let locs = match self.write(&accepted) {
            Ok(locs) => locs,
            Err(e) => {
                self.next_position = first_position;
                return self.fail(accepted, &e);
            }
        };

        let head = {
            let mut state = self.shared.state.write();
            for (a, loc) in accepted.iter().zip(&locs) {
                if let Err(e) = state.apply(&a.summary, *loc) {
                    // The overlay accepted what the state refuses: a bug, not the disk. The
                    // batch is durable but inconsistent; stop rather than guess.
                    drop(state);
                    tracing::error!(error = e, "event log state refused a validated batch");
                    *self.shared.broken.lock() = Some(e.to_owned());
                    for a in accepted {
                        let err = LogError::Io(io::Error::other(format!("append refused: {e}")));
                        let _ = a.request.reply.send(Err(err.into()));
                    }
                    return;
                }
            }
            state.end_segment = self.segment_index;
            state.end_offset = self.segment_len;
            state.head
        };
        self.last_time = last_time;
        self.head.send_replace(head);
        if self.shared.unavailable.lock().is_some() {
            // A small record may fit where a batch did not: the log is writable again only
            // once a probe's worth of room is there too.
            self.probe();
        }

        for (a, loc) in accepted.into_iter().zip(locs) {
            if let Some(hook) = &self.shared.options.on_ack {
                let path = self.shared.state.read().segments[loc.segment as usize]
                    .path
                    .clone();
                hook(&AckInfo {
                    committed: a.committed.clone(),
                    segment: path,
                    offset: loc.offset,
                    len: loc.end() - loc.offset,
                });
            }
            // The appender may have given up waiting; the append is durable all the same.
            let _ = a.request.reply.send(Ok(a.committed));
        }
    }

    /// Encodes the batch and makes it durable: one write and one fdatasync per segment touched
    /// (one, unless the batch crosses a segment boundary).
    fn write(&mut self, accepted: &[Accepted]) -> io::Result<Vec<RecordLoc>> {
        let segment_size = self.shared.options.segment_size;
        let mut buf = Vec::with_capacity(accepted.iter().map(|a| a.request.size).sum());
        let mut locs = Vec::with_capacity(accepted.len());
        for a in accepted {
            let start = buf.len();
            let first_versions: Vec<_> =
                a.summary.appends.iter().map(|s| s.first_version).collect();
            record::encode(
                &mut buf,
                a.summary.first_position,
                a.committed.time,
                &a.request.tx.appends,
                &first_versions,
                &a.summary.effects,
            );
            let frame_len = buf.len() - start;
            let pending = self.segment_len + start as u64;
            if pending > 0 && self.segment_len + buf.len() as u64 > segment_size {
                // This record starts the next segment. Everything before it must be durable
                // first: a later segment may exist only after its predecessor is complete, so
                // that recovery can treat damage before the last segment as corruption.
                if start > 0 {
                    self.write_and_sync(&buf[..start])?;
                }
                self.roll(a.summary.first_position)?;
                buf.drain(..start);
            }
            let offset = self.segment_len + (buf.len() - frame_len) as u64;
            locs.push(RecordLoc {
                first_position: a.summary.first_position,
                offset,
                segment: self.segment_index,
                len: (frame_len - HEADER_LEN) as u32,
            });
        }
        if !buf.is_empty() {
            self.write_and_sync(&buf)?;
        }
        Ok(locs)
    }

    fn write_and_sync(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.segment_file.write_at(bytes, self.segment_len)?;
        self.segment_file.sync_data()?;
        self.segment_len += bytes.len() as u64;
        self.bytes_since_checkpoint += bytes.len() as u64;
        if self.bytes_since_checkpoint >= self.shared.options.checkpoint_interval {
            self.bytes_since_checkpoint = 0;
            // Full means a checkpoint is already pending; gone means we are shutting down.
            let _ = self.checkpoint.try_send(());
        }
        Ok(())
    }

    /// Starts a new segment named after `first_position` and makes its directory entry
    /// durable before anything in it is acknowledged.
    fn roll(&mut self, first_position: Position) -> io::Result<()> {
        let path = segment_path(&self.shared.dir, first_position);
        let file = self.shared.storage.create_file(&path)?;
        {
            // Registered before its entry is synced, so that a failure from here on is
            // undone by `reopen` like any other unacknowledged bytes.
            let mut state = self.shared.state.write();
            state.segments.push(Segment {
                first_position,
                path: path.clone(),
                file: file.clone(),
            });
            self.segment_index = (state.segments.len() - 1) as u32;
        }
        self.segment_file = file;
        self.segment_path = path;
        self.segment_len = 0;
        self.shared.storage.sync_dir(&self.shared.dir)
    }

    /// A write or sync failed: the batch is not acknowledged (its appenders get
    /// [`LogError::Unavailable`]), and the log is reopened from what is on disk before anything
    /// else is written.
    fn fail(&mut self, accepted: Vec<Accepted>, error: &io::Error) {
        tracing::error!(
            dir = %self.shared.dir.display(),
            segment = %self.segment_path.display(),
            %error,
            "event log write failed; refusing appends until the log is reopened and writes again"
        );
        self.must_reopen = true;
        // Reopening now cuts the batch's bytes off, so its appenders can be told it is not
        // in the log; if even that fails they cannot, and the next request tries again.
        let cut = match self.reopen() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "reopening the event log failed; retrying later");
                false
            }
        };
        let reason = error.to_string();
        self.mark_unavailable(&reason);
        for a in accepted {
            let _ = a.request.reply.send(Err(unavailable(&reason, !cut).into()));
        }
    }

    /// Reopens the log at its last acknowledged record: removes segments holding nothing
    /// acknowledged, truncates the end segment through a fresh descriptor and syncs both, then
    /// points the writer (and future readers) at that descriptor.
    fn reopen(&mut self) -> io::Result<()> {
        let storage = self.shared.storage.clone();
        let dir = self.shared.dir.clone();
        let (end_segment, end_offset, path, extra) = {
            let state = self.shared.state.read();
            let end = state.end_segment as usize;
            let extra: Vec<PathBuf> = state.segments[end + 1..]
                .iter()
                .map(|s| s.path.clone())
                .collect();
            (
                end,
                state.end_offset,
                state.segments[end].path.clone(),
                extra,
            )
        };
        for extra in &extra {
            match storage.remove_file(extra) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if !extra.is_empty() {
            storage.sync_dir(&dir)?;
        }
        let file = storage.open_file(&path)?;
        file.set_len(end_offset)?;
        file.sync_data()?;
        {
            let mut state = self.shared.state.write();
            state.segments.truncate(end_segment + 1);
            state.segments[end_segment].file = file.clone();
        }
        self.segment_index = end_segment as u32;
        self.segment_file = file;
        self.segment_path = path;
        self.segment_len = end_offset;
        self.must_reopen = false;
        tracing::debug!(
            segment = %self.segment_path.display(),
            offset = end_offset,
            "event log reopened at its last acknowledged record"
        );
        Ok(())
    }

    /// Whether the disk takes writes again: reopens if needed, then writes a block past the
    /// end of the log, syncs it and cuts it off again. (Should the process die in between, the
    /// zeros read as an unwritten tail, which opening truncates.)
    fn probe(&mut self) {
        if self.shared.unavailable.lock().is_none() {
            return;
        }
        let result = (|| {
            if self.must_reopen {
                self.reopen()?;
            }
            self.must_reopen = true;
            self.segment_file
                .write_at(&[0; PROBE_BYTES], self.segment_len)?;
            self.segment_file.sync_data()?;
            self.segment_file.set_len(self.segment_len)?;
            self.segment_file.sync_data()?;
            self.must_reopen = false;
            Ok::<(), io::Error>(())
        })();
        match result {
            Ok(()) => self.mark_available(),
            Err(e) => {
                tracing::debug!(error = %e, "event log probe: still cannot write");
                self.mark_unavailable(&e.to_string());
            }
        }
    }

    fn mark_unavailable(&self, reason: &str) {
        *self.shared.unavailable.lock() = Some(reason.to_owned());
    }

    fn mark_available(&self) {
        if self.shared.unavailable.lock().take().is_some() {
            tracing::info!(dir = %self.shared.dir.display(), "event log writes again");
        }
    }
}

/// What the appenders of a batch that could not be written get. `unsure` when the log could
/// not be reopened, so the bytes may still be on disk (and read back after a restart).
pub(crate) fn unavailable(reason: &str, unsure: bool) -> LogError {
    LogError::Unavailable(if unsure {
        format!("the event log cannot write ({reason}); the append may or may not be durable")
    } else {
        format!("the event log cannot write ({reason}); the append was not written")
    })
}
