//! Custom tokens (API.md §5): a server mints a single-use token for a user id
//! (`POST /v1/tokens/custom`); the client exchanges it for a session
//! (`POST /v1/tokens/signin`), which signs the user up if the id is new — the user's creation,
//! the session and the token's use are one atomic append.

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use roster_domain::session::SessionMethod;
use roster_domain::{OrgId, Profile, User, UserId};
use roster_eventlog::{AppendError, Reservation, Transaction};
use roster_projections::keys::{ReservationKind, custom_token_reservation, reservation_kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::commands::{Attached, Attaching, Intent, Item};
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, Json, PublicCtx};
use crate::resource::write_response;
use crate::routes::openapi::OperationDoc;
use crate::routes::sessions::refuse_status;
use crate::schemas::SchemaSet;
use crate::sessions::{
    NewSession, SessionTokens, append_error, credential_idempotency, repeated_credential_request,
    session_meta,
};
use crate::state::AppState;
use crate::tokens::{CUSTOM_DEFAULT_TTL_SECS, CUSTOM_MAX_TTL_SECS, CustomClaims};

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/tokens/custom",
            post_with(create, |op| {
                op.doc("createCustomToken", "tokens", "Mint a custom token")
                    .describe(
                        "A single-use token that signs `user_id` in once (`POST \
                         /v1/tokens/signin`), creating the user if the id is new.",
                    )
                    .json::<CustomToken>(200, "The token.")
            }),
        )
        .api_route(
            "/v1/tokens/signin",
            post_with(sign_in, |op| {
                op.doc("signInWithToken", "tokens", "Sign in with a custom token")
                    .describe(
                        "The user's creation (for a new id), the session and the token's use \
                         are one atomic append.",
                    )
                    .written::<SessionTokens>(200, "A new session and its tokens.")
                    .errors(&[401, 403, 409])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<CreateCustomToken>();
    out.add::<SignInWithToken>();
}

/// `POST /v1/tokens/custom`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCustomToken {
    /// The user the token signs in (created on sign-in if it does not exist).
    user_id: String,
    /// Lifetime, 1 to 3600 seconds (default 900).
    #[schemars(range(min = 1, max = 3600))]
    ttl_seconds: Option<u64>,
}

/// A custom token.
#[derive(Serialize, JsonSchema)]
pub(crate) struct CustomToken {
    /// The token (a JWT): pass it to `POST /v1/tokens/signin` once.
    token: String,
    /// The user it signs in.
    user_id: String,
    /// When it stops working.
    expires_at: DateTime<Utc>,
}

/// `POST /v1/tokens/custom` (server): a token that signs `user_id` in once, within the TTL.
async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<CreateCustomToken>,
) -> ApiResult<Response> {
    let user_id =
        UserId::parse(&body.value.user_id).map_err(|m| ApiError::invalid_field("user_id", m))?;
    let ttl = body.value.ttl_seconds.unwrap_or(CUSTOM_DEFAULT_TTL_SECS);
    if !(1..=CUSTOM_MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::invalid_field(
            "ttl_seconds",
            format!("must be 1 to {CUSTOM_MAX_TTL_SECS} seconds"),
        ));
    }
    let now = Utc::now().timestamp();
    let exp = now + ttl as i64;
    let token = app.0.tokens.sign_custom(CustomClaims {
        sub: user_id.to_string(),
        org: ctx.org.to_string(),
        jti: ulid::Ulid::new().to_string(),
        iat: now,
        exp,
        typ: String::new(),
    });
    Ok(axum::Json(CustomToken {
        token,
        user_id: user_id.to_string(),
        expires_at: DateTime::from_timestamp(exp, 0).unwrap_or_default(),
    })
    .into_response())
}

/// `POST /v1/tokens/signin`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignInWithToken {
    /// A custom token from `POST /v1/tokens/custom`.
    token: String,
}

fn invalid_token() -> ApiError {
    ApiError::new(
        Code::Unauthorized,
        "The token is not valid, has expired or has already been used.",
    )
}

/// `POST /v1/tokens/signin`: a custom token → a session (200, the body of `POST /v1/sessions`).
async fn sign_in(
    State(app): State<AppState>,
    PublicCtx(ctx): PublicCtx,
    body: Json<SignInWithToken>,
) -> ApiResult<Response> {
    let digest = ctx.digest_with(Some(&body.digest));
    let claims = app
        .0
        .tokens
        .verify_custom(&body.value.token)
        .ok_or_else(invalid_token)?;
    let (Ok(org), Ok(user_id)) = (OrgId::parse(&claims.org), UserId::parse(&claims.sub)) else {
        return Err(invalid_token());
    };
    // The token names its organization; a request that names another one explicitly (a
    // header other than the default) is refused.
    if org != ctx.org && ctx.org != OrgId::default_org() {
        return Err(invalid_token());
    }
    let idempotency = credential_idempotency(&app, &ctx, &digest).await?;
    let session = NewSession::new(SessionMethod::CustomToken);
    // The owner is this sign-in's session: any other sign-in with the token is refused.
    let used = Reservation::Claim {
        key: custom_token_reservation(org.as_str(), &claims.jti),
        owner: format!("session:{}", session.id),
        // After its expiry the token fails its own check; the claim may lapse with it.
        expires_at: Some((claims.exp + 60) * 1_000_000),
    };
    let mut ctx = ctx;
    ctx.org = org.clone();
    ctx.meta = session_meta(&ctx, &user_id);
    ctx.meta.causation_id = Some(claims.jti.clone());
    let reservations: Vec<Reservation> = std::iter::once(used).chain(idempotency).collect();

    let loaded = app.load(&org, &user_id).await?;
    let (user_version, position) = match loaded.user.as_ref() {
        None => match sign_up(&app, &ctx, &user_id, &session, &reservations, &digest).await {
            Ok(done) => done,
            // Created meanwhile by another request: sign in to it instead.
            Err(e) if e.code == Code::IdTaken => {
                let loaded = app.load(&org, &user_id).await?;
                match loaded.user.as_ref() {
                    Some(user) => {
                        existing(
                            &app,
                            &ctx,
                            user,
                            loaded.version,
                            &session,
                            reservations,
                            &digest,
                        )
                        .await?
                    }
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        },
        Some(user) => {
            existing(
                &app,
                &ctx,
                user,
                loaded.version,
                &session,
                reservations,
                &digest,
            )
            .await?
        }
    };
    app.wait_for(position, std::time::Duration::from_secs(5))
        .await;
    let tokens = app.session_tokens(
        &org,
        user_id.as_str(),
        &session.id,
        user_version,
        position,
        session.refresh_token,
        session.refresh_expires_at,
        position,
    );
    Ok(write_response(StatusCode::OK, tokens, position))
}

/// Signs an existing user in: the session and the token's use in one append.
async fn existing(
    app: &AppState,
    ctx: &Ctx,
    user: &User,
    version: u64,
    session: &NewSession,
    reservations: Vec<Reservation>,
    digest: &str,
) -> ApiResult<(u64, u64)> {
    refuse_status(user.status()).map_err(|e| {
        if e.code == Code::Unauthorized {
            invalid_token()
        } else {
            e
        }
    })?;
    let key = app.data_key(user, &[]).await?;
    let append = app.start_session(
        &ctx.org,
        user,
        version,
        session,
        &ctx.meta,
        key.as_ref().map(|(i, k)| (*i, k)),
    );
    match app
        .log()
        .append(Transaction {
            appends: vec![append],
            reservations,
        })
        .await
    {
        Ok(committed) => Ok((version, committed.last_position)),
        Err(AppendError::ReservationHeld { owner, key, .. })
            if reservation_kind(&key) == ReservationKind::Idempotency =>
        {
            Err(repeated_credential_request(&owner, digest))
        }
        Err(e) => Err(append_error(e)),
    }
}

/// Creates the user (id only) with its first session, in one append through the command path.
async fn sign_up(
    app: &AppState,
    ctx: &Ctx,
    user_id: &UserId,
    session: &NewSession,
    reservations: &[Reservation],
    digest: &str,
) -> ApiResult<(u64, u64)> {
    let attach = |users: &[Attaching<'_>]| -> ApiResult<Attached> {
        let Some(Attaching {
            user: Some(user),
            version,
            key,
        }) = users.first()
        else {
            return Err(ApiError::internal("sign-up produced no user"));
        };
        Ok(Attached {
            appends: vec![app.start_session(&ctx.org, user, *version, session, &ctx.meta, *key)],
            reservations: reservations.to_vec(),
        })
    };
    let item = Item {
        user_id: user_id.clone(),
        intent: Intent::Create {
            profile: Profile::default(),
            password_hash: None,
            upsert: false,
        },
        field_prefix: None,
    };
    // The command's own idempotency handling would answer a repeat with the user but no
    // session: the claim rides in `reservations` instead.
    let mut plain = ctx.clone();
    plain.idempotency_key = None;
    let outcome = app
        .execute_with(&plain, vec![item], digest, Some(&attach))
        .await?;
    let version = match outcome.users.first() {
        Some((_, Some(user))) => user.version,
        _ => return Err(ApiError::internal("sign-up produced no user")),
    };
    Ok((version, outcome.position))
}
