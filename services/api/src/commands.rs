//! How a command travels (DESIGN.md): load the user's stream (from a cached aggregate at a
//! known version), `decide`, seal the events, append them with the expected version and the
//! uniqueness reservations in one atomic transaction, then answer with where they landed.
//!
//! A batch is the same with many users in one transaction: every item is decided first, and
//! if any is refused nothing is appended and every refusal is reported by index.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use roster_domain::settings::UniqueUsernames;
use roster_domain::values::{legacy_email_forms, normalize_email, normalize_username};
use roster_domain::{Command, CreateUser, FieldError, OrgId, Profile, User, UserId, apply, decide};
use roster_eventlog::{
    AppendError, ExpectedVersion, Position, Reservation, StreamAppend, StreamId, Transaction,
};
use roster_projections::keys::{
    ReservationKind, email_reservation, reservation_kind, username_reservation,
};
use roster_projections::projector::event_time;
use roster_vault::{DataKey, KeyId};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Ctx;
use crate::state::{AppState, LOCK_STRIPES, Loaded};

/// How long idempotency keys are remembered (API.md §1: at least 24 h).
pub(crate) const IDEMPOTENCY_TTL_MICROS: i64 = 24 * 3600 * 1_000_000;
/// How long a command keeps retrying optimistic-concurrency conflicts before giving up.
const CONTENTION_DEADLINE: Duration = Duration::from_secs(10);
/// How long a command that ends sessions waits for the read models (which the per-request
/// token check reads) before it answers.
pub(crate) const REVOCATION_WAIT: Duration = Duration::from_secs(5);

/// What one item of a command asks for; the data key, if one is needed, is chosen later.
#[derive(Clone, Debug)]
pub enum Intent {
    /// Create a user (`upsert`: or replace it whole if it exists).
    Create {
        /// The fields.
        profile: Profile,
        /// argon2id hash, if a password was given.
        password_hash: Option<String>,
        /// Replace instead of failing when the user exists.
        upsert: bool,
    },
    /// Restore a deleted user (a pruned one needs a fresh key).
    Restore,
    /// Any command that never needs a new key.
    Other(Command),
}

/// One user's part of a command.
#[derive(Clone, Debug)]
pub struct Item {
    /// Target user.
    pub user_id: UserId,
    /// What to do.
    pub intent: Intent,
    /// Prefix for field errors (`users[3]`), for batches.
    pub field_prefix: Option<String>,
}

/// What a command did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Each target user afterwards (`None` if hard-deleted), in item order.
    pub users: Vec<(String, Option<User>)>,
    /// Log position of the command's last event, or of the users' last events if it changed
    /// nothing.
    pub position: Position,
    /// Whether the command wrote an event that ends sessions (it has waited for the read
    /// models to apply it).
    pub ends_sessions: bool,
}

/// A user of a command as it will be after the command's events, offered to an [`Attach`].
pub struct Attaching<'a> {
    /// The user afterwards.
    pub user: Option<&'a User>,
    /// Its stream version afterwards.
    pub version: u64,
    /// Its data key.
    pub key: Option<(KeyId, &'a DataKey)>,
}

/// Appends and reservations that ride in the same atomic transaction as a command's events
/// (the session a custom-token sign-in starts with the user it creates).
#[derive(Default)]
pub struct Attached {
    /// More stream appends.
    pub appends: Vec<StreamAppend>,
    /// More reservations.
    pub reservations: Vec<Reservation>,
}

/// Builds the [`Attached`] part of a command from its users (in item order); called again on
/// every retry.
pub type Attach<'a> = &'a (dyn Fn(&[Attaching<'_>]) -> ApiResult<Attached> + Send + Sync);

impl Intent {
    fn needs_key(&self, state: Option<&User>) -> bool {
        match self {
            Intent::Create { .. } => state.is_none(),
            Intent::Restore => state.is_some_and(|u| u.erased),
            Intent::Other(_) => false,
        }
    }

    fn command(&self, org: &OrgId, user_id: &UserId, key: Option<KeyId>) -> Command {
        let key_id = key.map(|k| k.to_string()).unwrap_or_default();
        match self {
            Intent::Create {
                profile,
                password_hash,
                upsert,
            } => {
                let create = CreateUser {
                    user_id: user_id.clone(),
                    org: org.clone(),
                    key_id,
                    profile: profile.clone(),
                    password_hash: password_hash.clone(),
                };
                if *upsert {
                    Command::Upsert(create)
                } else {
                    Command::Create(create)
                }
            }
            Intent::Restore => Command::Restore { new_key_id: key_id },
            Intent::Other(c) => c.clone(),
        }
    }
}

/// The stream of a user.
pub fn user_stream(org: &OrgId, id: &UserId) -> StreamId {
    StreamId::new(org.as_str(), id.stream_name())
}

pub(crate) fn idempotency_reservation(org: &OrgId, key: &str) -> String {
    idempotency_reservation_in(org.as_str(), key)
}

/// The reservation of an `Idempotency-Key` within a scope ([`Ctx::idempotency_scope`]).
pub(crate) fn idempotency_reservation_in(scope: &str, key: &str) -> String {
    format!(
        "i/{scope}/{}",
        hex::encode(&Sha256::digest(key.as_bytes())[..16])
    )
}

/// A unique value a user holds, and whether its claim is enforced.
struct Unique {
    key: String,
    field: &'static str,
    exclusive: bool,
}

impl AppState {
    fn uniques(&self, org: &OrgId, user: Option<&User>, usernames: UniqueUsernames) -> Vec<Unique> {
        let Some(user) = user else { return vec![] };
        let mut out = Vec::new();
        if let Some(name) = &user.profile.username {
            out.push(Unique {
                key: username_reservation(&self.0.blind, org.as_str(), &normalize_username(name)),
                field: "username",
                exclusive: usernames == UniqueUsernames::App,
            });
        }
        if let Some(email) = &user.profile.email {
            // Also the spellings releases before IDNA comparison reserved (values.rs): an
            // address taken then stays taken, however it is spelled now.
            let forms = std::iter::once(normalize_email(email)).chain(legacy_email_forms(email));
            for normalized in forms {
                out.push(Unique {
                    key: email_reservation(&self.0.blind, org.as_str(), &normalized),
                    field: "email",
                    exclusive: true,
                });
            }
        }
        out
    }

    /// The reservations that take a user's unique values (username, email) from `before` to
    /// `after`: releases of values it no longer holds, claims of new ones (a username claim only
    /// takes a free name when usernames are not enforced). Each comes with the field it guards.
    pub fn reservation_changes(
        &self,
        org: &OrgId,
        owner: &str,
        before: Option<&User>,
        after: Option<&User>,
        usernames: UniqueUsernames,
    ) -> Vec<(Reservation, &'static str)> {
        let before = self.uniques(org, before, usernames);
        let now_held = self.uniques(org, after, usernames);
        let mut out = Vec::new();
        for old in before
            .iter()
            .filter(|b| !now_held.iter().any(|a| a.key == b.key))
        {
            out.push((
                Reservation::Release {
                    key: old.key.clone(),
                    owner: owner.to_owned(),
                },
                old.field,
            ));
        }
        for new in now_held
            .into_iter()
            .filter(|a| !before.iter().any(|b| b.key == a.key))
        {
            let reservation = if new.exclusive {
                Reservation::Claim {
                    key: new.key,
                    owner: owner.to_owned(),
                    expires_at: None,
                }
            } else {
                Reservation::Share {
                    key: new.key,
                    owner: owner.to_owned(),
                }
            };
            out.push((reservation, new.field));
        }
        out
    }

    /// Remembers a user's state after a commit, so the next command reads only newer events.
    pub fn remember(&self, org: &OrgId, id: &UserId, loaded: Loaded) {
        self.0
            .aggregates
            .insert(user_stream(org, id).to_string(), Arc::new(loaded));
    }

    /// Loads a user's state: the cached aggregate plus whatever the stream holds beyond it.
    pub async fn load(&self, org: &OrgId, id: &UserId) -> ApiResult<Loaded> {
        let stream = user_stream(org, id);
        let cache_key = stream.to_string();
        let cached = self.0.aggregates.get(&cache_key);
        let mut loaded = cached.as_deref().cloned().unwrap_or_default();
        let events = self
            .0
            .log
            .read_stream(&stream, loaded.version + 1, usize::MAX)
            .await?;
        if events.is_empty() {
            return Ok(loaded);
        }
        for record in &events {
            loaded.fold(&self.0.codec, record).await?;
        }
        self.0
            .aggregates
            .insert(cache_key, Arc::new(loaded.clone()));
        Ok(loaded)
    }

    /// The user as of a stream version, or of the last event at or before a position or time.
    pub async fn load_as_of(&self, org: &OrgId, id: &UserId, limit: AsOf) -> ApiResult<Loaded> {
        let stream = user_stream(org, id);
        let events = self.0.log.read_stream(&stream, 1, usize::MAX).await?;
        let mut loaded = Loaded::default();
        for record in &events {
            let within = match limit {
                AsOf::Version(v) => record.version <= v,
                AsOf::Position(p) => record.position <= p,
                AsOf::Time(t) => record.time <= t,
            };
            if !within {
                break;
            }
            loaded.fold(&self.0.codec, record).await?;
        }
        Ok(loaded)
    }

    /// The data key sealing a user's personal data (a fresh one if the user is being created).
    pub(crate) async fn data_key(
        &self,
        user: &User,
        fresh: &[(KeyId, DataKey)],
    ) -> ApiResult<Option<(KeyId, DataKey)>> {
        let Some(kid) = user.key_id.as_deref().and_then(|k| k.parse::<KeyId>().ok()) else {
            return Ok(None);
        };
        if let Some((_, key)) = fresh.iter().find(|(id, _)| *id == kid) {
            return Ok(Some((kid, key.clone())));
        }
        Ok(self.0.codec.keys().get(kid).await?.map(|k| (kid, k)))
    }

    /// Runs a command over one or more users. Returns the outcome, or the first response
    /// again if the request's `Idempotency-Key` was seen with the same request before.
    pub async fn execute(&self, ctx: &Ctx, items: Vec<Item>, digest: &str) -> ApiResult<Outcome> {
        self.execute_with(ctx, items, digest, None).await
    }

    /// [`AppState::execute`] with more appends in the same transaction. A command that ends
    /// sessions answers only once the read models have applied it (at most 5 s), so the
    /// sessions' tokens fail from the moment the answer arrives.
    pub async fn execute_with(
        &self,
        ctx: &Ctx,
        items: Vec<Item>,
        digest: &str,
        attach: Option<Attach<'_>>,
    ) -> ApiResult<Outcome> {
        let outcome = self.execute_inner(ctx, items, digest, attach).await?;
        if outcome.ends_sessions && !self.wait_for(outcome.position, REVOCATION_WAIT).await {
            tracing::warn!(
                position = outcome.position,
                "read models are slow to apply a revocation"
            );
        }
        Ok(outcome)
    }

    async fn execute_inner(
        &self,
        ctx: &Ctx,
        items: Vec<Item>,
        digest: &str,
        attach: Option<Attach<'_>>,
    ) -> ApiResult<Outcome> {
        if let Some(outcome) = self.replay_if_seen(ctx, &items, digest).await? {
            return Ok(outcome);
        }
        let mut seen = HashSet::new();
        let duplicates: Vec<FieldError> = items
            .iter()
            .filter(|i| !seen.insert(i.user_id.clone()))
            .map(|i| {
                FieldError::new(
                    field(&i.field_prefix, "id"),
                    "the same user appears twice in this batch",
                )
            })
            .collect();
        if !duplicates.is_empty() {
            return Err(ApiError::invalid(duplicates));
        }
        let _guards = self
            .lock_users(&ctx.org, items.iter().map(|i| &i.user_id))
            .await;
        // A duplicate of a request for the same users may have committed while this one waited
        // for the locks: answer as it did rather than acting (and failing) a second time.
        if let Some(outcome) = self.replay_if_seen(ctx, &items, digest).await? {
            return Ok(outcome);
        }
        let mut spare: Vec<(KeyId, DataKey)> = Vec::new();
        let result = self
            .execute_locked(ctx, &items, digest, &mut spare, attach)
            .await;
        if !spare.is_empty() {
            let ids: Vec<KeyId> = spare.iter().map(|(id, _)| *id).collect();
            if let Err(e) = self.0.codec.keys().destroy(&ids).await {
                tracing::warn!(error = %e, "could not destroy unused data keys");
            }
        }
        result
    }

    /// The first response again, if this request's `Idempotency-Key` was used before.
    async fn replay_if_seen(
        &self,
        ctx: &Ctx,
        items: &[Item],
        digest: &str,
    ) -> ApiResult<Option<Outcome>> {
        let Some(key) = &ctx.idempotency_key else {
            return Ok(None);
        };
        let reservation = idempotency_reservation_in(&ctx.idempotency_scope(), key);
        match self.0.log.reservation(&reservation).await? {
            Some(held) => self
                .replay(ctx, items, &held.owner, held.position, digest)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    /// Takes the in-process locks of these users' stripes, in a fixed order.
    pub(crate) async fn lock_users<'a>(
        &self,
        org: &OrgId,
        ids: impl Iterator<Item = &'a UserId>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = ids
            .map(|id| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (org.as_str(), id.as_str()).hash(&mut h);
                (h.finish() as usize) % LOCK_STRIPES
            })
            .collect();
        // Sorted, deduplicated order: two batches never wait on each other in a cycle.
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.0.user_locks[s].lock().await);
        }
        guards
    }

    async fn execute_locked(
        &self,
        ctx: &Ctx,
        items: &[Item],
        digest: &str,
        spare: &mut Vec<(KeyId, DataKey)>,
        attach: Option<Attach<'_>>,
    ) -> ApiResult<Outcome> {
        let settings = self.models().settings(ctx.org.as_str())?;
        let deadline = tokio::time::Instant::now() + CONTENTION_DEADLINE;
        let mut backoff = Duration::from_millis(1);
        loop {
            let states = futures::future::try_join_all(
                items.iter().map(|i| self.load(&ctx.org, &i.user_id)),
            )
            .await?;
            if let (Some(expected), [only]) = (ctx.if_match, states.as_slice())
                && only.version != expected
            {
                return Err(version_mismatch(expected, only.version));
            }
            let needed = items
                .iter()
                .zip(&states)
                .filter(|(i, s)| i.intent.needs_key(s.user.as_ref()))
                .count();
            if spare.len() < needed {
                spare.extend(self.0.codec.keys().create(needed - spare.len()).await?);
            }
            // Decide every item before acting on any.
            let mut errors = Vec::new();
            let mut only_missing = true;
            let mut only_deleted = true;
            let mut decided = Vec::with_capacity(items.len());
            let mut fresh = spare.iter();
            for (item, state) in items.iter().zip(&states) {
                let key = if item.intent.needs_key(state.user.as_ref()) {
                    fresh.next().map(|(id, _)| *id)
                } else {
                    None
                };
                let command = item.intent.command(&ctx.org, &item.user_id, key);
                match decide(state.user.as_ref(), &command) {
                    Ok(events) => decided.push(events),
                    Err(e) if item.field_prefix.is_none() => return Err(e.into()),
                    Err(e) => {
                        only_missing &= e == roster_domain::DomainError::NotFound;
                        only_deleted &= e == roster_domain::DomainError::UserDeleted;
                        errors.extend(batch_errors(item, e));
                        decided.push(vec![]);
                    }
                }
            }
            if !errors.is_empty() {
                // A batch naming users that do not exist is a 404, like the single command.
                // Likewise a batch refused only because users are deleted is a 409, not a 422.
                return Err(if only_missing {
                    ApiError::not_found("No user with these ids.").with_errors(errors)
                } else if only_deleted {
                    ApiError::new(
                        Code::Conflict,
                        "These users are deleted; restore them before changing them.",
                    )
                    .with_errors(errors)
                } else {
                    ApiError::invalid(errors)
                });
            }
            let now = Utc::now();
            let mut tx = Transaction::default();
            let mut afters = Vec::with_capacity(items.len());
            let mut after_keys = Vec::with_capacity(items.len());
            let mut claim_fields = Vec::new();
            for ((item, state), events) in items.iter().zip(&states).zip(&decided) {
                let after = events
                    .iter()
                    .enumerate()
                    .fold(state.user.clone(), |u, (k, e)| {
                        apply(u, e, now, state.version + k as u64 + 1)
                    });
                if events.is_empty() {
                    let key = match (&attach, after.as_ref()) {
                        (Some(_), Some(u)) => self.data_key(u, spare).await?,
                        _ => None,
                    };
                    after_keys.push(key);
                    afters.push(after);
                    continue;
                }
                let key = match after.as_ref().or(state.user.as_ref()) {
                    Some(u) => self.data_key(u, spare).await?,
                    None => None,
                };
                after_keys.push(key.clone());
                let owner = item.user_id.as_str();
                for (reservation, name) in self.reservation_changes(
                    &ctx.org,
                    owner,
                    state.user.as_ref(),
                    after.as_ref(),
                    settings.enforce_unique_usernames,
                ) {
                    if let Reservation::Claim { key, .. } | Reservation::Share { key, .. } =
                        &reservation
                    {
                        claim_fields.push((key.clone(), field(&item.field_prefix, name), name));
                    }
                    tx.reservations.push(reservation);
                }
                let meta = &ctx.meta;
                tx.appends.push(StreamAppend {
                    stream: user_stream(&ctx.org, &item.user_id),
                    expected: if state.version == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(state.version)
                    },
                    events: events
                        .iter()
                        .map(|e| {
                            self.0
                                .codec
                                .encode(e, meta, key.as_ref().map(|(id, k)| (*id, k)))
                        })
                        .collect(),
                });
                afters.push(after);
            }
            let ends_sessions = decided.iter().flatten().any(|e| e.ends_sessions());
            if let Some(attach) = attach {
                let attaching: Vec<Attaching<'_>> = afters
                    .iter()
                    .zip(&after_keys)
                    .zip(states.iter().zip(&decided))
                    .map(|((user, key), (state, events))| Attaching {
                        user: user.as_ref(),
                        version: state.version + events.len() as u64,
                        key: key.as_ref().map(|(id, k)| (*id, k)),
                    })
                    .collect();
                let attached = attach(&attaching)?;
                tx.appends.extend(attached.appends);
                tx.reservations.extend(attached.reservations);
            }
            if tx.appends.is_empty() {
                // Nothing changes: answer with the users as they are.
                let position = states.iter().map(|s| s.last_position).max().unwrap_or(0);
                return Ok(Outcome {
                    users: items
                        .iter()
                        .zip(states)
                        .map(|(i, s)| (i.user_id.to_string(), s.user))
                        .collect(),
                    position,
                    ends_sessions: false,
                });
            }
            // Release before claim, so a batch may move a value from one of its users to another.
            tx.reservations
                .sort_by_key(|r| !matches!(r, Reservation::Release { .. }));
            // The idempotency key is claimed first: a concurrent duplicate of this request
            // must fail on it (and be answered with this request's outcome), not on a
            // username or email this request is about to claim.
            if let Some(key) = &ctx.idempotency_key {
                tx.reservations.insert(
                    0,
                    Reservation::Claim {
                        key: idempotency_reservation_in(&ctx.idempotency_scope(), key),
                        owner: format!(
                            "{digest}:{}",
                            ctx.meta.correlation_id.as_deref().unwrap_or_default()
                        ),
                        expires_at: Some(now.timestamp_micros() + IDEMPOTENCY_TTL_MICROS),
                    },
                );
            }
            let streams: Vec<StreamId> = tx.appends.iter().map(|a| a.stream.clone()).collect();
            match self.0.log.append(tx).await {
                Ok(committed) => {
                    let used: HashSet<String> = afters
                        .iter()
                        .flatten()
                        .filter_map(|u| u.key_id.clone())
                        .collect();
                    spare.retain(|(id, _)| !used.contains(&id.to_string()));
                    let time = event_time(committed.time);
                    let mut users = Vec::with_capacity(items.len());
                    let mut next_version = committed.versions.iter();
                    for ((item, state), events) in items.iter().zip(states).zip(decided) {
                        let mut loaded = state;
                        if !events.is_empty() {
                            let last = *next_version.next().expect("one version per append");
                            let first = last + 1 - events.len() as u64;
                            loaded.apply_committed(&events, time, first, committed.last_position);
                            self.remember(&ctx.org, &item.user_id, loaded.clone());
                        }
                        users.push((item.user_id.to_string(), loaded.user));
                    }
                    debug_assert!(streams.len() <= committed.versions.len());
                    return Ok(Outcome {
                        users,
                        position: committed.last_position,
                        ends_sessions,
                    });
                }
                Err(AppendError::WrongExpectedVersion { actual, .. }) => {
                    if let Some(expected) = ctx.if_match {
                        return Err(version_mismatch(expected, actual.unwrap_or(0)));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ApiError::new(
                            Code::Conflict,
                            "Too many concurrent changes to these users; retry.",
                        ));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(AppendError::ReservationHeld {
                    key,
                    owner,
                    position,
                }) => {
                    return match reservation_kind(&key) {
                        ReservationKind::Idempotency if ctx.idempotency_key.is_some() => {
                            self.replay(ctx, items, &owner, position, digest).await
                        }
                        // An attached claim of a request that cannot be replayed (sign-in).
                        ReservationKind::Idempotency => {
                            Err(crate::sessions::repeated_credential_request(&owner, digest))
                        }
                        ReservationKind::CustomToken => Err(ApiError::new(
                            Code::Unauthorized,
                            "This token has already been used.",
                        )),
                        kind => {
                            let (code, what) = match kind {
                                ReservationKind::Email => (Code::EmailTaken, "email"),
                                _ => (Code::UsernameTaken, "username"),
                            };
                            let errors: Vec<FieldError> = claim_fields
                                .iter()
                                .filter(|(k, _, _)| *k == key)
                                .map(|(_, f, _)| {
                                    FieldError::new(f.clone(), format!("this {what} is taken"))
                                })
                                .collect();
                            Err(ApiError::new(
                                code,
                                format!("This {what} is already taken in the organization."),
                            )
                            .with_errors(errors))
                        }
                    };
                }
                Err(AppendError::Invalid(m)) => {
                    return Err(ApiError::internal(format!("invalid transaction: {m}")));
                }
                Err(AppendError::Log(e)) => return Err(e.into()),
            }
        }
    }

    /// Answers a repeated idempotent request with what the first one did: each of its users
    /// as of the version that request wrote, or, for a user it left unchanged, as it was then.
    async fn replay(
        &self,
        ctx: &Ctx,
        items: &[Item],
        owner: &str,
        position: Position,
        digest: &str,
    ) -> ApiResult<Outcome> {
        let (first_digest, correlation) = owner.split_once(':').unwrap_or((owner, ""));
        if first_digest != digest {
            return Err(ApiError::new(
                Code::IdempotencyMismatch,
                "This Idempotency-Key was used with a different request.",
            ));
        }
        // The first request may still be committing in the same write group as this one (its
        // claim refused ours before its events became readable): wait until they are.
        let mut head = self.0.log.watch_head();
        let _ = tokio::time::timeout(CONTENTION_DEADLINE, head.wait_for(|h| *h >= position)).await;
        let records = self
            .0
            .log
            .read_all(position.saturating_sub(1), 1000)
            .await?;
        let mut touched: Vec<(UserId, u64)> = Vec::new();
        let mut last = position;
        for record in records {
            let meta: roster_projections::EventMeta =
                serde_json::from_slice(&record.metadata).unwrap_or_default();
            if meta.correlation_id.as_deref() != Some(correlation) {
                break;
            }
            last = record.position;
            let Some(id) = record
                .stream
                .name
                .strip_prefix("user-")
                .and_then(|id| UserId::parse(id).ok())
            else {
                continue;
            };
            match touched.iter_mut().find(|(u, _)| *u == id) {
                Some(entry) => entry.1 = record.version,
                None => touched.push((id, record.version)),
            }
        }
        // Users the first request wrote but this one cannot name: those it created under
        // generated ids (a repeat generates other ids). They come in item order.
        let mut generated = touched
            .iter()
            .filter(|(id, _)| !items.iter().any(|i| i.user_id == *id));
        let mut users = Vec::with_capacity(items.len());
        for item in items {
            let (mut id, limit) = match touched.iter().find(|(id, _)| *id == item.user_id) {
                Some((id, version)) => (id, AsOf::Version(*version)),
                None => (&item.user_id, AsOf::Position(last)),
            };
            let mut loaded = self.load_as_of(&ctx.org, id, limit).await?;
            if loaded.version == 0 {
                // No such user then: this item created one under a generated id.
                if let Some((generated_id, version)) = generated.next() {
                    loaded = self
                        .load_as_of(&ctx.org, generated_id, AsOf::Version(*version))
                        .await?;
                    id = generated_id;
                }
            }
            users.push((id.to_string(), loaded.user));
        }
        Ok(Outcome {
            users,
            position: last,
            ends_sessions: false,
        })
    }
}

/// A point in a user's history.
#[derive(Clone, Copy, Debug)]
pub enum AsOf {
    /// After this stream version.
    Version(u64),
    /// After this log position.
    Position(Position),
    /// At this time (microseconds since the epoch).
    Time(i64),
}

fn field(prefix: &Option<String>, name: &str) -> String {
    match prefix {
        Some(p) => format!("{p}.{name}"),
        None => name.to_owned(),
    }
}

fn batch_errors(item: &Item, e: roster_domain::DomainError) -> Vec<FieldError> {
    let prefix = item.field_prefix.clone().unwrap_or_default();
    match e {
        roster_domain::DomainError::Invalid(errors) => {
            errors.into_iter().map(|f| f.prefixed(&prefix)).collect()
        }
        roster_domain::DomainError::NotFound => {
            vec![FieldError::new(
                field(&item.field_prefix, "id"),
                "no user with this id",
            )]
        }
        other => vec![FieldError::new(prefix, other.to_string())],
    }
}

fn version_mismatch(expected: u64, actual: u64) -> ApiError {
    ApiError::new(
        Code::VersionMismatch,
        format!("If-Match expected version {expected}, but the user is at version {actual}."),
    )
}
