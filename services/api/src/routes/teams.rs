//! `/v1/teams` and memberships (docs/teams.md): commands through `roster_core::teams`, queries
//! from the teams read models; `GET /v1/teams/{id}?as_of=` and `/events` straight from the log.

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, patch_with, post_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use roster_core::teams::{self, membership_not_found, team_not_found};
use roster_domain::team::{MAX_NAME_CHARS, MAX_ROLE_CHARS, MAX_ROLES, Membership, Team};
use roster_domain::{FieldError, UserId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::events::{EventResource, render};
use crate::extract::{Ctx, Json, QueryParams, query_params};
use crate::resource::{etag, write_response};
use crate::routes::common::{
    OperationDoc, decode_cursor, encode_cursor, parse_as_of, parse_user_id,
};
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/teams",
            post_with(create, |op| {
                op.doc("createTeam", "teams", "Create a team")
                    .describe(
                        "`id` follows the rules of user ids (generated if omitted or \
                         `unique()`); the id of a deleted team may be taken again.",
                    )
                    .written::<TeamResource>(201, "The team.")
                    .errors(&[409])
            })
            .get_with(list, |op| {
                op.doc("listTeams", "teams", "List teams")
                    .describe("In id order; `search` matches a prefix of the id or of any word of the name, case-insensitively.")
                    .query::<ListTeamsQuery>()
                    .json::<TeamPage>(200, "A page of teams.")
            }),
        )
        .api_route(
            "/v1/teams/{team_id}",
            get_with(show, |op| {
                op.doc("getTeam", "teams", "Get a team")
                    .describe("With `as_of`, the team as it was at that log position or time.")
                    .query::<GetTeamQuery>()
                    .json::<TeamResource>(200, "The team.")
                    .errors(&[404])
            })
            .patch_with(rename, |op| {
                op.doc("updateTeam", "teams", "Rename a team")
                    .describe("Accepts `If-Match` with the team's version.")
                    .written::<TeamResource>(200, "The team after the change.")
                    .errors(&[404, 412])
            })
            .delete_with(delete, |op| {
                op.doc("deleteTeam", "teams", "Delete a team")
                    .describe(
                        "Its memberships end (100 per append, the last with the deletion); \
                         the members' team-level usernames are released.",
                    )
                    .written::<DeletedTeam>(200, "Deleted.")
                    .errors(&[404, 412])
            }),
        )
        .api_route(
            "/v1/teams/{team_id}/events",
            get_with(events, |op| {
                op.doc("getTeamEvents", "teams", "A team's events")
                    .describe("In stream order, as `/v1/events` shows them.")
                    .query::<TeamEventsQuery>()
                    .json::<TeamEventPage>(200, "A page of the team's events.")
                    .errors(&[404])
            }),
        )
        .api_route(
            "/v1/teams/{team_id}/memberships",
            post_with(join, |op| {
                op.doc("createMembership", "teams", "Add a user to a team")
                    .describe(
                        "With `enforce_unique_usernames: team`, refused with `username_taken` \
                         when a member of the team has the same normalized username.",
                    )
                    .written::<MembershipResource>(201, "The membership.")
                    .errors(&[404, 409])
            })
            .get_with(memberships, |op| {
                op.doc("listMemberships", "teams", "List a team's memberships")
                    .describe("In the order they began.")
                    .query::<MembershipsQuery>()
                    .json::<MembershipPage>(200, "A page of memberships.")
                    .errors(&[404])
            }),
        )
        .api_route(
            "/v1/teams/{team_id}/memberships/{membership_id}",
            patch_with(change_roles, |op| {
                op.doc("updateMembership", "teams", "Change a membership's roles")
                    .written::<MembershipResource>(200, "The membership.")
                    .errors(&[404])
            })
            .delete_with(remove, |op| {
                op.doc("deleteMembership", "teams", "End a membership")
                    .written::<DeletedMembership>(200, "Ended.")
                    .errors(&[404])
            }),
        )
        .api_route(
            "/v1/users/{id}/memberships",
            get_with(user_memberships, |op| {
                op.doc("listUserMemberships", "teams", "A user's memberships")
                    .describe("Every team the user is in, by team id.")
                    .json::<UserMemberships>(200, "The memberships.")
                    .errors(&[404])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<CreateTeam>();
    out.add::<UpdateTeam>();
    out.add::<CreateMembership>();
    out.add::<UpdateMembership>();
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<TeamResource>();
    out.add::<TeamPage>();
    out.add::<MembershipResource>();
    out.add::<MembershipPage>();
    out.add::<UserMemberships>();
}

/// `POST /v1/teams`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTeam {
    /// 1–36 of `a-z A-Z 0-9 . - _`, not starting with `.`, `-` or `_`; omitted or
    /// `unique()`: a generated ULID.
    id: Option<String>,
    /// 1–128 characters, no control characters.
    #[schemars(length(min = 1, max = 128))]
    name: String,
}

/// `PATCH /v1/teams/{team_id}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateTeam {
    /// The new name.
    #[schemars(length(min = 1, max = 128))]
    name: String,
}

/// `POST /v1/teams/{team_id}/memberships`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateMembership {
    /// The user to add.
    user_id: String,
    /// At most 20 roles of 1–64 characters without whitespace (default none).
    #[serde(default)]
    #[schemars(length(max = 20))]
    roles: Vec<String>,
}

/// `PATCH /v1/teams/{team_id}/memberships/{membership_id}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateMembership {
    /// The roles now.
    #[schemars(length(max = 20))]
    roles: Vec<String>,
}

query_params! {
    /// Query of `GET /v1/teams`.
    pub(crate) struct ListTeamsQuery {
        /// A prefix of the id or of a word of the name (≤ 128 characters).
        #[schemars(length(max = 128))]
        search: Option<String>,
        /// Page size, 1 to 100 (default 25).
        #[schemars(range(min = 1, max = 100))]
        limit: Option<u32>,
        /// A cursor from `next_cursor`.
        #[schemars(pattern(crate::extract::CURSOR_PATTERN))]
        cursor: Option<String>,
    }
}

query_params! {
    /// Query of `GET /v1/teams/{team_id}`.
    pub(crate) struct GetTeamQuery {
        /// A log position (a number) or an RFC 3339 time: the team as it was then.
        #[schemars(pattern(crate::extract::AS_OF_PATTERN))]
        as_of: Option<String>,
    }
}

query_params! {
    /// Query of `GET /v1/teams/{team_id}/memberships`.
    pub(crate) struct MembershipsQuery {
        /// Page size, 1 to 100 (default 25).
        #[schemars(range(min = 1, max = 100))]
        limit: Option<u32>,
        /// A cursor from `next_cursor`.
        #[schemars(pattern(crate::extract::CURSOR_PATTERN))]
        cursor: Option<String>,
    }
}

query_params! {
    /// Query of `GET /v1/teams/{team_id}/events`.
    pub(crate) struct TeamEventsQuery {
        /// A stream version: events after it (default 0, from the start).
        after: Option<u64>,
        /// Page size, 1 to 1000 (default 100).
        #[schemars(range(min = 1, max = 1000))]
        limit: Option<u32>,
    }
}

/// A team as the API shows it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Team")]
pub(crate) struct TeamResource {
    /// Its id.
    id: String,
    /// Its name.
    name: String,
    /// How many members it has.
    total: u64,
    /// When it was created.
    created_at: DateTime<Utc>,
    /// When its name or members last changed.
    updated_at: DateTime<Utc>,
    /// Its stream version (as in the ETag).
    version: u64,
    /// Log position of the write that produced this response (writes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
}

impl TeamResource {
    fn new(team: Team, position: Option<u64>) -> Self {
        Self {
            id: team.id,
            name: team.name,
            total: team.total,
            created_at: team.created_at,
            updated_at: team.updated_at,
            version: team.version,
            position,
        }
    }
}

/// A page of teams.
#[derive(Serialize, JsonSchema)]
pub(crate) struct TeamPage {
    /// The teams, in id order.
    teams: Vec<TeamResource>,
    /// Pass as `cursor` for the next page.
    next_cursor: Option<String>,
    /// Every match, over all pages.
    total: u64,
}

/// A membership as the API shows it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Membership")]
pub(crate) struct MembershipResource {
    /// Its id.
    id: String,
    /// The team.
    team_id: String,
    /// The member.
    user_id: String,
    /// Its roles in the team.
    roles: Vec<String>,
    /// When it began.
    joined_at: DateTime<Utc>,
    /// Log position of the write that produced this response (writes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
}

impl MembershipResource {
    fn new(m: Membership, position: Option<u64>) -> Self {
        Self {
            id: m.id,
            team_id: m.team_id,
            user_id: m.user_id,
            roles: m.roles,
            joined_at: m.joined_at,
            position,
        }
    }
}

/// A page of a team's memberships.
#[derive(Serialize, JsonSchema)]
pub(crate) struct MembershipPage {
    /// The memberships, in the order they began.
    memberships: Vec<MembershipResource>,
    /// Pass as `cursor` for the next page.
    next_cursor: Option<String>,
    /// How many members the team has.
    total: u64,
}

/// A user's memberships.
#[derive(Serialize, JsonSchema)]
pub(crate) struct UserMemberships {
    /// By team id.
    memberships: Vec<MembershipResource>,
    /// How many.
    total: u64,
}

/// A page of a team's events.
#[derive(Serialize, JsonSchema)]
pub(crate) struct TeamEventPage {
    /// The events, in stream order.
    events: Vec<EventResource>,
}

/// The answer to a team's deletion.
#[derive(Serialize, JsonSchema)]
pub(crate) struct DeletedTeam {
    /// The team's id.
    deleted: String,
    /// Log position of the deletion.
    position: u64,
}

/// The answer to a membership's end.
#[derive(Serialize, JsonSchema)]
pub(crate) struct DeletedMembership {
    /// The membership's id.
    deleted: String,
    /// Log position of the change.
    position: u64,
}

fn checked_name(name: &str) -> ApiResult<String> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            format!(
                "must be 1 to {MAX_NAME_CHARS} characters, not blank, without control characters"
            ),
        ));
    }
    Ok(name.to_owned())
}

fn checked_roles(roles: Vec<String>) -> ApiResult<Vec<String>> {
    if roles.len() > MAX_ROLES {
        return Err(ApiError::invalid_field(
            "roles",
            format!("at most {MAX_ROLES} roles"),
        ));
    }
    let errors: Vec<FieldError> = roles
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.is_empty()
                || r.chars().count() > MAX_ROLE_CHARS
                || r.chars().any(|c| c.is_whitespace() || c.is_control())
        })
        .map(|(i, _)| {
            FieldError::new(
                format!("roles[{i}]"),
                format!("must be 1 to {MAX_ROLE_CHARS} characters without whitespace"),
            )
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for r in roles {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

/// A team id from a path: one that cannot exist is simply not found.
fn team_id(id: &str) -> ApiResult<String> {
    UserId::parse(id)
        .map(|id| id.to_string())
        .map_err(|_| team_not_found())
}

fn team_response(status: StatusCode, team: Team, position: Option<u64>) -> Response {
    let version = team.version;
    let mut response = match position {
        Some(p) => write_response(status, TeamResource::new(team, Some(p)), p),
        None => (status, axum::Json(TeamResource::new(team, None))).into_response(),
    };
    etag(response.headers_mut(), version);
    response
}

async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<CreateTeam>,
) -> ApiResult<Response> {
    let req = app.request(&ctx, Some(&body.digest));
    let body = body.value;
    let id = match body.id.as_deref() {
        None => UserId::generate(),
        Some(id) => UserId::parse(id).map_err(|m| ApiError::invalid_field("id", m))?,
    };
    let name = checked_name(&body.name)?;
    let (team, position) = teams::create(app.core(), &req, id.as_str(), name).await?;
    Ok(team_response(StatusCode::CREATED, team, Some(position)))
}

async fn list(State(app): State<AppState>, ctx: Ctx, query: QueryParams) -> ApiResult<Response> {
    query.only(ListTeamsQuery::NAMES)?;
    let search = query.get("search").map(str::to_lowercase);
    if search.as_ref().is_some_and(|s| s.chars().count() > 128) {
        return Err(ApiError::invalid_field(
            "search",
            "must be at most 128 characters",
        ));
    }
    let limit = query.number("limit", 1, 100)?.unwrap_or(25) as usize;
    let cursor = query
        .get("cursor")
        .map(|c| decode_cursor::<String>('t', c))
        .transpose()?;
    let keep = |team: &Team| match search.as_deref().map(str::trim) {
        None | Some("") => true,
        Some(s) => {
            team.id.to_lowercase().starts_with(s)
                || team.name.to_lowercase().starts_with(s)
                || team
                    .name
                    .split_whitespace()
                    .any(|w| w.to_lowercase().starts_with(s))
        }
    };
    let (page, total) = app
        .models()
        .teams(ctx.org.as_str(), cursor.as_deref(), limit + 1, keep)?;
    let more = page.len() > limit;
    let teams: Vec<TeamResource> = page
        .into_iter()
        .take(limit)
        .map(|t| TeamResource::new(t, None))
        .collect();
    let next_cursor = teams
        .last()
        .filter(|_| more)
        .map(|t| encode_cursor('t', &t.id));
    Ok(axum::Json(TeamPage {
        teams,
        next_cursor,
        total,
    })
    .into_response())
}

async fn show(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(GetTeamQuery::NAMES)?;
    let id = team_id(&id)?;
    let team = match query.get("as_of") {
        Some(as_of) => {
            let limit = parse_as_of(as_of)?;
            let then = app.core().repo().load_as_of::<Team>(&ctx.org, &id, limit);
            then.await?.state
        }
        None => app.models().team(ctx.org.as_str(), &id)?,
    };
    let team = team.ok_or_else(team_not_found)?;
    Ok(team_response(StatusCode::OK, team, None))
}

async fn rename(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<UpdateTeam>,
) -> ApiResult<Response> {
    let id = team_id(&id)?;
    let req = app.request(&ctx, Some(&body.digest));
    let name = checked_name(&body.value.name)?;
    let (team, position) = teams::rename(app.core(), &req, &id, name).await?;
    Ok(team_response(StatusCode::OK, team, Some(position)))
}

async fn delete(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = team_id(&id)?;
    let req = app.request(&ctx, None);
    let position = teams::delete(app.core(), &req, &id).await?;
    Ok(write_response(
        StatusCode::OK,
        DeletedTeam {
            deleted: id,
            position,
        },
        position,
    ))
}

async fn events(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(TeamEventsQuery::NAMES)?;
    let id = team_id(&id)?;
    let after = query.number("after", 0, u64::MAX)?.unwrap_or(0);
    let limit = query.number("limit", 1, 1000)?.unwrap_or(100) as usize;
    let stream = roster_core::repository::stream_of::<Team>(&ctx.org, &id);
    let records = app
        .log()
        .read_stream(&stream, after.saturating_add(1), limit)
        .await?;
    if records.is_empty() && after == 0 {
        return Err(team_not_found());
    }
    let mut events = Vec::with_capacity(records.len());
    for record in &records {
        events.push(render(app.codec(), record).await?);
    }
    Ok(axum::Json(TeamEventPage { events }).into_response())
}

async fn join(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<CreateMembership>,
) -> ApiResult<Response> {
    let team = team_id(&id)?;
    let req = app.request(&ctx, Some(&body.digest));
    let body = body.value;
    let user_id =
        UserId::parse(&body.user_id).map_err(|_| ApiError::not_found("No user with this id."))?;
    let roles = checked_roles(body.roles)?;
    let (membership, position) = teams::join(app.core(), &req, &team, &user_id, roles).await?;
    Ok(write_response(
        StatusCode::CREATED,
        MembershipResource::new(membership, Some(position)),
        position,
    ))
}

async fn memberships(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(MembershipsQuery::NAMES)?;
    let id = team_id(&id)?;
    let models = app.models();
    let team = models
        .team(ctx.org.as_str(), &id)?
        .ok_or_else(team_not_found)?;
    let limit = query.number("limit", 1, 100)?.unwrap_or(25) as usize;
    let cursor = query
        .get("cursor")
        .map(|c| decode_cursor::<String>('m', c))
        .transpose()?;
    let mut page = models.memberships(ctx.org.as_str(), &id, cursor.as_deref(), limit + 1)?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = page
        .last()
        .filter(|_| more)
        .map(|m| encode_cursor('m', &m.id));
    Ok(axum::Json(MembershipPage {
        memberships: page
            .into_iter()
            .map(|m| MembershipResource::new(m, None))
            .collect(),
        next_cursor,
        total: team.total,
    })
    .into_response())
}

async fn change_roles(
    State(app): State<AppState>,
    ctx: Ctx,
    Path((team, membership)): Path<(String, String)>,
    body: Json<UpdateMembership>,
) -> ApiResult<Response> {
    let team = team_id(&team)?;
    let req = app.request(&ctx, Some(&body.digest));
    let roles = checked_roles(body.value.roles)?;
    let (membership, position) =
        teams::change_roles(app.core(), &req, &team, &membership, roles).await?;
    Ok(write_response(
        StatusCode::OK,
        MembershipResource::new(membership, Some(position)),
        position,
    ))
}

async fn remove(
    State(app): State<AppState>,
    ctx: Ctx,
    Path((team, membership)): Path<(String, String)>,
) -> ApiResult<Response> {
    let team = team_id(&team)?;
    let req = app.request(&ctx, None);
    let position = teams::remove(app.core(), &req, &team, &membership).await?;
    Ok(write_response(
        StatusCode::OK,
        DeletedMembership {
            deleted: membership,
            position,
        },
        position,
    ))
}

async fn user_memberships(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let user_id = parse_user_id(&id)?;
    let models = app.models();
    let row = models
        .get(ctx.org.as_str(), user_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("No user with this id."))?;
    let mut memberships = Vec::with_capacity(row.user.public.teams.len());
    for (team, membership_id) in &row.user.public.teams {
        let m = models
            .membership(ctx.org.as_str(), team, membership_id)?
            .ok_or_else(membership_not_found)?;
        memberships.push(MembershipResource::new(m, None));
    }
    Ok(axum::Json(UserMemberships {
        total: memberships.len() as u64,
        memberships,
    })
    .into_response())
}
