//! Deactivation, deletion in three modes, and restore (docs/contract.md §3).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Scalar fields erased by pruning (docs/contract.md §3).
const PERSONAL_SCALARS: &[&str] = &[
    "username",
    "display_name",
    "name",
    "email",
    "phone",
    "avatar_url",
    "location",
];
/// Object fields erased by pruning.
const PERSONAL_OBJECTS: &[&str] = &["custom", "metadata", "prefs"];

fn rich_user(id: &str) -> Value {
    json!({
        "id": id, "username": format!("{id}_name"), "display_name": "Disp", "name": "Full Name",
        "email": format!("{id}@example.com"), "phone": "+14155550123",
        "avatar_url": "https://img.example/a.png", "location": "Lyon", "lang_tag": "fr",
        "timezone": "Europe/Paris", "role": "moderator",
        "custom": {"color": "red"}, "metadata": {"vip": true}, "prefs": {"theme": "dark"},
        "password": "a good password"
    })
}

async fn delete(app: &TestApp, id: &str, mode: Option<&str>) -> (StatusCode, Value, Option<u64>) {
    let path = match mode {
        Some(m) => format!("/v1/users/{id}?mode={m}"),
        None => format!("/v1/users/{id}"),
    };
    let response = app.delete(&path).await;
    let status = response.status();
    let at = response
        .headers()
        .get("x-roster-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, json(response).await, at)
}

async fn restore(app: &TestApp, ids: &[&str]) -> (StatusCode, Value) {
    let response = app
        .post("/v1/users/restore", &json!({"user_ids": ids}))
        .await;
    (response.status(), json(response).await)
}

#[tokio::test]
async fn deactivate_and_reactivate() {
    let app = spawn_app().await;
    let created = app.create_user(&json!({"id": "d", "username": "d"})).await;
    // No body at all.
    let response = app
        .request(Method::POST, "/v1/users/d/deactivate")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let at = position(&response);
    assert_eq!(etag(&response), "\"2\"");
    let user = json(response).await;
    assert_eq!(user["status"], "deactivated");
    assert!(user["deactivated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        changed_fields(&created, &user),
        ["deactivated_at", "status"]
    );
    let stored = json(app.get_at("/v1/users/d", at).await).await;
    assert_eq!(stored["status"], "deactivated");
    assert_eq!(app.list_ids("status=deactivated").await, ["d"]);

    // Again, with a body: already deactivated, so no new event.
    let head = app.head().await;
    let response = app
        .post(
            "/v1/users/d/deactivate",
            &json!({"created_by_id": "admin-1"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(position(&response), at);
    assert_eq!(
        json(response).await["deactivated_at"],
        user["deactivated_at"]
    );
    assert_eq!(app.head().await, head);

    let response = app
        .request(Method::POST, "/v1/users/d/reactivate")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reactivated = json(response).await;
    assert_eq!(reactivated["status"], "active");
    assert_eq!(reactivated["deactivated_at"], Value::Null);
    // Reactivating an active user changes nothing.
    let head = app.head().await;
    let response = app.post("/v1/users/d/reactivate", &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.head().await, head);

    // An empty JSON object and created_by_id both work; created_by_id is recorded.
    let response = app
        .post(
            "/v1/users/d/deactivate",
            &json!({"created_by_id": "admin-7"}),
        )
        .await;
    assert_eq!(json(response).await["status"], "deactivated");
    let events = app.events_of("d").await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "UserCreated",
            "UserDeactivated",
            "UserReactivated",
            "UserDeactivated"
        ]
    );
    assert_eq!(events[3]["data"]["created_by_id"], "admin-7");
    assert_eq!(events[1]["data"]["created_by_id"], Value::Null);
    app.post("/v1/users/d/reactivate", &json!({})).await;
    let response = app.post("/v1/users/d/deactivate", &json!({})).await;
    assert_eq!(json(response).await["status"], "deactivated");

    // Bad bodies and unknown users.
    let head = app.head().await;
    for (path, body) in [
        ("/v1/users/d/deactivate", json!({"created_by": "x"})),
        ("/v1/users/d/deactivate", json!({"created_by_id": 5})),
        ("/v1/users/d/reactivate", json!({"force": true})),
    ] {
        assert_problem(
            app.post(path, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    for path in ["/v1/users/nobody/deactivate", "/v1/users/nobody/reactivate"] {
        assert_problem(
            app.post(path, &json!({})).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    assert_eq!(app.head().await, head);
}

#[tokio::test]
async fn soft_deletion_keeps_everything_and_restore_brings_it_back() {
    let app = spawn_app().await;
    app.create_user(&rich_user("s")).await;
    app.create_user(&json!({"id": "live"})).await;
    app.post(
        "/v1/users/s/wallet",
        &json!({"changeset": {"coins": 5}, "update_ledger": true}),
    )
    .await;
    let before = app.user("s").await.unwrap();

    let (status, body, at) = delete(&app, "s", None).await;
    assert_eq!(status, StatusCode::OK);
    let at = at.expect("position header");
    assert_eq!(
        body,
        json!({"deleted": "s", "mode": "soft", "position": at})
    );
    let deleted = json(app.get_at("/v1/users/s", at).await).await;
    assert_eq!(deleted["status"], "deleted");
    assert!(deleted["deleted_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        changed_fields(&before, &deleted),
        ["deleted_at", "status"],
        "everything kept"
    );
    assert!(deleted.get("erased").is_none());
    assert_eq!(
        json(app.get("/v1/users/s/wallet/ledger").await).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Left out of listings unless asked for.
    assert_eq!(app.list_ids("").await, ["live"]);
    assert_eq!(app.list("").await["total"], 1);
    assert_eq!(app.list_ids("status=deleted").await, ["s"]);
    // Its username and email stay reserved.
    assert_problem(
        app.post("/v1/users", &json!({"username": "S_Name"})).await,
        StatusCode::CONFLICT,
        "username_taken",
    )
    .await;
    assert_problem(
        app.post("/v1/users", &json!({"email": "s@example.com"}))
            .await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;

    // Every change is refused with 409 conflict until it is restored.
    let head = app.head().await;
    let writes: Vec<(Method, &str, Value)> = vec![
        (Method::PATCH, "/v1/users/s", json!({"set": {"name": "X"}})),
        (
            Method::PATCH,
            "/v1/users",
            json!({"users": [{"id": "s", "set": {"name": "X"}}]}),
        ),
        (
            Method::PATCH,
            "/v1/users/s/email",
            json!({"email": "x@example.com"}),
        ),
        (Method::PATCH, "/v1/users/s/name", json!({"name": "X"})),
        (
            Method::PATCH,
            "/v1/users/s/password",
            json!({"password": "another one"}),
        ),
        (
            Method::PATCH,
            "/v1/users/s/phone",
            json!({"number": "+14155550000"}),
        ),
        (Method::PATCH, "/v1/users/s/prefs", json!({"prefs": {}})),
        (
            Method::PATCH,
            "/v1/users/s/status",
            json!({"status": false}),
        ),
        (
            Method::PATCH,
            "/v1/users/s/verification",
            json!({"email_verification": true}),
        ),
        (
            Method::PATCH,
            "/v1/users/s/verification/phone",
            json!({"phone_verification": true}),
        ),
        (
            Method::POST,
            "/v1/users/s/wallet",
            json!({"changeset": {"coins": 1}}),
        ),
        (Method::POST, "/v1/users/s/deactivate", json!({})),
        (Method::POST, "/v1/users/s/reactivate", json!({})),
        (
            Method::POST,
            "/v1/users/upsert",
            json!({"users": [{"id": "s"}]}),
        ),
    ];
    for (method, path, body) in writes {
        let response = app
            .request(method.clone(), path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let problem = json(response).await;
        assert_eq!(status, StatusCode::CONFLICT, "{method} {path}: {problem}");
        assert_eq!(problem["code"], "conflict", "{method} {path}: {problem}");
        if path.ends_with("/v1/users") || path.ends_with("upsert") {
            assert_eq!(fields(&problem), ["users[0]"], "batches name the item");
        }
    }
    assert_problem(
        app.post("/v1/users", &json!({"id": "s"})).await,
        StatusCode::CONFLICT,
        "id_taken",
    )
    .await;
    // Deleting softly again changes nothing.
    let (status, body, _) = delete(&app, "s", Some("soft")).await;
    assert_eq!(
        (status, body["mode"].as_str()),
        (StatusCode::OK, Some("soft"))
    );
    assert_eq!(app.head().await, head);

    let (status, body) = restore(&app, &["s"]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let restored = &body["users"]["s"];
    assert_eq!(restored["status"], "active");
    assert_eq!(restored["deleted_at"], Value::Null);
    let mut expected = before.clone();
    expected["version"] = restored["version"].clone();
    expected["updated_at"] = restored["updated_at"].clone();
    assert_eq!(*restored, expected, "restored whole");
    let at = body["position"].as_u64().unwrap();
    let stored = json(app.get_at("/v1/users/s", at).await).await;
    assert_eq!(stored, expected);
    assert_eq!(app.list_ids("").await, ["s", "live"]);
    // Restoring a live user changes nothing.
    let head = app.head().await;
    let (status, body) = restore(&app, &["s", "live"]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["users"]["live"]["status"], "active");
    assert_eq!(app.head().await, head);
    // And it can change again.
    let response = app
        .patch("/v1/users/s/name", &json!({"name": "Back"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn pruning_erases_personal_data_and_restore_gives_a_blank_user() {
    let app = spawn_app().await;
    app.create_user(&rich_user("p")).await;
    let response = app
        .post(
            "/v1/users/p/wallet",
            &json!({"changeset": {"coins": 5}, "metadata": {"why": "gift"}, "update_ledger": true}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    app.patch(
        "/v1/users/p/verification",
        &json!({"email_verification": true}),
    )
    .await;
    let before = app.user("p").await.unwrap();
    assert_eq!(before["email_verified"], true);

    let (status, body, at) = delete(&app, "p", Some("pruning")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let at = at.unwrap();
    assert_eq!(
        body,
        json!({"deleted": "p", "mode": "pruning", "position": at})
    );
    let pruned = json(app.get_at("/v1/users/p", at).await).await;
    assert_eq!(pruned["status"], "deleted");
    assert_eq!(pruned["erased"], true);
    for field in PERSONAL_SCALARS {
        assert_eq!(pruned[*field], Value::Null, "{field} erased");
    }
    for field in PERSONAL_OBJECTS {
        assert_eq!(pruned[*field], json!({}), "{field} erased");
    }
    assert_eq!(pruned["email_verified"], false);
    // What is not personal stays.
    for field in ["id", "lang_tag", "timezone", "role", "wallet", "created_at"] {
        assert_eq!(pruned[field], before[field], "{field} kept");
    }
    // The ledger item stays, its metadata erased.
    let ledger = json(app.get("/v1/users/p/wallet/ledger").await).await;
    let items = ledger["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["changeset"], json!({"coins": 5}));
    assert_eq!(items[0]["metadata"], json!({}), "{ledger}");
    assert_eq!(app.list_ids("status=deleted").await, ["p"]);
    assert!(app.list_ids("search=p_name").await.is_empty());
    // Username and email are released.
    app.create_user(&json!({"id": "taker", "username": "P_Name", "email": "p@example.com"}))
        .await;
    // Pruning again, or a softer deletion, changes nothing.
    let head = app.head().await;
    assert_eq!(delete(&app, "p", Some("pruning")).await.0, StatusCode::OK);
    assert_eq!(delete(&app, "p", Some("soft")).await.0, StatusCode::OK);
    assert_eq!(app.head().await, head);
    assert_eq!(app.user("p").await.unwrap()["erased"], true);

    let (status, body) = restore(&app, &["p"]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let restored = &body["users"]["p"];
    assert_eq!(restored["status"], "active");
    for field in PERSONAL_SCALARS {
        assert_eq!(restored[*field], Value::Null, "{field} stays erased");
    }
    for field in ["lang_tag", "timezone", "role", "wallet"] {
        assert_eq!(restored[field], before[field], "{field} kept");
    }
    // It can be given personal data again, and it reads back (sealed under a new key).
    let response = app
        .patch(
            "/v1/users/p",
            &json!({"set": {"name": "New Name", "username": "p_again", "custom.k": "v"}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .patch("/v1/users/p/email", &json!({"email": "again@example.com"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let at = position(&response);
    let user = json(app.get_at("/v1/users/p", at).await).await;
    assert_eq!(
        (
            user["name"].as_str(),
            user["username"].as_str(),
            user["email"].as_str()
        ),
        (Some("New Name"), Some("p_again"), Some("again@example.com"))
    );
    assert_eq!(user["custom"], json!({"k": "v"}));
    assert_eq!(app.list_ids("search=again").await, ["p"]);
    // Events from before the pruning stay erased; the new ones read.
    let events = app.events_of("p").await;
    let created = &events[0];
    assert_eq!(created["data"]["erased"], true);
    assert_eq!(created["data"]["profile"]["name"], Value::Null);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "EmailChanged");
    assert_eq!(last["data"]["email"], "again@example.com");
    assert!(last["data"].get("erased").is_none());
    let dir = app.stop().await;
    assert_not_on_disk(
        dir.path(),
        &["New Name", "p_again", "again@example"],
        "new personal data",
    );
}

#[tokio::test]
async fn hard_deletion_releases_id_username_and_email() {
    let app = spawn_app().await;
    app.create_user(&rich_user("h")).await;
    app.post(
        "/v1/users/h/wallet",
        &json!({"changeset": {"coins": 5}, "metadata": {"OldLedgerKey": "OldLedgerVal"}, "update_ledger": true}),
    )
    .await;
    let old_version = app.user("h").await.unwrap()["version"].as_u64().unwrap();

    let (status, body, at) = delete(&app, "h", Some("hard")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let at = at.unwrap();
    assert_eq!(
        body,
        json!({"deleted": "h", "mode": "hard", "position": at})
    );
    assert_problem(
        app.get_at("/v1/users/h", at).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(app.list_ids("status=deleted").await.is_empty());
    assert!(app.list_ids("").await.is_empty());
    assert_problem(
        app.get("/v1/users/h/prefs").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        app.get("/v1/users/h/wallet/ledger").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let head = app.head().await;
    let (status, body) = restore(&app, &["h"]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "not_found");
    for mode in ["soft", "pruning", "hard"] {
        let (status, body, _) = delete(&app, "h", Some(mode)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{mode}"
        );
    }
    assert_problem(
        app.patch("/v1/users/h", &json!({"set": {"name": "x"}}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(app.head().await, head);

    // A new user takes the id, the username and the email.
    let fresh = app
        .create_user(&json!({"id": "h", "username": "H_NAME", "email": "H@example.com"}))
        .await;
    assert_eq!(fresh["wallet"], json!({}));
    assert_eq!(fresh["name"], Value::Null);
    assert_eq!(fresh["role"], "user");
    assert!(
        fresh["version"].as_u64().unwrap() > old_version,
        "the stream continues"
    );
    let at = fresh["position"].as_u64().unwrap();
    let ledger = json(app.get_at("/v1/users/h/wallet/ledger", at).await).await;
    assert_eq!(ledger["items"], json!([]), "the old ledger is gone");
    // Nothing the new user's history shows holds the old personal data (the old events are
    // still in the stream, erased).
    let old_personal = [
        "h_name",
        "Full Name",
        "Disp\"",
        "h@example",
        "+14155550123",
        "img.example",
        "Lyon",
        "color",
        "vip",
        "theme",
        "OldLedger",
        "a good password",
        "argon2",
    ];
    for (path, ips) in [
        ("/v1/users/h/events", 1),
        ("/v1/users/h/logs?limit=100", 1),
        ("/v1/users/h/export", 2),
    ] {
        let text = app.get(path).await.text().await.unwrap();
        for old in old_personal {
            assert!(!text.contains(old), "{path} shows old {old}: {text}");
        }
        // The old events' ip is erased; only the new user's own events carry one.
        assert_eq!(text.matches("127.0.0.1").count(), ips, "{path}: {text}");
    }
    let events = app.events_of("h").await;
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e["metadata"]["erased"] == true)
    );
    assert!(events.last().unwrap()["metadata"].get("erased").is_none());
}

#[tokio::test]
async fn deletion_only_escalates() {
    let app = spawn_app().await;
    app.create_user(&rich_user("e")).await;
    let mut last = 0;
    for mode in ["soft", "pruning", "hard"] {
        let (status, body, at) = delete(&app, "e", Some(mode)).await;
        assert_eq!(status, StatusCode::OK, "{mode}: {body}");
        assert_eq!(body["mode"], mode);
        let at = at.unwrap();
        assert!(at > last, "{mode} appended");
        last = at;
    }
    let types: Vec<String> = app
        .events_of("e")
        .await
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["type"].as_str().unwrap(),
                e["data"]["mode"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            "UserCreated:",
            "UserDeleted:soft",
            "UserDeleted:pruning",
            "UserDeleted:hard"
        ]
    );
    assert_eq!(
        delete(&app, "e", Some("soft")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_deletion_and_restore_requests() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "x"})).await;
    let head = app.head().await;
    for mode in ["SOFT", "purge", ""] {
        let response = app.delete(&format!("/v1/users/x?mode={mode}")).await;
        let problem = assert_invalid(response).await;
        assert_eq!(fields(&problem), ["mode"]);
    }
    assert_problem(
        app.delete("/v1/users/x?force=1").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.delete("/v1/users/nobody").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for body in [
        json!({}),
        json!({"user_ids": []}),
        json!({"user_ids": "x"}),
        json!({"user_ids": ["x"], "mode": "all"}),
    ] {
        assert_problem(
            app.post("/v1/users/restore", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    let (status, body) = restore(&app, &["x", "nobody"]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(fields(&body), ["user_ids[1]"]);
    assert_eq!(app.head().await, head);
    assert_eq!(app.user("x").await.unwrap()["status"], "active");
}

#[tokio::test]
async fn restore_brings_back_soft_and_pruned_users_together() {
    let app = spawn_app().await;
    app.create_user(&rich_user("rs")).await;
    app.create_user(&rich_user("rp")).await;
    assert_eq!(delete(&app, "rs", None).await.0, StatusCode::OK);
    assert_eq!(delete(&app, "rp", Some("pruning")).await.0, StatusCode::OK);
    let (status, body) = restore(&app, &["rs", "rp"]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["users"]["rs"]["name"], "Full Name");
    assert_eq!(body["users"]["rp"]["name"], Value::Null);
    assert_eq!(body["users"]["rs"]["status"], "active");
    assert_eq!(body["users"]["rp"]["status"], "active");
    let at = body["position"].as_u64().unwrap();
    let listed = json(app.get_at("/v1/users?status=active", at).await).await;
    assert_eq!(ids(&listed), ["rs", "rp"]);
}
