//! The embedded backend: an append-only segment log in a local directory.
//!
//! - Segment files `{first_position:020}.seg` hold CRC-framed records, one per transaction
//!   (see `record`), so a transaction is durable or absent as a whole.
//! - One writer thread validates appends against in-memory state and commits them in groups:
//!   one write and one `fdatasync` per batch, then publish, then acknowledge.
//! - Readers look up record offsets under a short read lock and `pread` the files.
//! - Checkpoints (`{head:020}.ckpt`) let `open` scan only the tail; a torn tail of the last
//!   segment is truncated, damage elsewhere is [`LogError::Corrupt`].
//! - A `LOCK` file (`flock`) keeps a second process, or a second `open`, out.

mod checkpoint;
mod read;
mod recovery;
mod state;
mod storage;
mod writer;

pub use storage::{StdStorage, Storage, StorageFile, restrict_tree};

use crate::{
    AppendError, Committed, EventLog, LogError, Micros, Position, RecordedEvent, ReservationInfo,
    StreamId, Transaction, Version, subscribe_by_polling,
};
use futures::stream::BoxStream;
use parking_lot::{Mutex, RwLock};
use state::State;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use writer::{AppendRequest, Request, Writer};

/// What the writer reports for each acknowledged append, just before acknowledging it.
#[derive(Clone, Debug)]
pub struct AckInfo {
    /// What the appender receives.
    pub committed: Committed,
    /// The segment file holding the transaction's record.
    pub segment: PathBuf,
    /// Offset of the record's frame in that file.
    pub offset: u64,
    /// Length of the frame (header and payload).
    pub len: u64,
}

/// A callback run on the writer thread before each acknowledgement; keep it cheap.
pub type AckHook = Arc<dyn Fn(&AckInfo) + Send + Sync>;

/// Tuning and test hooks of [`EmbeddedLog`].
#[derive(Clone)]
pub struct EmbeddedOptions {
    /// A new segment starts once a record would take the current one past this size.
    /// A single larger record still goes into one segment. Default 64 MiB.
    pub segment_size: u64,
    /// Largest encoded transaction; larger ones fail with [`AppendError::Invalid`]. Default 32 MiB.
    pub max_record_size: usize,
    /// At most this many transactions share one write and fsync. Default 4096.
    pub max_batch_count: usize,
    /// A batch stops taking transactions past about this many bytes. Default 8 MiB.
    pub max_batch_bytes: usize,
    /// A checkpoint is written after about this many bytes of log. Default 64 MiB.
    pub checkpoint_interval: u64,
    /// Appends queued for the writer before `append` waits (back-pressure). Default 16384.
    pub queue_capacity: usize,
    /// The file layer. Default [`StdStorage`].
    pub storage: Arc<dyn Storage>,
    /// Called before each acknowledgement (tests, metrics). Default none.
    pub on_ack: Option<AckHook>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
            max_record_size: 32 << 20,
            max_batch_count: 4096,
            max_batch_bytes: 8 << 20,
            checkpoint_interval: 64 << 20,
            queue_capacity: 16384,
            storage: Arc::new(StdStorage),
            on_ack: None,
        }
    }
}

impl fmt::Debug for EmbeddedOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedOptions")
            .field("segment_size", &self.segment_size)
            .field("max_record_size", &self.max_record_size)
            .field("max_batch_count", &self.max_batch_count)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("queue_capacity", &self.queue_capacity)
            .field("on_ack", &self.on_ack.is_some())
            .finish_non_exhaustive()
    }
}

/// What [`EmbeddedLog::open`] found and did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Head of the checkpoint the state was loaded from (0: none, a full scan).
    pub checkpoint_head: Position,
    /// Bytes of log scanned after the checkpoint.
    pub scanned_bytes: u64,
    /// Bytes of torn tail cut off the last segment.
    pub truncated_bytes: u64,
    /// The head after opening.
    pub head: Position,
}

/// What the writer thread, the checkpoint thread and readers share.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub storage: Arc<dyn Storage>,
    pub options: EmbeddedOptions,
    pub state: RwLock<State>,
    /// Set while the writer cannot write (a full disk, an I/O error): the reason. Cleared by
    /// the next successful write; appends meanwhile fail with [`LogError::Unavailable`].
    pub unavailable: Mutex<Option<String>>,
    /// Set if the in-memory state refused a batch the writer had validated (a bug, never the
    /// disk): the reason. No append succeeds after that.
    pub broken: Mutex<Option<String>>,
    /// Head of the newest checkpoint on disk (0 = none), to skip rewriting an identical one.
    pub checkpointed_head: AtomicU64,
    /// One checkpoint write at a time (background thread, `checkpoint()`, `close()`).
    pub checkpoint_lock: Mutex<()>,
    /// Records stream reads read last (see [`read::RecordCache`]).
    pub records: read::RecordCache,
}

/// The embedded event log: a cheap-to-clone handle; the log stops when the last handle is
/// dropped (finishing queued appends) or when [`EventLog::close`] is called.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` once closed. Each append clones it only while sending, so the writer sees the
    /// channel close (and exits) once `close` takes it and the in-flight sends are done.
    sender: Mutex<Option<mpsc::Sender<Request>>>,
    head: watch::Receiver<Position>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    report: OpenReport,
    /// The time of the last append handed to the writer: each takes `max(now, this)` as it
    /// is sent, under this lock, so times never decrease in the writer's order.
    clock: Mutex<Micros>,
    /// Serializes `close` calls, so a second one returns only when the first is done.
    closing: tokio::sync::Mutex<()>,
    /// Released by `close` (after the last write), or on drop.
    lock: Mutex<Option<DirLock>>,
}

impl fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.inner.shared.dir)
            .field("head", &*self.inner.head.borrow())
            .finish_non_exhaustive()
    }
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `dir`: loads the newest usable checkpoint, verifies and
    /// replays the tail, truncates a torn tail, and starts the writer thread.
    pub async fn open(dir: &Path, options: EmbeddedOptions) -> Result<EmbeddedLog, LogError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(dir, options))
            .await
            .map_err(|e| LogError::Io(io::Error::other(format!("open panicked: {e}"))))?
    }

    fn open_blocking(dir: PathBuf, options: EmbeddedOptions) -> Result<EmbeddedLog, LogError> {
        if options.segment_size == 0
            || options.max_batch_count == 0
            || options.queue_capacity == 0
            || options.max_record_size > u32::MAX as usize
        {
            return Err(LogError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid embedded log options: {options:?}"),
            )));
        }
        let storage = options.storage.clone();
        let existed = dir.exists();
        storage.create_dir_all(&dir)?;
        if existed {
            // Older releases created the log's files world-readable.
            storage::restrict_tree(&dir)?;
        }
        if !existed {
            // Make the new directory's own entry durable.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                storage.sync_dir(parent)?;
            }
        }
        let lock = DirLock::acquire(&dir)?;
        let recovered = recovery::recover(&dir, &options)?;
        let head = recovered.state.head;
        let last_time = recovered.state.last_time;
        let report = OpenReport {
            checkpoint_head: recovered.checkpoint_head,
            scanned_bytes: recovered.scanned_bytes,
            truncated_bytes: recovered.truncated_bytes,
            head,
        };
        tracing::info!(dir = %dir.display(), ?report, "event log opened");
        let shared = Arc::new(Shared {
            dir,
            storage,
            state: RwLock::new(recovered.state),
            unavailable: Mutex::new(None),
            broken: Mutex::new(None),
            checkpointed_head: AtomicU64::new(recovered.checkpoint_head),
            checkpoint_lock: Mutex::new(()),
            records: read::RecordCache::default(),
            options,
        });

        let (sender, requests) = mpsc::channel(shared.options.queue_capacity);
        let (head_tx, head_rx) = watch::channel(head);
        let (nudge, nudges) = std::sync::mpsc::sync_channel(1);
        if recovered.scanned_bytes >= shared.options.checkpoint_interval {
            // A long scan now means a long scan next time too: checkpoint soon.
            let _ = nudge.try_send(());
        }
        let checkpointer = {
            let shared = shared.clone();
            let probes = sender.downgrade();
            std::thread::Builder::new()
                .name("eventlog-checkpoint".into())
                .spawn(move || checkpoint::run(&shared, nudges, &probes))?
        };
        let writer = Writer::new(shared.clone(), requests, head_tx, nudge);
        let writer = std::thread::Builder::new()
            .name("eventlog-writer".into())
            .spawn(move || writer.run())?;
        Ok(EmbeddedLog {
            inner: Arc::new(Inner {
                shared,
                sender: Mutex::new(Some(sender)),
                head: head_rx,
                writer: Mutex::new(Some(writer)),
                checkpointer: Mutex::new(Some(checkpointer)),
                report,
                clock: Mutex::new(last_time),
                closing: tokio::sync::Mutex::new(()),
                lock: Mutex::new(Some(lock)),
            }),
        })
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// What `open` found: checkpoint used, bytes scanned and truncated.
    pub fn open_report(&self) -> OpenReport {
        self.inner.report
    }

    /// Writes a checkpoint now (normally done in the background and on close).
    pub async fn checkpoint(&self) -> Result<(), LogError> {
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || checkpoint::write(&shared))
            .await
            .map_err(|e| LogError::Io(io::Error::other(e.to_string())))?
            .map_err(LogError::Io)
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Plans a read under the state's lock and executes it; `cached`: through the record
    /// cache (stream reads; a scan of the whole log would only flush it).
    async fn run_read(
        &self,
        cached: bool,
        plan: impl FnOnce(&State) -> Vec<read::ReadItem>,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let items = {
            let state = self.shared().state.read();
            if state.closed {
                return Err(LogError::Closed);
            }
            plan(&state)
        };
        if read::is_large(&items) {
            let shared = self.inner.shared.clone();
            tokio::task::spawn_blocking(move || {
                read::execute(&items, cached.then_some(&shared.records))
            })
            .await
            .map_err(|e| LogError::Io(io::Error::other(e.to_string())))?
        } else {
            // A few preads, usually served from the page cache: cheaper than a thread hop.
            read::execute(&items, cached.then_some(&self.shared().records))
        }
    }
}

#[async_trait::async_trait]
impl EventLog for EmbeddedLog {
    async fn append(&self, tx: Transaction) -> Result<Committed, AppendError> {
        self.submit(tx).await?.outcome.await
    }

    async fn submit(&self, tx: Transaction) -> Result<crate::Submitted, AppendError> {
        let options = &self.shared().options;
        let size = state::validate_shape(&tx, options.max_record_size)?;
        if let Some(reason) = self.shared().broken.lock().clone() {
            return Err(LogError::Io(io::Error::other(format!(
                "the log failed earlier and accepts no appends: {reason}"
            )))
            .into());
        }
        let sender = self.inner.sender.lock().clone().ok_or(LogError::Closed)?;
        let permit = sender.reserve().await.map_err(|_| LogError::Closed)?;
        let (reply, replied) = oneshot::channel();
        let time = {
            let mut clock = self.inner.clock.lock();
            let time = now_micros().max(*clock);
            *clock = time;
            permit.send(Request::Append(AppendRequest {
                tx,
                size,
                time,
                reply,
            }));
            time
        };
        drop(sender);
        let outcome = async move {
            replied.await.map_err(|_| {
                // The writer dropped the request without answering: it died mid-batch.
                AppendError::Log(LogError::Io(io::Error::other(
                    "the log writer stopped before acknowledging; the append may or may not be durable",
                )))
            })?
        };
        Ok(crate::Submitted {
            time,
            outcome: Box::pin(outcome),
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let key = state::stream_key(&stream.org, &stream.name);
        self.run_read(true, |state| {
            read::plan_stream(state, &key, from_version, limit)
        })
        .await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.run_read(false, |state| read::plan_all(state, after, limit))
            .await
    }

    fn subscribe(&self, after: Position) -> BoxStream<'static, Result<RecordedEvent, LogError>> {
        subscribe_by_polling(Arc::new(self.clone()), after)
    }

    fn head(&self) -> Position {
        *self.inner.head.borrow()
    }

    fn writable(&self) -> Result<(), String> {
        let shared = self.shared();
        if let Some(reason) = shared.broken.lock().clone() {
            return Err(reason);
        }
        match shared.unavailable.lock().clone() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.inner.head.clone()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>, LogError> {
        let state = self.shared().state.read();
        if state.closed {
            return Err(LogError::Closed);
        }
        Ok(state.version(&state::stream_key(&stream.org, &stream.name)))
    }

    async fn reservation(&self, key: &str) -> Result<Option<ReservationInfo>, LogError> {
        let state = self.shared().state.read();
        if state.closed {
            return Err(LogError::Closed);
        }
        // The writer judges expiry by commit time, which is never behind `last_time`.
        let now = now_micros().max(state.last_time);
        Ok(state
            .reservations
            .get(&crate::validate::Key::of(key))
            .filter(|info| !state::expired(info, now))
            .cloned())
    }

    async fn close(&self) -> Result<(), LogError> {
        let _closing = self.inner.closing.lock().await;
        self.inner.sender.lock().take();
        let writer = self.inner.writer.lock().take();
        let checkpointer = self.inner.checkpointer.lock().take();
        let shared = self.inner.shared.clone();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // The writer drains what was already sent, then exits; its exit ends the
            // checkpoint thread and closes the head channel (ending subscriptions).
            join("writer", writer);
            join("checkpoint", checkpointer);
            if shared.broken.lock().is_none()
                && let Err(e) = checkpoint::write(&shared)
            {
                // A checkpoint only shortens the next open's scan; a full disk must not make
                // a clean stop fail.
                tracing::warn!(dir = %shared.dir.display(), error = %e, "no checkpoint written on close");
            }
            let result: Result<(), LogError> = Ok(());
            let mut state = shared.state.write();
            if !state.closed {
                // Release files and memory; reads now fail with `Closed`.
                let segments = std::mem::take(&mut state.segments);
                *state = State::new(Vec::new());
                state.closed = true;
                drop(segments);
            }
            // Nothing of this handle writes any more: let another `open` have the directory.
            inner.lock.lock().take();
            result
        })
        .await
        .map_err(|e| LogError::Io(io::Error::other(e.to_string())))?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping without `close`: stop taking appends and let the writer finish what it
        // has (at most one batch), so the directory lock is released only after the last
        // write. No checkpoint: the next open scans a longer tail, nothing more.
        self.sender.lock().take();
        join("writer", self.writer.lock().take());
        join("checkpoint", self.checkpointer.lock().take());
    }
}

fn join(name: &str, handle: Option<JoinHandle<()>>) {
    if let Some(Err(_)) = handle.map(JoinHandle::join) {
        tracing::error!(thread = name, "event log thread panicked");
    }
}

/// An exclusive `flock` on `dir/LOCK`, held while the log is open; the kernel releases it
/// when the process dies, so a crash never leaves the directory locked.
struct DirLock(#[allow(dead_code)] File);

impl DirLock {
    /// How long to wait for a lock held by someone else. A lock is shared with any child
    /// process forked in the instant before it `exec`s (the descriptor is close-on-exec),
    /// so a lock just released by this process can look held for a moment.
    const WAIT: Duration = Duration::from_secs(2);

    fn acquire(dir: &Path) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(storage::FILE_MODE)
            .open(dir.join("LOCK"))?;
        let deadline = Instant::now() + Self::WAIT;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Self(file));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(LogError::Io(err));
            }
            if Instant::now() >= deadline {
                return Err(LogError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("event log {} is already open", dir.display()),
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub(crate) fn segment_path(dir: &Path, first_position: Position) -> PathBuf {
    dir.join(format!("{first_position:020}.seg"))
}

pub(crate) fn checkpoint_path(dir: &Path, head: Position) -> PathBuf {
    dir.join(format!("{head:020}.ckpt"))
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
