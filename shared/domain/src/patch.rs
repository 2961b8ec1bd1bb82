//! Partial updates: `set` paths to values, `unset` paths (docs/contract.md §3 "Partial updates").
//!
//! A path is a top-level settable field (`name`, `role`, …) or a dotted path into `custom`,
//! `metadata` or `prefs` (`custom.field2.subfield`); missing intermediate objects are created.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::FieldError;
use crate::input::{check_object, check_scalar};
use crate::user::{DEFAULT_ROLE, Profile, ProfileField};

/// Top-level string fields a patch may set.
const SCALAR_FIELDS: &[&str] = &[
    "username",
    "display_name",
    "name",
    "email",
    "phone",
    "avatar_url",
    "lang_tag",
    "location",
    "timezone",
    "role",
];
/// Top-level object fields a patch may set whole or by dotted path.
const OBJECT_FIELDS: &[&str] = &["custom", "metadata", "prefs"];
/// Fields of the user object that exist but only change through their own commands.
const READ_ONLY_FIELDS: &[&str] = &[
    "id",
    "organization_id",
    "wallet",
    "status",
    "version",
    "created_at",
    "updated_at",
    "deactivated_at",
    "deleted_at",
    "email_verified",
    "phone_verified",
    "password",
];
/// Deepest dotted path accepted.
const MAX_DEPTH: usize = 32;

/// The body of `PATCH /v1/users/{id}` (and each item of `PATCH /v1/users`, with `id`).
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchInput {
    /// Paths to values.
    #[serde(default)]
    pub set: Map<String, Value>,
    /// Paths to remove.
    #[serde(default)]
    pub unset: Vec<String>,
}

/// A validated partial update. Applying it to a profile cannot fail, but the result must still
/// pass the size limits (checked by [`Patch::apply_checked`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    /// Paths to values (validated).
    pub set: Map<String, Value>,
    /// Paths to remove (validated).
    pub unset: Vec<String>,
}

fn split_path(path: &str) -> Vec<&str> {
    path.split('.').collect()
}

/// Checks one path's grammar and root; `for_set` tells whether it is in `set`.
fn check_path(path: &str, field: &str) -> Result<(), FieldError> {
    let segments = split_path(path);
    let root = segments[0];
    if segments.iter().any(|s| s.is_empty()) {
        return Err(FieldError::new(field, "path segments may not be empty"));
    }
    if segments.len() > MAX_DEPTH {
        return Err(FieldError::new(
            field,
            format!("paths may be at most {MAX_DEPTH} deep"),
        ));
    }
    if READ_ONLY_FIELDS.contains(&root) {
        let how = match root {
            "password" => "; use PATCH /v1/users/{id}/password",
            "status" => "; use PATCH /v1/users/{id}/status or deactivate/delete",
            "email_verified" | "phone_verified" => "; use PATCH /v1/users/{id}/verification",
            "wallet" => "; use POST /v1/users/{id}/wallet",
            _ => "",
        };
        return Err(FieldError::new(
            field,
            format!("{root} cannot be changed by a partial update{how}"),
        ));
    }
    if SCALAR_FIELDS.contains(&root) {
        if segments.len() > 1 {
            return Err(FieldError::new(field, format!("{root} has no sub-fields")));
        }
        return Ok(());
    }
    if OBJECT_FIELDS.contains(&root) {
        if root == "custom"
            && segments
                .iter()
                .skip(1)
                .any(|s| s.chars().any(char::is_whitespace))
        {
            return Err(FieldError::new(
                field,
                "field names in custom may not contain spaces",
            ));
        }
        return Ok(());
    }
    Err(FieldError::new(field, format!("unknown field {root}")))
}

/// Whether one path is the other or lies inside it.
fn overlaps(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    long == short || (long.starts_with(short) && long.as_bytes()[short.len()] == b'.')
}

impl PatchInput {
    /// Validates paths and values; reports every problem at once.
    pub fn validate(self) -> Result<Patch, Vec<FieldError>> {
        let mut errors = Vec::new();
        for (path, value) in &self.set {
            let field = format!("set.{path}");
            if let Err(e) = check_path(path, &field) {
                errors.push(e);
                continue;
            }
            let segments = split_path(path);
            let root = segments[0];
            if SCALAR_FIELDS.contains(&root) {
                match value {
                    Value::Null => {}
                    Value::String(s) => {
                        if let Err(e) = check_scalar(root, s) {
                            errors.push(FieldError::new(field, e.message));
                        }
                    }
                    _ => errors.push(FieldError::new(field, "must be a string or null")),
                }
            } else if segments.len() == 1 && !matches!(value, Value::Object(_) | Value::Null) {
                errors.push(FieldError::new(field, "must be an object or null"));
            } else if root == "custom"
                && let Err(e) = crate::values::check_custom_keys(path, value)
            {
                errors.push(FieldError::new(format!("set.{}", e.field), e.message));
            }
        }
        for (i, path) in self.unset.iter().enumerate() {
            let field = format!("unset[{i}]");
            if let Err(e) = check_path(path, &field) {
                errors.push(e);
                continue;
            }
            if let Some(set_path) = self.set.keys().find(|s| overlaps(s, path)) {
                errors.push(FieldError::new(
                    field,
                    format!("{path} conflicts with set path {set_path}: a path cannot be both set and unset"),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, path) in self.unset.iter().enumerate() {
            if !seen.insert(path) {
                errors.push(FieldError::new(format!("unset[{i}]"), "listed twice"));
            }
        }
        if errors.is_empty() {
            Ok(Patch {
                set: self.set,
                unset: self.unset,
            })
        } else {
            Err(errors)
        }
    }
}

impl Patch {
    /// Whether the patch names nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty()
    }

    /// Applies the patch to a copy of `profile` and checks the limits the result must meet.
    pub fn apply_checked(&self, profile: &Profile) -> Result<Profile, Vec<FieldError>> {
        let mut next = profile.clone();
        apply(&mut next, &self.set, &self.unset);
        let mut errors = Vec::new();
        for (field, map) in [
            ("custom", &next.personal.custom),
            ("metadata", &next.personal.metadata),
            ("prefs", &next.personal.prefs),
        ] {
            let touched = self
                .set
                .keys()
                .chain(self.unset.iter())
                .any(|p| split_path(p)[0] == field);
            if touched && let Err(e) = check_object(field, map) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(next)
        } else {
            Err(errors)
        }
    }
}

/// Applies set then unset paths to a profile (used by `apply` for recorded events, so it
/// accepts whatever the event holds).
pub fn apply(profile: &mut Profile, set: &Map<String, Value>, unset: &[String]) {
    for (path, value) in set {
        set_path(profile, path, value.clone());
    }
    for path in unset {
        unset_path(profile, path);
    }
}

fn set_path(profile: &mut Profile, path: &str, value: Value) {
    let segments = split_path(path);
    let rest = &segments[1..];
    let Some(field) = ProfileField::parse(segments[0]) else {
        return;
    };
    if field == ProfileField::Role {
        profile.public.role = match value {
            Value::String(s) => s,
            _ => DEFAULT_ROLE.to_owned(),
        };
    } else if let Some(slot) = profile.scalar_mut(field) {
        *slot = match value {
            Value::String(s) => Some(s),
            _ => None,
        };
    } else if let Some(map) = profile.object_mut(field) {
        let Some((leaf, parents)) = rest.split_last() else {
            *map = match value {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            return;
        };
        let mut current = map;
        for segment in parents {
            let entry = current
                .entry(segment.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            current = entry.as_object_mut().expect("just made an object");
        }
        current.insert(leaf.to_string(), value);
    }
}

fn unset_path(profile: &mut Profile, path: &str) {
    let segments = split_path(path);
    let rest = &segments[1..];
    let Some(field) = ProfileField::parse(segments[0]) else {
        return;
    };
    if field == ProfileField::Role {
        profile.public.role = DEFAULT_ROLE.to_owned();
    } else if let Some(slot) = profile.scalar_mut(field) {
        *slot = None;
    } else if let Some(map) = profile.object_mut(field) {
        let Some((leaf, parents)) = rest.split_last() else {
            map.clear();
            return;
        };
        let mut current = map;
        for segment in parents {
            match current.get_mut(*segment).and_then(Value::as_object_mut) {
                Some(next) => current = next,
                None => return,
            }
        }
        current.remove(*leaf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(v: Value) -> Result<Patch, Vec<FieldError>> {
        serde_json::from_value::<PatchInput>(v).unwrap().validate()
    }

    #[test]
    fn nested_set_creates_intermediates_and_unset_removes() {
        let mut profile = Profile::default();
        profile.personal.custom.insert("keep".into(), json!(1));
        let p = patch(json!({"set": {"custom.a.b.c": 5, "name": "Al", "role": "admin"}, "unset": ["custom.keep"]})).unwrap();
        let next = p.apply_checked(&profile).unwrap();
        assert_eq!(
            Value::Object(next.personal.custom.clone()),
            json!({"a": {"b": {"c": 5}}})
        );
        assert_eq!(next.personal.name.as_deref(), Some("Al"));
        assert_eq!(next.public.role, "admin");
        let back = patch(json!({"unset": ["role", "name", "custom"]}))
            .unwrap()
            .apply_checked(&next)
            .unwrap();
        assert_eq!(back.public.role, "user");
        assert_eq!(back.personal.name, None);
        assert!(back.personal.custom.is_empty());
    }

    #[test]
    fn forbidden_unknown_and_conflicting_paths() {
        for (body, field) in [
            (json!({"set": {"id": "x"}}), "set.id"),
            (json!({"set": {"wallet": {}}}), "set.wallet"),
            (json!({"set": {"status": "active"}}), "set.status"),
            (
                json!({"set": {"email_verified": true}}),
                "set.email_verified",
            ),
            (json!({"set": {"created_at": "x"}}), "set.created_at"),
            (json!({"set": {"version": 1}}), "set.version"),
            (json!({"set": {"nope": 1}}), "set.nope"),
            (json!({"set": {"name.first": "x"}}), "set.name.first"),
            (json!({"set": {"custom..a": 1}}), "set.custom..a"),
            (json!({"set": {"name": 5}}), "set.name"),
            (json!({"set": {"custom": 5}}), "set.custom"),
            (json!({"set": {"username": "a b"}}), "set.username"),
            (
                json!({"set": {"custom.a": 1}, "unset": ["custom.a"]}),
                "unset[0]",
            ),
            (
                json!({"set": {"custom.a": 1}, "unset": ["custom"]}),
                "unset[0]",
            ),
            (
                json!({"set": {"custom": {}}, "unset": ["custom.a.b"]}),
                "unset[0]",
            ),
            (json!({"unset": ["organization_id"]}), "unset[0]"),
        ] {
            let errors = patch(body.clone()).unwrap_err();
            assert!(
                errors.iter().any(|e| e.field == field),
                "{body}: {errors:?}"
            );
        }
        // Siblings with a shared prefix do not conflict.
        assert!(patch(json!({"set": {"custom.ab": 1}, "unset": ["custom.a"]})).is_ok());
    }

    #[test]
    fn size_limit_applies_to_the_result() {
        let mut profile = Profile::default();
        profile
            .personal
            .metadata
            .insert("big".into(), json!("x".repeat(16_000)));
        let p = patch(json!({"set": {"metadata.more": "y".repeat(1000)}})).unwrap();
        assert_eq!(p.apply_checked(&profile).unwrap_err()[0].field, "metadata");
    }
}
