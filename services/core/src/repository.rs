//! The one repository every aggregate goes through (after disintegrate's `DecisionMaker`):
//! load the stream (a cached state at a known version, plus the events since), decide, seal,
//! append with the expected version and the decision's reservations in one atomic
//! transaction, and on a conflict try again.
//!
//! A command over several streams (a batch of users, a task's chunk with its progress, a
//! sign-in that creates its user and starts its session) stages each decision in one
//! [`Work`] and commits them as one transaction.
//!
//! Pipelining: [`Work::submit`] returns once the log has fixed the transaction's place in its
//! order, before it is durable, and remembers each stream's state after it as *unsettled*.
//! A caller that serializes commands on a stream (the user locks) may release its lock then,
//! so that the next command decides on that state ([`Repository::load_latest`]) and its
//! append joins the same group commit; the log refuses it if the one before fails, because it
//! expects the version that one makes. Nothing is answered from an unsettled state: a command
//! that would answer without appending waits for it to settle and decides again.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::Shared;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use roster_domain::time::from_micros;
use roster_domain::{
    Aggregate, Decision, DomainError, EventSet, KeyId, OrgId, Recorded, Unique, UniqueChange,
};
use roster_eventlog::{
    AppendError, Committed, EventLog, ExpectedVersion, Micros, Position, Reservation, StreamAppend,
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
    /// A `Loaded<A>` of the stream's aggregate.
    loaded: Arc<dyn Any + Send + Sync>,
}

impl Cached {
    fn of<A: Aggregate>(loaded: Loaded<A>) -> Self {
        Self {
            weight: loaded.state.as_ref().map_or(64, A::size_hint) as u64,
            loaded: Arc::new(loaded),
        }
    }

    fn get<A: Aggregate>(&self) -> Option<&Loaded<A>> {
        self.loaded.downcast_ref::<Loaded<A>>()
    }
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<String, Cached> for Weight {
    fn weight(&self, key: &String, value: &Cached) -> u64 {
        key.len() as u64 + value.weight
    }
}

/// A handle on an append that is placed in the log's order but not yet durable; resolves
/// once it is settled (durable or failed) and the caches say so.
#[derive(Clone)]
pub struct Unsettled(Shared<oneshot::Receiver<()>>);

impl Unsettled {
    /// Waits until the append has settled.
    pub async fn settled(self) {
        let _ = self.0.await;
    }
}

/// A stream's state after an append that is not yet durable.
struct Inflight {
    /// Which submission made it (a later one replaces it; each removes only its own).
    ticket: u64,
    state: Cached,
    settled: Unsettled,
}

/// What the repository remembers of streams; shared with the tasks that settle appends.
struct Caches {
    /// Durable states at a known version, so a command reads only the events since then;
    /// bounded in bytes (by the aggregates' size hints).
    durable: quick_cache::sync::Cache<String, Cached, Weight>,
    /// The state after the latest submitted, not yet settled append of a stream.
    inflight: Mutex<HashMap<String, Inflight>>,
    tickets: AtomicU64,
}

impl Caches {
    fn durable<A: Aggregate>(&self, key: &str) -> Option<Loaded<A>> {
        self.durable.get(key)?.get::<A>().cloned()
    }

    /// The unsettled state of a stream, unless the durable one has caught up with it.
    fn inflight<A: Aggregate>(&self, key: &str) -> Option<(Loaded<A>, Unsettled)> {
        let (loaded, settled) = {
            let inflight = self.inflight.lock();
            let entry = inflight.get(key)?;
            (entry.state.get::<A>()?.clone(), entry.settled.clone())
        };
        let durable = self.durable.get(key);
        match durable.as_ref().and_then(Cached::get::<A>) {
            Some(d) if d.version >= loaded.version => None,
            _ => Some((loaded, settled)),
        }
    }

    /// Remembers each stream's state after a committed append.
    fn remember(&self, settles: &[Box<dyn Settle>], result: &Result<Committed, AppendError>) {
        if let Ok(committed) = result {
            for s in settles {
                self.durable
                    .insert(s.key().to_owned(), s.durable(committed));
            }
        }
    }

    /// Forgets a stream's unsettled state if `ticket`'s append made it.
    fn settle(&self, key: &str, ticket: u64) {
        let mut inflight = self.inflight.lock();
        if inflight.get(key).is_some_and(|e| e.ticket == ticket) {
            inflight.remove(key);
        }
    }
}

/// The repository.
pub struct Repository {
    log: Arc<dyn EventLog>,
    codec: Codec,
    blind: BlindIndex,
    caches: Arc<Caches>,
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
            caches: Arc::new(Caches {
                durable: quick_cache::sync::Cache::with_weighter(items, cache_bytes.max(1), Weight),
                inflight: Mutex::new(HashMap::new()),
                tickets: AtomicU64::new(0),
            }),
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
        let cache = &self.caches.durable;
        (
            cache.hits(),
            cache.misses(),
            cache.weight(),
            cache.capacity(),
        )
    }

    /// Forgets every cached state (after the read models or the log changed under it).
    pub fn forget_all(&self) {
        self.caches.durable.clear();
        self.caches.inflight.lock().clear();
    }

    /// An aggregate's current durable state: the cached one plus whatever its stream holds
    /// beyond it.
    pub async fn load<A: Aggregate>(&self, org: &OrgId, id: &str) -> ApiResult<Loaded<A>> {
        let stream = stream_of::<A>(org, id);
        let key = stream.to_string();
        let mut loaded = self.caches.durable::<A>(&key).unwrap_or_default();
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
        self.caches.durable.insert(key, Cached::of(loaded.clone()));
        Ok(loaded)
    }

    /// An aggregate's latest state: after the append to its stream submitted last in this
    /// process if that is not settled yet (with a handle on it), else as [`Repository::load`].
    /// Only for a caller that serializes commands on the stream and answers nothing from an
    /// unsettled state (see the module's doc).
    pub async fn load_latest<A: Aggregate>(
        &self,
        org: &OrgId,
        id: &str,
    ) -> ApiResult<(Loaded<A>, Option<Unsettled>)> {
        let key = stream_of::<A>(org, id).to_string();
        match self.caches.inflight::<A>(&key) {
            Some((loaded, settled)) => Ok((loaded, Some(settled))),
            None => Ok((self.load(org, id).await?, None)),
        }
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

    /// The state after the staged events if they are recorded at `time` (their positions
    /// are not known yet: the state keeps the last known one).
    fn at(&self, org: &OrgId, time: Micros) -> Loaded<A> {
        let mut loaded = self.before.clone();
        let position = loaded.last_position;
        for (k, event) in self.events.iter().enumerate() {
            let version = self.before.version + k as u64 + 1;
            loaded.fold(event, recorded(org, &self.id, time, version), position);
        }
        loaded
    }

    /// The state after the staged events, as if committed now (for checks before the commit).
    pub fn provisional(&self, org: &OrgId) -> Option<A> {
        self.at(org, chrono::Utc::now().timestamp_micros()).state
    }
}

/// What a [`Work`] remembers of a stream it staged: the state once its append is placed in
/// the log's order, and once it is durable.
trait Settle: Send {
    /// The stream's cache key.
    fn key(&self) -> &str;
    /// The state after the append if it commits at `time`; `None` if the append begins a new
    /// incarnation of the aggregate, whose start is a position not known until it is durable.
    fn unsettled(&self, time: Micros) -> Option<Cached>;
    /// The state after the committed append.
    fn durable(&self, committed: &Committed) -> Cached;
}

struct StagedStream<A: Aggregate> {
    key: String,
    org: OrgId,
    staged: Staged<A>,
}

impl<A: Aggregate> Settle for StagedStream<A> {
    fn key(&self) -> &str {
        &self.key
    }

    fn unsettled(&self, time: Micros) -> Option<Cached> {
        let after = self.staged.at(&self.org, time);
        (after.since == self.staged.before.since).then(|| Cached::of(after))
    }

    fn durable(&self, committed: &Committed) -> Cached {
        Cached::of(self.staged.after(&self.org, Some(committed)))
    }
}

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
    /// What to remember of each stream once submitted and once committed.
    settle: Vec<Box<dyn Settle>>,
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
        self.settle.push(Box::new(StagedStream {
            key: stream_of::<A>(&self.org, id).to_string(),
            org: self.org.clone(),
            staged: Staged {
                id: staged.id.clone(),
                before: staged.before.clone(),
                events: staged.events.clone(),
                append: staged.append,
            },
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
        match self.hand_over(false).await? {
            Some(submission) => submission.durable().await.map(Some),
            None => Ok(None),
        }
    }

    /// Hands everything staged to the log as one transaction and returns once its place in
    /// the log's order is fixed, each stream's state after it remembered as unsettled (see the
    /// module's doc); [`Submission::durable`] waits for it. `None` if nothing was staged.
    pub async fn submit(self) -> Result<Option<Submission<'r>>, CommitError> {
        self.hand_over(true).await
    }

    /// [`Work::submit`]; without `pipeline` (or when an append begins an incarnation) nothing
    /// is remembered as unsettled and the caller settles the caches as it waits.
    async fn hand_over(self, pipeline: bool) -> Result<Option<Submission<'r>>, CommitError> {
        let repo = self.repo;
        if self.appends.is_empty() {
            repo.codec.key_pool().give_back(self.fresh);
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
        let unsent = Unsent {
            repo,
            fresh: self.fresh,
            claims: self.claims,
            erase: self.erase,
        };
        let submitted = match repo.log.submit(tx).await {
            Ok(submitted) => submitted,
            Err(e) => return Err(unsent.refused(e)),
        };
        let (settles, outcome) = (self.settle, submitted.outcome);
        let unsettled: Option<Vec<Cached>> = match pipeline {
            true => settles
                .iter()
                .map(|s| s.unsettled(submitted.time))
                .collect(),
            false => None,
        };
        let Some(unsettled) = unsettled else {
            let settling = Settling::Inline(outcome, settles);
            return Ok(Some(Submission { unsent, settling }));
        };
        // From here to the spawn nothing awaits: a caller dropped now leaves no unsettled
        // state that nothing settles.
        let caches = repo.caches.clone();
        let ticket = caches.tickets.fetch_add(1, Ordering::Relaxed);
        let (settle, settled) = oneshot::channel();
        let settled = Unsettled(settled.shared());
        {
            let mut inflight = caches.inflight.lock();
            for (s, state) in settles.iter().zip(unsettled) {
                let settled = settled.clone();
                let entry = Inflight {
                    ticket,
                    state,
                    settled,
                };
                inflight.insert(s.key().to_owned(), entry);
            }
        }
        let task = tokio::spawn(async move {
            let result = outcome.await;
            caches.remember(&settles, &result);
            for s in &settles {
                caches.settle(s.key(), ticket);
            }
            drop(settle);
            result
        });
        Ok(Some(Submission {
            unsent,
            settling: Settling::Spawned(task),
        }))
    }
}

/// Who settles the caches once a submitted transaction is durable.
enum Settling {
    /// The caller, as it waits (nothing unsettled was remembered).
    Inline(
        futures::future::BoxFuture<'static, Result<Committed, AppendError>>,
        Vec<Box<dyn Settle>>,
    ),
    /// A task, whether or not the caller still waits (unsettled states were remembered).
    Spawned(tokio::task::JoinHandle<Result<Committed, AppendError>>),
}

/// A transaction placed in the log's order, not yet known to be durable.
pub struct Submission<'r> {
    unsent: Unsent<'r>,
    settling: Settling,
}

impl Submission<'_> {
    /// Whether the next command on these streams may decide now, on the states this one
    /// leaves ([`Repository::load_latest`]); false if it begins an aggregate's incarnation.
    pub fn pipelined(&self) -> bool {
        matches!(self.settling, Settling::Spawned(_))
    }

    /// Waits until the transaction is durable (or refused).
    pub async fn durable(self) -> Result<Committed, CommitError> {
        let result = match self.settling {
            Settling::Inline(outcome, settles) => {
                let result = outcome.await;
                self.unsent.repo.caches.remember(&settles, &result);
                result
            }
            Settling::Spawned(task) => match task.await {
                Ok(result) => result,
                Err(e) => {
                    return Err(ApiError::internal(format!("settling an append: {e}")).into());
                }
            },
        };
        let unsent = self.unsent;
        let committed = match result {
            Ok(committed) => committed,
            Err(e) => return Err(unsent.refused(e)),
        };
        if !unsent.erase.is_empty()
            && let Err(e) = unsent.repo.codec.keys().destroy(&unsent.erase).await
        {
            // The projector destroys them too, before it applies the deletion.
            tracing::warn!(error = %e, "could not destroy erased data keys yet");
        }
        Ok(committed)
    }
}

/// What a transaction took that is given back or reported if it is not committed.
struct Unsent<'r> {
    repo: &'r Repository,
    /// Fresh data keys it took.
    fresh: Vec<(KeyId, DataKey)>,
    /// Reservation keys claimed, the unique value each stands for, and who claims it.
    claims: Vec<(String, Unique, String)>,
    /// Keys to destroy once committed.
    erase: Vec<KeyId>,
}

impl Unsent<'_> {
    /// Why the log refused the transaction; the fresh keys go back to the pool unless it may
    /// be durable after all.
    fn refused(self, error: AppendError) -> CommitError {
        // Refused: nothing was written, so the fresh keys sealed nothing durable. (Maybe
        // durable: they may seal committed events, so they stay.)
        if !matches!(error, AppendError::Log(_)) {
            self.repo.codec.key_pool().give_back(self.fresh);
        }
        match error {
            AppendError::Log(e) => ApiError::from(e).into(),
            AppendError::WrongExpectedVersion { stream, actual, .. } => {
                CommitError::Conflict { stream, actual }
            }
            AppendError::ReservationHeld {
                key,
                owner,
                position,
            } => {
                let mut claims = self.claims.into_iter().filter(|(k, _, _)| *k == key);
                let first = claims.next();
                let unique = first.as_ref().map(|(_, u, _)| u.clone());
                let claimants = first.into_iter().chain(claims).map(|(_, _, o)| o).collect();
                CommitError::Taken {
                    unique,
                    claimants,
                    key,
                    owner,
                    position,
                }
            }
            AppendError::Invalid(m) => {
                ApiError::internal(format!("invalid transaction: {m}")).into()
            }
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
