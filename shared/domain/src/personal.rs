//! Which parts of an event are personal data (DESIGN.md "Personal data never reaches disk in
//! plain text").
//!
//! [`split`] moves the personal parts of a JSON payload into a separate object, which the
//! storage layer seals under the user's data key; [`merge`] puts them back after opening.
//! When the key is gone, [`mark_erased`] makes the payload read with its personal fields null
//! and `"erased": true`. The rules work on JSON so they cover every event type, and any
//! read-model row, alike:
//! - a top-level key named in [`PERSONAL_FIELDS`] is personal;
//! - inside a `profile` object, the same keys are personal;
//! - inside `set` (an object of paths) and `unset` (an array of paths), a path is personal
//!   when its first segment is in [`PERSONAL_FIELDS`].

use serde_json::{Map, Value};

/// Field names that hold personal data wherever they appear (API.md §3: username, names,
/// email, phone, avatar, location, custom, prefs, metadata; plus the password hash, and the
/// request's ip and user agent in event metadata).
pub const PERSONAL_FIELDS: &[&str] = &[
    "username",
    "display_name",
    "name",
    "email",
    "phone",
    "avatar_url",
    "location",
    "custom",
    "metadata",
    "prefs",
    "password_hash",
    "ip",
    "user_agent",
];

/// The marker a payload carries when its personal part could not be opened.
pub const ERASED: &str = "erased";

fn is_personal(key: &str) -> bool {
    PERSONAL_FIELDS.contains(&key)
}

fn path_is_personal(path: &str) -> bool {
    is_personal(path.split('.').next().unwrap_or(path))
}

/// Removes the personal parts of `data` and returns them (`None` if there are none).
pub fn split(data: &mut Map<String, Value>) -> Option<Map<String, Value>> {
    let mut personal = Map::new();
    for key in PERSONAL_FIELDS {
        if let Some(v) = data.remove(*key) {
            personal.insert((*key).to_owned(), v);
        }
    }
    if let Some(Value::Object(profile)) = data.get_mut("profile") {
        let mut inner = Map::new();
        for key in PERSONAL_FIELDS {
            if let Some(v) = profile.remove(*key) {
                inner.insert((*key).to_owned(), v);
            }
        }
        if !inner.is_empty() {
            personal.insert("profile".into(), Value::Object(inner));
        }
    }
    if let Some(Value::Object(set)) = data.get_mut("set") {
        let keys: Vec<String> = set
            .keys()
            .filter(|k| path_is_personal(k))
            .cloned()
            .collect();
        if !keys.is_empty() {
            let inner: Map<String, Value> = keys
                .into_iter()
                .filter_map(|k| set.remove(&k).map(|v| (k, v)))
                .collect();
            personal.insert("set".into(), Value::Object(inner));
        }
    }
    if let Some(Value::Array(unset)) = data.get_mut("unset") {
        let (private, public): (Vec<Value>, Vec<Value>) = std::mem::take(unset)
            .into_iter()
            .partition(|p| p.as_str().is_some_and(path_is_personal));
        *unset = public;
        if !private.is_empty() {
            personal.insert("unset".into(), Value::Array(private));
        }
    }
    (!personal.is_empty()).then_some(personal)
}

/// Puts back what [`split`] removed.
pub fn merge(data: &mut Map<String, Value>, personal: Map<String, Value>) {
    for (key, value) in personal {
        match (key.as_str(), value) {
            ("profile" | "set", Value::Object(inner)) => {
                let target = data.entry(key).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(target) = target {
                    target.extend(inner);
                }
            }
            ("unset", Value::Array(items)) => {
                let target = data.entry(key).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(target) = target {
                    target.extend(items);
                }
            }
            (_, value) => {
                data.insert(key, value);
            }
        }
    }
}

/// Marks a payload whose personal part is unreadable: the personal fields it had a place for
/// read as `null`, and `"erased": true` says why. `personal_keys` names the top-level personal
/// keys this payload's type carries (see [`personal_keys_of`]).
pub fn mark_erased(data: &mut Map<String, Value>, personal_keys: &[&str]) {
    for key in personal_keys {
        data.insert((*key).to_owned(), Value::Null);
    }
    if let Some(Value::Object(profile)) = data.get_mut("profile") {
        for key in PERSONAL_FIELDS
            .iter()
            .filter(|k| !matches!(**k, "password_hash" | "ip" | "user_agent"))
        {
            profile.insert((*key).to_owned(), Value::Null);
        }
    }
    data.insert(ERASED.into(), Value::Bool(true));
}

/// The top-level personal keys an event type's payload has.
pub fn personal_keys_of(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "UserCreated" | "UserReplaced" | "PasswordChanged" => &["password_hash"],
        "EmailChanged" => &["email"],
        "NameChanged" => &["name"],
        "PhoneChanged" => &["phone"],
        "PrefsUpdated" => &["prefs"],
        "WalletAdjusted" => &["metadata"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn split_then_merge_round_trips() {
        let original = obj(json!({
            "user_id": "u1",
            "profile": {"username": "alice", "role": "admin", "custom": {"a": 1}, "lang_tag": "en"},
            "password_hash": "$argon2id$...",
            "set": {"name": "Al", "role": "mod", "custom.x": 2},
            "unset": ["email", "timezone"],
            "ip": "10.0.0.1"
        }));
        let mut data = original.clone();
        let personal = split(&mut data).unwrap();
        let public = serde_json::to_string(&data).unwrap();
        for secret in ["alice", "argon2id", "Al\"", "custom", "email", "10.0.0.1"] {
            assert!(!public.contains(secret), "{secret} leaked into {public}");
        }
        assert!(
            public.contains("admin") && public.contains("timezone") && public.contains("\"mod\"")
        );
        merge(&mut data, personal);
        // Unset paths are independent of each other, so their order may change.
        let mut unset: Vec<String> = serde_json::from_value(data["unset"].clone()).unwrap();
        unset.sort();
        assert_eq!(unset, ["email", "timezone"]);
        data.remove("unset");
        let mut original = original;
        original.remove("unset");
        assert_eq!(Value::Object(data), Value::Object(original));
    }

    #[test]
    fn nothing_personal_splits_to_none() {
        let mut data = obj(json!({"blocked": true}));
        assert!(split(&mut data).is_none());
    }

    #[test]
    fn erased_payload_reads_null() {
        let mut data = obj(json!({"user_id": "u1", "profile": {"role": "user"}}));
        split(&mut data);
        mark_erased(&mut data, personal_keys_of("UserCreated"));
        assert_eq!(data["profile"]["username"], Value::Null);
        assert_eq!(data["password_hash"], Value::Null);
        assert_eq!(data["erased"], Value::Bool(true));
        assert_eq!(data["profile"]["role"], "user");
    }
}
