//! The User aggregate's state: what `apply` builds from the events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The role a user gets when none is given.
pub const DEFAULT_ROLE: &str = "user";

/// The user fields a server may set (API.md §2), as recorded in events and read models.
/// Every field except `role`, `lang_tag` and `timezone` is personal data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Profile {
    /// Unique per organization by its normalized form (when enforced).
    #[serde(default)]
    pub username: Option<String>,
    /// Shown to other users.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Full name.
    #[serde(default)]
    pub name: Option<String>,
    /// Unique per organization, case-insensitively.
    #[serde(default)]
    pub email: Option<String>,
    /// E.164.
    #[serde(default)]
    pub phone: Option<String>,
    /// Picture URL.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// Language tag such as `en`.
    #[serde(default)]
    pub lang_tag: Option<String>,
    /// Free-text location.
    #[serde(default)]
    pub location: Option<String>,
    /// IANA time zone.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Role; `user` unless set.
    #[serde(default = "default_role")]
    pub role: String,
    /// Application fields (≤ 16 KB; no `.` or spaces in names).
    #[serde(default)]
    pub custom: Map<String, Value>,
    /// Server-owned metadata, public in profiles (≤ 16 KB).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// User preferences (≤ 64 KB).
    #[serde(default)]
    pub prefs: Map<String, Value>,
}

fn default_role() -> String {
    DEFAULT_ROLE.to_owned()
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            username: None,
            display_name: None,
            name: None,
            email: None,
            phone: None,
            avatar_url: None,
            lang_tag: None,
            location: None,
            timezone: None,
            role: default_role(),
            custom: Map::new(),
            metadata: Map::new(),
            prefs: Map::new(),
        }
    }
}

impl Profile {
    /// Clears every personal field (pruning): what is left is role, language and time zone.
    pub fn erase_personal(&mut self) {
        *self = Self {
            role: std::mem::take(&mut self.role),
            lang_tag: self.lang_tag.take(),
            timezone: self.timezone.take(),
            ..Self::default()
        };
    }
}

/// How a user was deleted (API.md §3 "Deletion modes").
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMode {
    /// Marked deleted; everything kept; restorable.
    Soft,
    /// Marked deleted; personal data erased everywhere; restorable without it.
    Pruning,
    /// Erased completely; id, username and email released.
    Hard,
}

/// The user's status as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Normal.
    Active,
    /// Blocked by the server (Appwrite's status = false).
    Blocked,
    /// Deactivated (reversible; cannot sign in).
    Deactivated,
    /// Soft- or pruning-deleted.
    Deleted,
}

/// A user as the events made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub id: String,
    /// Organization the user belongs to.
    pub organization_id: String,
    /// The data key sealing this user's personal data.
    pub key_id: Option<String>,
    /// The settable fields.
    pub profile: Profile,
    /// Whether the email was verified (cleared when the email changes).
    pub email_verified: bool,
    /// Whether the phone was verified (cleared when the phone changes).
    pub phone_verified: bool,
    /// Blocked by the server.
    pub blocked: bool,
    /// Balance per currency; never negative.
    pub wallet: BTreeMap<String, i64>,
    /// argon2id PHC string; never returned by the API.
    pub password_hash: Option<String>,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    pub updated_at: DateTime<Utc>,
    /// When the user was deactivated, if it is.
    pub deactivated_at: Option<DateTime<Utc>>,
    /// Who deactivated the user, if given.
    pub deactivated_by: Option<String>,
    /// When the user was deleted, if it is.
    pub deleted_at: Option<DateTime<Utc>>,
    /// How the user was deleted, if it is.
    pub deletion: Option<DeleteMode>,
    /// Personal data has been erased (pruning, or a destroyed key on replay).
    pub erased: bool,
    /// Sessions signed in against an earlier version of the user no longer work: set to the
    /// version of the event that created the user, changed its password, blocked, deactivated
    /// or deleted it, or revoked its sessions.
    #[serde(default)]
    pub sessions_valid_from: u64,
    /// The user stream's version (ETag).
    pub version: u64,
}

impl User {
    /// The status derived from the lifecycle fields: deleted beats deactivated beats blocked.
    pub fn status(&self) -> Status {
        if self.deleted_at.is_some() {
            Status::Deleted
        } else if self.deactivated_at.is_some() {
            Status::Deactivated
        } else if self.blocked {
            Status::Blocked
        } else {
            Status::Active
        }
    }

    /// Whether the user is (soft- or pruning-) deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}
