//! User events as JSON: the shape the API shows in `/v1/events` and histories, the one the
//! JSON Schemas in `schemas/events/` describe, and the one the first storage format (format 1)
//! recorded. The types here are that shape, frozen; [`FromJson`] turns format-1 payloads
//! (personal parts merged back) into today's events, upcasting old schema versions.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::events::*;
use super::profile::{
    JsonObject, PasswordHash, PersonalProfile, ProfileField, PublicProfile, UserPersonal,
};
use crate::events::FromJson;
use crate::json_as_is;

/// The user fields a server may set (docs/contract.md §2), as recorded in events and read models.
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
    super::DEFAULT_ROLE.to_owned()
}

impl Profile {
    fn into_parts(self) -> (PublicProfile, PersonalProfile) {
        (
            PublicProfile {
                role: self.role,
                lang_tag: self.lang_tag,
                timezone: self.timezone,
            },
            PersonalProfile {
                username: self.username,
                display_name: self.display_name,
                name: self.name,
                email: self.email,
                phone: self.phone,
                avatar_url: self.avatar_url,
                location: self.location,
                custom: self.custom,
                metadata: self.metadata,
                prefs: self.prefs,
            },
        )
    }
}

/// A user was created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "UserCreated")]
pub struct UserCreatedJson {
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
#[schemars(rename = "UserReplaced")]
pub struct UserReplacedJson {
    /// The new fields.
    pub profile: Profile,
    /// A new password hash; `None` keeps the password.
    #[serde(default)]
    pub password_hash: Option<String>,
}

/// A user was imported: created (or, with `on_conflict=replace`, replaced whole) with the
/// creation time, verification flags, status and wallet the system it came from kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "UserImported")]
pub struct UserImportedJson {
    /// The user's id.
    pub user_id: String,
    /// Its organization.
    pub organization_id: String,
    /// The data key sealing its personal data.
    pub key_id: Option<String>,
    /// Its fields.
    pub profile: Profile,
    /// When it was created there; `null`: when it was imported (replacing: kept).
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Email verified there.
    pub email_verified: bool,
    /// Phone verified there.
    pub phone_verified: bool,
    /// Its status there.
    pub status: super::Status,
    /// Its balances there.
    #[serde(default)]
    pub wallet: BTreeMap<String, i64>,
    /// The password hash it came with (its algorithm's), if any; `null` when replacing keeps
    /// the password.
    #[serde(default)]
    pub password_hash: Option<String>,
}

/// A purpose token was issued (`TokenIssued`, and `PasswordResetRequested` for account
/// recovery). Event views show `token` and `token_hash` as `null` (`"redacted": true`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "TokenIssued")]
pub struct TokenIssuedJson {
    /// What the token is for.
    pub purpose: super::Purpose,
    /// When it stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The key of its own the token is sealed under.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The token, sealed (always shown `null`).
    #[serde(default)]
    pub token: Option<String>,
    /// The key of the superseded token of the same purpose, if there was one.
    #[serde(default)]
    pub supersedes: Option<String>,
    /// The token's hash (always shown `null`).
    #[serde(default)]
    pub token_hash: Option<String>,
    /// The email or phone number a verification token is for.
    #[serde(default)]
    pub bound_to: Option<String>,
}

impl FromJson for TokenIssued {
    fn from_json(_v: u32, data: Map<String, Value>) -> Result<Self, String> {
        let json: TokenIssuedJson = parse(data)?;
        let key = |k: Option<String>| k.and_then(|k| k.parse().ok());
        Ok(TokenIssued {
            public: TokenIssuedPublic {
                purpose: json.purpose,
                expires_at: json.expires_at,
                key_id: key(json.key_id),
                token: json.token,
                supersedes: key(json.supersedes),
            },
            personal: TokenSecret {
                token_hash: json.token_hash,
                bound_to: json.bound_to,
            },
        })
    }
}

/// Some fields were set or unset by path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "UserPartiallyUpdated")]
pub struct UserPartiallyUpdatedJson {
    /// Paths to values.
    #[serde(default)]
    pub set: Map<String, Value>,
    /// Paths removed.
    #[serde(default)]
    pub unset: Vec<String>,
}

/// The password changed. Only the argon2id hash is ever recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "PasswordChanged")]
pub struct PasswordChangedJson {
    /// The new hash.
    #[serde(default)]
    pub password_hash: Option<String>,
}

/// The wallet changed by a changeset; each balance stays ≥ 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "WalletAdjusted")]
pub struct WalletAdjustedJson {
    /// Change per currency.
    pub changeset: BTreeMap<String, i64>,
    /// Caller metadata for the ledger item.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Whether a ledger item records this change.
    pub update_ledger: bool,
}

/// A soft- or pruning-deleted user was restored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "UserRestored")]
pub struct UserRestoredJson {
    /// A fresh data key for a pruned user (its old key was destroyed).
    #[serde(default)]
    pub key_id: Option<String>,
}

/// Older schema versions still found in logs: (event type, version), each with a frozen shape
/// here and its JSON Schema in `schemas/events/<Type>.v<N>.json`.
pub const OLD_VERSIONS: &[(&str, u32)] = &[("StatusChanged", 1)];

/// `StatusChanged` as schema version 1 recorded it. Frozen: logs hold it forever.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "StatusChanged")]
pub struct StatusChangedV1 {
    /// Whether the user is now blocked.
    pub blocked: bool,
}

fn parse<T: serde::de::DeserializeOwned>(data: Map<String, Value>) -> Result<T, String> {
    serde_json::from_value(Value::Object(data)).map_err(|e| e.to_string())
}

fn hash(h: Option<String>) -> Option<PasswordHash> {
    h.map(PasswordHash)
}

impl FromJson for UserCreated {
    fn from_json(_v: u32, data: Map<String, Value>) -> Result<Self, String> {
        let json: UserCreatedJson = parse(data)?;
        let (public, personal) = json.profile.into_parts();
        Ok(UserCreated {
            public: UserCreatedPublic {
                user_id: crate::values::UserId::parse(&json.user_id)?,
                organization_id: crate::values::OrgId::parse(&json.organization_id)?,
                key_id: json.key_id.and_then(|k| k.parse().ok()),
                profile: public,
            },
            personal: UserPersonal {
                profile: personal,
                password_hash: hash(json.password_hash),
                identities: Vec::new(),
            },
        })
    }
}

impl FromJson for UserReplaced {
    fn from_json(_v: u32, data: Map<String, Value>) -> Result<Self, String> {
        let json: UserReplacedJson = parse(data)?;
        let (public, personal) = json.profile.into_parts();
        Ok(UserReplaced {
            public: ProfilePart { profile: public },
            personal: UserPersonal {
                profile: personal,
                password_hash: hash(json.password_hash),
                identities: Vec::new(),
            },
        })
    }
}

impl FromJson for UserImported {
    fn from_json(_v: u32, data: Map<String, Value>) -> Result<Self, String> {
        let json: UserImportedJson = parse(data)?;
        let (public, personal) = json.profile.into_parts();
        Ok(UserImported {
            public: UserImportedPublic {
                user_id: crate::values::UserId::parse(&json.user_id)?,
                organization_id: crate::values::OrgId::parse(&json.organization_id)?,
                key_id: json.key_id.and_then(|k| k.parse().ok()),
                profile: public,
                created_at: json.created_at,
                email_verified: json.email_verified,
                phone_verified: json.phone_verified,
                status: json.status,
                wallet: json.wallet,
            },
            personal: UserPersonal {
                profile: personal,
                password_hash: hash(json.password_hash),
                identities: Vec::new(),
            },
        })
    }
}

impl FromJson for UserPartiallyUpdated {
    fn from_json(_v: u32, data: Map<String, Value>) -> Result<Self, String> {
        let json: UserPartiallyUpdatedJson = parse(data)?;
        Ok(UserPartiallyUpdated::from_paths(json.set, json.unset))
    }
}

impl UserPartiallyUpdated {
    /// The event for these set and unset paths, each in the part its field belongs to (a
    /// path of no known field counts as personal).
    pub fn from_paths(set: JsonObject, unset: Vec<String>) -> Self {
        let personal = |path: &str| ProfileField::of_path(path).is_none_or(|f| f.is_personal());
        let mut public = PathChanges::default();
        let mut private = PathChanges::default();
        for (path, value) in set {
            let part = if personal(&path) {
                &mut private
            } else {
                &mut public
            };
            part.set.insert(path, value);
        }
        for path in unset {
            let part = if personal(&path) {
                &mut private
            } else {
                &mut public
            };
            part.unset.push(path);
        }
        Self {
            public,
            personal: private,
        }
    }
}

impl FromJson for WalletAdjusted {
    fn from_json(_v: u32, data: Map<String, Value>) -> Result<Self, String> {
        let json: WalletAdjustedJson = parse(data)?;
        Ok(WalletAdjusted {
            public: WalletChangePart {
                changeset: json.changeset,
                update_ledger: json.update_ledger,
            },
            personal: LedgerNote {
                metadata: json.metadata,
            },
        })
    }
}

impl FromJson for StatusChanged {
    fn from_json(version: u32, data: Map<String, Value>) -> Result<Self, String> {
        if version <= 1 {
            let v1: StatusChangedV1 = parse(data)?;
            return Ok(StatusChanged::new(v1.blocked));
        }
        parse(data)
    }
}

json_as_is!(
    EmailChanged,
    NameChanged,
    PhoneChanged,
    PasswordChanged,
    PasswordRehashed,
    PrefsUpdated,
    VerificationChanged,
    UserDeactivated,
    UserReactivated,
    UserDeleted,
    UserRestored,
    SessionsRevoked,
    TokenUsed,
    TeamJoined,
    TeamLeft,
    IdentityLinked,
    IdentityUnlinked,
    GuestExpirySet,
    GuestUpgraded,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventSet;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn status_changed_v1_reads_as_v2() {
        for (blocked, status) in [(true, "blocked"), (false, "active")] {
            let event = UserEvent::from_json("StatusChanged", 1, obj(json!({"blocked": blocked})));
            assert_eq!(
                event.unwrap(),
                UserEvent::StatusChanged(StatusChanged::new(blocked))
            );
            let v2 = UserEvent::from_json("StatusChanged", 2, obj(json!({"status": status})));
            assert_eq!(
                v2.unwrap(),
                UserEvent::StatusChanged(StatusChanged::new(blocked))
            );
        }
    }

    #[test]
    fn malformed_and_future_versions_are_errors() {
        assert!(UserEvent::from_json("StatusChanged", 1, obj(json!({"blocked": "yes"}))).is_err());
        assert!(UserEvent::from_json("StatusChanged", 2, obj(json!({"blocked": true}))).is_err());
        assert!(
            UserEvent::from_json("StatusChanged", 3, obj(json!({"status": "active"}))).is_err()
        );
        assert!(UserEvent::from_json("Nope", 1, Map::new()).is_err());
    }

    #[test]
    fn a_partial_update_splits_its_paths_by_field() {
        let e = UserPartiallyUpdated::from_paths(
            obj(json!({"role": "admin", "name": "Al", "custom.a": 1, "lang_tag": "en"})),
            vec!["timezone".into(), "email".into()],
        );
        assert_eq!(
            Value::Object(e.public.set),
            json!({"role": "admin", "lang_tag": "en"})
        );
        assert_eq!(e.public.unset, ["timezone"]);
        assert_eq!(
            Value::Object(e.personal.set),
            json!({"name": "Al", "custom.a": 1})
        );
        assert_eq!(e.personal.unset, ["email"]);
    }
}
