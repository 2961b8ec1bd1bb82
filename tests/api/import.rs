//! Importing users (docs/import.md): password hashes of other systems, the streamed import
//! task, its conflict modes and per-line failures, and an export that imports back.

use std::collections::{BTreeMap, HashMap};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::sessions::try_sign_in;

/// Known-answer vectors made by other implementations (`ops/test/make_hash_fixtures.py`).
fn fixtures() -> Vec<Value> {
    let text = include_str!("../../services/core/tests/fixtures/imported_hashes.json");
    serde_json::from_str(text).expect("the fixtures are JSON")
}

/// Posts NDJSON lines to the import in `org` (the default one when `None`).
async fn post_lines(
    app: &TestApp,
    org: Option<&str>,
    query: &str,
    lines: &[Value],
) -> reqwest::Response {
    let mut body = String::new();
    for line in lines {
        body.push_str(&line.to_string());
        body.push('\n');
    }
    post_body(app, org, query, body).await
}

async fn post_body(
    app: &TestApp,
    org: Option<&str>,
    query: &str,
    body: String,
) -> reqwest::Response {
    let path = format!("/v1/users/import{query}");
    let request = match org {
        Some(org) => app.in_org(org, Method::POST, &path),
        None => app.request(Method::POST, &path),
    };
    request
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("request sent")
}

/// Imports `lines` and waits for the task; returns it.
async fn import(app: &TestApp, query: &str, lines: &[Value]) -> Value {
    let response = post_lines(app, None, query, lines).await;
    let status = response.status();
    let body = json(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let task = app.wait_task(body["task_id"].as_str().unwrap()).await;
    assert_eq!(task["kind"], "import_users");
    assert_eq!(task["status"], "completed", "{task}");
    task
}

/// The task's failures by line number.
fn failures(task: &Value) -> BTreeMap<u64, (String, String)> {
    task["result"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["line"].as_u64().expect("a line number"),
                (
                    f["code"].as_str().unwrap().to_owned(),
                    f["user_id"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn hashes_of_every_algorithm_sign_in_and_are_replaced_by_argon2id() {
    let app = spawn_app().await;
    let fixtures = fixtures();
    let lines: Vec<Value> = fixtures
        .iter()
        .enumerate()
        .map(|(i, f)| json!({"id": format!("h{i}"), "username": format!("h{i}"), "password_hash": f["password_hash"]}))
        .collect();
    let task = import(&app, "", &lines).await;
    let weak = fixtures
        .iter()
        .filter(|f| {
            matches!(
                f["password_hash"]["algorithm"].as_str(),
                Some("md5" | "sha1" | "sha256" | "sha512" | "phpass")
            )
        })
        .count();
    assert_eq!(task["progress"]["done"], lines.len(), "{task}");
    assert_eq!(task["result"]["created"], lines.len());
    assert_eq!(task["result"]["weak_hashes"], weak);
    let algorithms: std::collections::BTreeSet<&str> = fixtures
        .iter()
        .map(|f| f["password_hash"]["algorithm"].as_str().unwrap())
        .collect();
    assert_eq!(
        algorithms.len(),
        11,
        "every algorithm of the contract: {algorithms:?}"
    );
    for (i, f) in fixtures.iter().enumerate() {
        let username = format!("h{i}");
        let algorithm = &f["password_hash"]["algorithm"];
        let wrong = try_sign_in(&app, &json!({"username": username, "password": f["wrong"]})).await;
        assert_eq!(
            wrong.status(),
            StatusCode::UNAUTHORIZED,
            "{algorithm}: wrong password"
        );
        for attempt in ["imported hash", "argon2id after the rehash"] {
            let right = try_sign_in(
                &app,
                &json!({"username": username, "password": f["password"]}),
            )
            .await;
            assert_eq!(
                right.status(),
                StatusCode::CREATED,
                "{algorithm}: {attempt}"
            );
        }
        let events = app.events_of(&username).await;
        let rehashed: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "PasswordRehashed")
            .collect();
        assert_eq!(
            rehashed.len(),
            1,
            "{algorithm}: one rehash, at the first sign-in"
        );
        assert_eq!(rehashed[0]["data"]["password_hash"], Value::Null);
        assert_eq!(rehashed[0]["data"]["redacted"], true);
        let imported = events.iter().find(|e| e["type"] == "UserImported").unwrap();
        assert_eq!(
            imported["data"]["password_hash"],
            Value::Null,
            "redacted in views"
        );
    }
    // No hash, salt or password is anywhere on disk in clear (the log seals them, the
    // import's file is removed once the task ends).
    let mut needles: Vec<String> = Vec::new();
    for f in &fixtures {
        needles.push(f["password"].as_str().unwrap().to_owned());
        if let Some(h) = f["password_hash"]["hash"].as_str() {
            needles.push(h.to_owned());
        }
    }
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    assert_not_on_disk(app.dir.path(), &needles, "after an import with hashes");
}

#[tokio::test]
async fn a_bad_line_fails_alone_and_the_rest_is_imported() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "holder", "username": "taken", "email": "taken@example.com"}))
        .await;
    let mut body = String::new();
    let lines = [
        json!({"id": "ok-1", "username": "ok1", "email": "OK1@example.com", "email_verified": true}).to_string(),
        "{not json".to_owned(),
        json!({"id": "unknown-field", "shoe_size": 44}).to_string(),
        json!({"id": "too-costly", "password_hash": {"algorithm": "bcrypt", "hash": format!("$2b$17${}", "a".repeat(53))}}).to_string(),
        json!({"id": "clash", "username": "TAKEN"}).to_string(),
        json!({"id": "ok-1", "name": "again"}).to_string(),
        json!({"id": "gone", "erased": true}).to_string(),
        String::new(),
        json!({"username": "no-id", "wallet": {"coins": 5}, "status": "blocked",
               "created_at": "2019-05-01T10:00:00Z"}).to_string(),
        json!({"id": "two-secrets", "password": "a long password", "password_hash": {"algorithm": "md5", "hash": "00"}}).to_string(),
        json!({"id": "mail-clash", "email": "Taken@Example.com"}).to_string(),
    ];
    for line in &lines {
        body.push_str(line);
        body.push('\n');
    }
    let response = post_body(&app, None, "", body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let task = app
        .wait_task(json(response).await["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    let failed = failures(&task);
    let codes: BTreeMap<u64, &str> = failed.iter().map(|(l, (c, _))| (*l, c.as_str())).collect();
    assert_eq!(
        codes,
        BTreeMap::from([
            (2, "invalid_request"),
            (3, "invalid_request"),
            (4, "invalid_request"),
            (5, "username_taken"),
            (6, "invalid_request"),
            (10, "invalid_request"),
            (11, "email_taken"),
        ]),
        "{task}"
    );
    assert_eq!(failed[&5].1, "clash");
    assert_eq!(
        task["progress"],
        json!({"done": 4, "total": 11, "failed": 7})
    );
    assert_eq!(task["result"]["created"], 2);
    assert_eq!(
        task["result"]["skipped"], 2,
        "the erased line and the blank one"
    );
    // The task's detail never carries the hash it refused.
    assert!(!task.to_string().contains(&"a".repeat(53)));
    let ok = app.user("ok-1").await.unwrap();
    assert_eq!(
        (ok["email_verified"].clone(), ok["name"].clone()),
        (json!(true), Value::Null)
    );
    // A line without an id gets one from the task and its line number.
    let task_id = task["id"].as_str().unwrap();
    let derived = app
        .user(&format!("{task_id}-9"))
        .await
        .expect("the derived id");
    assert_eq!(derived["username"], "no-id");
    assert_eq!(derived["status"], "blocked");
    assert_eq!(derived["wallet"], json!({"coins": 5}));
    assert_eq!(derived["created_at"], "2019-05-01T10:00:00Z");
    assert!(app.user("unknown-field").await.is_none());
    assert!(app.user("clash").await.is_none());
    assert_eq!(app.user("holder").await.unwrap()["username"], "taken");
}

#[tokio::test]
async fn on_conflict_fails_skips_or_replaces_an_existing_user() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "x", "username": "x-old", "name": "Old"}))
        .await;
    let line = json!({"id": "x", "username": "x-new", "name": "New", "status": "deactivated",
                      "wallet": {"gems": 3}, "phone": "+14155550100", "phone_verified": true});
    let failed = import(&app, "", std::slice::from_ref(&line)).await;
    assert_eq!(failures(&failed)[&1].0, "id_taken");
    let skipped = import(&app, "?on_conflict=skip", std::slice::from_ref(&line)).await;
    assert_eq!(
        skipped["progress"],
        json!({"done": 1, "total": 1, "failed": 0})
    );
    assert_eq!(skipped["result"]["skipped"], 1);
    assert_eq!(app.user("x").await.unwrap()["name"], "Old");
    let before = app.user("x").await.unwrap();
    let replaced = import(&app, "?on_conflict=replace", std::slice::from_ref(&line)).await;
    assert_eq!(replaced["result"]["replaced"], 1, "{replaced}");
    let after = app.user("x").await.unwrap();
    assert_eq!(after["username"], "x-new");
    assert_eq!(after["name"], "New");
    assert_eq!(after["status"], "deactivated");
    assert_eq!(after["wallet"], json!({"gems": 3}));
    assert_eq!(after["phone_verified"], true);
    assert_eq!(
        after["created_at"], before["created_at"],
        "kept when the line has none"
    );
    // The old username is free again, the new one is held.
    app.create_user(&json!({"id": "y", "username": "x-old"}))
        .await;
    assert_problem(
        app.post("/v1/users", &json!({"id": "z", "username": "X-NEW"}))
            .await,
        StatusCode::CONFLICT,
        "username_taken",
    )
    .await;
    let bogus = post_lines(&app, None, "?on_conflict=merge", &[line]).await;
    assert_invalid(bogus).await;
}

#[tokio::test]
async fn the_json_form_and_the_limits_of_a_body() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/users/import",
            &json!({"users": [{"id": "j1", "username": "j1"}, {"id": "j2", "email": "nope"}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let task = app
        .wait_task(json(response).await["task_id"].as_str().unwrap())
        .await;
    assert_eq!(
        task["progress"],
        json!({"done": 1, "total": 2, "failed": 1})
    );
    assert_eq!(
        failures(&task)[&2],
        ("invalid_request".to_owned(), "j2".to_owned())
    );
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"id": format!("m{i}")})).collect();
    assert_invalid(
        app.post("/v1/users/import", &json!({"users": too_many}))
            .await,
    )
    .await;
    let head = app.head().await;
    let long = format!(
        "{{\"id\": \"long\", \"name\": \"{}\"}}\n",
        "x".repeat(1 << 20)
    );
    let refused = post_body(&app, None, "", format!("{{\"id\": \"first\"}}\n{long}")).await;
    assert_problem(refused, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(app.head().await, head, "a refused body records nothing");
    let text = app
        .request(Method::POST, "/v1/users/import")
        .header("content-type", "text/csv")
        .body("id\nu1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_invalid(post_body(&app, None, "", String::new()).await).await;
    // A body far beyond the request limit (1 MiB in tests) is streamed, not refused.
    let many: Vec<Value> = (0..3000)
        .map(|i| json!({"id": format!("n{i:04}"), "custom": {"bio": "n".repeat(500)}}))
        .collect();
    let response = post_lines(&app, None, "", &many).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let task = app
        .wait_task(json(response).await["task_id"].as_str().unwrap())
        .await;
    assert_eq!(
        task["progress"],
        json!({"done": 3000, "total": 3000, "failed": 0})
    );
}

#[tokio::test]
async fn an_export_with_hashes_imports_back_into_an_empty_organization() {
    let app = spawn_app().await;
    let fixtures = fixtures();
    let bcrypt = fixtures
        .iter()
        .find(|f| f["password_hash"]["algorithm"] == "bcrypt")
        .unwrap();
    let md5 = fixtures
        .iter()
        .find(|f| f["password_hash"]["algorithm"] == "md5")
        .unwrap();
    let users = [
        json!({"id": "own", "username": "own", "email": "own@example.com", "password": "an argon2id password",
               "custom": {"tier": 2}, "prefs": {"theme": "dark"}}),
        json!({"id": "bc", "username": "bc", "password_hash": bcrypt["password_hash"]}),
        json!({"id": "weak", "username": "weak", "password_hash": md5["password_hash"]}),
        json!({"id": "blocked", "username": "blocked"}),
        json!({"id": "asleep", "username": "asleep"}),
        json!({"id": "removed", "username": "removed"}),
    ];
    for user in &users {
        app.create_user(user).await;
    }
    for (path, body) in [
        ("/v1/users/blocked/status", json!({"status": false})),
        (
            "/v1/users/own/verification",
            json!({"email_verification": true}),
        ),
    ] {
        let r = app.patch(path, &body).await;
        assert!(r.status().is_success(), "{path}: {}", json(r).await);
    }
    for (path, body) in [
        (
            "/v1/users/own/wallet",
            json!({"changeset": {"coins": 40, "gems": 2}}),
        ),
        ("/v1/users/asleep/deactivate", json!({})),
    ] {
        let r = app.post(path, &body).await;
        assert!(r.status().is_success(), "{path}: {}", json(r).await);
    }
    assert!(app.delete("/v1/users/removed").await.status().is_success());
    let export = app
        .start_task(
            "/v1/users/export",
            &json!({"include_password_hashes": true}),
        )
        .await;
    app.wait_task(&export).await;
    let file = app
        .get(&format!("/v1/tasks/{export}/result"))
        .await
        .text()
        .await
        .unwrap();
    let exported: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_id: HashMap<&str, &Value> = exported
        .iter()
        .map(|u| (u["id"].as_str().unwrap(), u))
        .collect();
    assert_eq!(
        by_id["bc"]["password_hash"], bcrypt["password_hash"],
        "bcrypt as it came"
    );
    assert!(
        by_id["own"]["password_hash"]["hash"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$")
    );
    assert!(
        by_id["blocked"].get("password_hash").is_none(),
        "no password, no hash"
    );

    // Into an empty organization, as it is.
    let response = post_body(&app, Some("acme-two"), "", file.clone()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let task_id = json(response).await["task_id"].as_str().unwrap().to_owned();
    let task = loop {
        let task = json(
            app.in_org("acme-two", Method::GET, &format!("/v1/tasks/{task_id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if task["status"] != "pending" && task["status"] != "running" {
            break task;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        task["progress"],
        json!({"done": 6, "total": 6, "failed": 0}),
        "{task}"
    );
    let head = app.head().await;
    for original in &exported {
        let id = original["id"].as_str().unwrap();
        let copy = json(
            app.in_org("acme-two", Method::GET, &format!("/v1/users/{id}"))
                .header("x-roster-min-position", head.to_string())
                .send()
                .await
                .unwrap(),
        )
        .await;
        for field in [
            "username",
            "email",
            "email_verified",
            "phone_verified",
            "status",
            "wallet",
            "created_at",
            "custom",
            "prefs",
            "role",
        ] {
            assert_eq!(copy[field], original[field], "{id}.{field}");
        }
        assert_eq!(copy["organization_id"], "acme-two");
    }
    for (username, password) in [
        ("own", "an argon2id password"),
        ("bc", bcrypt["password"].as_str().unwrap()),
        ("weak", md5["password"].as_str().unwrap()),
    ] {
        let signed_in = app
            .anonymous(Method::POST, "/v1/sessions")
            .header("x-organization-id", "acme-two")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            signed_in.status(),
            StatusCode::CREATED,
            "{username} in the new organization"
        );
    }
}
