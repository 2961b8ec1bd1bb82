//! The User aggregate's events. Past tense, one struct per type, each with a schema version.
//!
//! Events are facts: `apply` trusts them and never fails. Personal fields may read as absent
//! when the user's data key has been destroyed (see [`crate::personal`]); every such field
//! therefore has a default.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::user::{DeleteMode, Profile};

/// A user was created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserCreated {
    /// The new user's id.
    pub user_id: String,
    /// Its organization.
    pub organization_id: String,
    /// The data key sealing its personal data.
    pub key_id: Option<String>,
    /// Its fields.
    pub profile: Profile,
    /// argon2id hash of its password, if one was given.
    #[serde(default)]
    pub password_hash: Option<String>,
}

/// A user was replaced whole by an upsert: fields left out are removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserReplaced {
    /// The new fields.
    pub profile: Profile,
    /// A new password hash; `None` keeps the password.
    #[serde(default)]
    pub password_hash: Option<String>,
}

/// Some fields were set or unset by path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserPartiallyUpdated {
    /// Paths to values.
    #[serde(default)]
    pub set: Map<String, Value>,
    /// Paths removed.
    #[serde(default)]
    pub unset: Vec<String>,
}

/// The email changed (verification is cleared).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmailChanged {
    /// The new email; `None` removes it.
    #[serde(default)]
    pub email: Option<String>,
}

/// The name changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NameChanged {
    /// The new name; `None` removes it.
    #[serde(default)]
    pub name: Option<String>,
}

/// The phone number changed (verification is cleared).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PhoneChanged {
    /// The new number; `None` removes it.
    #[serde(default)]
    pub phone: Option<String>,
}

/// The password changed. Only the argon2id hash is ever recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PasswordChanged {
    /// The new hash.
    #[serde(default)]
    pub password_hash: Option<String>,
}

/// The preferences were replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PrefsUpdated {
    /// The new preferences.
    #[serde(default)]
    pub prefs: Map<String, Value>,
}

/// A verification flag changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VerificationChanged {
    /// New email verification, if it changed.
    #[serde(default)]
    pub email_verified: Option<bool>,
    /// New phone verification, if it changed.
    #[serde(default)]
    pub phone_verified: Option<bool>,
}

/// The user was blocked or unblocked (`PATCH /v1/users/{id}/status`).
///
/// Schema version 2. Version 1 recorded `{"blocked": bool}`; it is upcast when read (see
/// [`crate::upcast`]), so the log's history is never rewritten.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusChanged {
    /// The status a server set: `active` (unblocked) or `blocked`.
    pub status: BlockStatus,
}

impl StatusChanged {
    /// The event for blocking (`true`) or unblocking a user.
    pub fn new(blocked: bool) -> Self {
        Self {
            status: if blocked {
                BlockStatus::Blocked
            } else {
                BlockStatus::Active
            },
        }
    }

    /// Whether the user is blocked after this event.
    pub fn blocked(&self) -> bool {
        self.status == BlockStatus::Blocked
    }
}

/// What a server can set with `PATCH /v1/users/{id}/status`: a user is active or blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockStatus {
    /// Not blocked (Appwrite's `status: true`).
    Active,
    /// Blocked: cannot sign in, and every session ends (Appwrite's `status: false`).
    Blocked,
}

/// The wallet changed by a changeset; each balance stays ≥ 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WalletAdjusted {
    /// Change per currency.
    pub changeset: BTreeMap<String, i64>,
    /// Caller metadata for the ledger item.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Whether a ledger item records this change.
    pub update_ledger: bool,
}

/// The user was deactivated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserDeactivated {
    /// Who asked for it, if given.
    #[serde(default)]
    pub created_by_id: Option<String>,
}

/// The user was reactivated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserReactivated {}

/// The user was deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserDeleted {
    /// How.
    pub mode: DeleteMode,
}

/// A soft- or pruning-deleted user was restored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserRestored {
    /// A fresh data key for a pruned user (its old key was destroyed).
    #[serde(default)]
    pub key_id: Option<String>,
}

/// Every session of the user was ended (sessions signed in before this event stop working).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionsRevoked {}

/// Every event of the User aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// See [`UserCreated`].
    UserCreated(UserCreated),
    /// See [`UserReplaced`].
    UserReplaced(UserReplaced),
    /// See [`UserPartiallyUpdated`].
    UserPartiallyUpdated(UserPartiallyUpdated),
    /// See [`EmailChanged`].
    EmailChanged(EmailChanged),
    /// See [`NameChanged`].
    NameChanged(NameChanged),
    /// See [`PhoneChanged`].
    PhoneChanged(PhoneChanged),
    /// See [`PasswordChanged`].
    PasswordChanged(PasswordChanged),
    /// See [`PrefsUpdated`].
    PrefsUpdated(PrefsUpdated),
    /// See [`VerificationChanged`].
    VerificationChanged(VerificationChanged),
    /// See [`StatusChanged`].
    StatusChanged(StatusChanged),
    /// See [`WalletAdjusted`].
    WalletAdjusted(WalletAdjusted),
    /// See [`UserDeactivated`].
    UserDeactivated(UserDeactivated),
    /// See [`UserReactivated`].
    UserReactivated(UserReactivated),
    /// See [`UserDeleted`].
    UserDeleted(UserDeleted),
    /// See [`UserRestored`].
    UserRestored(UserRestored),
    /// See [`SessionsRevoked`].
    SessionsRevoked(SessionsRevoked),
}

/// Why recorded bytes could not be read back as an [`Event`].
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {event_type} v{schema_version}: {reason}")]
pub struct DecodeError {
    /// The recorded type.
    pub event_type: String,
    /// The recorded schema version.
    pub schema_version: u32,
    /// What went wrong.
    pub reason: String,
}

impl Event {
    /// Every event type name, in declaration order.
    pub const TYPES: &'static [&'static str] = &[
        "UserCreated",
        "UserReplaced",
        "UserPartiallyUpdated",
        "EmailChanged",
        "NameChanged",
        "PhoneChanged",
        "PasswordChanged",
        "PrefsUpdated",
        "VerificationChanged",
        "StatusChanged",
        "WalletAdjusted",
        "UserDeactivated",
        "UserReactivated",
        "UserDeleted",
        "UserRestored",
        "SessionsRevoked",
    ];

    /// The type name recorded in the log.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::UserCreated(_) => "UserCreated",
            Event::UserReplaced(_) => "UserReplaced",
            Event::UserPartiallyUpdated(_) => "UserPartiallyUpdated",
            Event::EmailChanged(_) => "EmailChanged",
            Event::NameChanged(_) => "NameChanged",
            Event::PhoneChanged(_) => "PhoneChanged",
            Event::PasswordChanged(_) => "PasswordChanged",
            Event::PrefsUpdated(_) => "PrefsUpdated",
            Event::VerificationChanged(_) => "VerificationChanged",
            Event::StatusChanged(_) => "StatusChanged",
            Event::WalletAdjusted(_) => "WalletAdjusted",
            Event::UserDeactivated(_) => "UserDeactivated",
            Event::UserReactivated(_) => "UserReactivated",
            Event::UserDeleted(_) => "UserDeleted",
            Event::UserRestored(_) => "UserRestored",
            Event::SessionsRevoked(_) => "SessionsRevoked",
        }
    }

    /// Whether this event ends the user's sessions (and so must be visible to the per-request
    /// token check before the command that caused it answers).
    pub fn ends_sessions(&self) -> bool {
        match self {
            Event::UserReplaced(e) => e.password_hash.is_some(),
            Event::StatusChanged(e) => e.blocked(),
            Event::PasswordChanged(_)
            | Event::UserDeactivated(_)
            | Event::UserDeleted(_)
            | Event::SessionsRevoked(_) => true,
            _ => false,
        }
    }

    /// The schema version written for new events of this type.
    pub fn schema_version(&self) -> u32 {
        current_schema_version(self.event_type())
    }

    /// The payload as a JSON object (what the log's `data` holds, before sealing).
    pub fn to_data(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => match tagged.remove("data") {
                Some(Value::Object(data)) => data,
                _ => Map::new(),
            },
            _ => unreachable!("events serialize to tagged objects"),
        }
    }

    /// Reads a recorded payload, upcasting older schema versions first.
    pub fn from_data(
        event_type: &str,
        schema_version: u32,
        data: Map<String, Value>,
    ) -> Result<Self, DecodeError> {
        let error = |reason: String| DecodeError {
            event_type: event_type.to_owned(),
            schema_version,
            reason,
        };
        let data = crate::upcast::upcast(event_type, schema_version, data).map_err(error)?;
        let mut tagged = Map::with_capacity(2);
        tagged.insert("type".into(), Value::String(event_type.to_owned()));
        tagged.insert("data".into(), Value::Object(data));
        serde_json::from_value(Value::Object(tagged)).map_err(|e| error(e.to_string()))
    }
}

/// The schema version new events of a type are written with.
pub fn current_schema_version(event_type: &str) -> u32 {
    crate::upcast::CURRENT_VERSIONS
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, v)| *v)
        .unwrap_or(1)
}
