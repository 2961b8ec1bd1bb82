//! Team commands (docs/teams.md). A membership changes two aggregates in one atomic append: the
//! team's stream (`MemberAdded` / `MemberRemoved`, so the team's version moves with its members)
//! and the user's (`TeamJoined` / `TeamLeft`, where the user's team-level username is claimed
//! or released). Deleting a team ends its memberships a chunk at a time, each chunk one append,
//! the last one with `TeamDeleted`; a pruning or hard deletion of a user ends the user's (the
//! user's decision records `TeamLeft`, [`stage_ended_memberships`] the teams' sides).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use roster_domain::team::{
    AddMember, MemberRemoved, MemberRolesChanged, Membership, Team, TeamCommand,
};
use roster_domain::user::{TeamLeft, UserCommand};
use roster_domain::{OrgId, Unique, User, UserEvent, UserId};
use roster_eventlog::{Committed, Position};

use crate::error::{ApiError, ApiResult, Code};
use crate::repository::{CommitError, Loaded, Refusal, Staged, Work, retrying};
use crate::{Core, Request};

/// Memberships one append of a team's deletion ends.
pub const DELETE_CHUNK: usize = 100;
/// How long a command waits for the read models to have what it reads of them.
const MODELS_WAIT: Duration = Duration::from_secs(5);

/// 404 for a team.
pub fn team_not_found() -> ApiError {
    ApiError::not_found("No team with this id.")
}

/// 404 for a membership.
pub fn membership_not_found() -> ApiError {
    ApiError::not_found("No membership with this id in this team.")
}

/// The answer to a team command: the team after it and where it landed.
pub type TeamOutcome = (Team, Position);

/// Creates a team.
pub async fn create(core: &Core, req: &Request, id: &str, name: String) -> ApiResult<TeamOutcome> {
    let command = TeamCommand::Create { name };
    let outcome = team_command(core, req, id, &command).await?;
    Ok(outcome)
}

/// Renames a team.
pub async fn rename(core: &Core, req: &Request, id: &str, name: String) -> ApiResult<TeamOutcome> {
    team_command(core, req, id, &TeamCommand::Rename(name)).await
}

/// A command to the team alone, optimistic (or at `If-Match`), idempotent.
async fn team_command(
    core: &Core,
    req: &Request,
    id: &str,
    command: &TeamCommand,
) -> ApiResult<TeamOutcome> {
    let repo = core.repo();
    let result = retrying(|| async {
        let loaded = repo.load::<Team>(&req.org, id).await?;
        check_version(req, &loaded)?;
        let mut work = repo.work(&req.org, req.meta.clone());
        let staged = work.decide(id, &loaded, command).await.map_err(refusal)?;
        claim(&mut work, req);
        let committed = commit(work, req).await?;
        finish(core, &req.org, staged, committed).await
    })
    .await;
    match result {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            let position = repeated(req, e)?;
            let loaded = repo
                .load_as_of::<Team>(&req.org, id, crate::repository::AsOf::Position(position))
                .await?;
            let team = loaded.state.ok_or_else(team_not_found)?;
            Ok((team, position))
        }
    }
}

/// Deletes a team: its memberships end a chunk at a time (each chunk one append: the team's
/// `MemberRemoved` and each user's `TeamLeft`), the last chunk with `TeamDeleted`. A crash
/// between chunks leaves a consistent, smaller team; deleting again finishes.
pub async fn delete(core: &Core, req: &Request, id: &str) -> ApiResult<Position> {
    let repo = core.repo();
    let mut first = true;
    loop {
        let step = retrying(|| async {
            let loaded = repo.load::<Team>(&req.org, id).await?;
            let Some(team) = &loaded.state else {
                return Ok(None);
            };
            if first {
                check_version(req, &loaded)?;
            }
            // The read models hold every membership the team's stream has recorded.
            if !core.wait_for(loaded.last_position, MODELS_WAIT).await {
                return Err(lagging().into());
            }
            let members = core
                .models()
                .memberships(req.org.as_str(), id, None, DELETE_CHUNK)
                .map_err(ApiError::from)?;
            let last = members.len() as u64 >= team.total;
            let mut work = repo.work(&req.org, req.meta.clone());
            let mut removed = Vec::with_capacity(members.len());
            // The members' states, read together (as a batch's users are).
            let users = futures::future::try_join_all(
                members
                    .iter()
                    .map(|m| repo.load::<User>(&req.org, &m.user_id)),
            )
            .await?;
            for (m, user) in members.iter().zip(&users) {
                let user_id = m.user_id.as_str();
                let leave = UserCommand::LeaveTeam {
                    team_id: id.to_owned(),
                };
                work.decide(user_id, user, &leave).await.map_err(refusal)?;
                removed.push(MemberRemoved {
                    membership_id: m.id.clone(),
                    user_id: m.user_id.clone(),
                });
            }
            let command = match last {
                true => TeamCommand::Delete(removed),
                false => TeamCommand::Remove(removed),
            };
            work.decide(id, &loaded, &command).await.map_err(refusal)?;
            if last {
                claim(&mut work, req);
            }
            let committed = commit(work, req).await?;
            Ok(Some((last, committed.map(|c| c.last_position))))
        })
        .await;
        match step {
            Ok(None) if first => return Err(team_not_found()),
            Ok(None) => return Ok(repo.log().head()),
            Ok(Some((true, position))) => {
                let position = position.unwrap_or_else(|| repo.log().head());
                core.wait_for(position, MODELS_WAIT).await;
                return Ok(position);
            }
            Ok(Some((false, _))) => first = false,
            Err(e) => return repeated(req, e),
        }
    }
}

/// A membership and where the command that made or changed it landed.
pub type MembershipOutcome = (Membership, Position);

/// Adds a user to a team: the team's `MemberAdded` and the user's `TeamJoined` in one append,
/// the user's team-level username claimed in it (exclusively under `enforce_unique_usernames:
/// team`).
pub async fn join(
    core: &Core,
    req: &Request,
    team_id: &str,
    user_id: &UserId,
    roles: Vec<String>,
) -> ApiResult<MembershipOutcome> {
    let repo = core.repo();
    let usernames = core
        .models()
        .settings(req.org.as_str())?
        .enforce_unique_usernames;
    let membership_id = ulid::Ulid::new().to_string();
    let result = retrying(|| async {
        let team = repo.load::<Team>(&req.org, team_id).await?;
        if team.state.is_none() {
            return Err(team_not_found().into());
        }
        let user = repo.load::<User>(&req.org, user_id.as_str()).await?;
        let mut work = repo.work(&req.org, req.meta.clone());
        let add = TeamCommand::Add(AddMember {
            membership_id: membership_id.clone(),
            user_id: user_id.clone(),
            roles: roles.clone(),
        });
        work.decide(team_id, &team, &add).await.map_err(refusal)?;
        let join = UserCommand::JoinTeam {
            team_id: team_id.to_owned(),
            membership_id: membership_id.clone(),
            usernames,
        };
        work.decide(user_id.as_str(), &user, &join)
            .await
            .map_err(refusal)?;
        claim(&mut work, req);
        let committed = commit(work, req).await?;
        Ok(committed.map(|c| (c.time, c.last_position)))
    })
    .await;
    match result {
        Ok(Some((time, position))) => {
            core.wait_for(position, MODELS_WAIT).await;
            let membership = Membership {
                id: membership_id,
                team_id: team_id.to_owned(),
                user_id: user_id.to_string(),
                roles,
                joined_at: roster_domain::time::from_micros(time),
            };
            Ok((membership, position))
        }
        Ok(None) => Err(ApiError::internal("a join recorded nothing")),
        Err(e) => {
            let position = repeated(req, e)?;
            first_membership(core, req, position).await
        }
    }
}

/// The membership a join recorded at `position` (the answer to a repeated request).
async fn first_membership(
    core: &Core,
    req: &Request,
    position: Position,
) -> ApiResult<MembershipOutcome> {
    let records = core.log().read_all(position.saturating_sub(1), 2).await?;
    for record in records {
        if let Some(roster_projections::AnyEvent::Team(e)) =
            roster_projections::AnyEvent::decode(core.codec(), &record).await?
            && let roster_domain::team::TeamEvent::MemberAdded(m) = e.event
            && record.stream.org == req.org.as_str()
        {
            let team_id = record.stream.name[Team::STREAM_PREFIX.len()..].to_owned();
            let membership = Membership {
                id: m.membership_id,
                team_id,
                user_id: m.user_id,
                roles: m.roles,
                joined_at: roster_domain::time::from_micros(record.time),
            };
            return Ok((membership, record.position));
        }
    }
    Err(ApiError::internal(
        "the first request's membership is not in the log",
    ))
}

use roster_domain::Aggregate as _;

/// The membership `membership_id` of a team, with its user's state (read model first, then
/// checked against the user's stream, which is the truth).
async fn membership_of(
    core: &Core,
    req: &Request,
    team_id: &str,
    membership_id: &str,
) -> Result<(Membership, Loaded<User>), CommitError> {
    let membership = core
        .models()
        .membership(req.org.as_str(), team_id, membership_id)
        .map_err(ApiError::from)?
        .ok_or_else(membership_not_found)?;
    let user = core
        .repo()
        .load::<User>(&req.org, &membership.user_id)
        .await?;
    let current = user
        .state
        .as_ref()
        .and_then(|u| u.public.teams.get(team_id));
    if current.map(String::as_str) != Some(membership_id) {
        return Err(membership_not_found().into());
    }
    Ok((membership, user))
}

/// Changes a membership's roles.
pub async fn change_roles(
    core: &Core,
    req: &Request,
    team_id: &str,
    membership_id: &str,
    roles: Vec<String>,
) -> ApiResult<MembershipOutcome> {
    let repo = core.repo();
    let result = retrying(|| async {
        let team = repo.load::<Team>(&req.org, team_id).await?;
        if team.state.is_none() {
            return Err(team_not_found().into());
        }
        let (mut membership, _) = membership_of(core, req, team_id, membership_id).await?;
        if membership.roles == roles {
            return Ok((membership, team.last_position));
        }
        let mut work = repo.work(&req.org, req.meta.clone());
        let change = TeamCommand::ChangeRoles(MemberRolesChanged {
            membership_id: membership_id.to_owned(),
            user_id: membership.user_id.clone(),
            roles: roles.clone(),
        });
        work.decide(team_id, &team, &change)
            .await
            .map_err(refusal)?;
        claim(&mut work, req);
        let committed = commit(work, req).await?;
        membership.roles.clone_from(&roles);
        Ok((
            membership,
            committed.map_or(team.last_position, |c| c.last_position),
        ))
    })
    .await;
    match result {
        Ok((membership, position)) => {
            core.wait_for(position, MODELS_WAIT).await;
            Ok((membership, position))
        }
        Err(e) => {
            let position = repeated(req, e)?;
            let membership = core
                .models()
                .membership(req.org.as_str(), team_id, membership_id)?
                .ok_or_else(membership_not_found)?;
            Ok((membership, position))
        }
    }
}

/// Ends a membership: the team's `MemberRemoved` and the user's `TeamLeft` in one append.
pub async fn remove(
    core: &Core,
    req: &Request,
    team_id: &str,
    membership_id: &str,
) -> ApiResult<Position> {
    let repo = core.repo();
    let result = retrying(|| async {
        let team = repo.load::<Team>(&req.org, team_id).await?;
        if team.state.is_none() {
            return Err(team_not_found().into());
        }
        let (membership, user) = membership_of(core, req, team_id, membership_id).await?;
        let mut work = repo.work(&req.org, req.meta.clone());
        let leave = UserCommand::LeaveTeam {
            team_id: team_id.to_owned(),
        };
        work.decide(&membership.user_id, &user, &leave)
            .await
            .map_err(refusal)?;
        let removed = TeamCommand::Remove(vec![MemberRemoved {
            membership_id: membership_id.to_owned(),
            user_id: membership.user_id.clone(),
        }]);
        work.decide(team_id, &team, &removed)
            .await
            .map_err(refusal)?;
        claim(&mut work, req);
        let committed = commit(work, req).await?;
        Ok(committed.map_or(team.last_position, |c| c.last_position))
    })
    .await;
    match result {
        Ok(position) => {
            core.wait_for(position, MODELS_WAIT).await;
            Ok(position)
        }
        Err(e) => repeated(req, e),
    }
}

/// Stages the teams' sides of the memberships `users`' staged events end (`TeamLeft` from a
/// pruning or hard deletion): one `Remove` per team, in the same work.
pub async fn stage_ended_memberships<'s>(
    work: &mut Work<'_>,
    repo: &crate::Repository,
    users: impl IntoIterator<Item = &'s Staged<User>>,
) -> Result<(), CommitError> {
    let mut by_team: BTreeMap<String, Vec<MemberRemoved>> = BTreeMap::new();
    for staged in users {
        for event in &staged.events {
            if let UserEvent::TeamLeft(TeamLeft {
                team_id,
                membership_id,
            }) = event
            {
                by_team
                    .entry(team_id.clone())
                    .or_default()
                    .push(MemberRemoved {
                        membership_id: membership_id.clone(),
                        user_id: staged.id.clone(),
                    });
            }
        }
    }
    let org = work.org().clone();
    for (team_id, removed) in by_team {
        let team = repo.load::<Team>(&org, &team_id).await?;
        if team.state.is_none() {
            continue;
        }
        work.decide(&team_id, &team, &TeamCommand::Remove(removed))
            .await
            .map_err(refusal)?;
    }
    Ok(())
}

fn check_version(req: &Request, loaded: &Loaded<Team>) -> ApiResult<()> {
    match req.if_match {
        Some(expected) if expected != loaded.version => Err(ApiError::new(
            Code::VersionMismatch,
            format!(
                "If-Match expected version {expected}, but the team is at version {}.",
                loaded.version
            ),
        )),
        _ => Ok(()),
    }
}

fn claim(work: &mut Work<'_>, req: &Request) {
    if let Some(claim) = &req.idempotency {
        work.claim_first(claim.reservation(Utc::now().timestamp_micros()));
    }
}

/// Commits; a request naming the version it expects is stale on a conflict, not retried.
async fn commit(work: Work<'_>, req: &Request) -> Result<Option<Committed>, CommitError> {
    match work.commit().await {
        Err(CommitError::Conflict { actual, .. }) if req.if_match.is_some() => {
            let expected = req.if_match.unwrap_or_default();
            Err(ApiError::new(
                Code::VersionMismatch,
                format!(
                    "If-Match expected version {expected}, but the version is {}.",
                    actual.unwrap_or(0)
                ),
            )
            .into())
        }
        other => other,
    }
}

/// The team after a one-team command, once the read models have it.
async fn finish(
    core: &Core,
    org: &OrgId,
    staged: Staged<Team>,
    committed: Option<Committed>,
) -> Result<TeamOutcome, CommitError> {
    let after = staged.after(org, committed.as_ref());
    let position = committed.map_or(after.last_position, |c| c.last_position);
    core.wait_for(position, MODELS_WAIT).await;
    let team = after.state.ok_or_else(team_not_found)?;
    Ok((team, position))
}

/// The answer to a command whose append was refused: the position of the first request if
/// this one's `Idempotency-Key` was claimed by the same request (the caller answers as that
/// one did), 422 `idempotency_mismatch` if by another, else the refusal's error.
fn repeated(req: &Request, e: CommitError) -> ApiResult<Position> {
    match e {
        CommitError::Taken {
            key,
            owner,
            position,
            ..
        } if req.idempotency.as_ref().is_some_and(|c| c.key == key) => {
            let seen = crate::IdempotencyClaim::holder(&owner, position);
            match req.idempotency.as_ref().is_some_and(|c| seen.same_as(c)) {
                true => Ok(position),
                false => Err(ApiError::new(
                    Code::IdempotencyMismatch,
                    "This Idempotency-Key was used with a different request.",
                )),
            }
        }
        e => Err(commit_error(e)),
    }
}

fn refusal(r: Refusal) -> CommitError {
    ApiError::from(r).into()
}

fn lagging() -> ApiError {
    let mut e = ApiError::new(
        Code::ProjectionLagging,
        "The read models are behind; retry shortly.",
    );
    e.retry_after = Some(1);
    e
}

/// The error a team or membership command answers with.
pub fn commit_error(e: CommitError) -> ApiError {
    match e {
        CommitError::Taken {
            unique: Some(Unique::TeamUsername { .. }),
            ..
        } => ApiError::new(
            Code::UsernameTaken,
            "A member of this team has the same username.",
        )
        .with_errors(vec![roster_domain::FieldError::new(
            "user_id",
            "a member of this team has the same username",
        )]),
        CommitError::Taken { .. } => ApiError::new(Code::Conflict, "A value is already taken."),
        CommitError::Conflict { .. } => ApiError::new(
            Code::Conflict,
            "Too many concurrent changes to this team; retry.",
        ),
        CommitError::Failed(e) => e,
    }
}
