//! Sessions (API.md §5): starting one, minting its tokens, loading and revoking it. Each
//! session is an aggregate on its own stream `session-<id>` (see `roster_domain::session`).

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use roster_domain::session::{
    SESSION_STREAM_PREFIX, Session, SessionEvent, SessionMethod, SessionRevoked, SessionStarted,
};
use roster_domain::{OrgId, User, UserId};
use roster_eventlog::{
    AppendError, ExpectedVersion, NewEvent, Position, Reservation, StreamAppend, StreamId,
};
use roster_projections::EventMeta;
use roster_projections::sessions::fold_session;
use roster_vault::{DataKey, KeyId};
use schemars::JsonSchema;
use serde::Serialize;

use crate::commands::{IDEMPOTENCY_TTL_MICROS, REVOCATION_WAIT, idempotency_reservation_in};
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Ctx;
use crate::state::AppState;
use crate::tokens::{ACCESS_TTL_SECS, AccessClaims, REFRESH_TTL_SECS, new_refresh_token};

/// The stream of a session.
pub fn session_stream(org: &str, session_id: &str) -> StreamId {
    StreamId::new(org, format!("{SESSION_STREAM_PREFIX}{session_id}"))
}

/// What a sign-in or a refresh answers (API.md §5).
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
}

/// The metadata of a session event: the request's, acting as the user.
pub fn session_meta(ctx: &Ctx, user_id: &UserId) -> EventMeta {
    EventMeta {
        actor: format!("user:{user_id}"),
        ..ctx.meta.clone()
    }
}

impl AppState {
    /// A session event's record; ip and user agent in `meta` sealed under the user's key.
    pub(crate) fn session_record(
        &self,
        event: &SessionEvent,
        meta: &EventMeta,
        key: Option<(KeyId, &DataKey)>,
    ) -> NewEvent {
        self.0
            .codec
            .encode_data(event.event_type(), 1, event.to_data(), meta, key)
    }

    /// The append that starts `session` for `user`, checked against `user_version`.
    pub(crate) fn start_session(
        &self,
        org: &OrgId,
        user: &User,
        user_version: u64,
        session: &NewSession,
        meta: &EventMeta,
        key: Option<(KeyId, &DataKey)>,
    ) -> StreamAppend {
        let event = SessionEvent::SessionStarted(SessionStarted {
            user_id: user.id.clone(),
            user_version,
            refresh_hash: session.refresh_hash.clone(),
            expires_at: session.refresh_expires_at,
            method: session.method,
            key_id: user.key_id.clone(),
        });
        StreamAppend {
            stream: session_stream(org.as_str(), &session.id),
            expected: ExpectedVersion::NoStream,
            events: vec![self.session_record(&event, meta, key)],
        }
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
        let access_token = self.0.tokens.sign_access(AccessClaims {
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

    /// A session's state and the position it started at (`None` if there is no such session).
    pub(crate) async fn load_session(
        &self,
        org: &OrgId,
        session_id: &str,
    ) -> ApiResult<Option<(Session, Position)>> {
        let records = self
            .0
            .log
            .read_stream(&session_stream(org.as_str(), session_id), 1, usize::MAX)
            .await?;
        let started = records.first().map(|r| r.position).unwrap_or(0);
        Ok(fold_session(org.as_str(), session_id, &records).map(|s| (s, started)))
    }

    /// The data key of a user (for sealing a session event's ip and user agent).
    pub(crate) async fn user_data_key(
        &self,
        org: &OrgId,
        user_id: &str,
    ) -> ApiResult<Option<(KeyId, DataKey)>> {
        let Ok(id) = UserId::parse(user_id) else {
            return Ok(None);
        };
        match self.load(org, &id).await?.user {
            Some(user) => self.data_key(&user, &[]).await,
            None => Ok(None),
        }
    }

    /// Revokes a session (no-op if it already is) and answers once the read models show it,
    /// so its tokens fail from then on. Returns the position of the revocation (or of the
    /// session's last event).
    pub(crate) async fn revoke_session(
        &self,
        org: &OrgId,
        session_id: &str,
        reason: &str,
        meta: &EventMeta,
    ) -> ApiResult<Position> {
        for _ in 0..20 {
            let Some((session, _)) = self.load_session(org, session_id).await? else {
                return Err(ApiError::not_found("No session with this id."));
            };
            if session.is_revoked() {
                return Ok(self.0.log.head());
            }
            let key = self.user_data_key(org, &session.user_id).await?;
            let event = SessionEvent::SessionRevoked(SessionRevoked {
                user_id: session.user_id.clone(),
                reason: reason.to_owned(),
            });
            let append = StreamAppend {
                stream: session_stream(org.as_str(), session_id),
                expected: ExpectedVersion::Exact(session.version),
                events: vec![self.session_record(&event, meta, key.as_ref().map(|(i, k)| (*i, k)))],
            };
            match self
                .0
                .log
                .append(roster_eventlog::Transaction {
                    appends: vec![append],
                    reservations: vec![],
                })
                .await
            {
                Ok(committed) => {
                    if !self
                        .wait_for(committed.last_position, REVOCATION_WAIT)
                        .await
                    {
                        tracing::warn!(
                            position = committed.last_position,
                            "read models are slow to apply a revocation"
                        );
                    }
                    return Ok(committed.last_position);
                }
                // A refresh or another revocation got there first: look again.
                Err(AppendError::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(append_error(e)),
            }
        }
        Err(ApiError::new(
            Code::Conflict,
            "Too many concurrent changes to this session; retry.",
        ))
    }
}

/// The idempotency claim of a request that hands out credentials. Such a response cannot be
/// repeated (only hashes of its tokens are kept), so a request repeating an `Idempotency-Key`
/// is refused with 409 — it is never acted on twice — and one reusing it for another request
/// with 422.
pub(crate) async fn credential_idempotency(
    app: &AppState,
    ctx: &Ctx,
    digest: &str,
) -> ApiResult<Option<Reservation>> {
    let Some(key) = &ctx.idempotency_key else {
        return Ok(None);
    };
    let reservation = idempotency_reservation_in(&ctx.idempotency_scope(), key);
    if let Some(held) = app.log().reservation(&reservation).await? {
        return Err(repeated_credential_request(&held.owner, digest));
    }
    Ok(Some(Reservation::Claim {
        key: reservation,
        owner: format!(
            "{digest}:{}",
            ctx.meta.correlation_id.as_deref().unwrap_or_default()
        ),
        expires_at: Some(Utc::now().timestamp_micros() + IDEMPOTENCY_TTL_MICROS),
    }))
}

/// The answer to a credential request whose `Idempotency-Key` is already taken by `owner`.
pub(crate) fn repeated_credential_request(owner: &str, digest: &str) -> ApiError {
    let first = owner.split_once(':').map_or(owner, |(d, _)| d);
    if first == digest {
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

/// Maps an append error of a session write.
pub(crate) fn append_error(e: AppendError) -> ApiError {
    match e {
        AppendError::Log(e) => e.into(),
        AppendError::ReservationHeld { key, .. }
            if roster_projections::keys::reservation_kind(&key)
                == roster_projections::keys::ReservationKind::CustomToken =>
        {
            ApiError::new(Code::Unauthorized, "This token has already been used.")
        }
        e => ApiError::internal(e),
    }
}
