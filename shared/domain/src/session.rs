//! Client sessions (API.md §5) as an aggregate of their own: each session's events live on its
//! stream `session-<id>`, so a sign-in never changes the user's version (its ETag).
//!
//! A session works while it is not revoked, its refresh token has not expired, and the user's
//! [`crate::User::sessions_valid_from`] is at or below the user version the sign-in was checked
//! against ([`SessionStarted::user_version`]): changing the password, blocking, deactivating,
//! deleting or revoking every session moves that mark and so ends every earlier session at once.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
}

/// A client signed in. Holds no personal data: the request's ip and user agent ride in the
/// event metadata, sealed under the user's data key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionStarted {
    /// The user signed in.
    pub user_id: String,
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
    pub key_id: Option<String>,
}

/// The refresh token was exchanged for a new pair; the old one is dead from now on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRefreshed {
    /// The session's user.
    pub user_id: String,
    /// Hex SHA-256 of the new refresh token's secret.
    pub refresh_hash: String,
    /// When the new refresh token expires.
    pub expires_at: DateTime<Utc>,
}

/// The session was ended; none of its tokens work any more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRevoked {
    /// The session's user.
    pub user_id: String,
    /// `signed_out`, `revoked` or `refresh_token_reuse`.
    pub reason: String,
}

/// Every event of a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum SessionEvent {
    /// See [`SessionStarted`].
    SessionStarted(SessionStarted),
    /// See [`SessionRefreshed`].
    SessionRefreshed(SessionRefreshed),
    /// See [`SessionRevoked`].
    SessionRevoked(SessionRevoked),
}

impl SessionEvent {
    /// Every session event type name.
    pub const TYPES: &'static [&'static str] =
        &["SessionStarted", "SessionRefreshed", "SessionRevoked"];

    /// The type name recorded in the log.
    pub fn event_type(&self) -> &'static str {
        match self {
            SessionEvent::SessionStarted(_) => "SessionStarted",
            SessionEvent::SessionRefreshed(_) => "SessionRefreshed",
            SessionEvent::SessionRevoked(_) => "SessionRevoked",
        }
    }

    /// The user the session belongs to.
    pub fn user_id(&self) -> &str {
        match self {
            SessionEvent::SessionStarted(e) => &e.user_id,
            SessionEvent::SessionRefreshed(e) => &e.user_id,
            SessionEvent::SessionRevoked(e) => &e.user_id,
        }
    }

    /// The payload as a JSON object.
    pub fn to_data(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => match tagged.remove("data") {
                Some(Value::Object(data)) => data,
                _ => Map::new(),
            },
            _ => unreachable!("session events serialize to tagged objects"),
        }
    }

    /// Reads a recorded payload back (extra fields, such as a sealed part, are ignored).
    pub fn from_data(event_type: &str, data: &[u8]) -> Result<Self, serde_json::Error> {
        let data: Value = serde_json::from_slice(data)?;
        serde_json::from_value(serde_json::json!({"type": event_type, "data": data}))
    }
}

/// A session as its events made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Session id (a ULID).
    pub id: String,
    /// Organization.
    pub organization_id: String,
    /// The user.
    pub user_id: String,
    /// The user version the sign-in was checked against.
    pub user_version: u64,
    /// How the client signed in.
    pub method: SessionMethod,
    /// The user's data key at sign-in.
    pub key_id: Option<String>,
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
    pub fn apply(
        state: Option<Session>,
        event: &SessionEvent,
        ids: (&str, &str),
        at: DateTime<Utc>,
        version: u64,
    ) -> Option<Session> {
        let mut session = match (state, event) {
            (None, SessionEvent::SessionStarted(s)) => Session {
                id: ids.1.to_owned(),
                organization_id: ids.0.to_owned(),
                user_id: s.user_id.clone(),
                user_version: s.user_version,
                method: s.method,
                key_id: s.key_id.clone(),
                created_at: at,
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
                        session.refreshed_at = Some(at);
                        session.expires_at = r.expires_at;
                    }
                    SessionEvent::SessionRevoked(r) => {
                        if session.revoked_at.is_none() {
                            session.revoked_at = Some(at);
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
            Session::apply(s, e, ("default", "s1"), at(i as i64), i as u64 + 1)
        })
    }

    fn started(hash: &str) -> SessionEvent {
        SessionEvent::SessionStarted(SessionStarted {
            user_id: "u1".into(),
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
                user_id: "u1".into(),
                refresh_hash: "h2".into(),
                expires_at: at(2000),
            }),
            SessionEvent::SessionRefreshed(SessionRefreshed {
                user_id: "u1".into(),
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
                user_id: "u1".into(),
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
    fn events_round_trip_through_their_recorded_form() {
        for event in [
            started("h1"),
            SessionEvent::SessionRevoked(SessionRevoked {
                user_id: "u1".into(),
                reason: REASON_REVOKED.into(),
            }),
        ] {
            let bytes = serde_json::to_vec(&event.to_data()).unwrap();
            let back = SessionEvent::from_data(event.event_type(), &bytes).unwrap();
            assert_eq!(back, event);
        }
        assert!(
            fold(&[SessionEvent::SessionRevoked(SessionRevoked {
                user_id: "u1".into(),
                reason: REASON_REVOKED.into(),
            })])
            .is_none()
        );
    }
}
