//! The user object of docs/contract.md §2: what servers see of a user, in responses and exports.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use roster_domain::{Status, User};
use roster_eventlog::Position;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

/// A user as the API shows it to a server (docs/contract.md §2).
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[schemars(rename = "User")]
pub struct UserResource {
    /// User id.
    pub id: String,
    /// Organization.
    pub organization_id: String,
    /// Username.
    pub username: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Whether the email is verified.
    pub email_verified: bool,
    /// Phone (E.164).
    pub phone: Option<String>,
    /// Whether the phone is verified.
    pub phone_verified: bool,
    /// Picture URL.
    pub avatar_url: Option<String>,
    /// Language tag.
    pub lang_tag: Option<String>,
    /// Location.
    pub location: Option<String>,
    /// Time zone.
    pub timezone: Option<String>,
    /// Role.
    pub role: String,
    /// Lifecycle status.
    pub status: Status,
    /// Application fields.
    pub custom: Map<String, Value>,
    /// Server metadata.
    pub metadata: Map<String, Value>,
    /// Preferences.
    pub prefs: Map<String, Value>,
    /// Balances.
    pub wallet: BTreeMap<String, i64>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Deactivation time.
    pub deactivated_at: Option<DateTime<Utc>>,
    /// Deletion time.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Stream version (as in the ETag).
    pub version: u64,
    /// A guest's expiry (`null` for everyone else).
    pub expires_at: Option<DateTime<Utc>>,
    /// The teams the user is in (read-only here: see the memberships).
    pub teams: Vec<String>,
    /// Linked identities (read-only here: see the identities endpoints).
    pub identities: Vec<roster_domain::user::Identity>,
    /// Online as others see it (presence: heartbeat within a minute, not hidden).
    pub online: bool,
    /// The custom status (`null` while hidden).
    pub presence_message: Option<String>,
    /// The last heartbeat, to the minute (`null` while hidden, and once pruned).
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Present and true when personal data has been erased.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
    /// Log position of the write that produced this response (writes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

impl UserResource {
    /// The same with the user's presence as others see it.
    pub fn with_presence(
        mut self,
        online: bool,
        message: Option<String>,
        last_seen_at: Option<DateTime<Utc>>,
    ) -> Self {
        self.online = online;
        self.presence_message = message;
        self.last_seen_at = last_seen_at;
        self
    }

    /// The API view of a user.
    pub fn new(user: User, position: Option<Position>) -> Self {
        let status = user.status();
        let User {
            public: u,
            personal,
        } = user;
        let p = personal.profile;
        Self {
            id: u.id.to_string(),
            organization_id: u.organization_id.to_string(),
            username: p.username,
            display_name: p.display_name,
            name: p.name,
            email: p.email,
            email_verified: u.email_verified,
            phone: p.phone,
            phone_verified: u.phone_verified,
            avatar_url: p.avatar_url,
            lang_tag: u.profile.lang_tag,
            location: p.location,
            timezone: u.profile.timezone,
            role: u.profile.role,
            status,
            custom: p.custom,
            metadata: p.metadata,
            prefs: p.prefs,
            wallet: u.wallet,
            created_at: u.created_at,
            updated_at: u.updated_at,
            deactivated_at: u.deactivated_at,
            deleted_at: u.deleted_at,
            version: u.version,
            expires_at: u.expires_at,
            teams: u.teams.into_keys().collect(),
            identities: personal.identities,
            online: false,
            presence_message: None,
            last_seen_at: None,
            erased: u.erased,
            position,
        }
    }
}
