//! The user commands both front ends call: one user or a batch of them in one atomic
//! transaction (every item is decided first; if any is refused nothing is appended and every
//! refusal is reported by index), idempotent by `Idempotency-Key`.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use roster_domain::settings::UniqueUsernames;
use roster_domain::user::UserCommand;
use roster_domain::{DomainError, FieldError, Unique, User, UserEvent, UserId};
use roster_eventlog::Position;

use crate::error::{ApiError, ApiResult, Code};
use crate::idempotency::Seen;
use crate::repository::{
    AsOf, CommitError, Loaded, Refusal, Repository, Staged, Submission, Unsettled, retrying,
};
use crate::{Core, Request};

/// How long a command that ends sessions waits for the read models (which the per-request
/// token check reads) before it answers.
pub const REVOCATION_WAIT: Duration = Duration::from_secs(5);

/// One user's part of a command.
#[derive(Clone, Debug)]
pub struct Item {
    /// Target user.
    pub user_id: UserId,
    /// What to do.
    pub command: UserCommand,
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

/// Gives a command the organization's username rule where it needs one.
fn with_usernames(command: &UserCommand, usernames: UniqueUsernames) -> UserCommand {
    let mut command = command.clone();
    match &mut command {
        UserCommand::Create(c) | UserCommand::Upsert(c) => c.usernames = usernames,
        UserCommand::Patch(p) => p.usernames = usernames,
        _ => {}
    }
    command
}

/// Runs a command over one or more users. Returns the outcome, or the first response again
/// if the request's `Idempotency-Key` was seen with the same request before. A command that
/// ends sessions answers only once the read models have applied it (at most 5 s), so the
/// sessions' tokens fail from the moment the answer arrives.
pub async fn execute(core: &Core, req: &Request, items: Vec<Item>) -> ApiResult<Outcome> {
    let outcome = execute_inner(core, req, items).await?;
    if outcome.ends_sessions && !core.wait_for(outcome.position, REVOCATION_WAIT).await {
        tracing::warn!(
            position = outcome.position,
            "read models are slow to apply a revocation"
        );
    }
    Ok(outcome)
}

async fn execute_inner(core: &Core, req: &Request, items: Vec<Item>) -> ApiResult<Outcome> {
    if let Some(outcome) = replay_if_seen(core, req, &items).await? {
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
    match retrying(|| locked_try(core, req, &items)).await {
        Ok(outcome) => Ok(outcome),
        Err(CommitError::Taken {
            key,
            owner,
            position,
            unique,
            claimants,
        }) => match &req.idempotency {
            Some(claim) if claim.key == key => {
                let seen = crate::IdempotencyClaim::holder(&owner, position);
                replay_seen(core, req, &items, &seen).await
            }
            _ => Err(taken(unique.as_ref(), &claimants, &items)),
        },
        Err(CommitError::Conflict { .. }) => Err(ApiError::new(
            Code::Conflict,
            "Too many concurrent changes to these users; retry.",
        )),
        Err(CommitError::Failed(e)) => Err(e),
    }
}

/// Which states a try decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    /// After the appends submitted so far, durable or not (see [`crate::repository`]).
    Latest,
    /// Durable, as far as this server's log has seen.
    Durable,
    /// Durable, the log synced first: every append durable before the try is seen.
    Synced,
}

/// One try under the users' locks (released between tries): its outcome. It decides again,
/// without giving up the try, after waiting for appends not yet durable or syncing the log
/// before answering from a state. The locks are released once its append is placed in the
/// log's order, unless it begins a user's incarnation (see [`crate::repository`]).
async fn locked_try(core: &Core, req: &Request, items: &[Item]) -> Result<Outcome, CommitError> {
    let mut view = View::Latest;
    loop {
        let guards = core
            .lock_users(&req.org, items.iter().map(|i| &i.user_id))
            .await;
        // A duplicate of a request for the same users may have committed while this one
        // waited for the locks: answer as it did rather than acting (and failing) a second time.
        if let Some(outcome) = replay_if_seen(core, req, items).await? {
            return Ok(outcome);
        }
        let usernames = core
            .models()
            .settings(req.org.as_str())
            .map_err(ApiError::from)?
            .enforce_unique_usernames;
        match attempt(core, req, items, usernames, view).await? {
            Attempt::Answered(outcome) => return Ok(outcome),
            Attempt::Unsettled(appends) => {
                drop(guards);
                futures::future::join_all(appends.into_iter().map(Unsettled::settled)).await;
                view = View::Durable;
            }
            Attempt::Synced => view = View::Synced,
            Attempt::Submitted(pending) if pending.submission.pipelined() => {
                drop(guards);
                return pending.outcome(req).await;
            }
            Attempt::Submitted(pending) => return pending.outcome(req).await,
        }
    }
}

/// Where one try of a command ended.
enum Attempt<'r> {
    /// It appends nothing: the answer.
    Answered(Outcome),
    /// Its answer would rest on appends that are not durable yet: wait for them, then decide
    /// again on durable states.
    Unsettled(Vec<Unsettled>),
    /// Its answer would rest on states another server may have moved: the log has synced since,
    /// decide again.
    Synced,
    /// Its transaction is placed in the log's order.
    Submitted(Box<Pending<'r>>),
}

/// A command's transaction on its way to being durable.
struct Pending<'r> {
    submission: Submission<'r>,
    /// Each item's user and decision.
    staged: Vec<(String, Staged<User>)>,
    ends_sessions: bool,
}

impl Pending<'_> {
    /// The command's outcome once its transaction is durable.
    async fn outcome(self, req: &Request) -> Result<Outcome, CommitError> {
        let committed = match self.submission.durable().await {
            // A request that named the version it expects is not retried: it is stale.
            Err(CommitError::Conflict { actual, .. }) if req.if_match.is_some() => {
                let expected = req.if_match.unwrap_or_default();
                return Err(version_mismatch(expected, actual.unwrap_or(0)).into());
            }
            result => result?,
        };
        let users = self
            .staged
            .into_iter()
            .map(|(id, s)| (id, s.after(&req.org, Some(&committed)).state))
            .collect();
        Ok(Outcome {
            users,
            position: committed.last_position,
            ends_sessions: self.ends_sessions,
        })
    }
}

/// One try: load, decide every item, submit, on the states `view` says.
async fn attempt<'r>(
    core: &'r Core,
    req: &Request,
    items: &[Item],
    usernames: UniqueUsernames,
    view: View,
) -> Result<Attempt<'r>, CommitError> {
    let repo = core.repo();
    let loads = futures::future::try_join_all(items.iter().map(|i| async move {
        match view {
            View::Latest => repo.load_latest::<User>(&req.org, i.user_id.as_str()).await,
            _ => Ok((repo.load::<User>(&req.org, i.user_id.as_str()).await?, None)),
        }
    }))
    .await?;
    let (states, unsettled): (Vec<Loaded<User>>, Vec<Option<Unsettled>>) =
        loads.into_iter().unzip();
    if let (Some(expected), [only]) = (req.if_match, states.as_slice())
        && only.version != expected
    {
        if let Some(first) = before_answering(repo, view, &unsettled).await? {
            return Ok(first);
        }
        return Err(version_mismatch(expected, only.version).into());
    }
    let mut work = repo.work(&req.org, req.meta.clone());
    let mut staged = Vec::with_capacity(items.len());
    let mut refusals = Vec::new();
    for (item, loaded) in items.iter().zip(&states) {
        let command = with_usernames(&item.command, usernames);
        match work.decide(item.user_id.as_str(), loaded, &command).await {
            Ok(s) => staged.push(s),
            Err(Refusal::Domain(e)) if item.field_prefix.is_none() => {
                refusals.push((item, e));
                break;
            }
            Err(Refusal::Domain(e)) => refusals.push((item, e)),
            Err(Refusal::Failed(e)) => return Err(e.into()),
        }
    }
    // A refusal, or an item the command leaves as it is, is answered from its state.
    if (!refusals.is_empty() || staged.iter().any(|s| s.events.is_empty()))
        && let Some(first) = before_answering(repo, view, &unsettled).await?
    {
        return Ok(first);
    }
    match refusals.as_slice() {
        [] => {}
        [(item, e)] if item.field_prefix.is_none() => return Err(ApiError::from(e.clone()).into()),
        _ => return Err(batch_refused(refusals).into()),
    }
    crate::teams::stage_ended_memberships(&mut work, repo, &staged).await?;
    if let Some(claim) = &req.idempotency {
        work.claim_first(claim.reservation(Utc::now().timestamp_micros()));
    }
    let ends_sessions = staged
        .iter()
        .flat_map(|s: &Staged<User>| &s.events)
        .any(UserEvent::ends_sessions);
    let Some(submission) = work.submit().await? else {
        // Nothing changes: answer with the users as they are.
        let users = items
            .iter()
            .zip(states.iter())
            .map(|(item, s)| (item.user_id.to_string(), s.state.clone()))
            .collect();
        let position = states.iter().map(|s| s.last_position).max().unwrap_or(0);
        return Ok(Attempt::Answered(Outcome {
            users,
            position,
            ends_sessions: false,
        }));
    };
    let staged = items
        .iter()
        .map(|i| i.user_id.to_string())
        .zip(staged)
        .collect();
    Ok(Attempt::Submitted(Box::new(Pending {
        submission,
        staged,
        ends_sessions,
    })))
}

/// What a try that would answer from the states it read must do first: wait for appends not
/// yet durable, or sync the log once (another server may have moved them); `None`: answer.
async fn before_answering<'r>(
    repo: &Repository,
    view: View,
    unsettled: &[Option<Unsettled>],
) -> Result<Option<Attempt<'r>>, CommitError> {
    let waiting: Vec<Unsettled> = unsettled.iter().flatten().cloned().collect();
    if !waiting.is_empty() {
        return Ok(Some(Attempt::Unsettled(waiting)));
    }
    if view != View::Synced && repo.log().sync().await.map_err(ApiError::from)? {
        return Ok(Some(Attempt::Synced));
    }
    Ok(None)
}

/// The refusal of a batch: every item's problems; a batch naming only users that do not
/// exist is a 404 like the single command, one refused only because users are deleted a 409.
fn batch_refused(refusals: Vec<(&Item, DomainError)>) -> ApiError {
    let only_missing = refusals.iter().all(|(_, e)| *e == DomainError::NotFound);
    let only_deleted = refusals.iter().all(|(_, e)| *e == DomainError::UserDeleted);
    let errors: Vec<FieldError> = refusals
        .into_iter()
        .flat_map(|(item, e)| batch_errors(item, e))
        .collect();
    if only_missing {
        ApiError::not_found("No user with these ids.").with_errors(errors)
    } else if only_deleted {
        ApiError::new(
            Code::Conflict,
            "These users are deleted; restore them before changing them.",
        )
        .with_errors(errors)
    } else {
        ApiError::invalid(errors)
    }
}

/// 409 for a username or email another user holds (or 401 for a used custom token), naming
/// the items that claimed it.
fn taken(unique: Option<&Unique>, claimants: &[String], items: &[Item]) -> ApiError {
    let (code, what) = match unique {
        Some(Unique::Email(_)) => (Code::EmailTaken, "email"),
        Some(Unique::Identity { .. }) => (Code::IdentityTaken, "identity"),
        Some(Unique::TeamUsername { .. }) => {
            return ApiError::new(
                Code::UsernameTaken,
                "A member of one of the user's teams has this username.",
            )
            .with_errors(
                items
                    .iter()
                    .filter(|i| claimants.iter().any(|c| c == i.user_id.as_str()))
                    .map(|i| {
                        FieldError::new(
                            field(&i.field_prefix, "username"),
                            "a member of one of this user's teams has this username",
                        )
                    })
                    .collect(),
            );
        }
        Some(Unique::CustomToken(_)) => {
            return ApiError::new(Code::Unauthorized, "This token has already been used.");
        }
        _ => (Code::UsernameTaken, "username"),
    };
    let errors = items
        .iter()
        .filter(|i| claimants.iter().any(|c| c == i.user_id.as_str()))
        .map(|i| {
            FieldError::new(
                field(&i.field_prefix, what),
                format!("this {what} is taken"),
            )
        })
        .collect();
    ApiError::new(
        code,
        format!("This {what} is already taken in the organization."),
    )
    .with_errors(errors)
}

/// The first response again, if this request's `Idempotency-Key` was used before.
async fn replay_if_seen(core: &Core, req: &Request, items: &[Item]) -> ApiResult<Option<Outcome>> {
    let Some(claim) = &req.idempotency else {
        return Ok(None);
    };
    match claim.seen(core.log().as_ref()).await? {
        Some(seen) => replay_seen(core, req, items, &seen).await.map(Some),
        None => Ok(None),
    }
}

/// Answers a repeated idempotent request with what the first one did: each of its users as
/// of the version that request wrote, or, for a user it left unchanged, as it was then.
async fn replay_seen(
    core: &Core,
    req: &Request,
    items: &[Item],
    seen: &Seen,
) -> ApiResult<Outcome> {
    let same = req.idempotency.as_ref().is_some_and(|c| seen.same_as(c));
    if !same {
        return Err(ApiError::new(
            Code::IdempotencyMismatch,
            "This Idempotency-Key was used with a different request.",
        ));
    }
    // The first request may still be committing in the same write group as this one (its
    // claim refused ours before its events became readable): wait until they are.
    let mut head = core.log().watch_head();
    let _ = tokio::time::timeout(
        crate::repository::CONTENTION_DEADLINE,
        head.wait_for(|h| *h >= seen.position),
    )
    .await;
    let records = core
        .log()
        .read_all(seen.position.saturating_sub(1), 1000)
        .await?;
    let mut touched: Vec<(UserId, u64)> = Vec::new();
    let mut last = seen.position;
    for record in records {
        let Some(decoded) = roster_projections::AnyEvent::decode(core.codec(), &record).await?
        else {
            continue;
        };
        if decoded.meta().correlation_id.as_deref() != Some(seen.request.correlation.as_str()) {
            break;
        }
        last = record.position;
        let Some(id) = roster_projections::projector::user_of_stream(&record.stream.name)
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
        let mut loaded: Loaded<User> = core.repo().load_as_of(&req.org, id.as_str(), limit).await?;
        if loaded.version == 0 {
            // No such user then: this item created one under a generated id.
            if let Some((generated_id, version)) = generated.next() {
                loaded = core
                    .repo()
                    .load_as_of(&req.org, generated_id.as_str(), AsOf::Version(*version))
                    .await?;
                id = generated_id;
            }
        }
        users.push((id.to_string(), loaded.state));
    }
    Ok(Outcome {
        users,
        position: last,
        ends_sessions: false,
    })
}

fn field(prefix: &Option<String>, name: &str) -> String {
    match prefix {
        Some(p) => format!("{p}.{name}"),
        None => name.to_owned(),
    }
}

fn batch_errors(item: &Item, e: DomainError) -> Vec<FieldError> {
    let prefix = item.field_prefix.clone().unwrap_or_default();
    match e {
        DomainError::Invalid(errors) => errors.into_iter().map(|f| f.prefixed(&prefix)).collect(),
        DomainError::NotFound => {
            vec![FieldError::new(
                field(&item.field_prefix, "id"),
                "no user with this id",
            )]
        }
        other => vec![FieldError::new(prefix, other.to_string())],
    }
}

/// 412 for a stale `If-Match`.
pub fn version_mismatch(expected: u64, actual: u64) -> ApiError {
    ApiError::new(
        Code::VersionMismatch,
        format!("If-Match expected version {expected}, but the user is at version {actual}."),
    )
}

/// The id of the user holding `identity` in `org`, from the log's reservation (`None`: nobody).
pub async fn identity_holder(
    core: &Core,
    org: &roster_domain::OrgId,
    identity: &roster_domain::user::Identity,
) -> ApiResult<Option<String>> {
    let unique = roster_domain::user::identity_unique(identity);
    let key = core.repo().reservation_key(org, &unique);
    Ok(core.log().reservation(&key).await?.map(|r| r.owner))
}
