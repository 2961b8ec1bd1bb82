//! The values that cross the [`crate::EventLog`] boundary.

use bytes::Bytes;
use std::fmt;
use ulid::Ulid;

/// Global, gap-free position of an event in the log (1-based; 0 = before the first event).
pub type Position = u64;
/// Version of an event within its stream (1-based; the stream's version is its last event's).
pub type Version = u64;
/// Time of an event: microseconds since the Unix epoch (UTC).
pub type Micros = i64;

/// A stream belongs to exactly one organization; streams of different organizations never
/// mix, even with the same name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    /// Organization id (validated by the caller: no `/`).
    pub org: String,
    /// Stream name within the organization, e.g. `user-01JD…`.
    pub name: String,
}

impl StreamId {
    /// A stream id from its parts.
    pub fn new(org: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            org: org.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org, self.name)
    }
}

/// What the writer expects a stream's version to be before this append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have no events yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(Version),
}

/// An event to append. Its position, version and time are assigned by the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id, chosen by the caller (a retry reuses it).
    pub id: Ulid,
    /// Event type name, e.g. `UserCreated`.
    pub event_type: String,
    /// Version of the event type's schema, for upcasting.
    pub schema_version: u32,
    /// Payload (JSON bytes; opaque to the log).
    pub data: Bytes,
    /// Metadata (JSON bytes; opaque to the log).
    pub metadata: Bytes,
}

/// Events for one stream inside a [`Transaction`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAppend {
    /// Target stream.
    pub stream: StreamId,
    /// Optimistic-concurrency check, evaluated against the state before this transaction.
    pub expected: ExpectedVersion,
    /// At least one event.
    pub events: Vec<NewEvent>,
}

/// A claim on, or release of, a unique value (a username, an email, an idempotency key),
/// applied in the same atomic append as the events that justify it. Keys are opaque to the
/// log; callers put the organization inside the key. Applied in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Take `key` for `owner`. Fails the whole transaction with
    /// [`AppendError::ReservationHeld`] if another owner holds it and it has not expired;
    /// claiming again by the same owner succeeds (and replaces `expires_at`, unless the key
    /// is shared: a holder of a shared key keeps it as it is).
    Claim {
        /// The unique value's key.
        key: String,
        /// Who takes it (e.g. a stream name).
        owner: String,
        /// After this time the claim reads as free (`None` = never expires).
        expires_at: Option<Micros>,
    },
    /// Hold `key` together with whoever holds it: take it if it is free, else join its
    /// holders (never fails). A shared key stays held until every holder has released it,
    /// and an exclusive [`Reservation::Claim`] by anyone else fails while it is held — so a
    /// value several owners were allowed to share (usernames while an organization does
    /// not enforce uniqueness) stays protected as long as one of them still has it.
    Share {
        /// The value's key.
        key: String,
        /// Who holds it (too).
        owner: String,
    },
    /// `owner` no longer holds `key`: freed if it was the only holder, still held by the
    /// others if it was shared; nothing happens if `owner` does not hold it.
    Release {
        /// The unique value's key.
        key: String,
        /// The owner expected to hold it.
        owner: String,
    },
}

/// One atomic append: events for one or more distinct streams, plus reservations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    /// Stream appends; each stream at most once; at least one event in total.
    pub appends: Vec<StreamAppend>,
    /// Reservations applied in order, all-or-nothing with the events.
    pub reservations: Vec<Reservation>,
}

/// What a successful append returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Position of the transaction's first event.
    pub first_position: Position,
    /// Position of its last event (events of the transaction are contiguous).
    pub last_position: Position,
    /// The time recorded on every event of the transaction. Times never decrease with position.
    pub time: Micros,
    /// The new version of each stream, in the order of [`Transaction::appends`].
    pub versions: Vec<Version>,
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global position.
    pub position: Position,
    /// Caller-chosen unique id.
    pub id: Ulid,
    /// Stream it belongs to.
    pub stream: StreamId,
    /// Version within the stream.
    pub version: Version,
    /// Event type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// Commit time (microseconds since the epoch); non-decreasing with position.
    pub time: Micros,
    /// Payload bytes.
    pub data: Bytes,
    /// Metadata bytes.
    pub metadata: Bytes,
}

/// The current holder(s) of a reservation key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationInfo {
    /// Who holds it (the first of its holders, if it is shared).
    pub owner: String,
    /// Position of the first event of the transaction that made `owner` its holder.
    pub position: Position,
    /// When the claim lapses, if ever.
    pub expires_at: Option<Micros>,
    /// The other holders of a shared key ([`Reservation::Share`]), in the order they
    /// joined; empty for a key held by one owner.
    pub sharers: Vec<String>,
}

impl ReservationInfo {
    /// Whether `owner` is one of the key's holders.
    pub fn is_held_by(&self, owner: &str) -> bool {
        self.owner == owner || self.sharers.iter().any(|s| s == owner)
    }
}

/// Why an append was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// A stream's version differs from the expected one; nothing was written.
    #[error("stream {stream}: expected version {expected:?}, actual {actual:?}")]
    WrongExpectedVersion {
        /// The stream that failed the check.
        stream: StreamId,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's actual version (`None` = no stream).
        actual: Option<Version>,
    },
    /// A claimed key is held by another owner; nothing was written.
    #[error("reservation {key} is held by {owner}")]
    ReservationHeld {
        /// The contested key.
        key: String,
        /// Its current owner.
        owner: String,
        /// Position where the owner claimed it.
        position: Position,
    },
    /// The transaction is malformed (empty, a stream twice, too large); nothing was written.
    #[error("invalid transaction: {0}")]
    Invalid(String),
    /// The log could not complete the append. The transaction may or may not be durable.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// A failure of the log itself.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error from the underlying storage.
    #[error("log i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes failed verification somewhere other than the tail.
    #[error("log corrupt: {0}")]
    Corrupt(String),
    /// The log was closed.
    #[error("log closed")]
    Closed,
    /// A remote log is unreachable or has no quorum right now.
    #[error("log unavailable: {0}")]
    Unavailable(String),
}
