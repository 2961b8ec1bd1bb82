//! A client's self-service on its own account (docs/recovery.md): `PATCH /v1/account/password`,
//! `GET /v1/account/sessions`, `DELETE /v1/account/sessions/{session_id}`.

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, patch_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use roster_domain::User;
use roster_domain::session::{SessionCommand, SessionRenewed};
use roster_domain::user::UserCommand;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ClientCtx, Json, QueryParams};
use crate::resource::write_response;
use crate::routes::common::{Attempt, OperationDoc, PageQuery, busy, new_password};
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/account/password",
            patch_with(change_own_password, |op| {
                op.doc(
                    "changeAccountPassword",
                    "recovery",
                    "Change one's own password",
                )
                .describe(
                    "With the current password. Every other session of the user ends; the \
                         calling one stays, with new tokens in the answer (its old access and \
                         refresh tokens stop working). A wrong current password is 403 and \
                         counts against the account's sign-in budget.",
                )
                .json::<crate::sessions::SessionTokens>(200, "The calling session's new tokens.")
                .errors(&[403, 409, 429, 503])
            }),
        )
        .api_route(
            "/v1/account/sessions",
            get_with(own_sessions, |op| {
                op.doc(
                    "listAccountSessions",
                    "recovery",
                    "The client's own sessions",
                )
                .describe("Newest first, ended ones included.")
                .query::<PageQuery>()
                .json::<crate::sessions::SessionPage>(200, "A page of sessions.")
            }),
        )
        .api_route(
            "/v1/account/sessions/{session_id}",
            delete_with(revoke_own_session, |op| {
                op.doc(
                    "revokeAccountSession",
                    "recovery",
                    "End one of the client's sessions",
                )
                .no_content("The session has ended.")
                .errors(&[404])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<ChangePasswordBody>();
}

/// `PATCH /v1/account/password`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ChangeAccountPassword")]
pub(crate) struct ChangePasswordBody {
    /// The password now.
    #[schemars(length(min = 1, max = 256))]
    current_password: String,
    /// The new one, 1 to 256 characters.
    #[schemars(length(min = 1, max = 256))]
    password: String,
}

/// `PATCH /v1/account/password`: the user's password changes (ending every session) and the
/// calling session is carried over in the same append (`SessionRenewed`), so it is the only
/// one left. Answers with its new tokens once the read models show the change.
async fn change_own_password(
    State(app): State<AppState>,
    client: ClientCtx,
    body: Json<ChangePasswordBody>,
) -> ApiResult<Response> {
    let ChangePasswordBody {
        current_password,
        password,
    } = body.value;
    let password = new_password(&password)?;
    let ctx = &client.ctx;
    let org = &ctx.org;
    // The account's sign-in budget: guessing the current password here is guessing it there.
    let attempt = Attempt::take(
        &app,
        ctx,
        format!("{org}/id/{}", client.user_id),
        "password attempts",
    )?;
    let repo = app.core().repo();
    let loaded = repo.load::<User>(org, client.user_id.as_str()).await?;
    let user = loaded
        .state
        .as_ref()
        .ok_or_else(|| ApiError::not_found("No user with this id."))?;
    let verified = app
        .core()
        .hasher()
        .verify_stored(current_password, user.password_hash().cloned())
        .await
        .map_err(busy)?;
    if !verified.matches {
        return Err(ApiError::new(
            Code::Forbidden,
            "The current password is not correct.",
        ));
    }
    attempt.succeeded(&app);
    let hash = app.core().hasher().hash(password).await.map_err(busy)?;
    let (refresh_token, refresh_hash) = crate::tokens::new_refresh_token(&client.session_id);
    let expires_at = Utc::now() + chrono::Duration::seconds(crate::tokens::REFRESH_TTL_SECS);
    let command = UserCommand::ChangePassword(hash);
    let outcome = roster_core::repository::retrying(|| async {
        let loaded = repo.load::<User>(org, client.user_id.as_str()).await?;
        let session = app.load_session(org, &client.session_id).await?;
        let mut work = repo.work(org, ctx.meta.clone());
        let staged = work
            .decide::<User>(client.user_id.as_str(), &loaded, &command)
            .await
            .map_err(ApiError::from)?;
        let user_version = loaded.version + staged.events.len() as u64;
        let renew = SessionCommand::Renew(SessionRenewed {
            user_id: client.user_id.clone(),
            user_version,
            refresh_hash: refresh_hash.clone(),
            expires_at,
        });
        work.decide(&client.session_id, &session, &renew)
            .await
            .map_err(ApiError::from)?;
        Ok(work.commit().await?.map(|c| (c, user_version)))
    })
    .await
    .map_err(crate::sessions::commit_error)?;
    let (committed, user_version) =
        outcome.ok_or_else(|| ApiError::internal("a password change recorded nothing"))?;
    // The other sessions' tokens are refused from the moment this answer arrives.
    app.wait_for(committed.last_position, roster_core::users::REVOCATION_WAIT)
        .await;
    let tokens = app.session_tokens(
        org,
        client.user_id.as_str(),
        &client.session_id,
        user_version,
        committed.last_position,
        refresh_token,
        expires_at,
        committed.last_position,
    );
    Ok(write_response(
        StatusCode::OK,
        tokens,
        committed.last_position,
    ))
}

/// `GET /v1/account/sessions`: the client's own sessions.
async fn own_sessions(
    State(app): State<AppState>,
    client: ClientCtx,
    query: QueryParams,
) -> ApiResult<Response> {
    crate::sessions::sessions_page(&app, &client.ctx.org, &client.user_id, &query).await
}

/// `DELETE /v1/account/sessions/{session_id}`: ends one of the client's sessions (204).
async fn revoke_own_session(
    State(app): State<AppState>,
    client: ClientCtx,
    Path(session_id): Path<String>,
) -> ApiResult<Response> {
    crate::sessions::revoke_users_session(&app, &client.ctx, &client.user_id, &session_id).await
}
