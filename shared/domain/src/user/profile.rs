//! The user fields a server may set (docs/contract.md §2), in two parts: what is public (role,
//! language, time zone) and what is personal data (everything else), sealed wherever stored.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The role a user gets when none is given.
pub const DEFAULT_ROLE: &str = "user";

/// A JSON object held as it was given (`custom`, `metadata`, `prefs`).
pub type JsonObject = Map<String, Value>;

/// The public part of a profile: stored in clear.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PublicProfile {
    /// Role; `user` unless set.
    #[serde(default = "default_role")]
    pub role: String,
    /// Language tag such as `en`.
    #[serde(default)]
    pub lang_tag: Option<String>,
    /// IANA time zone.
    #[serde(default)]
    pub timezone: Option<String>,
}

fn default_role() -> String {
    DEFAULT_ROLE.to_owned()
}

impl Default for PublicProfile {
    fn default() -> Self {
        Self {
            role: default_role(),
            lang_tag: None,
            timezone: None,
        }
    }
}

/// The personal part of a profile: sealed under the user's data key, erased by pruning.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PersonalProfile {
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
    /// Free-text location.
    #[serde(default)]
    pub location: Option<String>,
    /// Application fields (≤ 16 KB; no `.` or spaces in names).
    #[serde(default)]
    pub custom: JsonObject,
    /// Server-owned metadata, public in profiles (≤ 16 KB).
    #[serde(default)]
    pub metadata: JsonObject,
    /// User preferences (≤ 64 KB).
    #[serde(default)]
    pub prefs: JsonObject,
}

/// A whole profile, as a command gives it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Role, language, time zone.
    pub public: PublicProfile,
    /// Everything else.
    pub personal: PersonalProfile,
}

/// An argon2id PHC string (or, for imported users, another algorithm's). Never shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct PasswordHash(pub String);

impl PasswordHash {
    /// The PHC string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// Everything personal a user holds: the profile's personal part and the password hash.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserPersonal {
    /// The personal fields.
    #[serde(default)]
    pub profile: PersonalProfile,
    /// The password hash, if the user has a password.
    #[serde(default)]
    pub password_hash: Option<PasswordHash>,
    /// Linked identities (docs/identities.md), in the order they were linked. Last, and left
    /// out when empty, so events and rows written before identities existed read the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<Identity>,
}

/// A user's identity at a provider: `(provider, subject)`, unique in its organization.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Identity {
    /// `a-z 0-9 _`, 1–32 characters (`device`, `facebook`, …).
    #[serde(default)]
    pub provider: String,
    /// The provider's id of the user: 1–256 printable characters.
    #[serde(default)]
    pub subject: String,
}

/// Which field of the profile a path starts at (docs/contract.md §3 "Partial updates").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileField {
    /// `username`
    Username,
    /// `display_name`
    DisplayName,
    /// `name`
    Name,
    /// `email`
    Email,
    /// `phone`
    Phone,
    /// `avatar_url`
    AvatarUrl,
    /// `location`
    Location,
    /// `lang_tag`
    LangTag,
    /// `timezone`
    Timezone,
    /// `role`
    Role,
    /// `custom` (by dotted path)
    Custom,
    /// `metadata` (by dotted path)
    Metadata,
    /// `prefs` (by dotted path)
    Prefs,
}

impl ProfileField {
    /// The field a path's first segment names.
    pub fn of_path(path: &str) -> Option<Self> {
        Self::parse(path.split('.').next().unwrap_or(path))
    }

    /// The field with this name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "username" => Self::Username,
            "display_name" => Self::DisplayName,
            "name" => Self::Name,
            "email" => Self::Email,
            "phone" => Self::Phone,
            "avatar_url" => Self::AvatarUrl,
            "location" => Self::Location,
            "lang_tag" => Self::LangTag,
            "timezone" => Self::Timezone,
            "role" => Self::Role,
            "custom" => Self::Custom,
            "metadata" => Self::Metadata,
            "prefs" => Self::Prefs,
            _ => return None,
        })
    }

    /// Whether the field is personal data (everything but role, language and time zone).
    pub fn is_personal(self) -> bool {
        !matches!(self, Self::Role | Self::LangTag | Self::Timezone)
    }

    /// Whether it holds a JSON object addressed by dotted paths.
    pub fn is_object(self) -> bool {
        matches!(self, Self::Custom | Self::Metadata | Self::Prefs)
    }
}

impl Profile {
    /// The string slot of a scalar field (role excepted: it is never absent).
    pub fn scalar_mut(&mut self, field: ProfileField) -> Option<&mut Option<String>> {
        let p = &mut self.personal;
        Some(match field {
            ProfileField::Username => &mut p.username,
            ProfileField::DisplayName => &mut p.display_name,
            ProfileField::Name => &mut p.name,
            ProfileField::Email => &mut p.email,
            ProfileField::Phone => &mut p.phone,
            ProfileField::AvatarUrl => &mut p.avatar_url,
            ProfileField::Location => &mut p.location,
            ProfileField::LangTag => &mut self.public.lang_tag,
            ProfileField::Timezone => &mut self.public.timezone,
            _ => return None,
        })
    }

    /// The object of `custom`, `metadata` or `prefs`.
    pub fn object_mut(&mut self, field: ProfileField) -> Option<&mut JsonObject> {
        Some(match field {
            ProfileField::Custom => &mut self.personal.custom,
            ProfileField::Metadata => &mut self.personal.metadata,
            ProfileField::Prefs => &mut self.personal.prefs,
            _ => return None,
        })
    }
}
