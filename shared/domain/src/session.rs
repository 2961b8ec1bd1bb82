//! Client sessions (docs/contract.md §5) as an aggregate of their own: each session's events live
//! on its stream `session-<id>`, so a sign-in never changes the user's version (its ETag).
//!
//! A session works while it is not revoked, its refresh token has not expired, and the user's
//! [`crate::User::sessions_valid_from`] is at or below the user version the sign-in was checked
//! against ([`SessionStarted::user_version`]): changing the password, blocking, deactivating,
//! deleting or revoking every session moves that mark and so ends every earlier session at once.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, Decision, Recorded, Unique, UniqueChange};
use crate::error::DomainError;
use crate::keys::KeyId;
use crate::values::{OrgId, UserId};
use crate::{event_set, json_as_is, one_part};

/// Prefix of session stream names.
pub const SESSION_STREAM_PREFIX: &str = "session-";

/// Why sessions end: the client signed out.
pub const REASON_SIGNED_OUT: &str = "signed_out";
/// Why sessions end: a server revoked the session.
pub const REASON_REVOKED: &str = "revoked";
/// Why sessions end: a refresh token that had already been exchanged was presented again.
pub const REASON_REFRESH_REUSE: &str = "refresh_token_reuse";

/// How a session was signed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionMethod {
    /// Email or username and password (`POST /v1/sessions`).
    Password,
    /// A single-use custom token (`POST /v1/tokens/signin`).
    CustomToken,
    /// A magic-link purpose token (`POST /v1/sessions/magic`).
    MagicLink,
    /// A guest's creation (`POST /v1/guests`).
    Guest,
}

/// A client signed in. Holds no personal data: the request's ip and user agent ride in the
/// event metadata, sealed under the user's data key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionStarted {
    /// The user signed in.
    pub user_id: UserId,
    /// The user's stream version the sign-in was checked against.
    pub user_version: u64,
    /// Hex SHA-256 of the refresh token's secret (never the secret).
    pub refresh_hash: String,
    /// When the refresh token expires.
    pub expires_at: DateTime<Utc>,
    /// How the client signed in.
    pub method: SessionMethod,
    /// The user's data key (sealing this session's ip and user agent).
    #[serde(default)]
    pub key_id: Option<KeyId>,
}

/// The refresh token was exchanged for a new pair; the old one is dead from now on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRefreshed {
    /// The session's user.
    pub user_id: UserId,
    /// Hex SHA-256 of the new refresh token's secret.
    pub refresh_hash: String,
    /// When the new refresh token expires.
    pub expires_at: DateTime<Utc>,
}

/// The session was carried over a change of its user's password by the session itself
/// (`PATCH /v1/account/password`): it gets a new refresh token and counts as signed in
/// against the user version after the change, so it keeps working while every other ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRenewed {
    /// The session's user.
    pub user_id: UserId,
    /// The user version the session now counts as signed in against.
    pub user_version: u64,
    /// Hex SHA-256 of the new refresh token's secret.
    pub refresh_hash: String,
    /// When the new refresh token expires.
    pub expires_at: DateTime<Utc>,
}

/// The session was ended; none of its tokens work any more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRevoked {
    /// The session's user.
    pub user_id: UserId,
    /// `signed_out`, `revoked` or `refresh_token_reuse`.
    pub reason: String,
}

one_part!(public: SessionStarted, SessionRefreshed, SessionRevoked, SessionRenewed);
json_as_is!(
    SessionStarted,
    SessionRefreshed,
    SessionRevoked,
    SessionRenewed
);

event_set! {
    /// Every event of a session.
    pub enum SessionEvent {
        /// See [`SessionStarted`].
        SessionStarted(SessionStarted) = 1,
        /// See [`SessionRefreshed`].
        SessionRefreshed(SessionRefreshed) = 1,
        /// See [`SessionRevoked`].
        SessionRevoked(SessionRevoked) = 1,
        /// See [`SessionRenewed`].
        SessionRenewed(SessionRenewed) = 1,
    }
}

impl crate::events::KeyedEvents for SessionEvent {}

impl SessionEvent {
    /// The user the session belongs to.
    pub fn user_id(&self) -> &str {
        match self {
            SessionEvent::SessionStarted(e) => e.user_id.as_str(),
            SessionEvent::SessionRefreshed(e) => e.user_id.as_str(),
            SessionEvent::SessionRevoked(e) => e.user_id.as_str(),
            SessionEvent::SessionRenewed(e) => e.user_id.as_str(),
        }
    }
}

/// Commands to a session.
#[derive(Clone, Debug)]
pub enum SessionCommand {
    /// Start it (the sign-in already checked the credentials).
    Start {
        /// The session's first event.
        started: SessionStarted,
        /// The id (`jti`) of the single-use custom token it signs in with, and when the token
        /// expires (microseconds), if it does: taken in the same append, so the token works
        /// once.
        token: Option<(String, i64)>,
    },
    /// Exchange its refresh token (the caller checked the presented one).
    Refresh(SessionRefreshed),
    /// Carry it over its own password change.
    Renew(SessionRenewed),
    /// End it; nothing if it already ended.
    Revoke {
        /// `signed_out`, `revoked` or `refresh_token_reuse`.
        reason: String,
    },
}

impl Aggregate for Session {
    type Event = SessionEvent;
    type Command = SessionCommand;
    const STREAM_PREFIX: &'static str = SESSION_STREAM_PREFIX;

    fn data_key(&self) -> Option<KeyId> {
        self.key_id
    }

    fn apply(state: Option<Self>, event: &SessionEvent, at: Recorded<'_>) -> Option<Self> {
        Session::fold(state, event, at)
    }

    fn decide(
        state: Option<&Self>,
        command: &SessionCommand,
    ) -> Result<Decision<SessionEvent>, DomainError> {
        match (state, command) {
            (None, SessionCommand::Start { started, token }) => {
                let claims = token.iter().map(|(jti, until)| {
                    UniqueChange::ClaimUntil(Unique::CustomToken(jti.clone()), *until)
                });
                Ok(
                    Decision::event(SessionEvent::SessionStarted(started.clone()))
                        .with_uniques(claims),
                )
            }
            (Some(_), SessionCommand::Start { .. }) => {
                Err(DomainError::Conflict("a session with this id exists"))
            }
            (None, _) => Err(DomainError::NotFound),
            (Some(s), SessionCommand::Refresh(_)) if s.is_revoked() => {
                Err(DomainError::Conflict("the session has ended"))
            }
            (Some(_), SessionCommand::Refresh(r)) => {
                Ok(Decision::event(SessionEvent::SessionRefreshed(r.clone())))
            }
            (Some(s), SessionCommand::Renew(_)) if s.is_revoked() => {
                Err(DomainError::Conflict("the session has ended"))
            }
            (Some(_), SessionCommand::Renew(r)) => {
                Ok(Decision::event(SessionEvent::SessionRenewed(r.clone())))
            }
            (Some(s), SessionCommand::Revoke { reason }) => {
                Ok(Decision::when(!s.is_revoked(), || {
                    SessionEvent::SessionRevoked(SessionRevoked {
                        user_id: s.user_id.clone(),
                        reason: reason.clone(),
                    })
                }))
            }
        }
    }
}

/// A session as its events made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Session id (a ULID).
    pub id: String,
    /// Organization.
    pub organization_id: OrgId,
    /// The user.
    pub user_id: UserId,
    /// The user version the sign-in was checked against.
    pub user_version: u64,
    /// How the client signed in.
    pub method: SessionMethod,
    /// The user's data key at sign-in.
    pub key_id: Option<KeyId>,
    /// When the session started.
    pub created_at: DateTime<Utc>,
    /// When its refresh token was last exchanged.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// When its current refresh token expires.
    pub expires_at: DateTime<Utc>,
    /// Hash of the current refresh token's secret.
    pub refresh_hash: String,
    /// Hashes of refresh tokens already exchanged: presenting one again is reuse.
    pub previous_hashes: Vec<String>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
    /// The stream's version (for optimistic appends).
    pub version: u64,
}

impl Session {
    /// Folds one event into the state; `None` before `SessionStarted`.
    fn fold(state: Option<Session>, event: &SessionEvent, at: Recorded<'_>) -> Option<Session> {
        let (version, at_time) = (at.version, at.at);
        let mut session = match (state, event) {
            (None, SessionEvent::SessionStarted(s)) => Session {
                id: at.id.to_owned(),
                organization_id: OrgId::parse(at.org).ok()?,
                user_id: s.user_id.clone(),
                user_version: s.user_version,
                method: s.method,
                key_id: s.key_id,
                created_at: at_time,
                refreshed_at: None,
                expires_at: s.expires_at,
                refresh_hash: s.refresh_hash.clone(),
                previous_hashes: Vec::new(),
                revoked_at: None,
                revoked_reason: None,
                version,
            },
            (None, _) => return None,
            (Some(mut session), event) => {
                match event {
                    SessionEvent::SessionStarted(_) => {}
                    SessionEvent::SessionRefreshed(r) => {
                        let old =
                            std::mem::replace(&mut session.refresh_hash, r.refresh_hash.clone());
                        session.previous_hashes.push(old);
                        session.refreshed_at = Some(at_time);
                        session.expires_at = r.expires_at;
                    }
                    SessionEvent::SessionRenewed(r) => {
                        let old =
                            std::mem::replace(&mut session.refresh_hash, r.refresh_hash.clone());
                        session.previous_hashes.push(old);
                        session.refreshed_at = Some(at_time);
                        session.expires_at = r.expires_at;
                        session.user_version = r.user_version;
                    }
                    SessionEvent::SessionRevoked(r) => {
                        if session.revoked_at.is_none() {
                            session.revoked_at = Some(at_time);
                            session.revoked_reason = Some(r.reason.clone());
                        }
                    }
                }
                session
            }
        };
        session.version = version;
        Some(session)
    }

    /// Whether the session is revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Whether the session still works for a user whose sessions are valid from version
    /// `valid_from`, at time `now`.
    pub fn works(&self, valid_from: u64, now: DateTime<Utc>) -> bool {
        !self.is_revoked() && self.user_version >= valid_from && self.expires_at > now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(n: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + n, 0).unwrap()
    }

    fn fold(events: &[SessionEvent]) -> Option<Session> {
        events.iter().enumerate().fold(None, |s, (i, e)| {
            let at = Recorded {
                id: "s1",
                org: "default",
                at: at(i as i64),
                version: i as u64 + 1,
            };
            <Session as Aggregate>::apply(s, e, at)
        })
    }

    fn u1() -> UserId {
        UserId::parse("u1").unwrap()
    }

    fn started(hash: &str) -> SessionEvent {
        SessionEvent::SessionStarted(SessionStarted {
            user_id: u1(),
            user_version: 3,
            refresh_hash: hash.into(),
            expires_at: at(1000),
            method: SessionMethod::Password,
            key_id: None,
        })
    }

    #[test]
    fn refreshes_keep_the_exchanged_hashes() {
        let s = fold(&[
            started("h1"),
            SessionEvent::SessionRefreshed(SessionRefreshed {
                user_id: u1(),
                refresh_hash: "h2".into(),
                expires_at: at(2000),
            }),
            SessionEvent::SessionRefreshed(SessionRefreshed {
                user_id: u1(),
                refresh_hash: "h3".into(),
                expires_at: at(3000),
            }),
        ])
        .unwrap();
        assert_eq!(s.refresh_hash, "h3");
        assert_eq!(s.previous_hashes, ["h1", "h2"]);
        assert_eq!(
            (s.version, s.expires_at, s.refreshed_at),
            (3, at(3000), Some(at(2)))
        );
        assert!(s.works(3, at(10)));
        assert!(!s.works(4, at(10)), "a later revocation mark ends it");
        assert!(!s.works(3, at(3000)), "expired");
    }

    #[test]
    fn the_first_revocation_reason_stays() {
        let revoked = |reason: &str| {
            SessionEvent::SessionRevoked(SessionRevoked {
                user_id: u1(),
                reason: reason.into(),
            })
        };
        let s = fold(&[
            started("h1"),
            revoked(REASON_REFRESH_REUSE),
            revoked(REASON_SIGNED_OUT),
        ])
        .unwrap();
        assert!(s.is_revoked() && !s.works(0, at(1)));
        assert_eq!(s.revoked_reason.as_deref(), Some(REASON_REFRESH_REUSE));
        assert_eq!(s.revoked_at, Some(at(1)));
    }

    #[test]
    fn a_revocation_before_a_start_folds_to_nothing() {
        assert!(
            fold(&[SessionEvent::SessionRevoked(SessionRevoked {
                user_id: u1(),
                reason: REASON_REVOKED.into(),
            })])
            .is_none()
        );
    }
}
