//! Request shapes for user fields and their validation into a [`ValidUser`].

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::FieldError;
use crate::user::{DEFAULT_ROLE, PersonalProfile, Profile, PublicProfile};
use crate::values::*;

/// The user fields a server sends to create or replace a user (docs/contract.md §2). Unknown fields
/// are refused so typos do not vanish silently.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// 1–36 of `a-z A-Z 0-9 . - _`; omitted or `"unique()"` generates a ULID.
    pub id: Option<String>,
    /// 1–128 characters without whitespace; unique by normalized form.
    pub username: Option<String>,
    /// Shown to other users (≤ 128 characters).
    pub display_name: Option<String>,
    /// Full name (≤ 128 characters).
    pub name: Option<String>,
    /// Unique per organization, case-insensitively (≤ 254 characters).
    pub email: Option<String>,
    /// E.164 phone number.
    pub phone: Option<String>,
    /// Picture URL (≤ 2048 characters).
    pub avatar_url: Option<String>,
    /// Language tag (≤ 35 characters).
    pub lang_tag: Option<String>,
    /// Free-text location (≤ 255 characters).
    pub location: Option<String>,
    /// IANA time zone (≤ 64 characters).
    pub timezone: Option<String>,
    /// Role (`user` if omitted).
    pub role: Option<String>,
    /// 8–256 characters; stored only as an argon2id hash.
    pub password: Option<String>,
    /// Instead of `password`: a hash another system made, `{"algorithm", "hash", …}`
    /// (docs/import.md lists the algorithms). Replaced by an argon2id hash at the first
    /// sign-in.
    pub password_hash: Option<Map<String, Value>>,
    /// Application fields (≤ 16 KB).
    pub custom: Option<Map<String, Value>>,
    /// Server-owned metadata (≤ 16 KB).
    pub metadata: Option<Map<String, Value>>,
    /// Preferences (≤ 64 KB).
    pub prefs: Option<Map<String, Value>>,
}

/// A [`UserInput`] that passed every rule.
#[derive(Debug)]
pub struct ValidUser {
    /// The id, if the caller chose one (`unique()` is already resolved to a ULID).
    pub id: Option<UserId>,
    /// The validated fields.
    pub profile: Profile,
    /// The password, to be hashed by the caller.
    pub password: Option<Password>,
    /// A hash another system made, to be checked by the caller (`roster_core::imported_hash`).
    pub password_hash: Option<Map<String, Value>>,
}

/// Rules for the optional free-text fields: (field, max characters).
pub(crate) const TEXT_FIELDS: &[(&str, usize)] = &[
    ("display_name", MAX_NAME_CHARS),
    ("name", MAX_NAME_CHARS),
    ("avatar_url", 2048),
    ("lang_tag", 35),
    ("location", 255),
    ("timezone", 64),
];

/// Validates one top-level string field of the profile by name.
pub fn check_scalar(field: &str, value: &str) -> Result<(), FieldError> {
    let err = |m: String| FieldError::new(field, m);
    match field {
        "username" => Username::parse(value).map(|_| ()).map_err(err),
        "email" => Email::parse(value).map(|_| ()).map_err(err),
        "phone" => Phone::parse(value).map(|_| ()).map_err(err),
        "role" => check_role(value).map_err(err),
        _ => {
            let max = TEXT_FIELDS
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, m)| *m)
                .unwrap_or(MAX_NAME_CHARS);
            check_text(field, value, max)
        }
    }
}

/// Validates one of the JSON object fields by name.
pub fn check_object(field: &str, value: &Map<String, Value>) -> Result<(), FieldError> {
    match field {
        "custom" => {
            check_custom_keys("custom", &Value::Object(value.clone()))?;
            check_json_size("custom", value, MAX_CUSTOM_BYTES)
        }
        "metadata" => check_json_size("metadata", value, MAX_METADATA_BYTES),
        _ => check_json_size("prefs", value, MAX_PREFS_BYTES),
    }
}

impl UserInput {
    /// Applies every rule of docs/contract.md §2 and reports all broken ones at once.
    pub fn validate(self) -> Result<ValidUser, Vec<FieldError>> {
        let mut errors = Vec::new();
        let id = match self.id.as_deref() {
            None => None,
            Some(s) => match UserId::parse(s) {
                Ok(id) => Some(id),
                Err(m) => {
                    errors.push(FieldError::new("id", m));
                    None
                }
            },
        };
        let mut scalar = |field: &str, value: Option<String>| -> Option<String> {
            let value = value?;
            match check_scalar(field, &value) {
                Ok(()) => Some(value),
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        };
        let personal = PersonalProfile {
            username: scalar("username", self.username),
            display_name: scalar("display_name", self.display_name),
            name: scalar("name", self.name),
            email: scalar("email", self.email),
            phone: scalar("phone", self.phone),
            avatar_url: scalar("avatar_url", self.avatar_url),
            location: scalar("location", self.location),
            custom: self.custom.unwrap_or_default(),
            metadata: self.metadata.unwrap_or_default(),
            prefs: self.prefs.unwrap_or_default(),
        };
        let public = PublicProfile {
            role: scalar("role", self.role).unwrap_or_else(|| DEFAULT_ROLE.to_owned()),
            lang_tag: scalar("lang_tag", self.lang_tag),
            timezone: scalar("timezone", self.timezone),
        };
        let profile = Profile { public, personal };
        for (field, map) in [
            ("custom", &profile.personal.custom),
            ("metadata", &profile.personal.metadata),
            ("prefs", &profile.personal.prefs),
        ] {
            if let Err(e) = check_object(field, map) {
                errors.push(e);
            }
        }
        let password = match self.password.as_deref().map(Password::parse) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(m)) => {
                errors.push(FieldError::new("password", m));
                None
            }
        };
        if password.is_some() && self.password_hash.is_some() {
            errors.push(FieldError::new(
                "password_hash",
                "send either password or password_hash, not both",
            ));
        }
        if errors.is_empty() {
            Ok(ValidUser {
                id,
                profile,
                password,
                password_hash: self.password_hash,
            })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> UserInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let errors = input(json!({
            "id": "-bad", "username": "has space", "email": "nope", "name": "n".repeat(129),
            "password": "short", "phone": "123", "role": "Admin",
            "custom": {"a.b": 1}, "metadata": {"x": "y".repeat(16 * 1024)}
        }))
        .validate()
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "id",
            "username",
            "email",
            "name",
            "password",
            "phone",
            "role",
            "custom.a.b",
            "metadata",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let v = input(json!({"username": "alice"})).validate().unwrap();
        assert_eq!(v.profile.public.role, "user");
        assert!(v.id.is_none());
        assert!(serde_json::from_value::<UserInput>(json!({"wallet": {}})).is_err());
        assert!(serde_json::from_value::<UserInput>(json!({"name": 5})).is_err());
    }

    #[test]
    fn size_limits_are_inclusive() {
        // {"k":"…"} is 8 bytes of framing.
        let fits = json!({"prefs": {"k": "x".repeat(64 * 1024 - 8)}});
        assert!(input(fits).validate().is_ok());
        let over = json!({"prefs": {"k": "x".repeat(64 * 1024 - 7)}});
        assert!(input(over).validate().is_err());
    }
}
