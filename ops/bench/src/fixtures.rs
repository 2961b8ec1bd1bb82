//! Request bodies the generator sends and the canned answers the ceiling gives, so that the
//! three systems see the same requests and answer with bodies of about the same size.

use bytes::Bytes;
use serde_json::{Value, json};

/// Id of the `n`th preloaded user (W2–W5, W7, W8 work on these).
pub fn loaded_id(n: u64) -> String {
    format!("u{n:07}")
}

/// A user as a client creates it: about 300 bytes, with a username and an email (so Roster
/// claims both as unique values, as a real sign-up does), custom data and metadata. No
/// password: argon2id would dominate every figure (W9 measures it separately).
pub fn user_json(id: &str, n: u64) -> String {
    format!(
        concat!(
            r#"{{"id":"{id}","username":"{id}","email":"{id}@bench.example","#,
            r#""name":"Bench User {id}","display_name":"bench {n}","lang_tag":"en","#,
            r#""timezone":"Europe/Paris","custom":{{"color":"red","level":{level}}},"#,
            r#""metadata":{{"tier":"free","source":"bench"}}}}"#
        ),
        id = id,
        n = n,
        level = n % 100
    )
}

/// `{"users": [...]}` for `POST /v1/users/upsert`, preloaded users `from..to`.
pub fn upsert_batch(from: u64, to: u64) -> Bytes {
    let mut body = String::with_capacity(((to - from) as usize) * 320 + 16);
    body.push_str(r#"{"users":["#);
    for n in from..to {
        if n > from {
            body.push(',');
        }
        body.push_str(&user_json(&loaded_id(n), n));
    }
    body.push_str("]}");
    Bytes::from(body)
}

/// Partial updates of top-level fields only, so the PostgreSQL baseline's `doc || patch`
/// means the same as Roster's `set`.
pub fn patch_bodies() -> Vec<Bytes> {
    (0..16)
        .map(|k| {
            Bytes::from(format!(
                r#"{{"set":{{"display_name":"Player {k}","location":"City {k}","lang_tag":"fr"}}}}"#
            ))
        })
        .collect()
}

/// A wallet adjustment with a ledger entry.
pub fn wallet_body() -> Bytes {
    Bytes::from_static(
        br#"{"changeset":{"coins":1},"metadata":{"reason":"bench"},"update_ledger":true}"#,
    )
}

/// Login credentials of the `i`th W9 user.
pub fn login_user(i: usize) -> (String, String) {
    (format!("login{i}"), format!("bench-password-{i}"))
}

/// A user object shaped like Roster's answer (docs/contract.md §2): what the ceiling returns.
pub fn canned_user(id: &str) -> Value {
    json!({
        "id": id, "organization_id": "default",
        "username": id, "display_name": "bench 1", "name": format!("Bench User {id}"),
        "email": format!("{id}@bench.example"), "email_verified": false,
        "phone": null, "phone_verified": false,
        "avatar_url": null, "lang_tag": "en", "location": null, "timezone": "Europe/Paris",
        "role": "user", "status": "active",
        "custom": {"color": "red", "level": 1}, "metadata": {"tier": "free", "source": "bench"},
        "prefs": {}, "wallet": {"coins": 10},
        "created_at": "2026-01-01T00:00:00.000000Z", "updated_at": "2026-01-01T00:00:00.000000Z",
        "deactivated_at": null, "deleted_at": null,
        "version": 1, "position": 1
    })
}

/// A list page of 25 users, as Roster's `GET /v1/users` answers.
pub fn canned_page() -> Value {
    let users: Vec<Value> = (0..25).map(|n| canned_user(&loaded_id(n))).collect();
    json!({"users": users, "next_cursor": "YzI1", "prev_cursor": null, "total": 100000})
}

/// What `POST /v1/sessions` answers.
pub fn canned_session() -> Value {
    json!({
        "session_id": "01JD0000000000000000000000", "access_token": "a".repeat(160),
        "refresh_token": "r".repeat(64), "expires_at": "2026-01-01T01:00:00Z",
        "user_id": "login0"
    })
}

/// What `POST /v1/users/{id}/wallet` answers.
pub fn canned_wallet() -> Value {
    json!({"updated": {"coins": 11}, "previous": {"coins": 10}, "position": 1})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json() {
        let user: Value = serde_json::from_str(&user_json("u0000001", 1)).unwrap();
        assert_eq!(user["id"], "u0000001");
        let batch: Value = serde_json::from_slice(&upsert_batch(5, 105)).unwrap();
        assert_eq!(batch["users"].as_array().unwrap().len(), 100);
        assert_eq!(batch["users"][99]["id"], "u0000104");
        for b in patch_bodies() {
            serde_json::from_slice::<Value>(&b).unwrap();
        }
        serde_json::from_slice::<Value>(&wallet_body()).unwrap();
    }
}
