//! Guests and anonymous sessions (docs/guests.md): `POST /v1/guests` creates a user of role
//! `guest` that expires, with its first session, in one append; `POST /v1/account/upgrade`
//! makes it a full user (same id and history); `POST /v1/sessions/anonymous` hands out a token
//! that reads public profiles and presence only — no user exists for it. Both creations are
//! off until the organization allows them, and rate limited per client address and per
//! organization. Expired guests are pruned by [`sweep_expired_guests`].

use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use roster_core::repository::{Loaded, retrying};
use roster_core::users::Item;
use roster_domain::session::{Session, SessionMethod};
use roster_domain::user::{CreateUser, DeleteMode, GUEST_ROLE, UserCommand};
use roster_domain::{Email, Password, User, UserId, UserInput, Username};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ClientCtx, Json, MaybeJson, PublicCtx};
use crate::resource::{UserResource, write_response};
use crate::routes::common::{OperationDoc, busy, execute, single};
use crate::schemas::SchemaSet;
use crate::sessions::{NewSession, SessionTokens, session_commit_error, session_meta};
use crate::state::AppState;
use crate::tokens::{ANONYMOUS_TTL_SECS, AccessClaims};

/// Default lifetime of a guest.
pub const DEFAULT_GUEST_TTL_SECS: u64 = 86_400;
/// Longest lifetime of a guest.
pub const MAX_GUEST_TTL_SECS: u64 = 2_592_000;
/// How often the server looks for expired guests to prune.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/guests",
            post_with(create, |op| {
                op.doc("createGuest", "guests", "Start as a guest")
                    .describe(
                        "Anyone may call it once the organization allows guests \
                         (`allow_guests`); rate limited per client address and per \
                         organization. The guest is a user of role `guest` with an \
                         `expires_at`; past it, its sessions stop working and the server \
                         prunes it within a minute.",
                    )
                    .written::<GuestSession>(201, "The guest's first session, and the guest.")
                    .errors(&[403, 429])
            }),
        )
        .api_route(
            "/v1/account/upgrade",
            post_with(upgrade, |op| {
                op.doc("upgradeGuest", "guests", "Turn a guest into a full user")
                    .describe(
                        "Same id and history; role `user`, no expiry. The username and \
                         email are claimed under the usual uniqueness rules; the email \
                         starts unverified.",
                    )
                    .written::<UserResource>(200, "The user.")
                    .errors(&[403, 409])
            }),
        )
        .api_route(
            "/v1/sessions/anonymous",
            post_with(anonymous, |op| {
                op.doc("createAnonymousSession", "guests", "An anonymous token")
                    .describe(
                        "Anyone may call it once the organization allows it \
                         (`allow_anonymous`); rate limited like guests. The token may call \
                         `GET /v1/profiles` and `GET /v1/presence/stream` only (403 \
                         elsewhere); no user exists for it.",
                    )
                    .json::<AnonymousSession>(201, "The token.")
                    .errors(&[403, 429])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<CreateGuest>();
    out.add::<UpgradeGuest>();
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<GuestSession>();
    out.add::<AnonymousSession>();
}

/// `POST /v1/guests`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateGuest {
    /// Shown to other users (≤ 128 characters).
    display_name: Option<String>,
    /// Picture URL (≤ 2048 characters).
    avatar_url: Option<String>,
    /// Lifetime, 1 to 2 592 000 seconds (default 86 400).
    #[schemars(range(min = 1, max = 2_592_000))]
    ttl_seconds: Option<u64>,
}

/// `POST /v1/account/upgrade`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpgradeGuest {
    /// 1–128 characters without whitespace.
    username: String,
    /// An email address (starts unverified).
    email: Option<String>,
    /// 8–256 characters.
    password: String,
}

/// The answer to `POST /v1/guests`.
#[derive(Serialize, JsonSchema)]
pub(crate) struct GuestSession {
    /// The session, as `POST /v1/sessions` answers.
    #[serde(flatten)]
    session: SessionTokens,
    /// The guest.
    user: UserResource,
}

/// An anonymous token.
#[derive(Serialize, JsonSchema)]
pub(crate) struct AnonymousSession {
    /// Bearer token for `GET /v1/profiles` and `GET /v1/presence/stream`.
    access_token: String,
    /// When it expires.
    expires_at: DateTime<Utc>,
}

fn limited(app: &AppState, ctx: &crate::extract::Ctx) -> ApiResult<()> {
    let ip = ctx.meta.ip.as_deref().and_then(|ip| ip.parse().ok());
    app.guest_limiter()
        .attempt(ctx.org.as_str(), ip)
        .map_err(|wait| {
            let mut e = ApiError::new(
                Code::RateLimited,
                "Too many guests or anonymous sessions from here; retry later.",
            );
            e.retry_after = Some(wait);
            e
        })
}

fn not_allowed(what: &str) -> ApiError {
    ApiError::new(
        Code::Forbidden,
        format!("This organization does not allow {what}."),
    )
}

async fn create(
    State(app): State<AppState>,
    PublicCtx(ctx): PublicCtx,
    body: MaybeJson<CreateGuest>,
) -> ApiResult<Response> {
    // The body is optional: no body is `{}`.
    let body = body.value;
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_GUEST_TTL_SECS);
    if !(1..=MAX_GUEST_TTL_SECS).contains(&ttl) {
        return Err(ApiError::invalid_field(
            "ttl_seconds",
            format!("must be 1 to {MAX_GUEST_TTL_SECS} seconds"),
        ));
    }
    let valid = UserInput {
        display_name: body.display_name,
        avatar_url: body.avatar_url,
        role: Some(GUEST_ROLE.to_owned()),
        ..Default::default()
    }
    .validate()
    .map_err(ApiError::invalid)?;
    if !app.models().settings(ctx.org.as_str())?.allow_guests {
        return Err(not_allowed("guests"));
    }
    limited(&app, &ctx)?;
    let user_id = UserId::generate();
    let expires_at = Utc::now() + chrono::Duration::seconds(ttl as i64);
    let mut ctx = ctx;
    ctx.meta = session_meta(&ctx, &user_id);
    let request = app.request(&ctx, None);
    let session = NewSession::new(SessionMethod::Guest);
    let command = UserCommand::CreateGuest(
        CreateUser {
            id: user_id.clone(),
            org: ctx.org.clone(),
            profile: valid.profile,
            password_hash: None,
            usernames: Default::default(),
        },
        expires_at,
    );
    let repo = app.core().repo();
    let (ctx, session, command, user_id) = (&ctx, &session, &command, &user_id);
    let created = retrying(move || async move {
        let mut work = repo.work(&ctx.org, ctx.meta.clone());
        let staged = work
            .decide::<User>(user_id.as_str(), &Loaded::default(), command)
            .await
            .map_err(ApiError::from)?;
        let user = staged
            .provisional(&ctx.org)
            .ok_or_else(|| ApiError::internal("a guest's creation produced no user"))?;
        let version = staged.events.len() as u64;
        work.decide::<Session>(
            &session.id,
            &Loaded::default(),
            &session.start(&user, version, None),
        )
        .await
        .map_err(ApiError::from)?;
        let committed = work.commit().await?;
        Ok((staged, committed))
    })
    .await;
    let (staged, committed) = created.map_err(|e| session_commit_error(e, &request))?;
    let position = committed.as_ref().map_or(0, |c| c.last_position);
    app.wait_for(position, Duration::from_secs(5)).await;
    let after = staged.after(&ctx.org, committed.as_ref());
    let user = after
        .state
        .ok_or_else(|| ApiError::internal("a guest's creation produced no user"))?;
    let tokens = app.session_tokens(
        &ctx.org,
        user_id.as_str(),
        &session.id,
        after.version,
        position,
        session.refresh_token.clone(),
        session.refresh_expires_at,
        position,
    );
    let body = GuestSession {
        session: tokens,
        user: crate::resource::user_resource(&app, user, Some(position)),
    };
    Ok(write_response(StatusCode::CREATED, body, position))
}

async fn upgrade(
    State(app): State<AppState>,
    client: ClientCtx,
    body: Json<UpgradeGuest>,
) -> ApiResult<Response> {
    let digest = body.digest;
    let body = body.value;
    let username =
        Username::parse(&body.username).map_err(|m| ApiError::invalid_field("username", m))?;
    let email = body
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(|m| ApiError::invalid_field("email", m))?;
    let password =
        Password::parse(&body.password).map_err(|m| ApiError::invalid_field("password", m))?;
    let row = app
        .models()
        .get(client.ctx.org.as_str(), client.user_id.as_str())
        .await?;
    if row.is_none_or(|r| r.user.public.profile.role != GUEST_ROLE) {
        return Err(ApiError::new(
            Code::Forbidden,
            "Only a guest can be upgraded.",
        ));
    }
    let hash = app.core().hasher().hash(password).await.map_err(busy)?;
    let usernames = app
        .models()
        .settings(client.ctx.org.as_str())?
        .enforce_unique_usernames;
    let item = Item {
        user_id: client.user_id.clone(),
        command: UserCommand::UpgradeGuest {
            username: username.as_str().to_owned(),
            email,
            password_hash: hash,
            usernames,
        },
        field_prefix: None,
    };
    single(
        &app,
        StatusCode::OK,
        execute(&app, &client.ctx, Some(&digest), vec![item]).await?,
    )
}

async fn anonymous(State(app): State<AppState>, PublicCtx(ctx): PublicCtx) -> ApiResult<Response> {
    if !app.models().settings(ctx.org.as_str())?.allow_anonymous {
        return Err(not_allowed("anonymous sessions"));
    }
    limited(&app, &ctx)?;
    let now = Utc::now().timestamp();
    let exp = now + ANONYMOUS_TTL_SECS;
    let access_token = app.tokens().sign_anonymous(AccessClaims {
        sub: String::new(),
        sid: String::new(),
        org: ctx.org.to_string(),
        iat: now,
        exp,
        typ: String::new(),
        uv: 0,
        pos: 0,
    });
    let body = AnonymousSession {
        access_token,
        expires_at: DateTime::from_timestamp(exp, 0).unwrap_or_default(),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Prunes expired guests (and drops erased users' presence), every [`SWEEP_INTERVAL`], until
/// the server stops: each guest a
/// deletion in mode `pruning` recorded as `system:guest-sweep`, one append per guest (a crash
/// leaves the rest for the next sweep; on NATS several servers may sweep: the log's
/// optimistic concurrency makes a second deletion record nothing).
pub async fn sweep_expired_guests(app: AppState) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_once(&app).await {
            tracing::warn!(error = %e.detail, "sweeping expired guests failed; retrying later");
        }
        if let Err(e) = forget_erased_presence(&app).await {
            tracing::warn!(error = %e.detail, "sweeping presence failed; retrying later");
        }
    }
}

/// Drops the presence records of users pruned or hard-deleted since (their `last_seen_at`
/// is already hidden: [`AppState::presence_of`]). A user without a row may only be one this
/// server's read models have not applied yet (a server just started, or behind): the log says
/// whether it was deleted, and on NATS the record is everyone's.
async fn forget_erased_presence(app: &AppState) -> ApiResult<()> {
    let models = app.models();
    for (org, user) in app.presence().users() {
        let gone = match models.get(&org, &user).await? {
            Some(row) => row.user.public.erased,
            None => {
                let org_id = roster_domain::OrgId::parse(&org).map_err(ApiError::internal)?;
                let loaded: Loaded<User> = app.core().repo().load(&org_id, &user).await?;
                loaded.version > 0 && loaded.state.is_none()
            }
        };
        if gone {
            app.presence()
                .forget(&org, &user)
                .await
                .map_err(ApiError::internal)?;
        }
    }
    Ok(())
}

/// One pass over every organization's guests.
pub async fn sweep_once(app: &AppState) -> ApiResult<usize> {
    let now = Utc::now();
    let models = app.models();
    let mut pruned = 0;
    for org in models.organizations() {
        let expired = models.expired_guests(&org, now).await?;
        for id in expired {
            let Ok(org_id) = roster_domain::OrgId::parse(&org) else {
                continue;
            };
            let Ok(user_id) = UserId::parse(&id) else {
                continue;
            };
            let request = roster_core::Request {
                org: org_id,
                meta: roster_projections::EventMeta {
                    actor: "system:guest-sweep".to_owned(),
                    ..Default::default()
                },
                idempotency: None,
                if_match: None,
            };
            let item = Item {
                user_id,
                command: UserCommand::Delete(DeleteMode::Pruning),
                field_prefix: None,
            };
            roster_core::users::execute(app.core(), &request, vec![item]).await?;
            pruned += 1;
        }
    }
    Ok(pruned)
}
