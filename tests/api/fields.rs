//! Appwrite-style field endpoints (docs/contract.md §3):
//! `PATCH /v1/users/{id}/email|name|password|phone|prefs|status|verification|verification/phone`
//! and `GET /v1/users/{id}/prefs`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

fn full_user(id: &str) -> Value {
    json!({
        "id": id, "username": format!("{id}-name"), "display_name": "Dee", "name": "Dee Original",
        "email": format!("{id}@example.com"), "phone": "+14155550100",
        "lang_tag": "en", "timezone": "Europe/Paris", "custom": {"c": 1}, "metadata": {"m": 2},
        "prefs": {"theme": "dark"}, "password": "first password"
    })
}

/// PATCH a field endpoint; asserts 200 with position and ETag, and that the body (a user) is
/// what the read models then hold. Returns the user.
async fn patch_field(app: &TestApp, path: &str, body: Value) -> Value {
    let response = app.patch(path, &body).await;
    assert_eq!(response.status(), StatusCode::OK, "{path} {body}");
    let at = position(&response);
    let tag = etag(&response);
    let user = json(response).await;
    assert_eq!(user["position"], at, "{path}: body position = header");
    assert_eq!(tag, format!("\"{}\"", user["version"]), "{path}: ETag");
    let mut stored = json(
        app.get_at(&format!("/v1/users/{}", user["id"].as_str().unwrap()), at)
            .await,
    )
    .await;
    stored["position"] = user["position"].clone();
    assert_eq!(
        stored, user,
        "{path}: the read model agrees with the response"
    );
    user
}

#[tokio::test]
async fn each_field_endpoint_changes_exactly_its_field() {
    let app = spawn_app().await;
    let mut user = app.create_user(&full_user("f1")).await;
    let steps: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "email",
            json!({"email": "new.f1@example.com"}),
            vec!["email"],
        ),
        ("name", json!({"name": "Dee Renamed"}), vec!["name"]),
        ("password", json!({"password": "second password"}), vec![]),
        ("phone", json!({"number": "+14155550199"}), vec!["phone"]),
        ("status", json!({"status": false}), vec!["status"]),
        ("status", json!({"status": true}), vec!["status"]),
        (
            "verification",
            json!({"email_verification": true}),
            vec!["email_verified"],
        ),
        (
            "verification/phone",
            json!({"phone_verification": true}),
            vec!["phone_verified"],
        ),
        ("name", json!({"name": null}), vec!["name"]),
    ];
    for (endpoint, body, expected) in steps {
        let after = patch_field(&app, &format!("/v1/users/f1/{endpoint}"), body.clone()).await;
        assert_eq!(
            changed_fields(&user, &after),
            expected,
            "{endpoint} {body} changed exactly its field"
        );
        assert_eq!(
            after["version"].as_u64().unwrap(),
            user["version"].as_u64().unwrap() + 1,
            "{endpoint}: one event"
        );
        user = after;
    }
    assert_eq!(user["email"], "new.f1@example.com");
    assert_eq!(user["phone"], "+14155550199");
    assert_eq!(user["name"], Value::Null);
    assert_eq!(user["status"], "active");
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["phone_verified"], true);
}

#[tokio::test]
async fn status_false_blocks_and_true_unblocks() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "b1"})).await;
    app.create_user(&json!({"id": "b2"})).await;
    let blocked = patch_field(&app, "/v1/users/b1/status", json!({"status": false})).await;
    assert_eq!(blocked["status"], "blocked");
    assert_eq!(app.list_ids("status=blocked").await, ["b1"]);
    assert_eq!(app.list_ids("status=active").await, ["b2"]);
    // Blocking again changes nothing and appends nothing.
    let head = app.head().await;
    let again = app
        .patch("/v1/users/b1/status", &json!({"status": false}))
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(position(&again), head);
    assert_eq!(app.head().await, head);
    let active = patch_field(&app, "/v1/users/b1/status", json!({"status": true})).await;
    assert_eq!(active["status"], "active");
    assert!(app.list_ids("status=blocked").await.is_empty());
}

#[tokio::test]
async fn prefs_replace_whole_and_read_back() {
    let app = spawn_app().await;
    let created = app.create_user(&full_user("p1")).await;
    let response = app.get("/v1/users/p1/prefs").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await, json!({"theme": "dark"}));

    let prefs = json!({"lang": "fr", "nested": {"a": [1, 2, {"b": null}]}, "n": 1.5});
    let response = app
        .patch("/v1/users/p1/prefs", &json!({"prefs": prefs}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let at = position(&response);
    assert_eq!(etag(&response), "\"2\"");
    assert_eq!(
        json(response).await,
        prefs,
        "the body is the prefs object, replaced whole"
    );
    let response = app.get_at("/v1/users/p1/prefs", at).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(etag(&response), "\"2\"");
    assert_eq!(json(response).await, prefs);
    let user = app.user("p1").await.unwrap();
    assert_eq!(changed_fields(&created, &user), ["prefs"]);

    // Replacing with the same prefs appends nothing; with {} clears them.
    let head = app.head().await;
    let same = app
        .patch("/v1/users/p1/prefs", &json!({"prefs": prefs}))
        .await;
    assert_eq!(same.status(), StatusCode::OK);
    assert_eq!(app.head().await, head);
    let response = app.patch("/v1/users/p1/prefs", &json!({"prefs": {}})).await;
    assert_eq!(json(response).await, json!({}));
    assert_eq!(app.user("p1").await.unwrap()["prefs"], json!({}));

    // Exactly 64 KB serialized is accepted; one byte more is not.
    let filler = |len: usize| json!({"k": "x".repeat(len)});
    let overhead = filler(0).to_string().len();
    let at_limit = filler(64 * 1024 - overhead);
    assert_eq!(at_limit.to_string().len(), 64 * 1024);
    let response = app
        .patch("/v1/users/p1/prefs", &json!({"prefs": at_limit}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let head = app.head().await;
    let too_big = filler(64 * 1024 - overhead + 1);
    let problem = assert_problem(
        app.patch("/v1/users/p1/prefs", &json!({"prefs": too_big}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert_eq!(fields(&problem), ["prefs"]);
    assert_eq!(app.head().await, head);
}

#[tokio::test]
async fn bad_values_are_422_and_change_nothing() {
    let app = spawn_app().await;
    app.create_user(&full_user("v1")).await;
    let before = app.user("v1").await.unwrap();
    let head = app.head().await;
    let long_name = "n".repeat(129);
    let big_prefs = json!({"k": "x".repeat(64 * 1024)});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("email", json!({"email": "not-an-email"}), "email"),
        ("email", json!({"email": "a@"}), "email"),
        ("email", json!({"email": 5}), "email"),
        (
            "email",
            json!({"email": "ok@example.com", "extra": 1}),
            "extra",
        ),
        ("email", json!({"mail": "ok@example.com"}), "mail"),
        ("name", json!({"name": long_name}), "name"),
        ("name", json!({"name": ["x"]}), "name"),
        ("name", json!({"name": "bad\u{0007}bell"}), "name"),
        ("password", json!({"password": "7-chars"}), "password"),
        ("password", json!({"password": "x".repeat(257)}), "password"),
        ("password", json!({}), ""),
        ("password", json!({"password": 12345678}), "password"),
        ("phone", json!({"number": "4155550100"}), "number"),
        ("phone", json!({"number": "+1 415 555 0100"}), "number"),
        ("phone", json!({"number": "+1415555010a"}), "number"),
        ("phone", json!({"number": 14155550100u64}), "number"),
        ("phone", json!({"phone": "+14155550100"}), "phone"),
        ("prefs", json!({"prefs": big_prefs}), "prefs"),
        ("prefs", json!({"prefs": []}), "prefs"),
        ("prefs", json!({"prefs": "dark"}), "prefs"),
        ("prefs", json!({}), ""),
        ("prefs", json!({"prefs": {}, "theme": 1}), "theme"),
        ("status", json!({"status": "false"}), "status"),
        ("status", json!({"status": 0}), "status"),
        ("status", json!({}), ""),
        (
            "status",
            json!({"status": true, "blocked": true}),
            "blocked",
        ),
        (
            "verification",
            json!({"email_verification": "yes"}),
            "email_verification",
        ),
        (
            "verification",
            json!({"email_verified": true}),
            "email_verified",
        ),
        (
            "verification/phone",
            json!({"phone_verification": null}),
            "phone_verification",
        ),
        (
            "verification/phone",
            json!({"phone_verified": true}),
            "phone_verified",
        ),
    ];
    for (endpoint, body, field) in cases {
        let response = app.patch(&format!("/v1/users/v1/{endpoint}"), &body).await;
        let problem = assert_invalid(response).await;
        let named = fields(&problem);
        if field.is_empty() {
            assert!(named.len() <= 1, "{endpoint} {body}: {problem}");
        } else {
            assert!(
                named.iter().any(|f| f == field)
                    || problem["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(field),
                "{endpoint} {body}: expected {field} named in {problem}"
            );
        }
    }
    // Malformed JSON is 400.
    let response = app
        .request(Method::PATCH, "/v1/users/v1/email")
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(
        app.head().await,
        head,
        "no refused request appended anything"
    );
    assert_eq!(app.user("v1").await.unwrap(), before);
}

#[tokio::test]
async fn unknown_user_is_404_on_every_field_endpoint() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "someone"})).await;
    let head = app.head().await;
    let cases: Vec<(&str, Value)> = vec![
        ("email", json!({"email": "x@example.com"})),
        ("name", json!({"name": "X"})),
        ("password", json!({"password": "long enough"})),
        ("phone", json!({"number": "+14155550100"})),
        ("prefs", json!({"prefs": {"a": 1}})),
        ("status", json!({"status": false})),
        ("verification", json!({"email_verification": true})),
        ("verification/phone", json!({"phone_verification": true})),
    ];
    for id in ["nobody", "bad%20id"] {
        for (endpoint, body) in &cases {
            let response = app.patch(&format!("/v1/users/{id}/{endpoint}"), body).await;
            assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
        }
        assert_problem(
            app.get(&format!("/v1/users/{id}/prefs")).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    assert_eq!(app.head().await, head);
}

#[tokio::test]
async fn changing_the_email_clears_verification_and_keeps_it_unique() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "ea", "email": "a@example.com", "phone": "+14155550101"}))
        .await;
    app.create_user(&json!({"id": "eb", "email": "b@example.com"}))
        .await;
    let verified = patch_field(
        &app,
        "/v1/users/ea/verification",
        json!({"email_verification": true}),
    )
    .await;
    assert_eq!(verified["email_verified"], true);
    let verified = patch_field(
        &app,
        "/v1/users/ea/verification/phone",
        json!({"phone_verification": true}),
    )
    .await;
    assert_eq!(verified["phone_verified"], true);

    // The same email again changes nothing, so the verification stays.
    let head = app.head().await;
    let same = app
        .patch("/v1/users/ea/email", &json!({"email": "a@example.com"}))
        .await;
    assert_eq!(same.status(), StatusCode::OK);
    assert_eq!(json(same).await["email_verified"], true);
    assert_eq!(app.head().await, head);

    // Another user's email (in any case) is taken; nothing changes.
    let problem = assert_problem(
        app.patch("/v1/users/ea/email", &json!({"email": "B@Example.COM"}))
            .await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    assert_eq!(fields(&problem), ["email"]);
    assert_eq!(app.head().await, head);
    let ea = app.user("ea").await.unwrap();
    assert_eq!(
        (ea["email"].as_str(), ea["email_verified"].as_bool()),
        (Some("a@example.com"), Some(true))
    );

    // A new email clears email_verified only.
    let changed = patch_field(
        &app,
        "/v1/users/ea/email",
        json!({"email": "a2@example.com"}),
    )
    .await;
    assert_eq!(changed_fields(&ea, &changed), ["email", "email_verified"]);
    assert_eq!(changed["email_verified"], false);
    assert_eq!(changed["phone_verified"], true);
    // A new phone clears phone_verified.
    let changed2 = patch_field(
        &app,
        "/v1/users/ea/phone",
        json!({"number": "+14155550102"}),
    )
    .await;
    assert_eq!(
        changed_fields(&changed, &changed2),
        ["phone", "phone_verified"]
    );

    // The old email is free for others; the new one is held.
    let eb = patch_field(
        &app,
        "/v1/users/eb/email",
        json!({"email": "A@example.com"}),
    )
    .await;
    assert_eq!(eb["email"], "A@example.com");
    assert_problem(
        app.post("/v1/users", &json!({"email": "a2@EXAMPLE.com"}))
            .await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    // b's old email is free too; removing an email frees it.
    app.create_user(&json!({"id": "ec", "email": "b@example.com"}))
        .await;
    let removed = patch_field(&app, "/v1/users/ea/email", json!({"email": null})).await;
    assert_eq!(removed["email"], Value::Null);
    app.create_user(&json!({"id": "ed", "email": "a2@example.com"}))
        .await;
    assert_eq!(app.list_ids("emails=a2%40example.com").await, ["ed"]);
    assert_eq!(app.list_ids("emails=a%40example.com").await, ["eb"]);
}

#[tokio::test]
async fn the_password_never_appears_in_responses_the_log_or_on_disk() {
    const FIRST: &str = "PlainFirstPw-Kq81";
    const SECOND: &str = "PlainSecondPw-Zr52";
    let app = spawn_app().await;
    let created = app
        .post(
            "/v1/users",
            &json!({"id": "pw", "username": "pw", "password": FIRST}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let text = created.text().await.unwrap();
    assert!(
        !text.contains(FIRST) && !text.contains("password"),
        "{text}"
    );
    let response = app
        .patch("/v1/users/pw/password", &json!({"password": SECOND}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let at = position(&response);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(SECOND) && !text.contains("password"),
        "{text}"
    );
    // The same password again is a new hash (a new salt), so still one event.
    let response = app
        .patch("/v1/users/pw/password", &json!({"password": SECOND}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(position(&response) > at);

    let events = app.events_of("pw").await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["UserCreated", "PasswordChanged", "PasswordChanged"]);
    // Event views never show the hash either: `null`, marked redacted.
    for event in &events {
        assert_eq!(event["data"]["password_hash"], Value::Null, "{event}");
        assert_eq!(event["data"]["redacted"], true, "{event}");
        if event["type"] == "PasswordChanged" {
            let keys: Vec<&String> = event["data"].as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                ["password_hash", "redacted"],
                "PasswordChanged holds the hash only"
            );
        }
    }
    // The last password is the one that signs in.
    let sign_in = |password: &str| {
        app.anonymous(Method::POST, "/v1/sessions")
            .json(&json!({"username": "pw", "password": password}))
            .send()
    };
    assert_eq!(
        sign_in(FIRST).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(sign_in(SECOND).await.unwrap().status().is_success());
    for path in [
        "/v1/users/pw/events",
        "/v1/users/pw/logs",
        "/v1/users/pw/export",
        "/v1/users/pw",
    ] {
        let text = app.get_at(path, at).await.text().await.unwrap();
        assert!(
            !text.contains(FIRST) && !text.contains(SECOND),
            "{path}: {text}"
        );
    }
    let user = app.user("pw").await.unwrap();
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    let dir = app.stop().await;
    // Neither the password nor any hash is stored in clear (the hash is sealed too): no file
    // holds an argon2id hash's prefix.
    assert_not_on_disk(
        dir.path(),
        &[FIRST, SECOND, "$argon2id$v=19$"],
        "after a graceful stop",
    );
    // The search works: the (public) user id is there.
    assert!(!find_in_files(dir.path(), &["user-pw"])[0].1.is_empty());
}

#[tokio::test]
async fn field_endpoints_honour_if_match_and_idempotency_keys() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "c", "name": "One"})).await;
    let response = app.get("/v1/users/c/prefs").await;
    let tag = etag(&response);
    assert_eq!(tag, "\"1\"");
    // The ETag of the prefs read works as If-Match for the prefs write; a stale one is 412.
    let response = app
        .request(Method::PATCH, "/v1/users/c/prefs")
        .header("if-match", &tag)
        .json(&json!({"prefs": {"a": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(etag(&response), "\"2\"");
    let head = app.head().await;
    for (path, body) in [
        ("/v1/users/c/prefs", json!({"prefs": {"a": 2}})),
        ("/v1/users/c/name", json!({"name": "Two"})),
        ("/v1/users/c/status", json!({"status": false})),
    ] {
        let response = app
            .request(Method::PATCH, path)
            .header("if-match", &tag)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(
            response,
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
        )
        .await;
    }
    assert_eq!(app.head().await, head);

    // The same Idempotency-Key and body answers the first response again and acts once.
    let send = |body: Value| {
        app.request(Method::PATCH, "/v1/users/c/name")
            .header("idempotency-key", "rename-c")
            .json(&body)
            .send()
    };
    let first = send(json!({"name": "Two"})).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let at = position(&first);
    let first = json(first).await;
    app.patch("/v1/users/c/name", &json!({"name": "Three"}))
        .await;
    let head = app.head().await;
    let again = send(json!({"name": "Two"})).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(position(&again), at);
    assert_eq!(json(again).await, first);
    assert_eq!(app.head().await, head);
    assert_eq!(app.user("c").await.unwrap()["name"], "Three");
    assert_problem(
        send(json!({"name": "Four"})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_mismatch",
    )
    .await;
}
