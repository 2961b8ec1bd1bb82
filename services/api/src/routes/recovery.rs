//! Purpose tokens, account recovery and self-service (docs/recovery.md):
//! `POST /v1/users/{id}/tokens`, `POST /v1/account/verification`,
//! `POST /v1/account/password/reset`, `POST /v1/sessions/magic`, `POST /v1/account/recovery`
//! (a client's other self-service calls are in `self_service`).
//!
//! A token is `<user id>.<43 characters of base64url randomness>`; the log records only its
//! SHA-256 (sealed under the user's key) and the token itself sealed under a data key of its
//! own, destroyed when the token is used, superseded or expires. Wrong, used, superseded and
//! expired tokens all get the same 401.

use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use roster_domain::session::SessionMethod;
use roster_domain::user::{IssueToken, Purpose, RedeemToken, UserCommand};
use roster_domain::values::normalize_email;
use roster_domain::{KeyId, OrgId, User, UserId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, Json, PublicCtx};
use crate::resource::user_response;
use crate::routes::common::{
    Attempt, OperationDoc, busy, new_password, parse_user_id, refuse_status,
};
use crate::schemas::SchemaSet;
use crate::sessions::{credential_idempotency, session_meta};
use crate::state::AppState;

/// A token lives this long unless the request says otherwise.
const DEFAULT_TTL_SECS: u64 = 3600;
/// The longest a token may live.
const MAX_TTL_SECS: u64 = 86_400;
/// How long redemption waits for the read models before looking a user up.
const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/users/{id}/tokens",
            post_with(issue_token, |op| {
                op.doc("issueToken", "recovery", "Issue a purpose token")
                    .describe(
                        "Email or phone verification (bound to the current address or number), \
                         password reset or magic link. Single use; it dies when a newer one of \
                         its purpose is issued and when the password changes. Only its hash is \
                         kept: the response is the only place it is shown in clear.",
                    )
                    .written::<IssuedToken>(201, "The token.")
                    .errors(&[404, 409])
            }),
        )
        .api_route(
            "/v1/account/verification",
            post_with(verify, |op| {
                op.doc("verifyContact", "recovery", "Redeem a verification token")
                    .describe(
                        "An `email_verification` or `phone_verification` token sets its flag, \
                         if the address or number is still the one it was issued for. No \
                         credentials needed; rate limited like sign-in.",
                    )
                    .user(200, "The user's own object, the flag set.", true)
                    .errors(&[401, 403, 429])
            }),
        )
        .api_route(
            "/v1/account/password/reset",
            post_with(reset_password, |op| {
                op.doc("resetPassword", "recovery", "Redeem a password reset token")
                    .describe("Sets the new password; every session of the user ends.")
                    .user(200, "The user's own object.", true)
                    .errors(&[401, 403, 429, 503])
            }),
        )
        .api_route(
            "/v1/sessions/magic",
            post_with(magic_sign_in, |op| {
                op.doc(
                    "signInWithMagicLink",
                    "recovery",
                    "Redeem a magic-link token",
                )
                .written::<crate::sessions::SessionTokens>(201, "A new session.")
                .errors(&[401, 403, 409, 429])
            }),
        )
        .api_route(
            "/v1/account/recovery",
            post_with(recover, |op| {
                op.doc(
                    "requestPasswordReset",
                    "recovery",
                    "Request a password reset",
                )
                .describe(
                    "Answers 202 `{}` at once, the same for known and unknown addresses \
                         (no `x-roster-position`). For a known one, a `password_reset` token \
                         is issued — at most one a minute per user — and recorded, sealed, in \
                         `PasswordResetRequested` for the application to mail.",
                )
                .json::<Empty>(202, "Accepted.")
                .errors(&[429])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<IssueTokenBody>();
    out.add::<RedeemBody>();
    out.add::<ResetBody>();
    out.add::<RecoveryBody>();
}

/// `POST /v1/users/{id}/tokens`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IssueToken")]
pub(crate) struct IssueTokenBody {
    /// What the token is for.
    purpose: Purpose,
    /// Lifetime, 1 to 86 400 s (default 3 600).
    #[schemars(range(min = 1, max = 86400))]
    ttl_seconds: Option<u64>,
}

/// A purpose token, as issued.
#[derive(Serialize, JsonSchema)]
pub(crate) struct IssuedToken {
    /// The token (shown only here).
    token: String,
    /// What it is for.
    purpose: Purpose,
    /// When it stops working.
    expires_at: DateTime<Utc>,
}

/// A body holding a token.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RedeemToken")]
pub(crate) struct RedeemBody {
    /// The token.
    token: String,
}

/// `POST /v1/account/password/reset`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ResetPassword")]
pub(crate) struct ResetBody {
    /// A `password_reset` token.
    token: String,
    /// The new password, 1 to 256 characters.
    #[schemars(length(min = 1, max = 256))]
    password: String,
}

/// `POST /v1/account/recovery`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RequestPasswordReset")]
pub(crate) struct RecoveryBody {
    /// The account's email.
    email: String,
}

/// `{}`.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Empty {}

/// A fresh token for `user` and its hash.
fn new_token(user: &UserId) -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let token = format!("{user}.{secret}");
    let hash = token_hash(&token);
    (token, hash)
}

/// Hex SHA-256 of a token (256 bits of entropy: a fast hash is enough).
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The user a presented token names, and its hash; `None` for what no token looks like.
fn read_token(token: &str) -> Option<(UserId, String)> {
    let (user, secret) = token.rsplit_once('.')?;
    let ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let user = UserId::parse(user).ok().filter(|_| ok)?;
    Some((user, token_hash(token)))
}

/// The one answer for a wrong, used, superseded or expired token.
fn invalid_token() -> ApiError {
    roster_domain::DomainError::TokenInvalid.into()
}

/// Seals `token` under a new data key of its own (the associated data names the user and the
/// purpose).
async fn seal_token(
    app: &AppState,
    org: &OrgId,
    user: &UserId,
    purpose: Purpose,
    token: &str,
) -> ApiResult<(KeyId, String)> {
    let (kid, key) = app
        .codec()
        .keys()
        .create(1)
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("the key store made no key"))?;
    let aad = roster_domain::user::token_aad(org.as_str(), user.as_str(), purpose);
    let sealed = roster_vault::seal(&key, &aad, token.as_bytes());
    Ok((
        kid,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
    ))
}

/// Issues a token in one append (retrying version conflicts); `None` when the decision was to
/// issue nothing (recovery within a minute of the last one). The token's key is destroyed if
/// nothing recorded it.
async fn issue(
    app: &AppState,
    ctx: &Ctx,
    user: &UserId,
    purpose: Purpose,
    ttl: u64,
    recovery: bool,
    idempotency: Option<&roster_core::IdempotencyClaim>,
) -> ApiResult<Option<IssuedToken>> {
    let (token, hash) = new_token(user);
    let (kid, sealed) = seal_token(app, &ctx.org, user, purpose, &token).await?;
    let now = Utc::now();
    let expires_at = now + chrono::Duration::seconds(ttl as i64);
    let command = UserCommand::IssueToken(IssueToken {
        purpose,
        token_hash: hash,
        expires_at,
        sealed: Some((kid, sealed)),
        recovery,
        now,
    });
    let repo = app.core().repo();
    let outcome = roster_core::repository::retrying(|| async {
        let loaded = repo.load::<User>(&ctx.org, user.as_str()).await?;
        let mut work = repo.work(&ctx.org, ctx.meta.clone());
        work.decide::<User>(user.as_str(), &loaded, &command)
            .await
            .map_err(ApiError::from)?;
        if let Some(claim) = idempotency {
            work.claim_first(claim.reservation(now.timestamp_micros()));
        }
        Ok(work.commit().await?.map(|_| ()))
    })
    .await;
    // The superseded token's key goes with the append (`EventSet::ended_key`); the new one's,
    // if nothing recorded it, now.
    if !matches!(outcome, Ok(Some(()))) {
        let _ = app.codec().keys().destroy(&[kid]).await;
    }
    let recorded = outcome.map_err(crate::sessions::commit_error)?;
    Ok(recorded.map(|()| IssuedToken {
        token,
        purpose,
        expires_at,
    }))
}

/// `POST /v1/users/{id}/tokens`: a new purpose token (201). The response holds a credential,
/// so a repeated `Idempotency-Key` is refused rather than answered again.
async fn issue_token(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<IssueTokenBody>,
) -> ApiResult<Response> {
    let user = parse_user_id(&id)?;
    let ttl = body.value.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::invalid_field(
            "ttl_seconds",
            format!("must be 1 to {MAX_TTL_SECS}"),
        ));
    }
    let request = app.request(&ctx, Some(&body.digest));
    let idempotency = credential_idempotency(&app, &request).await?;
    let issued = issue(
        &app,
        &ctx,
        &user,
        body.value.purpose,
        ttl,
        false,
        idempotency.as_ref(),
    )
    .await?
    .ok_or_else(|| ApiError::internal("issuing a token recorded nothing"))?;
    let mut response = (StatusCode::CREATED, axum::Json(issued)).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        "no-store".parse().expect("a header value"),
    );
    Ok(response)
}

/// The user a presented token names, its redemption command, and a try taken from that
/// user's token budget (rate limited per user and client address, like sign-in).
fn redemption(
    app: &AppState,
    ctx: &Ctx,
    token: &str,
    purposes: Vec<Purpose>,
    new_password: Option<roster_domain::PasswordHash>,
) -> ApiResult<(UserId, UserCommand, Attempt)> {
    let (user_id, hash) = read_token(token).ok_or_else(invalid_token)?;
    let attempt = Attempt::take(
        app,
        ctx,
        format!("{}/token/{user_id}", ctx.org),
        "token attempts",
    )?;
    let command = UserCommand::RedeemToken(RedeemToken {
        purposes,
        token_hash: hash,
        new_password,
        now: Utc::now(),
    });
    Ok((user_id, command, attempt))
}

/// Redeems `token` for one of `purposes` in one append (retrying version conflicts): the user
/// after it, and the append's position.
async fn redeem(
    app: &AppState,
    ctx: &Ctx,
    token: &str,
    purposes: Vec<Purpose>,
    new_password: Option<roster_domain::PasswordHash>,
) -> ApiResult<(User, u64)> {
    let (user_id, command, attempt) = redemption(app, ctx, token, purposes, new_password)?;
    let repo = app.core().repo();
    let meta = session_meta(ctx, &user_id);
    roster_core::repository::retrying(|| async {
        let loaded = repo.load::<User>(&ctx.org, user_id.as_str()).await?;
        let mut work = repo.work(&ctx.org, meta.clone());
        let staged = work
            .decide::<User>(user_id.as_str(), &loaded, &command)
            .await
            .map_err(ApiError::from)?;
        let after = staged.provisional(&ctx.org).ok_or_else(invalid_token)?;
        // Valid token: the status decides (told only to the token's holder).
        refuse_status(after.status())?;
        attempt.succeeded(app);
        let committed = work
            .commit()
            .await?
            .ok_or_else(|| ApiError::internal("redeeming a token recorded nothing"))?;
        let user = staged.after(&ctx.org, Some(&committed)).state;
        Ok((user.ok_or_else(invalid_token)?, committed.last_position))
    })
    .await
    .map_err(crate::sessions::commit_error)
}

/// `POST /v1/account/verification`.
async fn verify(
    State(app): State<AppState>,
    PublicCtx(ctx): PublicCtx,
    body: Json<RedeemBody>,
) -> ApiResult<Response> {
    let purposes = vec![Purpose::EmailVerification, Purpose::PhoneVerification];
    let (user, position) = redeem(&app, &ctx, &body.value.token, purposes, None).await?;
    app.wait_for(position, LOOKUP_WAIT).await;
    Ok(user_response(&app, StatusCode::OK, user, Some(position)))
}

/// `POST /v1/account/password/reset`: a new password; every session ends. Answers once the
/// read models show it, so the old tokens are refused from the moment the response arrives.
async fn reset_password(
    State(app): State<AppState>,
    PublicCtx(ctx): PublicCtx,
    body: Json<ResetBody>,
) -> ApiResult<Response> {
    let ResetBody { token, password } = body.value;
    if read_token(&token).is_none() {
        return Err(invalid_token());
    }
    let password = new_password(&password)?;
    let hash = app.core().hasher().hash(password).await.map_err(busy)?;
    let purposes = vec![Purpose::PasswordReset];
    let (user, position) = redeem(&app, &ctx, &token, purposes, Some(hash)).await?;
    app.wait_for(position, roster_core::users::REVOCATION_WAIT)
        .await;
    Ok(user_response(&app, StatusCode::OK, user, Some(position)))
}

/// `POST /v1/sessions/magic`: signs in with a magic-link token (201). The token is used up in
/// the same append as the session starts.
async fn magic_sign_in(
    State(app): State<AppState>,
    PublicCtx(ctx): PublicCtx,
    body: Json<RedeemBody>,
) -> ApiResult<Response> {
    let request = app.request(&ctx, Some(&body.digest));
    let idempotency = credential_idempotency(&app, &request).await?;
    let (user_id, command, attempt) = redemption(
        &app,
        &ctx,
        &body.value.token,
        vec![Purpose::MagicLink],
        None,
    )?;
    let repo = app.core().repo();
    let loaded = repo.load::<User>(&ctx.org, user_id.as_str()).await?;
    let mut work = repo.work(&ctx.org, session_meta(&ctx, &user_id));
    work.decide::<User>(user_id.as_str(), &loaded, &command)
        .await?;
    let user = loaded.state.as_ref().ok_or_else(invalid_token)?;
    refuse_status(user.status())?;
    attempt.succeeded(&app);
    // A concurrent redemption of the same token conflicts on the user's version: one wins.
    app.start_session(
        work,
        user,
        &loaded,
        SessionMethod::MagicLink,
        idempotency.as_ref(),
        &request,
    )
    .await
    .map_err(|e| {
        if e.code == Code::Conflict {
            invalid_token()
        } else {
            e
        }
    })
}

/// `POST /v1/account/recovery`: 202 `{}` at once, whatever the address; the token is issued
/// in the background.
async fn recover(
    State(app): State<AppState>,
    PublicCtx(ctx): PublicCtx,
    body: Json<RecoveryBody>,
) -> ApiResult<Response> {
    let email = normalize_email(&body.value.email);
    // Never succeeds: a budget of requests per address and email, whoever the email names.
    Attempt::take(
        &app,
        &ctx,
        format!("{}/recovery/{email}", ctx.org),
        "recovery requests",
    )?;
    tokio::spawn(async move {
        if let Err(e) = recover_in_background(&app, &ctx, &email).await {
            tracing::warn!(error = %e.detail, "account recovery could not issue a token");
        }
    });
    Ok((StatusCode::ACCEPTED, axum::Json(Empty {})).into_response())
}

async fn recover_in_background(app: &AppState, ctx: &Ctx, email: &str) -> ApiResult<()> {
    let head = app.log().head();
    app.wait_for(head, LOOKUP_WAIT).await;
    let ids = app.models().ids_by_email(ctx.org.as_str(), email)?;
    let [id] = ids.as_slice() else {
        return Ok(());
    };
    let user = UserId::parse(id).map_err(ApiError::internal)?;
    let mut ctx = ctx.clone();
    ctx.meta = session_meta(&ctx, &user);
    match issue(
        app,
        &ctx,
        &user,
        Purpose::PasswordReset,
        DEFAULT_TTL_SECS,
        true,
        None,
    )
    .await
    {
        // A deleted user, or one without an email any more, gets nothing.
        Err(e) if e.code.status().is_client_error() => Ok(()),
        other => other.map(|_| ()),
    }
}

/// How often expired tokens' keys are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Destroys the data keys of expired purpose tokens, forever (the server runs it): a sealed
/// token cannot be read back once it has expired, whether or not anyone used it.
pub async fn sweep_token_keys(app: AppState) {
    const BATCH: usize = 1000;
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        loop {
            let now = Utc::now().timestamp_micros();
            match app.models().sweep_expired_token_keys(now, BATCH).await {
                Ok(n) if n == BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not destroy expired token keys yet");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_user_and_nothing_else_reads_as_one() {
        let user = UserId::parse("alice.smith").unwrap();
        let (token, hash) = new_token(&user);
        assert_eq!(read_token(&token), Some((user, hash)));
        for bad in [
            "",
            "alice",
            "alice.",
            ".abc",
            "alice.short",
            &format!("{token}x"),
        ] {
            assert_eq!(read_token(bad), None, "{bad}");
        }
    }
}
