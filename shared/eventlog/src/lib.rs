//! The append-only event log of Roster: the [`EventLog`] trait every backend implements,
//! and the backends themselves.
//!
//! The log is the system of record. An append is all-or-nothing across every stream and
//! reservation it names, optimistic (each stream append carries an [`ExpectedVersion`]), and
//! durable before it returns. Read models are derived from it and can always be rebuilt.
//!
//! Backends: [`embedded`] (the default, a segment log in a local directory) and, with the
//! `nats` feature (on by default), [`nats`] (a NATS JetStream stream shared by several
//! servers).

mod codec;
pub mod contract;
pub mod embedded;
#[cfg(feature = "nats")]
pub mod nats;
mod record;
mod subscribe;
mod types;
mod validate;

pub use subscribe::subscribe_by_polling;
pub use types::*;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// A transaction [submitted](EventLog::submit) to the log, not yet known to be durable.
pub struct Submitted {
    /// The time every event of the transaction carries if it commits ([`Committed::time`]).
    pub time: Micros,
    /// Resolves once the transaction is durable (or refused, or failed).
    pub outcome: BoxFuture<'static, Result<Committed, AppendError>>,
}

/// The contract every event-log backend fulfils; see docs/architecture.md, the event log.
///
/// All positions are global, 1-based and gap-free: the first event ever appended has
/// position 1, and `after = 0` means "from the beginning". Stream versions are 1-based too:
/// the first event of a stream has version 1.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends a transaction atomically: either every event of every stream append is written
    /// and every reservation applied, or nothing is. Returns only once the transaction is
    /// durable (the fsync covering its bytes has returned).
    async fn append(&self, tx: Transaction) -> Result<Committed, AppendError>;

    /// Hands a transaction to the log and returns once its place in the log's order is
    /// fixed, before it is durable: a transaction submitted after this call returns is
    /// validated after this one (so it may expect the versions this one makes, and fails if
    /// this one does), and [`Submitted::time`] is the time its events will carry.
    /// [`Submitted::outcome`] resolves as [`EventLog::append`] does. A backend that cannot fix
    /// the order before the append is durable appends here (the default), so that callers
    /// pipelining on it simply wait.
    async fn submit(&self, tx: Transaction) -> Result<Submitted, AppendError> {
        let committed = self.append(tx).await?;
        Ok(Submitted {
            time: committed.time,
            outcome: Box::pin(std::future::ready(Ok(committed))),
        })
    }

    /// Events of one stream with `version >= from_version`, in version order, at most `limit`.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError>;

    /// Events with `position > after`, in position order, at most `limit`.
    async fn read_all(&self, after: Position, limit: usize)
    -> Result<Vec<RecordedEvent>, LogError>;

    /// Every event with `position > after`: first those already in the log, then each new one as
    /// it commits. The stream ends only on error or when the log is closed.
    fn subscribe(&self, after: Position) -> BoxStream<'static, Result<RecordedEvent, LogError>>;

    /// The position of the last durable event (0 for an empty log).
    fn head(&self) -> Position;

    /// Whether appends can be written now: `Err(reason)` while the log knows they cannot (the
    /// embedded log after a failed write, until it writes again: a full disk, an I/O error).
    /// Readiness checks use it; appends meanwhile fail with [`LogError::Unavailable`].
    fn writable(&self) -> Result<(), String> {
        Ok(())
    }

    /// Returns once this handle's reads include every transaction that was durable when it
    /// was called; `false` at once from a backend whose reads always do (one process's own
    /// log). A server answering a refusal from what it read first syncs, so that another
    /// server's append (a user created there a moment ago) is not missed.
    async fn sync(&self) -> Result<bool, LogError> {
        Ok(false)
    }

    /// A receiver that sees [`EventLog::head`] change; used to wait for new events.
    fn watch_head(&self) -> tokio::sync::watch::Receiver<Position>;

    /// The current version of a stream, `None` if it has no events.
    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>, LogError>;

    /// Who holds a reservation key now (expired claims read as free).
    async fn reservation(&self, key: &str) -> Result<Option<ReservationInfo>, LogError>;

    /// Stops accepting appends, finishes those in flight, writes a checkpoint and releases files.
    async fn close(&self) -> Result<(), LogError>;
}
