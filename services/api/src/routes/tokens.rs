//! Custom tokens (docs/contract.md §5): a server mints a single-use token for a user id
//! (`POST /v1/tokens/custom`); the client exchanges it for a session
//! (`POST /v1/tokens/signin`), which signs the user up if the id is new — the user's creation,
//! the session and the token's use are one atomic append.

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use roster_core::repository::{Loaded, retrying};
use roster_domain::session::{Session, SessionMethod};
use roster_domain::settings::UniqueUsernames;
use roster_domain::user::{CreateUser, UserCommand};
use roster_domain::{OrgId, Profile, User, UserId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, Json, PublicCtx};
use crate::resource::write_response;
use crate::routes::common::{OperationDoc, checked_identity, refuse_status};
use crate::schemas::SchemaSet;
use crate::sessions::{
    NewSession, SessionTokens, credential_idempotency, session_commit_error, session_meta,
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
    /// The user the token signs in (created on sign-in if it does not exist); or `identity`.
    user_id: Option<String>,
    /// Instead of `user_id`: the identity whose holder the token signs in (a user holding it
    /// is created on sign-in if none does — Nakama's device and social authentication).
    identity: Option<IdentityBody>,
    /// Lifetime, 1 to 3600 seconds (default 900).
    #[schemars(range(min = 1, max = 3600))]
    ttl_seconds: Option<u64>,
}

/// An identity in a request body.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentityBody {
    /// 1–32 of `a-z 0-9 _`.
    provider: String,
    /// 1–256 printable characters.
    subject: String,
}

/// A custom token.
#[derive(Serialize, JsonSchema)]
pub(crate) struct CustomToken {
    /// The token (a JWT): pass it to `POST /v1/tokens/signin` once.
    token: String,
    /// The user it signs in (`null` for a token minted for an identity).
    user_id: Option<String>,
    /// When it stops working.
    expires_at: DateTime<Utc>,
}

/// `POST /v1/tokens/custom` (server): a token that signs `user_id` in once, within the TTL.
async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<CreateCustomToken>,
) -> ApiResult<Response> {
    let body = body.value;
    let (sub, idp) = match (&body.user_id, &body.identity) {
        (Some(id), None) => {
            let id = UserId::parse(id).map_err(|m| ApiError::invalid_field("user_id", m))?;
            (id.to_string(), None)
        }
        (None, Some(i)) => {
            let identity = checked_identity(&i.provider, &i.subject)
                .map_err(|m| ApiError::invalid_field("identity", m))?;
            (
                String::new(),
                Some(format!("{}:{}", identity.provider, identity.subject)),
            )
        }
        _ => {
            return Err(ApiError::invalid_field(
                "user_id",
                "give exactly one of user_id and identity",
            ));
        }
    };
    let ttl = body.ttl_seconds.unwrap_or(CUSTOM_DEFAULT_TTL_SECS);
    if !(1..=CUSTOM_MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::invalid_field(
            "ttl_seconds",
            format!("must be 1 to {CUSTOM_MAX_TTL_SECS} seconds"),
        ));
    }
    let now = Utc::now().timestamp();
    let exp = now + ttl as i64;
    let user_id = (!sub.is_empty()).then(|| sub.clone());
    let token = app.tokens().sign_custom(CustomClaims {
        sub,
        org: ctx.org.to_string(),
        jti: ulid::Ulid::new().to_string(),
        iat: now,
        exp,
        typ: String::new(),
        idp,
    });
    Ok(axum::Json(CustomToken {
        token,
        user_id,
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
/// The user's creation (for a new id), the session and the token's use are one append.
async fn sign_in(
    State(app): State<AppState>,
    PublicCtx(ctx): PublicCtx,
    body: Json<SignInWithToken>,
) -> ApiResult<Response> {
    let claims = app
        .tokens()
        .verify_custom(&body.value.token)
        .ok_or_else(invalid_token)?;
    let Ok(org) = OrgId::parse(&claims.org) else {
        return Err(invalid_token());
    };
    // A token for an identity signs in its holder, or a new user that will hold it.
    let (user_id, link) = match &claims.idp {
        None => (
            UserId::parse(&claims.sub).map_err(|_| invalid_token())?,
            None,
        ),
        Some(idp) => {
            let identity =
                crate::routes::common::parse_identity_param(idp).map_err(|_| invalid_token())?;
            match roster_core::users::identity_holder(app.core(), &org, &identity).await? {
                Some(holder) => (UserId::parse(&holder).map_err(|_| invalid_token())?, None),
                None => (UserId::generate(), Some(identity)),
            }
        }
    };
    // The token names its organization; a request that names another one explicitly (a
    // header other than the default) is refused.
    if org != ctx.org && ctx.org != OrgId::default_org() {
        return Err(invalid_token());
    }
    let mut ctx = ctx;
    ctx.org = org.clone();
    ctx.meta = session_meta(&ctx, &user_id);
    ctx.meta.causation_id = Some(claims.jti.clone());
    let request = app.request(&ctx, Some(&body.digest));
    let idempotency = credential_idempotency(&app, &request).await?;
    let session = NewSession::new(SessionMethod::CustomToken);
    // After its expiry the token fails its own check; its use may lapse with it.
    let token = Some((claims.jti.clone(), (claims.exp + 60) * 1_000_000));
    let repo = app.core().repo();
    let (ctx, session, token, idempotency, link) = (&ctx, &session, &token, &idempotency, &link);
    let (org_ref, user_ref) = (&org, &user_id);
    let signed_in = retrying(move || async move {
        let (org, user_id) = (org_ref, user_ref);
        let loaded: Loaded<User> = repo.load(org, user_id.as_str()).await?;
        let mut work = repo.work(org, ctx.meta.clone());
        let (user, version) = match &loaded.state {
            Some(user) if user.expired(Utc::now()) => return Err(invalid_token().into()),
            Some(user) => {
                refuse_status(user.status()).map_err(|e| match e.code {
                    Code::Unauthorized => invalid_token(),
                    _ => e,
                })?;
                (user.clone(), loaded.version)
            }
            // A new id: the user (id only) is created with its first session.
            None => {
                let new = CreateUser {
                    id: user_id.clone(),
                    org: org.clone(),
                    profile: Profile::default(),
                    password_hash: None,
                    usernames: UniqueUsernames::App,
                };
                let create = match link {
                    Some(identity) => UserCommand::SignUpWithIdentity(new, identity.clone()),
                    None => UserCommand::Create(new),
                };
                let staged = work
                    .decide::<User>(user_id.as_str(), &loaded, &create)
                    .await
                    .map_err(ApiError::from)?;
                let user = staged
                    .provisional(org)
                    .ok_or_else(|| ApiError::internal("sign-up produced no user"))?;
                (user, loaded.version + staged.events.len() as u64)
            }
        };
        work.decide::<Session>(
            &session.id,
            &Loaded::default(),
            &session.start(&user, version, token.clone()),
        )
        .await
        .map_err(ApiError::from)?;
        if let Some(claim) = &idempotency {
            work.claim_first(claim.reservation(Utc::now().timestamp_micros()));
        }
        let committed = work.commit().await?;
        Ok((version, committed))
    })
    .await;
    let (user_version, committed) = signed_in.map_err(|e| session_commit_error(e, &request))?;
    let position = committed.map_or(0, |c| c.last_position);
    app.wait_for(position, std::time::Duration::from_secs(5))
        .await;
    let tokens = app.session_tokens(
        &org,
        user_id.as_str(),
        &session.id,
        user_version,
        position,
        session.refresh_token.clone(),
        session.refresh_expires_at,
        position,
    );
    Ok(write_response(StatusCode::OK, tokens, position))
}
