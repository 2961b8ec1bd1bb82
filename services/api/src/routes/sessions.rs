//! Client sessions (API.md §5) and their management by servers (API.md §3):
//! `POST /v1/sessions`, `POST /v1/sessions/refresh`, `DELETE /v1/sessions/current`,
//! `GET`/`DELETE /v1/users/{id}/sessions`, `DELETE /v1/users/{id}/sessions/{session_id}`.

use std::net::IpAddr;
use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, post_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use roster_domain::session::{
    REASON_REFRESH_REUSE, REASON_REVOKED, REASON_SIGNED_OUT, SessionEvent, SessionMethod,
    SessionRefreshed,
};
use roster_domain::values::{normalize_email, normalize_username};
use roster_domain::{Command, OrgId, Status, UserId};
use roster_eventlog::{AppendError, ExpectedVersion, StreamAppend, Transaction};
use roster_projections::keys::{ReservationKind, reservation_kind};
use roster_projections::sessions::SessionRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::commands::{Intent, Item};
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ClientCtx, Ctx, Json, PublicCtx, QueryParams};
use crate::resource::{position_header, write_response};
use crate::routes::openapi::OperationDoc;
use crate::routes::users::parse_user_id;
use crate::routes::wallet::PageQuery;
use crate::schemas::SchemaSet;
use crate::sessions::{
    NewSession, SessionTokens, append_error, credential_idempotency, repeated_credential_request,
    session_meta, session_stream,
};
use crate::state::AppState;
use crate::tokens::{REFRESH_TTL_SECS, hashes_equal, refresh_hash, split_refresh_token};

/// Longest password looked at (API.md §2: passwords are at most 256 characters).
const MAX_PASSWORD_CHARS: usize = 256;
/// How long a sign-in waits for the read models to show the users written before it.
const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/sessions",
            post_with(sign_in, |op| {
                op.doc("signIn", "sessions", "Sign in")
                    .describe(
                        "Exactly one of `email` or `username`, and `password`. A wrong password \
                         and an unknown account get the same 401 after the same work. Rate \
                         limited per account and per client address (429 with `Retry-After`).",
                    )
                    .written::<SessionTokens>(201, "A new session and its tokens.")
                    .errors(&[401, 403, 409, 429, 503])
            }),
        )
        .api_route(
            "/v1/sessions/refresh",
            post_with(refresh, |op| {
                op.doc("refreshSession", "sessions", "Exchange a refresh token")
                    .describe(
                        "Returns a new pair; the old refresh token dies. Presenting a dead one \
                         again revokes the whole session (401).",
                    )
                    .written::<SessionTokens>(200, "The session's new tokens.")
                    .errors(&[401, 409])
            }),
        )
        .api_route(
            "/v1/sessions/current",
            delete_with(sign_out, |op| {
                op.doc("signOut", "sessions", "Sign out")
                    .no_content("The session is over; its tokens stop working at once.")
            }),
        )
        .api_route(
            "/v1/users/{id}/sessions",
            get_with(list_sessions, |op| {
                op.doc("listUserSessions", "sessions", "A user's sessions")
                    .describe("Newest first, ended ones included.")
                    .query::<PageQuery>()
                    .json::<SessionPage>(200, "A page of sessions.")
                    .errors(&[404])
            })
            .delete_with(revoke_all, |op| {
                op.doc(
                    "revokeUserSessions",
                    "sessions",
                    "End every session of a user",
                )
                .describe("Recorded on the user as `SessionsRevoked` (its version changes).")
                .no_content("Every session of the user has ended.")
                .if_match()
                .errors(&[404, 409])
            }),
        )
        .api_route(
            "/v1/users/{id}/sessions/{session_id}",
            delete_with(revoke_one, |op| {
                op.doc("revokeUserSession", "sessions", "End one session of a user")
                    .no_content("The session has ended.")
                    .errors(&[404])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<SignIn>();
    out.add::<RefreshSession>();
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<SessionView>();
    out.add::<SessionPage>();
    out.add::<SessionTokens>();
}

/// The one answer for a wrong password, an unknown account, or an account without a password.
pub(crate) fn bad_credentials() -> ApiError {
    ApiError::new(
        Code::Unauthorized,
        "The email, username or password is not correct.",
    )
}

fn rate_limited(seconds: u64) -> ApiError {
    let mut e = ApiError::new(
        Code::RateLimited,
        format!("Too many sign-in attempts; retry in {seconds} s."),
    );
    e.retry_after = Some(seconds);
    e
}

pub(crate) fn busy(e: crate::password::HashError) -> ApiError {
    match e {
        crate::password::HashError::Busy => {
            let mut e = ApiError::new(
                Code::Unavailable,
                "The server is busy checking passwords; retry shortly.",
            );
            e.retry_after = Some(1);
            e
        }
        e => ApiError::internal(e),
    }
}

/// A user who cannot sign in because of its status: blocked and deactivated users are told so
/// (only after their password was right), deleted ones look unknown.
pub(crate) fn refuse_status(status: Status) -> ApiResult<()> {
    match status {
        Status::Active => Ok(()),
        Status::Blocked => Err(ApiError::new(Code::UserBlocked, "This user is blocked.")),
        Status::Deactivated => Err(ApiError::new(
            Code::UserDeactivated,
            "This user is deactivated.",
        )),
        Status::Deleted => Err(bad_credentials()),
    }
}

/// `POST /v1/sessions`: exactly one of `email` or `username`, and `password`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    /// The account's email.
    email: Option<String>,
    /// The account's username (by normalized form).
    username: Option<String>,
    /// 1 to 256 characters.
    #[schemars(length(min = 1, max = 256))]
    password: String,
}

/// `POST /v1/sessions`: email or username and password → a session (201).
async fn sign_in(
    State(app): State<AppState>,
    PublicCtx(ctx): PublicCtx,
    body: Json<SignIn>,
) -> ApiResult<Response> {
    let digest = ctx.digest_with(Some(&body.digest));
    let SignIn {
        email,
        username,
        password,
    } = body.value;
    let org = ctx.org.clone();
    let (account, by_email) = match (email, username) {
        (Some(e), None) if !e.trim().is_empty() => (normalize_email(&e), true),
        (None, Some(u)) if !u.trim().is_empty() => (normalize_username(&u), false),
        _ => {
            return Err(ApiError::invalid_field(
                "",
                "send either email or username (one of them), and password",
            ));
        }
    };
    let chars = password.chars().count();
    if chars == 0 || chars > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid_field(
            "password",
            format!("must be 1 to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    let idempotency = credential_idempotency(&app, &ctx, &digest).await?;
    let address: Option<IpAddr> = ctx.meta.ip.as_deref().and_then(|ip| ip.parse().ok());

    // Users written before this request must be found: let the read models catch up first.
    let head = app.log().head();
    app.wait_for(head, LOOKUP_WAIT).await;
    let ids = if by_email {
        app.models().ids_by_email(org.as_str(), &account)?
    } else {
        app.models().ids_by_username(org.as_str(), &account)?
    };
    // One failure budget per account, whichever identifier names it: a known account's bucket
    // is its id, so ten wrong passwords by username then ten by email are twenty tries of
    // one bucket, not ten of two. An identifier that names nobody has a bucket of its own
    // (so unknown accounts are limited exactly like known ones).
    let limit_key = match ids.as_slice() {
        [id] => format!("{org}/id/{id}"),
        _ => format!("{org}/{}/{account}", if by_email { "e" } else { "u" }),
    };
    app.0
        .login_limiter
        .attempt(&limit_key, address)
        .map_err(rate_limited)?;

    // A username several users share (with `enforce_unique_usernames: no`) names nobody.
    let loaded = match ids.as_slice() {
        [id] => match UserId::parse(id) {
            Ok(id) => Some(app.load(&org, &id).await?),
            Err(_) => None,
        },
        _ => None,
    };
    let user = loaded
        .as_ref()
        .and_then(|l| l.user.as_ref())
        .filter(|u| !u.is_deleted());
    // One argon2id verification whatever happened above (a dummy hash without a user), so a
    // wrong password and an unknown account take the same time and get the same answer.
    let matches = app
        .0
        .hasher
        .verify(password, user.and_then(|u| u.password_hash.clone()))
        .await
        .map_err(busy)?;
    let (Some(user), Some(loaded), true) = (user, loaded.as_ref(), matches) else {
        return Err(bad_credentials());
    };
    app.0.login_limiter.succeeded(&limit_key, address);
    refuse_status(user.status())?;

    let user_id = UserId::parse(&user.id).map_err(ApiError::internal)?;
    let meta = session_meta(&ctx, &user_id);
    let session = NewSession::new(SessionMethod::Password);
    let key = app.data_key(user, &[]).await?;
    let append = app.start_session(
        &org,
        user,
        loaded.version,
        &session,
        &meta,
        key.as_ref().map(|(i, k)| (*i, k)),
    );
    let tx = Transaction {
        appends: vec![append],
        reservations: idempotency.into_iter().collect(),
    };
    let committed = match app.log().append(tx).await {
        Ok(c) => c,
        Err(AppendError::ReservationHeld { owner, key, .. })
            if reservation_kind(&key) == ReservationKind::Idempotency =>
        {
            return Err(repeated_credential_request(&owner, &digest));
        }
        Err(e) => return Err(append_error(e)),
    };
    // The token's first use must find the session's user in the read models.
    app.wait_for(committed.last_position, LOOKUP_WAIT).await;
    let tokens = app.session_tokens(
        &org,
        &user.id,
        &session.id,
        loaded.version,
        committed.last_position,
        session.refresh_token,
        session.refresh_expires_at,
        committed.last_position,
    );
    Ok(write_response(
        StatusCode::CREATED,
        tokens,
        committed.last_position,
    ))
}

/// `POST /v1/sessions/refresh`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshSession {
    /// The refresh token of the last sign-in or refresh.
    refresh_token: String,
}

fn invalid_refresh() -> ApiError {
    ApiError::new(
        Code::Unauthorized,
        "The refresh token is not valid; sign in again.",
    )
}

/// `POST /v1/sessions/refresh`: exchanges a refresh token for a new pair. The old refresh
/// token dies; presenting a dead one again revokes the whole session.
async fn refresh(
    State(app): State<AppState>,
    PublicCtx(ctx): PublicCtx,
    body: Json<RefreshSession>,
) -> ApiResult<Response> {
    let digest = ctx.digest_with(Some(&body.digest));
    let org = ctx.org.clone();
    let Some((session_id, secret)) = split_refresh_token(&body.value.refresh_token) else {
        return Err(invalid_refresh());
    };
    let presented = refresh_hash(secret);
    let idempotency = credential_idempotency(&app, &ctx, &digest).await?;
    // Two refreshes with one token race on the session's version: one wins, the other looks
    // again and finds its token dead — reuse.
    for _ in 0..20 {
        let Some((session, started_at)) = app.load_session(&org, session_id).await? else {
            return Err(invalid_refresh());
        };
        if session.is_revoked() {
            return Err(invalid_refresh());
        }
        if !hashes_equal(&presented, &session.refresh_hash) {
            let reused = session
                .previous_hashes
                .iter()
                .fold(false, |found, h| found | hashes_equal(&presented, h));
            if reused {
                tracing::warn!(
                    session = session_id,
                    "refresh token reuse: revoking the session"
                );
                let user_id = UserId::parse(&session.user_id).map_err(ApiError::internal)?;
                app.revoke_session(
                    &org,
                    session_id,
                    REASON_REFRESH_REUSE,
                    &session_meta(&ctx, &user_id),
                )
                .await?;
            }
            return Err(invalid_refresh());
        }
        let now = Utc::now();
        if session.expires_at <= now {
            return Err(invalid_refresh());
        }
        let user_id = UserId::parse(&session.user_id).map_err(|_| invalid_refresh())?;
        let loaded = app.load(&org, &user_id).await?;
        let Some(user) = loaded.user.as_ref() else {
            return Err(invalid_refresh());
        };
        if user.status() != Status::Active || session.user_version < user.sessions_valid_from {
            return Err(invalid_refresh());
        }
        let (refresh_token, new_hash) = crate::tokens::new_refresh_token(session_id);
        let expires_at = now + ChronoDuration::seconds(REFRESH_TTL_SECS);
        let event = SessionEvent::SessionRefreshed(SessionRefreshed {
            user_id: session.user_id.clone(),
            refresh_hash: new_hash,
            expires_at,
        });
        let key = app.data_key(user, &[]).await?;
        let meta = session_meta(&ctx, &user_id);
        let tx = Transaction {
            appends: vec![StreamAppend {
                stream: session_stream(org.as_str(), session_id),
                expected: ExpectedVersion::Exact(session.version),
                events: vec![app.session_record(&event, &meta, key.as_ref().map(|(i, k)| (*i, k)))],
            }],
            reservations: idempotency.clone().into_iter().collect(),
        };
        match app.log().append(tx).await {
            Ok(committed) => {
                let tokens = app.session_tokens(
                    &org,
                    &session.user_id,
                    session_id,
                    session.user_version,
                    started_at,
                    refresh_token,
                    expires_at,
                    committed.last_position,
                );
                return Ok(write_response(
                    StatusCode::OK,
                    tokens,
                    committed.last_position,
                ));
            }
            Err(AppendError::WrongExpectedVersion { .. }) => continue,
            Err(AppendError::ReservationHeld { owner, key, .. })
                if reservation_kind(&key) == ReservationKind::Idempotency =>
            {
                return Err(repeated_credential_request(&owner, &digest));
            }
            Err(e) => return Err(append_error(e)),
        }
    }
    Err(ApiError::new(
        Code::Conflict,
        "Too many concurrent refreshes of this session; sign in again.",
    ))
}

/// `DELETE /v1/sessions/current`: the client signs out (204).
async fn sign_out(State(app): State<AppState>, client: ClientCtx) -> ApiResult<Response> {
    let position = app
        .revoke_session(
            &client.ctx.org,
            &client.session_id,
            REASON_SIGNED_OUT,
            &client.ctx.meta,
        )
        .await?;
    Ok(no_content(position))
}

fn no_content(position: u64) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    position_header(response.headers_mut(), position);
    response
}

/// One session as servers see it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Session")]
pub(crate) struct SessionView {
    /// Session id.
    id: String,
    /// The signed-in user.
    user_id: String,
    /// How the client signed in.
    method: SessionMethod,
    /// When it started.
    created_at: DateTime<Utc>,
    /// When its refresh token was last exchanged.
    refreshed_at: Option<DateTime<Utc>>,
    /// When its current refresh token expires.
    expires_at: DateTime<Utc>,
    /// Ended: signed out, revoked, reused, or ended with all the user's sessions.
    revoked: bool,
    /// When it was revoked.
    revoked_at: Option<DateTime<Utc>>,
    /// `signed_out`, `revoked`, `refresh_token_reuse` or `user_sessions_ended`.
    revoked_reason: Option<String>,
    /// Neither revoked nor expired.
    active: bool,
    /// The address it signed in from (`null` once erased).
    ip: Option<String>,
    /// The user agent it signed in with (`null` once erased).
    user_agent: Option<String>,
}

impl SessionView {
    /// The view of a row for a user whose sessions are valid from `valid_from`.
    pub(crate) fn new(row: SessionRow, valid_from: u64, now: DateTime<Utc>) -> Self {
        let ended_with_user = row.user_version < valid_from;
        let revoked = row.revoked_at.is_some() || ended_with_user;
        let revoked_reason = row
            .revoked_reason
            .or_else(|| ended_with_user.then(|| "user_sessions_ended".to_owned()));
        Self {
            active: !revoked && row.expires_at > now,
            id: row.id,
            user_id: row.user_id,
            method: row.method,
            created_at: row.created_at,
            refreshed_at: row.refreshed_at,
            expires_at: row.expires_at,
            revoked,
            revoked_at: row.revoked_at,
            revoked_reason,
            ip: row.ip,
            user_agent: row.user_agent,
        }
    }
}

/// A page of a user's sessions, newest first.
#[derive(Serialize, JsonSchema)]
pub(crate) struct SessionPage {
    /// The sessions.
    sessions: Vec<SessionView>,
    /// Pass as `cursor` for the next (older) page.
    next_cursor: Option<String>,
}

/// Every session of a user, newest first (for exports).
pub(crate) async fn all_sessions(
    app: &AppState,
    org: &OrgId,
    user_id: &UserId,
    valid_from: u64,
) -> ApiResult<Vec<SessionView>> {
    let now = Utc::now();
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let (rows, more) = app
            .models()
            .sessions_of(org.as_str(), user_id.as_str(), 500, before.as_deref())
            .await?;
        before = rows.last().map(|r| r.id.clone());
        out.extend(
            rows.into_iter()
                .map(|r| SessionView::new(r, valid_from, now)),
        );
        if !more {
            return Ok(out);
        }
    }
}

/// `GET /v1/users/{id}/sessions?limit=&cursor=`: the user's sessions, newest first.
async fn list_sessions(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(PageQuery::NAMES)?;
    let user_id = parse_user_id(&id)?;
    let limit = query.number("limit", 1, 100)?.unwrap_or(100) as usize;
    let before = match query.get("cursor") {
        Some(c) => Some(decode_cursor(c)?),
        None => None,
    };
    let row = app
        .models()
        .get(ctx.org.as_str(), user_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("No user with this id."))?;
    let (rows, more) = app
        .models()
        .sessions_of(ctx.org.as_str(), user_id.as_str(), limit, before.as_deref())
        .await?;
    let next_cursor = if more {
        rows.last().map(|r| encode_cursor(&r.id))
    } else {
        None
    };
    let now = Utc::now();
    let sessions = rows
        .into_iter()
        .map(|r| SessionView::new(r, row.user.sessions_valid_from, now))
        .collect();
    Ok(axum::Json(SessionPage {
        sessions,
        next_cursor,
    })
    .into_response())
}

fn encode_cursor(session_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("s{session_id}"))
}

fn decode_cursor(cursor: &str) -> ApiResult<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix('s').map(str::to_owned))
        .filter(|s| s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or_else(|| ApiError::invalid_field("cursor", "is not a cursor this server returned"))
}

/// `DELETE /v1/users/{id}/sessions`: ends every session of the user (204). Recorded on the
/// user's stream as `SessionsRevoked`.
async fn revoke_all(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let item = Item {
        user_id: parse_user_id(&id)?,
        intent: Intent::Other(Command::RevokeSessions),
        field_prefix: None,
    };
    let outcome = app
        .execute(&ctx, vec![item], &ctx.digest_with(None))
        .await?;
    Ok(no_content(outcome.position))
}

/// `DELETE /v1/users/{id}/sessions/{session_id}`: ends one session (204).
async fn revoke_one(
    State(app): State<AppState>,
    ctx: Ctx,
    Path((id, session_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let user_id = parse_user_id(&id)?;
    let not_found = || ApiError::not_found("This user has no session with this id.");
    if session_id.is_empty()
        || session_id.len() > 64
        || !session_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(not_found());
    }
    match app.load_session(&ctx.org, &session_id).await? {
        Some((session, _)) if session.user_id == user_id.as_str() => {}
        _ => return Err(not_found()),
    }
    let position = app
        .revoke_session(&ctx.org, &session_id, REASON_REVOKED, &ctx.meta)
        .await?;
    Ok(no_content(position))
}
