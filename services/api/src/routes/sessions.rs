//! Client sessions (docs/contract.md §5) and their management by servers (docs/contract.md §3):
//! `POST /v1/sessions`, `POST /v1/sessions/refresh`, `DELETE /v1/sessions/current`,
//! `GET`/`DELETE /v1/users/{id}/sessions`, `DELETE /v1/users/{id}/sessions/{session_id}`.

use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, post_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Duration as ChronoDuration, Utc};
use roster_core::repository::CommitError;
use roster_core::users::Item;
use roster_domain::session::{
    REASON_REFRESH_REUSE, REASON_SIGNED_OUT, SessionCommand, SessionMethod, SessionRefreshed,
};
use roster_domain::user::UserCommand;
use roster_domain::values::{normalize_email, normalize_username};
use roster_domain::{Status, User};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ClientCtx, Ctx, Json, PublicCtx, QueryParams};
use crate::resource::write_response;
use crate::routes::common::{
    Attempt, MAX_PASSWORD_CHARS, OperationDoc, PageQuery, bad_credentials, busy, execute,
    parse_user_id, refuse_status,
};
use crate::schemas::SchemaSet;
use crate::sessions::{
    SessionPage, SessionTokens, SessionView, credential_idempotency, no_content,
    revoke_users_session, session_commit_error, session_meta, sessions_page,
};
use crate::state::AppState;
use crate::tokens::{REFRESH_TTL_SECS, hashes_equal, refresh_hash, split_refresh_token};

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
    let request = app.request(&ctx, Some(&body.digest));
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
    let idempotency = credential_idempotency(&app, &request).await?;

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
    let attempt = Attempt::take(&app, &ctx, limit_key, "sign-in attempts")?;

    // A username several users share (with `enforce_unique_usernames: no`) names nobody.
    let loaded = match ids.as_slice() {
        [id] => Some(app.core().repo().load::<User>(&org, id).await?),
        _ => None,
    };
    let user = loaded
        .as_ref()
        .and_then(|l| l.state.as_ref())
        .filter(|u| !u.is_deleted());
    // One argon2id verification whatever happened above (a dummy hash without a user), so a
    // wrong password and an unknown account take the same time and get the same answer.
    // An imported hash (another system's algorithm) is verified by its algorithm, then also
    // costs the dummy argon2id: no hash is cheaper to check than Roster's own.
    let typed = password.clone();
    let verified = app
        .core()
        .hasher()
        .verify_stored(password, user.and_then(|u| u.password_hash().cloned()))
        .await
        .map_err(busy)?;
    let (Some(user), Some(loaded), true) = (user, loaded.as_ref(), verified.matches) else {
        return Err(bad_credentials());
    };
    attempt.succeeded(&app);
    refuse_status(user.status())?;

    let mut work = app.core().repo().work(&org, session_meta(&ctx, user.id()));
    if verified.rehash {
        // Replaced by Roster's own argon2id in the same append as the session, before the
        // answer: the imported hash is never checked again.
        let own = app.core().hasher().rehash(typed).await.map_err(busy)?;
        work.decide::<User>(
            user.id().as_str(),
            loaded,
            &UserCommand::RehashPassword(own),
        )
        .await?;
    }
    app.start_session(
        work,
        user,
        loaded,
        SessionMethod::Password,
        idempotency.as_ref(),
        &request,
    )
    .await
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
    let request = app.request(&ctx, Some(&body.digest));
    let org = ctx.org.clone();
    let Some((session_id, secret)) = split_refresh_token(&body.value.refresh_token) else {
        return Err(invalid_refresh());
    };
    let presented = refresh_hash(secret);
    let idempotency = credential_idempotency(&app, &request).await?;
    // Two refreshes with one token race on the session's version: one wins, the other looks
    // again and finds its token dead — reuse.
    for _ in 0..20 {
        let loaded = app.load_session(&org, session_id).await?;
        let Some(session) = loaded.state.as_ref() else {
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
                let meta = session_meta(&ctx, &session.user_id);
                app.revoke_session(&org, session_id, REASON_REFRESH_REUSE, &meta)
                    .await?;
            }
            return Err(invalid_refresh());
        }
        let now = Utc::now();
        if session.expires_at <= now {
            return Err(invalid_refresh());
        }
        let user = app
            .core()
            .repo()
            .load::<User>(&org, session.user_id.as_str())
            .await?;
        let Some(user) = user.state.as_ref() else {
            return Err(invalid_refresh());
        };
        if user.status() != Status::Active
            || session.user_version < user.public.sessions_valid_from
            || user.expired(chrono::Utc::now())
        {
            return Err(invalid_refresh());
        }
        let (refresh_token, new_hash) = crate::tokens::new_refresh_token(session_id);
        let expires_at = now + ChronoDuration::seconds(REFRESH_TTL_SECS);
        let command = SessionCommand::Refresh(SessionRefreshed {
            user_id: session.user_id.clone(),
            refresh_hash: new_hash,
            expires_at,
        });
        let mut work = app
            .core()
            .repo()
            .work(&org, session_meta(&ctx, &session.user_id));
        work.decide(session_id, &loaded, &command).await?;
        if let Some(claim) = &idempotency {
            work.claim_first(claim.reservation(now.timestamp_micros()));
        }
        match work.commit().await {
            Ok(Some(committed)) => {
                let tokens = app.session_tokens(
                    &org,
                    session.user_id.as_str(),
                    session_id,
                    session.user_version,
                    loaded.since_position,
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
            Ok(None) => return Err(ApiError::internal("a refresh recorded nothing")),
            Err(CommitError::Conflict { .. }) => continue,
            Err(e) => return Err(session_commit_error(e, &request)),
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

/// `GET /v1/users/{id}/sessions?limit=&cursor=`: the user's sessions, newest first.
async fn list_sessions(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    let user_id = parse_user_id(&id)?;
    sessions_page(&app, &ctx.org, &user_id, &query).await
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
        command: UserCommand::RevokeSessions,
        field_prefix: None,
    };
    let outcome = execute(&app, &ctx, None, vec![item]).await?;
    Ok(no_content(outcome.position))
}

/// `DELETE /v1/users/{id}/sessions/{session_id}`: ends one session (204).
async fn revoke_one(
    State(app): State<AppState>,
    ctx: Ctx,
    Path((id, session_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let user_id = parse_user_id(&id)?;
    revoke_users_session(&app, &ctx, &user_id, &session_id).await
}
