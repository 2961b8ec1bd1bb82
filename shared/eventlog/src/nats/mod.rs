//! The NATS JetStream backend: the log is one JetStream stream shared by every `roster serve`
//! process (docs/architecture.md, the event log).
//!
//! - **One message per commit.** nats-server 2.9 has no atomic multi-message publish, so a
//!   whole transaction — events of several streams and its reservation effects — is one
//!   message, and the writer groups concurrent transactions into one message too (group
//!   commit). The record format is the embedded log's (CRC-framed records).
//! - **Optimistic concurrency on the stream sequence.** Each process consumes the stream in
//!   order and keeps the state the writer needs (stream versions, event positions,
//!   reservations, which message holds which positions). The writer validates a group
//!   against that state exactly as the embedded writer does and publishes it with
//!   `Nats-Expected-Last-Sequence` = the last sequence it has applied: the server stores it
//!   only if nobody wrote in between, so the check and the write are one atomic step across
//!   processes. Refused: catch up, re-validate, retry.
//! - **De-duplication.** Every message has a unique `Nats-Msg-Id`; a publish whose
//!   acknowledgement was lost is retried as the very same message, so at most one copy is
//!   stored and the writer learns where (from the duplicate acknowledgement, or from the
//!   writer id inside the message at the expected place).
//! - **Positions** are assigned by the writer (head + 1 …) and recorded in the message; they
//!   stay global and gap-free because a message is stored only directly after the one its
//!   writer validated against. Times never decrease (never below the last applied time).
//! - **Reads** use the in-memory index and fetch messages by sequence (direct get; recent
//!   payloads are cached); `subscribe` is [`subscribe_by_polling`]; `head` is what this
//!   process has applied, and an append's own message is applied before `append` returns.
//!
//! Durability: the stream uses file storage; run the servers as a 3-node cluster with
//! `replicas: 3` (an acknowledged message is then on a quorum of 2), and, from nats-server
//! 2.10 on, with `jetstream { sync_interval: always }` so each acknowledged message has been
//! fsynced. nats-server 2.9 has no such option: it writes each message to its file before
//! acknowledging (surviving a server crash) but fsyncs only every 2 minutes, so on 2.9 a
//! power loss of a quorum can lose acknowledged appends.

mod message;
mod read;
mod state;
mod subject;
mod tail;
mod writer;

use crate::validate::{stream_key, validate_shape};
use crate::{
    AppendError, Committed, EventLog, LogError, Micros, Position, RecordedEvent, ReservationInfo,
    StreamId, Transaction, Version, subscribe_by_polling,
};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use futures::stream::BoxStream;
use parking_lot::{Mutex, RwLock};
use state::State;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use writer::{Request, Writer};

/// Settings of [`NatsLog`].
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Name of the JetStream stream holding the log. Default `ROSTER`.
    pub stream: String,
    /// Subject prefix; the stream takes `<prefix>.>`. Default `roster`.
    pub subject_prefix: String,
    /// Replicas of the stream when this call creates it (3 in a 3-node cluster). Default 1.
    pub replicas: usize,
    /// At most this many transactions share one message. Default 1024.
    pub max_batch_count: usize,
    /// A message holds at most about this many bytes; never more than the server's
    /// `max_payload` (1 MiB by default) allows. A larger transaction is refused with
    /// [`AppendError::Invalid`]. Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Appends queued for the writer before `append` waits (back-pressure). Default 16384.
    pub queue_capacity: usize,
    /// How long the writer keeps retrying an append (and `connect` keeps trying) while
    /// JetStream is unreachable or has no quorum, before answering
    /// [`LogError::Unavailable`]. Default 10 s.
    pub unavailable_timeout: Duration,
    /// Timeout of one JetStream request or publish acknowledgement. Default 3 s.
    pub request_timeout: Duration,
    /// Bytes of recent message payloads kept in memory for reads and subscriptions.
    /// Default 64 MiB.
    pub cache_bytes: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            stream: "ROSTER".into(),
            subject_prefix: "roster".into(),
            replicas: 1,
            max_batch_count: 1024,
            max_batch_bytes: 1 << 20,
            queue_capacity: 16384,
            unavailable_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(3),
            cache_bytes: 64 << 20,
        }
    }
}

/// What the writer, the consumer and readers share.
pub(crate) struct Shared {
    options: NatsOptions,
    context: jetstream::Context,
    stream: stream::Stream,
    state: RwLock<State>,
    /// Dropped on close, which ends subscriptions.
    head: Mutex<Option<watch::Sender<Position>>>,
    /// The last applied sequence, for a writer waiting to catch up.
    applied: watch::Sender<u64>,
    /// Tells the consumer task to recreate its consumer.
    tail_kick: tokio::sync::Notify,
    /// Messages the consumer has received (applied or not): whether it is alive.
    deliveries: AtomicU64,
    /// Set by tests: the consumer drops what it receives.
    silenced: AtomicBool,
    /// Largest message the writer builds (server `max_payload` less room for headers).
    max_message_bytes: usize,
}

impl Shared {
    /// The stream's last sequence, asked of the server (its leader); `None` if it cannot be
    /// had before `deadline`.
    async fn last_stream_seq(&self, deadline: Instant) -> Option<u64> {
        let mut stream = self.stream.clone();
        match tokio::time::timeout_at(deadline, stream.info()).await {
            Ok(Ok(info)) => Some(info.state.last_sequence),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the stream's last sequence");
                None
            }
            Err(_) => None,
        }
    }

    /// Applies message `seq` (from the consumer, or from the writer for its own message).
    /// A message the log cannot follow marks the log failed.
    fn apply(&self, seq: u64, payload: Bytes) -> Result<(), String> {
        let mut state = self.state.write();
        match state.apply_message(seq, payload) {
            Ok(moved) => {
                if moved && let Some(head) = self.head.lock().as_ref() {
                    head.send_replace(state.head);
                }
                self.applied.send_replace(state.last_seq);
                Ok(())
            }
            Err(reason) => {
                tracing::error!(stream = %self.options.stream, error = %reason,
                    "the event log stream cannot be followed; the log is failed");
                state.failed.get_or_insert(reason.clone());
                Err(reason)
            }
        }
    }
}

/// The JetStream event log: a cheap-to-clone handle. It stops when the last handle is dropped
/// or when [`EventLog::close`] is called.
#[derive(Clone)]
pub struct NatsLog {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` once closed; the writer exits when the last sender is gone and the queue is
    /// drained.
    sender: Mutex<Option<mpsc::Sender<Request>>>,
    head: watch::Receiver<Position>,
    writer: Mutex<Option<JoinHandle<()>>>,
    tail: Mutex<Option<JoinHandle<()>>>,
    closing: tokio::sync::Mutex<()>,
}

impl fmt::Debug for NatsLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsLog")
            .field("stream", &self.inner.shared.options.stream)
            .field("head", &*self.inner.head.borrow())
            .finish_non_exhaustive()
    }
}

impl NatsLog {
    /// Connects to the servers in `urls` (comma-separated, e.g.
    /// `nats://10.0.0.1:4222,nats://10.0.0.2:4222`), creates the stream if it does not exist
    /// (file storage, `options.replicas`), and reads the whole log into memory before
    /// returning. Keeps trying for `options.unavailable_timeout` while the servers are
    /// unreachable or without quorum ([`LogError::Unavailable`] after that).
    pub async fn connect(urls: &str, options: NatsOptions) -> Result<NatsLog, LogError> {
        if options.max_batch_count == 0 || options.queue_capacity == 0 {
            return Err(invalid_input(format!(
                "invalid NATS log options: {options:?}"
            )));
        }
        let deadline = Instant::now() + options.unavailable_timeout;
        let client = connect_client(urls, &options, deadline).await?;
        let max_payload = client.server_info().max_payload;
        let context = jetstream::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client);
        let stream = open_stream(&context, &options, deadline).await?;
        let max_message_bytes = options
            .max_batch_bytes
            .min(max_payload.saturating_sub(HEADER_ROOM));
        if max_message_bytes < 4096 {
            return Err(invalid_input(format!(
                "messages of {max_message_bytes} bytes are too small for the log \
                 (server max_payload {max_payload})"
            )));
        }
        let last_seq = ensure_genesis(&context, &stream, &options, deadline).await?;

        let (head_tx, head_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: RwLock::new(State::new(options.cache_bytes)),
            head: Mutex::new(Some(head_tx)),
            applied: watch::channel(0).0,
            tail_kick: tokio::sync::Notify::new(),
            deliveries: AtomicU64::new(0),
            silenced: AtomicBool::new(false),
            max_message_bytes,
            options,
            context,
            stream,
        });
        let tail = tokio::spawn(tail::run(shared.clone()));
        // Abort the consumer if catching up fails.
        let tail = AbortOnDrop(Some(tail));
        catch_up(&shared, last_seq).await?;

        let (sender, requests) = mpsc::channel(shared.options.queue_capacity);
        let writer = tokio::spawn(Writer::new(shared.clone(), requests).run());
        tracing::info!(stream = %shared.options.stream, head = *head_rx.borrow(),
            "event log connected to JetStream");
        Ok(NatsLog {
            inner: Arc::new(Inner {
                shared,
                sender: Mutex::new(Some(sender)),
                head: head_rx,
                writer: Mutex::new(Some(writer)),
                tail: Mutex::new(tail.take()),
                closing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Makes the consumer that follows the stream drop everything it receives, as a node
    /// failure can silence it (for tests: appends and reads must still see what other
    /// processes wrote, by reading it directly).
    #[doc(hidden)]
    pub fn silence_consumer_for_tests(&self) {
        self.shared().silenced.store(true, Ordering::Relaxed);
    }

    /// The JetStream stream's name.
    pub fn stream_name(&self) -> &str {
        &self.shared().options.stream
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    async fn run_read(
        &self,
        plan: impl FnOnce(&State) -> Vec<read::ReadItem>,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let items = {
            let state = self.shared().state.read();
            state.check()?;
            plan(&state)
        };
        read::execute(self.shared(), items).await
    }
}

/// Room for the NATS headers (`Nats-Msg-Id`, `Nats-Expected-Last-Sequence`) in a message.
const HEADER_ROOM: usize = 1024;

fn invalid_input(msg: String) -> LogError {
    LogError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg))
}

async fn connect_client(
    urls: &str,
    options: &NatsOptions,
    deadline: Instant,
) -> Result<async_nats::Client, LogError> {
    let addrs = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| invalid_input(format!("invalid NATS URL {u:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(invalid_input("no NATS URL given".into()));
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        let connect = async_nats::ConnectOptions::new()
            .name("roster-eventlog")
            .connection_timeout(options.request_timeout)
            .request_timeout(Some(options.request_timeout))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50 << attempts.min(5)).min(Duration::from_secs(2))
            })
            .connect(addrs.as_slice())
            .await;
        match connect {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, "cannot connect to NATS; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(LogError::Unavailable(format!("connecting to NATS: {e}"))),
        }
    }
}

/// Gets or creates the stream, and refuses one whose limits would drop events.
async fn open_stream(
    context: &jetstream::Context,
    options: &NatsOptions,
    deadline: Instant,
) -> Result<stream::Stream, LogError> {
    let config = stream::Config {
        name: options.stream.clone(),
        subjects: vec![format!("{}.>", options.subject_prefix)],
        storage: stream::StorageType::File,
        num_replicas: options.replicas,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        duplicate_window: Duration::from_secs(120),
        deny_delete: true,
        deny_purge: true,
        description: Some("Roster event log: one message per committed batch".into()),
        ..Default::default()
    };
    let mut backoff = Duration::from_millis(50);
    let mut stream = loop {
        match context.get_or_create_stream(config.clone()).await {
            Ok(s) => break s,
            Err(e) if Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, "cannot open the event log stream; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(LogError::Unavailable(format!(
                    "opening JetStream stream {}: {e}",
                    options.stream
                )));
            }
        }
    };
    let info = stream
        .info()
        .await
        .map_err(|e| LogError::Unavailable(format!("stream info: {e}")))?;
    let c = &info.config;
    if c.max_age != Duration::ZERO
        || c.max_messages > 0
        || c.max_bytes > 0
        || c.max_messages_per_subject > 0
        || c.retention != stream::RetentionPolicy::Limits
    {
        return Err(invalid_input(format!(
            "JetStream stream {} has limits or a retention policy that would drop events",
            options.stream
        )));
    }
    if c.storage != stream::StorageType::File {
        tracing::warn!(stream = %options.stream, "event log stream is not file-backed");
    }
    Ok(stream)
}

/// Writes the genesis message into an empty stream. Returns the stream's last sequence.
async fn ensure_genesis(
    context: &jetstream::Context,
    stream: &stream::Stream,
    options: &NatsOptions,
    deadline: Instant,
) -> Result<u64, LogError> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let result = async {
            let mut stream = stream.clone();
            let last = stream
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .last_sequence;
            if last > 0 {
                return Ok(last);
            }
            // Racing processes publish the same id: de-duplicated into one message. The
            // subject check makes a late one fail instead of landing after real events.
            let genesis = PublishMessage::build()
                .payload(message::genesis())
                .message_id(message::GENESIS_MSG_ID)
                .expected_last_subject_sequence(0);
            let ack = context
                .send_publish(subject::genesis(&options.subject_prefix), genesis)
                .await
                .map_err(|e| e.to_string())?
                .await;
            match ack {
                Ok(ack) => Ok(ack.sequence),
                Err(e) => Err(e.to_string()),
            }
        }
        .await;
        match result {
            Ok(last) => return Ok(last),
            Err(e) if Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, "cannot initialise the event log stream; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(LogError::Unavailable(format!(
                    "initialising JetStream stream {}: {e}",
                    options.stream
                )));
            }
        }
    }
}

/// Waits until `seq` is applied: by the consumer while it makes progress, else by reading
/// the missing messages directly. A consumer that has delivered nothing for [`KICK_AFTER`]
/// while messages are missing is restarted. False if `deadline` passes first.
pub(crate) async fn wait_applied(shared: &Shared, seq: u64, deadline: Instant) -> bool {
    let mut applied = shared.applied.subscribe();
    let mut deliveries = (shared.deliveries.load(Ordering::Relaxed), Instant::now());
    loop {
        if *applied.borrow_and_update() >= seq {
            return true;
        }
        let patience = (Instant::now() + FETCH_AFTER).min(deadline);
        match tokio::time::timeout_at(patience, applied.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return false,
            Err(_) if Instant::now() >= deadline => return false,
            Err(_) => {}
        }
        // Nothing applied for a while, and `seq` is known to exist.
        let delivered = shared.deliveries.load(Ordering::Relaxed);
        if delivered != deliveries.0 {
            deliveries = (delivered, Instant::now());
        } else if deliveries.1.elapsed() >= KICK_AFTER {
            tracing::info!(seq, "event log consumer is silent; restarting it");
            shared.tail_kick.notify_one();
            deliveries.1 = Instant::now();
        }
        match tokio::time::timeout_at(deadline, tail::fetch_missing(shared, seq)).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, seq, "cannot read the missing messages; waiting");
                if shared.state.read().check().is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

/// How long a writer or `connect` waits for the consumer before reading what it lacks.
const FETCH_AFTER: Duration = Duration::from_millis(250);
/// How long the consumer may deliver nothing while messages are missing before it is
/// restarted.
const KICK_AFTER: Duration = Duration::from_secs(1);

/// Waits until `last_seq` is applied; gives up when nothing moves for `unavailable_timeout`.
async fn catch_up(shared: &Shared, last_seq: u64) -> Result<(), LogError> {
    let mut seen = shared.state.read().last_seq;
    loop {
        shared.state.read().check()?;
        if seen >= last_seq {
            return Ok(());
        }
        let deadline = Instant::now() + shared.options.unavailable_timeout;
        wait_applied(shared, last_seq, deadline).await;
        let now = shared.state.read().last_seq;
        if now == seen {
            shared.state.read().check()?;
            return Err(LogError::Unavailable(format!(
                "reading the log: stuck at sequence {seen} of {last_seq}"
            )));
        }
        seen = now;
    }
}

/// Aborts a task when dropped (unless taken).
struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    fn take(mut self) -> Option<JoinHandle<()>> {
        self.0.take()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

#[async_trait::async_trait]
impl EventLog for NatsLog {
    async fn append(&self, tx: Transaction) -> Result<Committed, AppendError> {
        let max_record = self.shared().max_message_bytes - message::PREFIX_LEN;
        let size = validate_shape(&tx, max_record)?;
        self.shared().state.read().check()?;
        let sender = self.inner.sender.lock().clone().ok_or(LogError::Closed)?;
        let (reply, replied) = oneshot::channel();
        sender
            .send(Request {
                tx,
                order: 0,
                size,
                reply,
            })
            .await
            .map_err(|_| LogError::Closed)?;
        drop(sender);
        replied.await.map_err(|_| {
            AppendError::Log(LogError::Unavailable(
                "the log writer stopped before answering; the append may or may not be written"
                    .into(),
            ))
        })?
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let key = stream_key(&stream.org, &stream.name);
        self.run_read(|state| read::plan_stream(state, &key, from_version, limit))
            .await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.run_read(|state| read::plan_all(state, after, limit))
            .await
    }

    fn subscribe(&self, after: Position) -> BoxStream<'static, Result<RecordedEvent, LogError>> {
        subscribe_by_polling(Arc::new(self.clone()), after)
    }

    fn head(&self) -> Position {
        *self.inner.head.borrow()
    }

    async fn sync(&self) -> Result<bool, LogError> {
        let shared = self.shared();
        let deadline = Instant::now() + shared.options.unavailable_timeout;
        let last = shared.last_stream_seq(deadline).await.ok_or_else(|| {
            LogError::Unavailable("cannot read the stream's last sequence".into())
        })?;
        catch_up(shared, last).await?;
        Ok(true)
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.inner.head.clone()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>, LogError> {
        let state = self.shared().state.read();
        state.check()?;
        Ok(state.version(&stream_key(&stream.org, &stream.name)))
    }

    async fn reservation(&self, key: &str) -> Result<Option<ReservationInfo>, LogError> {
        let state = self.shared().state.read();
        state.check()?;
        // The writer judges expiry by commit time, which is never behind `last_time`.
        let now = now_micros().max(state.last_time);
        Ok(state
            .reservations
            .get(&crate::validate::Key::of(key))
            .filter(|info| !crate::validate::expired(info, now))
            .cloned())
    }

    async fn close(&self) -> Result<(), LogError> {
        let _closing = self.inner.closing.lock().await;
        self.inner.sender.lock().take();
        let writer = self.inner.writer.lock().take();
        if let Some(writer) = writer {
            // The writer answers what was queued, then exits.
            let _ = writer.await;
        }
        if let Some(tail) = self.inner.tail.lock().take() {
            tail.abort();
        }
        let shared = self.shared();
        shared.state.write().release();
        // Subscriptions see the head channel close and end.
        shared.head.lock().take();
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped without `close`: the writer finishes the queue on its own (its sender is
        // gone); the consumer would run forever.
        if let Some(tail) = self.tail.lock().take() {
            tail.abort();
        }
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
