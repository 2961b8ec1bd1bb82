//! Sessions (docs/contract.md §5): starting one, minting its tokens, revoking it. Each session is
//! an aggregate of its own on its stream `session-<id>` (see `roster_domain::session`), loaded
//! and appended through the repository like every other.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use roster_core::repository::{CommitError, Loaded, retrying};
use roster_core::users::REVOCATION_WAIT;
use roster_core::{IdempotencyClaim, Request};
use roster_domain::session::{Session, SessionCommand, SessionMethod, SessionStarted};
use roster_domain::{OrgId, Unique, User, UserId};
use roster_eventlog::Position;
use roster_projections::EventMeta;
use roster_projections::sessions::SessionRow;
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::{ApiError, ApiResult, Code};
use axum::response::{IntoResponse, Response};

use crate::extract::{Ctx, QueryParams};
use crate::routes::common::{PageQuery, decode_cursor, encode_cursor};
use crate::state::AppState;
use crate::tokens::{ACCESS_TTL_SECS, AccessClaims, REFRESH_TTL_SECS, new_refresh_token};

/// How long a new session waits for the read models to show it before answering.
const SESSION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a sign-in or a refresh answers (docs/contract.md §5).
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SessionTokens {
    /// The session.
    pub session_id: String,
    /// The signed-in user.
    pub user_id: String,
    /// Short-lived bearer token for client endpoints.
    pub access_token: String,
    /// Opaque, single-use token to get a new pair.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    /// When the refresh token expires.
    pub refresh_expires_at: DateTime<Utc>,
    /// Log position of the sign-in or refresh.
    pub position: Position,
}

/// A session about to be started: its id and refresh token, chosen before the append so a
/// retried transaction records the same ones.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// Session id (a ULID).
    pub id: String,
    /// The refresh token to hand out.
    pub refresh_token: String,
    /// SHA-256 of its secret, to record.
    pub refresh_hash: String,
    /// When it expires.
    pub refresh_expires_at: DateTime<Utc>,
    /// How the client signs in.
    pub method: SessionMethod,
}

impl NewSession {
    /// A fresh session id and refresh token.
    pub fn new(method: SessionMethod) -> Self {
        let id = ulid::Ulid::new().to_string();
        let (refresh_token, refresh_hash) = new_refresh_token(&id);
        Self {
            id,
            refresh_token,
            refresh_hash,
            refresh_expires_at: Utc::now() + ChronoDuration::seconds(REFRESH_TTL_SECS),
            method,
        }
    }

    /// The command that starts it for `user`, checked against `user_version`; `token` is a
    /// custom token's id and expiry, used up by this sign-in.
    pub fn start(
        &self,
        user: &User,
        user_version: u64,
        token: Option<(String, i64)>,
    ) -> SessionCommand {
        SessionCommand::Start {
            started: SessionStarted {
                user_id: user.id().clone(),
                user_version,
                refresh_hash: self.refresh_hash.clone(),
                expires_at: self.refresh_expires_at,
                method: self.method,
                key_id: user.public.key_id,
            },
            token,
        }
    }
}

/// The metadata of a session event: the request's, acting as the user.
pub fn session_meta(ctx: &Ctx, user_id: &UserId) -> EventMeta {
    EventMeta {
        actor: format!("user:{user_id}"),
        ..ctx.meta.clone()
    }
}

impl AppState {
    /// Starts a session for `user` (as `loaded`) in `work` — after whatever `work` already
    /// staged (a rehash, a used token) — commits it with `idempotency`'s claim, and answers
    /// 201 with the session's tokens once the read models show it.
    pub(crate) async fn start_session(
        &self,
        mut work: roster_core::repository::Work<'_>,
        user: &User,
        loaded: &Loaded<User>,
        method: SessionMethod,
        idempotency: Option<&IdempotencyClaim>,
        request: &Request,
    ) -> ApiResult<axum::response::Response> {
        let org = work.org().clone();
        let session = NewSession::new(method);
        work.decide::<Session>(
            &session.id,
            &Loaded::default(),
            &session.start(user, loaded.version, None),
        )
        .await?;
        if let Some(claim) = idempotency {
            work.claim_first(claim.reservation(Utc::now().timestamp_micros()));
        }
        let committed = work
            .commit()
            .await
            .map_err(|e| session_commit_error(e, request))?
            .ok_or_else(|| ApiError::internal("a sign-in recorded nothing"))?;
        // The token's first use must find the session's user in the read models.
        self.wait_for(committed.last_position, SESSION_WAIT).await;
        let tokens = self.session_tokens(
            &org,
            user.id().as_str(),
            &session.id,
            loaded.version,
            committed.last_position,
            session.refresh_token,
            session.refresh_expires_at,
            committed.last_position,
        );
        Ok(crate::resource::write_response(
            axum::http::StatusCode::CREATED,
            tokens,
            committed.last_position,
        ))
    }

    /// The tokens of a session: a new access token next to the given refresh token.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn session_tokens(
        &self,
        org: &OrgId,
        user_id: &str,
        session_id: &str,
        user_version: u64,
        sign_in_position: Position,
        refresh_token: String,
        refresh_expires_at: DateTime<Utc>,
        position: Position,
    ) -> SessionTokens {
        let now = Utc::now();
        let exp = now.timestamp() + ACCESS_TTL_SECS;
        let access_token = self.tokens().sign_access(AccessClaims {
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            org: org.to_string(),
            iat: now.timestamp(),
            exp,
            typ: String::new(),
            uv: user_version,
            pos: sign_in_position,
        });
        SessionTokens {
            session_id: session_id.to_owned(),
            user_id: user_id.to_owned(),
            access_token,
            refresh_token,
            token_type: "Bearer",
            expires_at: DateTime::from_timestamp(exp, 0).unwrap_or(now),
            refresh_expires_at,
            position,
        }
    }

    /// A session's state (`None` if there is no such session).
    pub(crate) async fn load_session(
        &self,
        org: &OrgId,
        session_id: &str,
    ) -> ApiResult<Loaded<Session>> {
        self.core().repo().load::<Session>(org, session_id).await
    }

    /// Revokes a session (no-op if it already is) and answers once the read models show it,
    /// so its tokens fail from then on. Returns the position of the revocation (or of the
    /// log's head if it already was).
    pub(crate) async fn revoke_session(
        &self,
        org: &OrgId,
        session_id: &str,
        reason: &str,
        meta: &EventMeta,
    ) -> ApiResult<Position> {
        let repo = self.core().repo();
        let command = SessionCommand::Revoke {
            reason: reason.to_owned(),
        };
        let command = &command;
        let revoked = retrying(move || async move {
            let loaded = self.load_session(org, session_id).await?;
            if loaded.state.is_none() {
                return Err(ApiError::not_found("No session with this id.").into());
            }
            let mut work = repo.work(org, meta.clone());
            work.decide(session_id, &loaded, command)
                .await
                .map_err(ApiError::from)?;
            work.commit().await
        })
        .await
        .map_err(commit_error)?;
        let Some(committed) = revoked else {
            return Ok(self.log().head());
        };
        if !self
            .wait_for(committed.last_position, REVOCATION_WAIT)
            .await
        {
            tracing::warn!(
                position = committed.last_position,
                "read models are slow to apply a revocation"
            );
        }
        Ok(committed.last_position)
    }
}

/// The idempotency claim of a request that hands out credentials. Such a response cannot be
/// repeated (only hashes of its tokens are kept), so a request repeating an `Idempotency-Key`
/// is refused with 409 — it is never acted on twice — and one reusing it for another request
/// with 422.
pub(crate) async fn credential_idempotency(
    app: &AppState,
    request: &Request,
) -> ApiResult<Option<IdempotencyClaim>> {
    let Some(claim) = &request.idempotency else {
        return Ok(None);
    };
    if let Some(seen) = claim.seen(app.log().as_ref()).await? {
        return Err(repeated_credential_request(seen.same_as(claim)));
    }
    Ok(Some(claim.clone()))
}

/// The answer to a credential request whose `Idempotency-Key` is already taken, by the same
/// request or another.
pub(crate) fn repeated_credential_request(same: bool) -> ApiError {
    if same {
        ApiError::new(
            Code::Conflict,
            "This request was already carried out; responses holding credentials are never repeated. Sign in again (with a new Idempotency-Key).",
        )
    } else {
        ApiError::new(
            Code::IdempotencyMismatch,
            "This Idempotency-Key was used with a different request.",
        )
    }
}

/// Maps a refused session write: a used custom token is 401; an idempotency key taken by a
/// concurrent copy of this request is the repeated-request answer.
pub(crate) fn session_commit_error(e: CommitError, request: &Request) -> ApiError {
    match e {
        CommitError::Taken {
            unique: Some(Unique::CustomToken(_)),
            ..
        } => ApiError::new(Code::Unauthorized, "This token has already been used."),
        CommitError::Taken {
            key,
            owner,
            position,
            ..
        } if request.idempotency.as_ref().is_some_and(|c| c.key == key) => {
            let seen = IdempotencyClaim::holder(&owner, position);
            let same = request
                .idempotency
                .as_ref()
                .is_some_and(|c| seen.same_as(c));
            repeated_credential_request(same)
        }
        e => commit_error(e),
    }
}

/// Maps any other refused write.
pub(crate) fn commit_error(e: CommitError) -> ApiError {
    match e {
        CommitError::Failed(e) => e,
        CommitError::Conflict { .. } => ApiError::new(
            Code::Conflict,
            "Too many concurrent changes to this session; retry.",
        ),
        CommitError::Taken { .. } => {
            ApiError::new(Code::Conflict, "A value this request claims is taken.")
        }
    }
}

/// One session as servers see it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Session")]
pub struct SessionView {
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
        let SessionRow { info, from } = row;
        let ended_with_user = info.user_version < valid_from;
        let revoked = info.revoked_at.is_some() || ended_with_user;
        let revoked_reason = info
            .revoked_reason
            .or_else(|| ended_with_user.then(|| "user_sessions_ended".to_owned()));
        Self {
            active: !revoked && info.expires_at > now,
            id: info.id,
            user_id: info.user_id,
            method: info.method,
            created_at: info.created_at,
            refreshed_at: info.refreshed_at,
            expires_at: info.expires_at,
            revoked,
            revoked_at: info.revoked_at,
            revoked_reason,
            ip: from.ip,
            user_agent: from.user_agent,
        }
    }
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
        before = rows.last().map(|r| r.info.id.clone());
        out.extend(
            rows.into_iter()
                .map(|r| SessionView::new(r, valid_from, now)),
        );
        if !more {
            return Ok(out);
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

/// `?limit=&cursor=` over a user's sessions, newest first (a server's view of any user, a
/// client's of its own).
pub(crate) async fn sessions_page(
    app: &AppState,
    org: &OrgId,
    user_id: &UserId,
    query: &QueryParams,
) -> ApiResult<Response> {
    query.only(PageQuery::NAMES)?;
    let limit = query.number("limit", 1, 100)?.unwrap_or(100) as usize;
    let before = match query.get("cursor") {
        Some(c) => Some(session_cursor(c)?),
        None => None,
    };
    let row = app
        .models()
        .get(org.as_str(), user_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("No user with this id."))?;
    let (rows, more) = app
        .models()
        .sessions_of(org.as_str(), user_id.as_str(), limit, before.as_deref())
        .await?;
    let next_cursor = if more {
        rows.last().map(|r| encode_cursor('s', &r.info.id))
    } else {
        None
    };
    let now = Utc::now();
    let sessions = rows
        .into_iter()
        .map(|r| SessionView::new(r, row.user.public.sessions_valid_from, now))
        .collect();
    Ok(axum::Json(SessionPage {
        sessions,
        next_cursor,
    })
    .into_response())
}

/// A session id from a cursor (ULIDs: letters and digits only).
fn session_cursor(cursor: &str) -> ApiResult<String> {
    let id: String = decode_cursor('s', cursor)?;
    if id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(ApiError::invalid_field(
            "cursor",
            "is not a cursor this server returned",
        ))
    }
}

/// Ends one session of `user_id` (204); 404 if the user has no session with this id.
pub(crate) async fn revoke_users_session(
    app: &AppState,
    ctx: &Ctx,
    user_id: &UserId,
    session_id: &str,
) -> ApiResult<Response> {
    let not_found = || ApiError::not_found("This user has no session with this id.");
    if session_id.is_empty()
        || session_id.len() > 64
        || !session_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(not_found());
    }
    match app.load_session(&ctx.org, session_id).await?.state {
        Some(session) if session.user_id == *user_id => {}
        _ => return Err(not_found()),
    }
    let position = app
        .revoke_session(
            &ctx.org,
            session_id,
            roster_domain::session::REASON_REVOKED,
            &ctx.meta,
        )
        .await?;
    Ok(no_content(position))
}

/// 204 with the write's position.
pub(crate) fn no_content(position: u64) -> Response {
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    crate::resource::position_header(response.headers_mut(), position);
    response
}
