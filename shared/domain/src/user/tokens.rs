//! Purpose tokens (docs/recovery.md): single-use, expiring secrets the server issues for a
//! user — email or phone verification, password reset, magic-link sign-in.
//!
//! The user holds at most one live token per purpose. A token dies when it is used, when a
//! newer one of its purpose is issued, when it expires, and when the password changes; a
//! verification token verifies only the address (or number) it was issued for. Only a
//! token's hash is ever recorded, in the event's personal part; the token itself rides in the
//! issuing event sealed under a key of its own (`key_id`), which is destroyed when the token
//! is used, superseded or expires, so it can be read back only while it could be redeemed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::events::{TokenIssued, TokenIssuedPublic, TokenSecret, TokenUsed};
use super::profile::PasswordHash;
use super::{PasswordChanged, User, UserEvent, VerificationChanged};
use crate::aggregate::Decision;
use crate::error::DomainError;
use crate::keys::KeyId;

/// What a token is for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Verifies the user's email (the one it was issued for).
    EmailVerification,
    /// Verifies the user's phone number (the one it was issued for).
    PhoneVerification,
    /// Sets a new password (and ends every session).
    PasswordReset,
    /// Signs in once.
    MagicLink,
}

impl Purpose {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::EmailVerification => "email_verification",
            Purpose::PhoneVerification => "phone_verification",
            Purpose::PasswordReset => "password_reset",
            Purpose::MagicLink => "magic_link",
        }
    }
}

/// A live token as the user's state holds it (folded from the events; not in read models).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveToken {
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The address or number a verification token is for.
    pub bound_to: Option<String>,
    /// The key sealing the token in its issuing event.
    pub key_id: Option<KeyId>,
}

/// A user's live tokens, at most one per purpose.
pub type Tokens = BTreeMap<Purpose, LiveToken>;

/// Issues a token (the edge made the secret, hashed it and sealed it under a fresh key).
#[derive(Clone, Debug)]
pub struct IssueToken {
    /// What for.
    pub purpose: Purpose,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// The key the token is sealed under, and the sealed token (base64url).
    pub sealed: Option<(KeyId, String)>,
    /// Issued by account recovery (`PasswordResetRequested`, at most one a minute) rather
    /// than by a server (`TokenIssued`).
    pub recovery: bool,
    /// The time of the request.
    pub now: DateTime<Utc>,
}

/// Redeems a token: the purposes it may have, and what redeeming it does.
#[derive(Clone, Debug)]
pub struct RedeemToken {
    /// The purposes the endpoint accepts (verification accepts either address kind).
    pub purposes: Vec<Purpose>,
    /// Hex SHA-256 of the presented token.
    pub token_hash: String,
    /// A password reset's new password.
    pub new_password: Option<PasswordHash>,
    /// The time of the request.
    pub now: DateTime<Utc>,
}

/// At most one recovery token per user in this many seconds.
pub const RECOVERY_INTERVAL_SECS: i64 = 60;

/// What issuing a token records.
pub(super) fn issue(user: &User, command: &IssueToken) -> Result<Decision<UserEvent>, DomainError> {
    let live = user.public.tokens.get(&command.purpose);
    if command.recovery
        && live.is_some_and(|t| {
            (command.now - t.issued_at).num_seconds() < RECOVERY_INTERVAL_SECS
                && t.expires_at > command.now
        })
    {
        return Ok(Decision::nothing());
    }
    let missing =
        |what: &str| DomainError::invalid("purpose", format!("the user has no {what} to verify"));
    let bound_to = match command.purpose {
        Purpose::EmailVerification => Some(user.email().ok_or_else(|| missing("email"))?),
        Purpose::PhoneVerification => Some(
            user.personal
                .profile
                .phone
                .as_deref()
                .ok_or_else(|| missing("phone number"))?,
        ),
        Purpose::PasswordReset | Purpose::MagicLink => None,
    };
    let event = TokenIssued {
        public: TokenIssuedPublic {
            purpose: command.purpose,
            expires_at: command.expires_at,
            key_id: command.sealed.as_ref().map(|(k, _)| *k),
            token: command.sealed.as_ref().map(|(_, t)| t.clone()),
            supersedes: live.and_then(|t| t.key_id),
        },
        personal: TokenSecret {
            token_hash: Some(command.token_hash.clone()),
            bound_to: bound_to.map(str::to_owned),
        },
    };
    Ok(Decision::event(if command.recovery {
        UserEvent::PasswordResetRequested(event)
    } else {
        UserEvent::TokenIssued(event)
    }))
}

/// What redeeming a token records: `TokenUsed`, then its effect.
pub(super) fn redeem(
    user: Option<&User>,
    command: &RedeemToken,
) -> Result<Decision<UserEvent>, DomainError> {
    let user = user
        .filter(|u| !u.is_deleted())
        .ok_or(DomainError::TokenInvalid)?;
    // Compared with every live token of the accepted purposes, in constant time.
    let mut found = None;
    for purpose in &command.purposes {
        if let Some(token) = user.public.tokens.get(purpose)
            && bool::from(token.hash.as_bytes().ct_eq(command.token_hash.as_bytes()))
        {
            found = Some((*purpose, token));
        }
    }
    let (purpose, token) = found.ok_or(DomainError::TokenInvalid)?;
    if token.expires_at <= command.now {
        return Err(DomainError::TokenInvalid);
    }
    let still_bound = |current: Option<&str>| token.bound_to.as_deref() == current;
    let effect = match purpose {
        Purpose::EmailVerification if still_bound(user.email()) => {
            Some(UserEvent::VerificationChanged(VerificationChanged {
                email_verified: Some(true),
                phone_verified: None,
            }))
        }
        Purpose::PhoneVerification if still_bound(user.personal.profile.phone.as_deref()) => {
            Some(UserEvent::VerificationChanged(VerificationChanged {
                email_verified: None,
                phone_verified: Some(true),
            }))
        }
        Purpose::EmailVerification | Purpose::PhoneVerification => {
            return Err(DomainError::TokenInvalid);
        }
        Purpose::PasswordReset => {
            let hash = command
                .new_password
                .clone()
                .ok_or_else(|| DomainError::invalid("password", "is required"))?;
            Some(UserEvent::PasswordChanged(PasswordChanged {
                password_hash: Some(hash),
            }))
        }
        Purpose::MagicLink => None,
    };
    let mut decision = Decision::event(UserEvent::TokenUsed(TokenUsed {
        purpose,
        key_id: token.key_id,
    }));
    decision.events.extend(effect);
    Ok(decision)
}

/// Folds a token event into the user's live tokens.
pub(super) fn apply_issued(tokens: &mut Tokens, e: &TokenIssued, at: DateTime<Utc>) {
    let Some(hash) = e.personal.token_hash.clone() else {
        // Erased (the user's key is gone): nothing can redeem it.
        tokens.remove(&e.public.purpose);
        return;
    };
    tokens.insert(
        e.public.purpose,
        LiveToken {
            hash,
            issued_at: at,
            expires_at: e.public.expires_at,
            bound_to: e.personal.bound_to.clone(),
            key_id: e.public.key_id,
        },
    );
}

/// The token key a user event ends: a used token's, a superseded one's.
pub(super) fn ended_key(event: &UserEvent) -> Option<KeyId> {
    match event {
        UserEvent::TokenUsed(e) => e.key_id,
        UserEvent::TokenIssued(e) | UserEvent::PasswordResetRequested(e) => e.public.supersedes,
        _ => None,
    }
}

/// The associated data a purpose token is sealed with (it names the organization, the user
/// and the purpose, so a sealed token cannot be moved to another).
pub fn token_aad(org: &str, user: &str, purpose: Purpose) -> Vec<u8> {
    format!("token1/{org}/{user}/{}", purpose.as_str()).into_bytes()
}
