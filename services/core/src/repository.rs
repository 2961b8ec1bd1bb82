//! The one repository every aggregate goes through (after disintegrate's `DecisionMaker`):
//! load the stream (a cached state at a known version, plus the events since), decide, seal,
//! append with the expected version and the decision's reservations in one atomic
//! transaction, and on a conflict try again.
//!
//! A command over several streams (a batch of users, a task's chunk with its progress, a
//! sign-in that creates its user and starts its session) stages each decision in one
//! [`Work`] and commits them as one transaction.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use roster_domain::time::from_micros;
use roster_domain::{
    Aggregate, Decision, DomainError, EventSet, KeyId, OrgId, Recorded, Unique, UniqueChange,
};
use roster_eventlog::{
    AppendError, Committed, EventLog, ExpectedVersion, Position, Reservation, StreamAppend,
    StreamId, Transaction, Version,
};
use roster_projections::keys::{
    custom_token_reservation, email_reservation, identity_reservation, team_username_reservation,
    username_reservation,
};
use roster_projections::{Codec, EventMeta};
use roster_vault::{BlindIndex, DataKey};

use crate::error::{ApiError, ApiResult, Code};

/// How long a command keeps retrying optimistic-concurrency conflicts before giving up.
pub const CONTENTION_DEADLINE: Duration = Duration::from_secs(10);
/// Default byte budget of the aggregate cache.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// An aggregate's state as loaded from its stream.
#[derive(Clone, Debug)]
pub struct Loaded<A> {
    /// The state (`None`: the stream holds no live aggregate — never created, or ended).
    pub state: Option<A>,
    /// The stream's version (0 = no stream).
    pub version: Version,
    /// Position of the stream's last event (0 = none).
    pub last_position: Position,
    /// Version of the event that began the aggregate's latest incarnation (a user's
    /// `UserCreated`, or after a hard deletion the one that took the id again; 0 = never). Its
    /// history starts there: events of an earlier holder of the id are not its own.
    pub since: Version,
    /// Log position of that event (0 = never).
    pub since_position: Position,
}

impl<A> Default for Loaded<A> {
    fn default() -> Self {
        Self {
            state: None,
            version: 0,
            last_position: 0,
            since: 0,
            since_position: 0,
        }
    }
}

impl<A: Aggregate> Loaded<A> {
    /// Moves on by one event recorded at `at`, at log position `position`.
    pub fn fold(&mut self, event: &A::Event, at: Recorded<'_>, position: Position) {
        let existed = self.state.is_some();
        self.state = A::apply(self.state.take(), event, at);
        if !existed && self.state.is_some() {
            self.since = at.version;
            self.since_position = position;
        }
        self.version = at.version;
        self.last_position = position;
    }

    /// The expected version of an append to this stream.
    pub fn expected(&self) -> ExpectedVersion {
        match self.version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        }
    }
}

/// Where an aggregate's events live.
pub fn stream_of<A: Aggregate>(org: &OrgId, id: &str) -> StreamId {
    StreamId::new(org.as_str(), format!("{}{id}", A::STREAM_PREFIX))
}

/// A point in a stream's history.
#[derive(Clone, Copy, Debug)]
pub enum AsOf {
    /// After this stream version.
    Version(Version),
    /// After this log position.
    Position(Position),
    /// At this time (microseconds since the epoch).
    Time(i64),
}

#[derive(Clone)]
struct Cached {
    weight: u64,
    loaded: Arc<dyn Any + Send + Sync>,
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<String, Cached> for Weight {
    fn weight(&self, key: &String, value: &Cached) -> u64 {
        key.len() as u64 + value.weight
    }
}

/// The repository.
pub struct Repository {
    log: Arc<dyn EventLog>,
    codec: Codec,
    blind: BlindIndex,
    /// States at a known version, so a command reads only the events since then; bounded in
    /// bytes (by the aggregates' size hints).
    cache: quick_cache::sync::Cache<String, Cached, Weight>,
}

impl Repository {
    /// A repository over a log, sealing with `codec`, hashing unique values with `blind`,
    /// caching up to `cache_bytes` of states.
    pub fn new(log: Arc<dyn EventLog>, codec: Codec, blind: BlindIndex, cache_bytes: u64) -> Self {
        let items = (cache_bytes / 1024).max(16) as usize;
        Self {
            log,
            codec,
            blind,
            cache: quick_cache::sync::Cache::with_weighter(items, cache_bytes.max(1), Weight),
        }
    }

    /// The log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// The codec.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// (hits, misses, bytes held, byte budget) of the aggregate cache.
    pub fn cache_stats(&self) -> (u64, u64, u64, u64) {
        (
            self.cache.hits(),
            self.cache.misses(),
            self.cache.weight(),
            self.cache.capacity(),
        )
    }

    fn cached<A: Aggregate>(&self, key: &str) -> Option<Loaded<A>> {
        let cached = self.cache.get(key)?;
        cached.loaded.downcast_ref::<Loaded<A>>().cloned()
    }

    fn remember<A: Aggregate>(&self, key: String, loaded: Loaded<A>) {
        let weight = loaded.state.as_ref().map_or(64, A::size_hint) as u64;
        self.cache.insert(
            key,
            Cached {
                weight,
                loaded: Arc::new(loaded),
            },
        );
    }

    /// Forgets every cached state (after the read models or the log changed under it).
    pub fn forget_all(&self) {
        self.cache.clear();
    }

    /// An aggregate's current state: the cached one plus whatever its stream holds beyond it.
    pub async fn load<A: Aggregate>(&self, org: &OrgId, id: &str) -> ApiResult<Loaded<A>> {
        let stream = stream_of::<A>(org, id);
        let key = stream.to_string();
        let mut loaded = self.cached::<A>(&key).unwrap_or_default();
        let records = self
            .log
            .read_stream(&stream, loaded.version + 1, usize::MAX)
            .await?;
        if records.is_empty() {
            return Ok(loaded);
        }
        for record in &records {
            let decoded = self.codec.decode::<A::Event>(record).await?;
            loaded.fold(
                &decoded.event,
                recorded(org, id, record.time, record.version),
                record.position,
            );
        }
        self.remember(key, loaded.clone());
        Ok(loaded)
    }

    /// An aggregate as of a stream version, or of its last event at or before a position or
    /// a time.
    pub async fn load_as_of<A: Aggregate>(
        &self,
        org: &OrgId,
        id: &str,
        limit: AsOf,
    ) -> ApiResult<Loaded<A>> {
        let stream = stream_of::<A>(org, id);
        let records = self.log.read_stream(&stream, 1, usize::MAX).await?;
        let mut loaded = Loaded::default();
        for record in &records {
            let within = match limit {
                AsOf::Version(v) => record.version <= v,
                AsOf::Position(p) => record.position <= p,
                AsOf::Time(t) => record.time <= t,
            };
            if !within {
                break;
            }
            let decoded = self.codec.decode::<A::Event>(record).await?;
            loaded.fold(
                &decoded.event,
                recorded(org, id, record.time, record.version),
                record.position,
            );
        }
        Ok(loaded)
    }

    /// The reservation key of a unique value in an organization.
    pub fn reservation_key(&self, org: &OrgId, unique: &Unique) -> String {
        match unique {
            Unique::Username(n) => username_reservation(&self.blind, org.as_str(), n),
            Unique::Email(n) => email_reservation(&self.blind, org.as_str(), n),
            Unique::CustomToken(jti) => custom_token_reservation(org.as_str(), jti),
            Unique::TeamUsername { team, name } => {
                team_username_reservation(&self.blind, org.as_str(), team, name)
            }
            Unique::Identity { provider, subject } => {
                identity_reservation(&self.blind, org.as_str(), provider, subject)
            }
        }
    }

    /// Appends what `command` decides for one aggregate at the state `loaded`, optimistic on
    /// its stream (a moved stream is [`CommitError::Conflict`]); returns where it landed and
    /// the state after it, `None` when the decision records nothing. For the background
    /// writers (a task's progress, a webhook's position) whose appends double as a lease.
    pub async fn append<A: Aggregate>(
        &self,
        org: &OrgId,
        id: &str,
        loaded: &Loaded<A>,
        command: &A::Command,
        meta: EventMeta,
    ) -> Result<Option<(Committed, Loaded<A>)>, CommitError> {
        let mut work = self.work(org, meta);
        let staged = work
            .decide(id, loaded, command)
            .await
            .map_err(ApiError::from)?;
        Ok(work.commit().await?.map(|committed| {
            let after = staged.after(org, Some(&committed));
            (committed, after)
        }))
    }

    /// A unit of work in `org`, its events recorded with `meta`.
    pub fn work(&self, org: &OrgId, meta: EventMeta) -> Work<'_> {
        Work {
            repo: self,
            org: org.clone(),
            meta,
            appends: Vec::new(),
            first: None,
            reservations: Vec::new(),
            claims: Vec::new(),
            fresh: Vec::new(),
            erase: Vec::new(),
            settle: Vec::new(),
        }
    }
}

fn recorded<'a>(org: &'a OrgId, id: &'a str, time: i64, version: Version) -> Recorded<'a> {
    Recorded {
        id,
        org: org.as_str(),
        at: from_micros(time),
        version,
    }
}

/// A decision staged in a [`Work`]: the state before and the events that follow it.
#[derive(Debug)]
pub struct Staged<A: Aggregate> {
    /// The aggregate's id.
    pub id: String,
    /// Its state before.
    pub before: Loaded<A>,
    /// The events staged (none: the command changes nothing).
    pub events: Vec<A::Event>,
    /// Which append of the transaction holds them.
    append: Option<usize>,
}

impl<A: Aggregate> Staged<A> {
    /// The state after the committed events (or as it was, if there were none).
    pub fn after(&self, org: &OrgId, committed: Option<&Committed>) -> Loaded<A> {
        let mut loaded = self.before.clone();
        if let (Some(c), Some(i)) = (committed, self.append) {
            let last = c.versions[i];
            let first = last + 1 - self.events.len() as u64;
            for (k, event) in self.events.iter().enumerate() {
                let version = first + k as u64;
                loaded.fold(
                    event,
                    recorded(org, &self.id, c.time, version),
                    c.last_position,
                );
            }
        }
        loaded
    }

    /// The state after the staged events, as if committed now (for checks before the commit).
    pub fn provisional(&self, org: &OrgId) -> Option<A> {
        let mut loaded = self.before.clone();
        let now = chrono::Utc::now().timestamp_micros();
        for (k, event) in self.events.iter().enumerate() {
            let version = self.before.version + k as u64 + 1;
            loaded.fold(event, recorded(org, &self.id, now, version), 0);
        }
        loaded.state
    }
}

type Settle<'r> = Box<dyn FnOnce(&Committed) + Send + 'r>;

/// Decisions over one or more streams, appended as one atomic transaction.
pub struct Work<'r> {
    repo: &'r Repository,
    org: OrgId,
    meta: EventMeta,
    appends: Vec<StreamAppend>,
    /// A claim evaluated before every other (an idempotency key's).
    first: Option<Reservation>,
    reservations: Vec<Reservation>,
    /// Reservation keys claimed, the unique value each stands for, and who claims it.
    claims: Vec<(String, Unique, String)>,
    /// Fresh data keys this work took.
    fresh: Vec<(KeyId, DataKey)>,
    /// Keys to destroy once committed.
    erase: Vec<KeyId>,
    /// What to remember of each stream once committed.
    settle: Vec<Settle<'r>>,
}

/// Why a [`Work`] was not committed.
#[derive(Debug)]
pub enum CommitError {
    /// A stream moved since it was loaded: load again and decide again.
    Conflict {
        /// The stream.
        stream: StreamId,
        /// Its version now.
        actual: Option<Version>,
    },
    /// A claimed value is held by another owner; nothing was written.
    Taken {
        /// The value, if the work claimed it through a decision.
        unique: Option<Unique>,
        /// The aggregates of this work that claimed it.
        claimants: Vec<String>,
        /// The reservation key.
        key: String,
        /// Who holds it.
        owner: String,
        /// Where they took it.
        position: Position,
    },
    /// Anything else.
    Failed(ApiError),
}

impl From<ApiError> for CommitError {
    fn from(e: ApiError) -> Self {
        CommitError::Failed(e)
    }
}

impl<'r> Work<'r> {
    /// The organization.
    pub fn org(&self) -> &OrgId {
        &self.org
    }

    /// Records the next stages' events with `meta`.
    pub fn set_meta(&mut self, meta: EventMeta) {
        self.meta = meta;
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
    }

    /// Decides `command` against `loaded` and stages what it decides.
    pub async fn decide<A: Aggregate>(
        &mut self,
        id: &str,
        loaded: &Loaded<A>,
        command: &A::Command,
    ) -> Result<Staged<A>, Refusal> {
        let decision = A::decide(loaded.state.as_ref(), command).map_err(Refusal::Domain)?;
        self.stage(id, loaded, decision)
            .await
            .map_err(Refusal::Failed)
    }

    /// Stages a decision: its events sealed under the aggregate's data key (a fresh one if it
    /// asks), its unique values as reservations in the same append.
    pub async fn stage<A: Aggregate>(
        &mut self,
        id: &str,
        loaded: &Loaded<A>,
        decision: Decision<A::Event>,
    ) -> ApiResult<Staged<A>> {
        let Decision {
            mut events,
            uniques,
            fresh_key,
        } = decision;
        if events.is_empty() {
            return Ok(Staged {
                id: id.to_owned(),
                before: loaded.clone(),
                events,
                append: None,
            });
        }
        let fresh = match fresh_key {
            true => {
                let key = self.repo.codec.key_pool().take(1).await?.remove(0);
                for event in &mut events {
                    event.assign_key(key.0);
                }
                self.fresh.push(key.clone());
                Some(key)
            }
            false => None,
        };
        let mut staged = Staged {
            id: id.to_owned(),
            before: loaded.clone(),
            events,
            append: None,
        };
        let before_key = loaded.state.as_ref().and_then(A::data_key);
        let after_key = staged.provisional(&self.org).as_ref().and_then(A::data_key);
        let key = match (&fresh, after_key.or(before_key)) {
            (Some((kid, key)), _) => Some((*kid, key.clone())),
            (None, kid) => self.repo.codec.key(kid).await?,
        };
        if staged.events.iter().any(EventSet::erases_key) {
            self.erase.extend(before_key);
        }
        self.erase
            .extend(staged.events.iter().filter_map(EventSet::ended_key));
        for change in uniques {
            let key = self.repo.reservation_key(&self.org, change.unique());
            let owner = id.to_owned();
            self.reservations.push(match change {
                UniqueChange::Claim(unique) => {
                    self.claims.push((key.clone(), unique, owner.clone()));
                    Reservation::Claim {
                        key,
                        owner,
                        expires_at: None,
                    }
                }
                UniqueChange::ClaimUntil(unique, until) => {
                    self.claims.push((key.clone(), unique, owner.clone()));
                    Reservation::Claim {
                        key,
                        owner,
                        expires_at: Some(until),
                    }
                }
                UniqueChange::Share(unique) => {
                    self.claims.push((key.clone(), unique, owner.clone()));
                    Reservation::Share { key, owner }
                }
                UniqueChange::Release(_) => Reservation::Release { key, owner },
            });
        }
        let sealing = key.as_ref().map(|(id, k)| (*id, k));
        let records = staged
            .events
            .iter()
            .map(|e| self.repo.codec.encode(e, &self.meta, sealing))
            .collect();
        staged.append = Some(self.appends.len());
        self.appends.push(StreamAppend {
            stream: stream_of::<A>(&self.org, id),
            expected: loaded.expected(),
            events: records,
        });
        let settle = Staged {
            id: staged.id.clone(),
            before: staged.before.clone(),
            events: staged.events.clone(),
            append: staged.append,
        };
        let (repo, org) = (self.repo, self.org.clone());
        self.settle.push(Box::new(move |committed: &Committed| {
            let after = settle.after(&org, Some(committed));
            repo.remember(stream_of::<A>(&org, &settle.id).to_string(), after);
        }));
        Ok(staged)
    }

    /// Adds a reservation to the transaction (evaluated after the first claim, before the
    /// decisions' own).
    pub fn reserve(&mut self, reservation: Reservation) {
        self.reservations.push(reservation);
    }

    /// Adds a claim evaluated before every other reservation: a concurrent duplicate of this
    /// request must fail on it (and be answered as the first), not on a value both claim.
    pub fn claim_first(&mut self, reservation: Reservation) {
        self.first = Some(reservation);
    }

    /// Appends everything staged as one transaction. `None` if nothing was staged.
    pub async fn commit(self) -> Result<Option<Committed>, CommitError> {
        if self.appends.is_empty() {
            self.repo.codec.key_pool().give_back(self.fresh);
            return Ok(None);
        }
        let mut reservations = self.reservations;
        // Releases first, so a batch may move a value from one of its users to another.
        reservations.sort_by_key(|r| !matches!(r, Reservation::Release { .. }));
        reservations.splice(0..0, self.first);
        let tx = Transaction {
            appends: self.appends,
            reservations,
        };
        let pool = self.repo.codec.key_pool();
        match self.repo.log.append(tx).await {
            Ok(committed) => {
                for settle in self.settle {
                    settle(&committed);
                }
                if !self.erase.is_empty()
                    && let Err(e) = self.repo.codec.keys().destroy(&self.erase).await
                {
                    // The projector destroys them too, before it applies the deletion.
                    tracing::warn!(error = %e, "could not destroy erased data keys yet");
                }
                Ok(Some(committed))
            }
            // Refused: nothing was written, so the fresh keys sealed nothing durable.
            Err(AppendError::WrongExpectedVersion { stream, actual, .. }) => {
                pool.give_back(self.fresh);
                Err(CommitError::Conflict { stream, actual })
            }
            Err(AppendError::ReservationHeld {
                key,
                owner,
                position,
            }) => {
                pool.give_back(self.fresh);
                let unique = self
                    .claims
                    .iter()
                    .find(|(k, _, _)| *k == key)
                    .map(|(_, u, _)| u.clone());
                let claimants = self
                    .claims
                    .iter()
                    .filter(|(k, _, _)| *k == key)
                    .map(|(_, _, o)| o.clone())
                    .collect();
                Err(CommitError::Taken {
                    unique,
                    claimants,
                    key,
                    owner,
                    position,
                })
            }
            Err(AppendError::Invalid(m)) => {
                pool.give_back(self.fresh);
                Err(ApiError::internal(format!("invalid transaction: {m}")).into())
            }
            // Maybe durable: the fresh keys may seal committed events, so they stay.
            Err(AppendError::Log(e)) => Err(ApiError::from(e).into()),
        }
    }
}

/// Why a decision was not staged.
#[derive(Debug)]
pub enum Refusal {
    /// The aggregate refused the command.
    Domain(DomainError),
    /// Something failed on the way (a key store, say).
    Failed(ApiError),
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Domain(e) => e.into(),
            Refusal::Failed(e) => e,
        }
    }
}

/// Retries `attempt` while it reports a conflict (with backoff, for at most
/// [`CONTENTION_DEADLINE`]). Each attempt loads, decides and commits afresh.
pub async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, CommitError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CommitError>>,
{
    let deadline = tokio::time::Instant::now() + CONTENTION_DEADLINE;
    let mut backoff = Duration::from_millis(1);
    loop {
        match attempt().await {
            Err(CommitError::Conflict { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
            Err(CommitError::Conflict { .. }) => {
                return Err(ApiError::new(
                    Code::Conflict,
                    "Too many concurrent changes to the same records; retry.",
                )
                .into());
            }
            other => return other,
        }
    }
}
