//! What every handler can reach: the [`Core`] the worker shares, and what only HTTP needs
//! (API keys, token keys, the sign-in limiter, metrics, the export files). Defined here only.

use std::sync::Arc;

use roster_core::{Core, IdempotencyClaim, Request};
use roster_eventlog::{EventLog, Position};
use roster_projections::{Codec, ReadModels};
use roster_worker::ExportStore;
use sha2::{Digest, Sha256};

use crate::extract::Ctx;

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    core: Core,
    /// SHA-256 digests of the accepted API keys.
    api_keys: Vec<[u8; 32]>,
    /// Signs and verifies access and custom tokens.
    tokens: crate::tokens::TokenKeys,
    /// Sign-in rate limits per account and per address.
    login_limiter: crate::ratelimit::LoginLimiter,
    /// Where finished export files are kept.
    exports: ExportStore,
    /// This server's metrics (`GET /metrics`).
    metrics: Arc<crate::metrics::Metrics>,
    /// Whether webhooks may point at private addresses.
    allow_private_webhooks: bool,
    /// Limits on creating guests and anonymous sessions.
    guest_limiter: crate::ratelimit::CreationLimiter,
    /// Who is online (not in the event log).
    presence: Arc<crate::presence::Presence>,
}

/// What the state holds besides the core and the credentials.
pub struct Services {
    /// Where finished export files are kept.
    pub exports: ExportStore,
    /// This server's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether webhooks may point at private addresses.
    pub allow_private_webhooks: bool,
    /// Limits on creating guests and anonymous sessions.
    pub guest_limits: crate::GuestLimits,
    /// The presence store.
    pub presence: Arc<crate::presence::Presence>,
}

impl AppState {
    /// The state over `core`, accepting `api_keys`, signing tokens with `token_secret`.
    pub fn new(
        core: Core,
        api_keys: &[String],
        token_secret: [u8; 32],
        services: Services,
    ) -> Self {
        let Services {
            exports,
            metrics,
            allow_private_webhooks,
            guest_limits,
            presence,
        } = services;
        Self(Arc::new(Inner {
            core,
            api_keys: api_keys
                .iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
            tokens: crate::tokens::TokenKeys::new(&token_secret),
            login_limiter: crate::ratelimit::LoginLimiter::default(),
            exports,
            metrics,
            allow_private_webhooks,
            guest_limiter: crate::ratelimit::CreationLimiter::new(
                guest_limits.per_address_per_minute,
                guest_limits.per_organization_per_hour,
            ),
            presence,
        }))
    }

    /// The presence store.
    pub fn presence(&self) -> &Arc<crate::presence::Presence> {
        &self.0.presence
    }

    /// A user's presence as others see it: nothing of a pruned or erased user.
    pub fn presence_of(&self, user: &roster_domain::User) -> crate::presence::Shown {
        if user.public.erased {
            return crate::presence::Shown::default();
        }
        self.0
            .presence
            .get(user.public.organization_id.as_str(), user.id().as_str())
            .map(|r| r.shown(chrono::Utc::now()))
            .unwrap_or_default()
    }

    /// The limits on creating guests and anonymous sessions.
    pub fn guest_limiter(&self) -> &crate::ratelimit::CreationLimiter {
        &self.0.guest_limiter
    }

    /// Whether webhooks may point at private addresses (`--allow-private-webhooks`).
    pub fn allow_private_webhooks(&self) -> bool {
        self.0.allow_private_webhooks
    }

    /// The core.
    pub fn core(&self) -> &Core {
        &self.0.core
    }

    /// SHA-256 digests of the accepted API keys.
    pub fn api_key_digests(&self) -> &[[u8; 32]] {
        &self.0.api_keys
    }

    /// The event log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        self.0.core.log()
    }

    /// The codec.
    pub fn codec(&self) -> &Codec {
        self.0.core.codec()
    }

    /// The read models in use now (see [`Core::models`]).
    pub fn models(&self) -> Arc<ReadModels> {
        self.0.core.models()
    }

    /// Waits until the read models in use have applied `position`; false on timeout.
    pub async fn wait_for(&self, position: Position, timeout: std::time::Duration) -> bool {
        self.0.core.wait_for(position, timeout).await
    }

    /// The live read models (the swappable handle, the projector, a running rebuild).
    pub fn live(&self) -> &Arc<roster_core::live::LiveReadModels> {
        self.0.core.live()
    }

    /// This server's identity.
    pub fn server_id(&self) -> &str {
        self.0.core.server_id()
    }

    /// Wakes the task worker.
    pub fn wake_worker(&self) {
        self.0.core.wake_worker();
    }

    /// The token keys.
    pub fn tokens(&self) -> &crate::tokens::TokenKeys {
        &self.0.tokens
    }

    /// The sign-in limiter.
    pub fn login_limiter(&self) -> &crate::ratelimit::LoginLimiter {
        &self.0.login_limiter
    }

    /// Where export files are.
    pub fn exports(&self) -> &ExportStore {
        &self.0.exports
    }

    /// This server's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.0.metrics
    }

    /// What a command needs of its request; `body` is the digest of the request's body.
    pub fn request(&self, ctx: &Ctx, body: Option<&[u8; 32]>) -> Request {
        let idempotency = ctx.idempotency_key.as_deref().map(|key| {
            IdempotencyClaim::new(
                self.0.core.blind(),
                &ctx.idempotency_scope(),
                key,
                ctx.digest_with(body),
                ctx.meta.correlation_id.clone().unwrap_or_default(),
            )
        });
        Request {
            org: ctx.org.clone(),
            meta: ctx.meta.clone(),
            idempotency,
            if_match: ctx.if_match,
        }
    }
}
