//! The single writer thread: validates, batches (group commit), writes, syncs, publishes and
//! acknowledges. A dedicated OS thread because it blocks on file IO.

use super::state::{BatchOverlay, RecordLoc, Segment};
use super::storage::StorageFile;
use super::{AckInfo, Shared, now_micros, segment_path};
use crate::record::{self, HEADER_LEN};
use crate::{AppendError, Committed, LogError, Position, Transaction};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use tokio::sync::{mpsc, oneshot, watch};

/// One append waiting for the writer.
pub(crate) struct Request {
    pub tx: Transaction,
    /// Upper bound of the framed size, for bounding batches.
    pub size: usize,
    pub reply: oneshot::Sender<Result<Committed, AppendError>>,
}

/// A transaction that passed validation in the current batch.
struct Accepted {
    request: Request,
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
        }
    }

    /// Runs until every sender is gone (the log was closed or dropped) and the queue is empty.
    pub fn run(mut self) {
        while let Some(first) = self.requests.blocking_recv() {
            let options = &self.shared.options;
            let mut bytes = first.size;
            let mut batch = vec![first];
            while batch.len() < options.max_batch_count && bytes < options.max_batch_bytes {
                match self.requests.try_recv() {
                    Ok(request) => {
                        bytes += request.size;
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
    }

    fn process(&mut self, batch: Vec<Request>) {
        if let Some(reason) = self.shared.failed.lock().clone() {
            for request in batch {
                let _ = request.reply.send(Err(failed_error(&reason).into()));
            }
            return;
        }

        // One time for the whole batch: never below the last one, so times never decrease.
        let time = now_micros().max(self.last_time);
        let mut accepted = Vec::with_capacity(batch.len());
        {
            let state = self.shared.state.read();
            let mut overlay = BatchOverlay::default();
            for request in batch {
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
            Err(e) => return self.fail(accepted, &e.to_string()),
        };

        let head = {
            let mut state = self.shared.state.write();
            for (a, loc) in accepted.iter().zip(&locs) {
                if let Err(e) = state.apply(&a.summary, *loc) {
                    drop(state);
                    return self.fail(accepted, e);
                }
            }
            state.end_segment = self.segment_index;
            state.end_offset = self.segment_len;
            state.head
        };
        self.last_time = time;
        self.head.send_replace(head);

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
        self.shared.storage.sync_dir(&self.shared.dir)?;
        let mut state = self.shared.state.write();
        state.segments.push(Segment {
            first_position,
            path: path.clone(),
            file: file.clone(),
        });
        self.segment_index = (state.segments.len() - 1) as u32;
        self.segment_file = file;
        self.segment_path = path;
        self.segment_len = 0;
        Ok(())
    }

    /// A write or sync failed: the batch is not acknowledged, and since the file may now hold
    /// a hole or bytes the kernel has dropped (fsync errors are not retryable), the log
    /// accepts no further appends.
    fn fail(&mut self, accepted: Vec<Accepted>, reason: &str) {
        tracing::error!(
            dir = %self.shared.dir.display(),
            segment = %self.segment_path.display(),
            error = reason,
            "event log write failed; refusing further appends"
        );
        *self.shared.failed.lock() = Some(reason.to_owned());
        for a in accepted {
            let err = LogError::Io(io::Error::other(format!("append not durable: {reason}")));
            let _ = a.request.reply.send(Err(err.into()));
        }
    }
}

/// The error every append gets once the log has failed.
pub(crate) fn failed_error(reason: &str) -> LogError {
    LogError::Io(io::Error::other(format!(
        "the log failed earlier and accepts no appends: {reason}"
    )))
}
