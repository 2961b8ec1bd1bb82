//! Who is calling (docs/contract.md §1 "Authentication").
//!
//! - A *server* presents an API key as `Authorization: Bearer <key>` or `x-api-key: <key>`;
//!   keys are compared as SHA-256 digests in constant time.
//! - A *client* presents an access token (`Authorization: Bearer <jwt>`, see [`crate::tokens`]).
//!   Beyond its signature and expiry, every request checks, in memory: the user exists and is
//!   active, the session signed in against a user version at or after the user's
//!   `sessions_valid_from` (password change, block, deactivation, deletion and "revoke all"
//!   move it), and the session itself is not revoked. Commands that end sessions answer only
//!   once the read models show it, so a token stops working the moment the response arrives.

use std::time::Duration;

use axum::http::{HeaderMap, header, request::Parts};
use roster_domain::{OrgId, Status, UserId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, Code};
use crate::state::AppState;

/// How long a request with a token from a sign-in the read models have not applied yet (on
/// another server, say) waits for them.
const SIGN_IN_WAIT: Duration = Duration::from_secs(5);

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A server (admin/backend) holding an API key; `key_id` is a short fingerprint of the key,
    /// safe to log.
    Server {
        /// First 8 hex digits of the key's SHA-256.
        key_id: String,
    },
    /// An end user with an access token from a session.
    Client {
        /// The user.
        user_id: UserId,
        /// The session the token belongs to.
        session_id: String,
        /// The organization the session belongs to.
        org: OrgId,
    },
    /// No credentials (the sign-in endpoints).
    Anonymous,
    /// An anonymous token (docs/guests.md): may read public profiles and presence only.
    AnonymousToken {
        /// The organization it was handed out for.
        org: OrgId,
    },
}

impl Caller {
    /// The `actor` recorded on events.
    pub fn actor(&self) -> String {
        match self {
            Caller::Server { key_id } => format!("server:{key_id}"),
            Caller::Client { user_id, .. } => format!("user:{user_id}"),
            Caller::Anonymous | Caller::AnonymousToken { .. } => "anonymous".to_owned(),
        }
    }

    /// Authenticates a request: `Ok(None)` without credentials, an error for credentials that
    /// are not (or no longer) valid.
    pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Option<Self>, ApiError> {
        let Some(presented) = credential(&parts.headers) else {
            return Ok(None);
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare digests in constant time against every key, without stopping at a match.
        let mut found = subtle::Choice::from(0);
        for key in state.api_key_digests() {
            found |= key.ct_eq(&digest);
        }
        if bool::from(found) {
            return Ok(Some(Caller::Server {
                key_id: hex::encode(&digest[..4]),
            }));
        }
        if let Some(claims) = state.tokens().verify_anonymous(presented) {
            let org = OrgId::parse(&claims.org)
                .map_err(|_| ApiError::new(Code::Unauthorized, "The credentials are not valid."))?;
            return Ok(Some(Caller::AnonymousToken { org }));
        }
        let Some(claims) = state.tokens().verify_access(presented) else {
            return Err(ApiError::new(
                Code::Unauthorized,
                "The credentials are not valid.",
            ));
        };
        let invalid = || {
            ApiError::new(
                Code::Unauthorized,
                "The access token is no longer valid; sign in again.",
            )
        };
        let (Ok(org), Ok(user_id)) = (OrgId::parse(&claims.org), UserId::parse(&claims.sub)) else {
            return Err(invalid());
        };
        if let Some(header_org) = parts.headers.get("x-organization-id")
            && header_org.as_bytes() != org.as_str().as_bytes()
        {
            return Err(ApiError::new(
                Code::Forbidden,
                "The access token belongs to another organization.",
            ));
        }
        if state.models().checkpoint() < claims.pos
            && !state.wait_for(claims.pos, SIGN_IN_WAIT).await
        {
            let mut e = ApiError::new(
                Code::ProjectionLagging,
                "The read models have not caught up with this sign-in yet.",
            );
            e.retry_after = Some(1);
            return Err(e);
        }
        // Taken after the wait: a switch to rebuilt read models may have happened meanwhile.
        let models = state.models();
        let Some((status, valid_from, guest)) = models.session_gate(org.as_str(), user_id.as_str())
        else {
            return Err(invalid());
        };
        if status != Status::Active
            || claims.uv < valid_from
            || models.session_revoked(org.as_str(), &claims.sid)
        {
            return Err(invalid());
        }
        // A guest's sessions stop working the moment it expires, swept or not.
        if guest {
            let row = models.get(org.as_str(), user_id.as_str()).await?;
            if row.is_none_or(|r| r.user.expired(chrono::Utc::now())) {
                return Err(invalid());
            }
        }
        Ok(Some(Caller::Client {
            user_id,
            session_id: claims.sid,
            org,
        }))
    }
}

fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
