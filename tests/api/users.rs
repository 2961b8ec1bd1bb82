//! `/v1/users` single-user commands and reads: create, get (read-your-writes, `as_of`), patch.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn create_then_read_your_write() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/users",
            &json!({"id": "alice", "username": "alice", "email": "alice@example.com"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert_eq!(response.headers()["location"], "/v1/users/alice");
    let at = position(&response);
    let created = json(response).await;
    assert_eq!(created["position"], at);
    assert_eq!(created["status"], "active");
    let fetched = app.get_at("/v1/users/alice", at).await;
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(etag(&fetched), "\"1\"");
    let fetched = json(fetched).await;
    assert_eq!(fetched["email"], "alice@example.com");
    assert_eq!(fetched["version"], 1);
    assert!(
        fetched.get("position").is_none(),
        "reads carry no position: {fetched}"
    );
}

#[tokio::test]
async fn create_returns_the_whole_user_object_with_defaults() {
    let app = spawn_app().await;
    let body = json!({
        "id": "u1", "username": "alice", "display_name": "Alice", "name": "Alice Liddell",
        "email": "alice@example.com", "phone": "+14155550100", "avatar_url": "https://x.test/a.png",
        "lang_tag": "en", "location": "Oxford", "timezone": "Europe/London",
        "custom": {"color": "red"}, "metadata": {"vip": true}, "prefs": {"theme": "dark"},
        "password": "correct horse battery"
    });
    let user = app.create_user(&body).await;
    for field in [
        "id",
        "username",
        "display_name",
        "name",
        "email",
        "phone",
        "avatar_url",
        "lang_tag",
        "location",
        "timezone",
        "custom",
        "metadata",
        "prefs",
    ] {
        assert_eq!(user[field], body[field], "{field}");
    }
    assert_eq!(user["organization_id"], "default");
    assert_eq!(user["role"], "user");
    assert_eq!(user["status"], "active");
    assert_eq!(user["email_verified"], false);
    assert_eq!(user["phone_verified"], false);
    assert_eq!(user["wallet"], json!({}));
    assert_eq!(user["deactivated_at"], Value::Null);
    assert_eq!(user["deleted_at"], Value::Null);
    assert_eq!(user["version"], 1);
    assert_eq!(user["created_at"], user["updated_at"]);
    assert!(
        user.get("password").is_none() && user.get("password_hash").is_none(),
        "{user}"
    );
    let created_at = user["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "RFC 3339 UTC: {created_at}");
    // The read model shows the same user (without the write's position).
    let mut stored = app.user("u1").await.expect("stored");
    let mut expected = user.clone();
    expected.as_object_mut().unwrap().remove("position");
    stored.as_object_mut().unwrap().remove("position");
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn omitted_or_unique_id_generates_a_ulid() {
    let app = spawn_app().await;
    let first = app.create_user(&json!({"name": "No Id"})).await;
    let second = app
        .create_user(&json!({"id": "unique()", "name": "Unique"}))
        .await;
    let third = app.create_user(&json!({})).await;
    let mut seen = Vec::new();
    for user in [&first, &second, &third] {
        let id = user["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 26, "a ULID: {id}");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        assert_ne!(id, "unique()");
        assert!(!seen.contains(&id));
        assert!(app.user(&id).await.is_some(), "{id} is stored");
        seen.push(id);
    }
    assert_eq!(app.list("").await["total"], 3);
}

#[tokio::test]
async fn positions_increase_with_each_write() {
    let app = spawn_app().await;
    let a = app.post("/v1/users", &json!({"id": "a"})).await;
    let b = app.post("/v1/users", &json!({"id": "b"})).await;
    let c = app
        .patch("/v1/users/a", &json!({"set": {"name": "A"}}))
        .await;
    let (pa, pb, pc) = (position(&a), position(&b), position(&c));
    assert!(pa < pb && pb < pc, "{pa} {pb} {pc}");
    assert_eq!(json(c).await["position"], pc);
}

#[tokio::test]
async fn get_unknown_or_invalid_id_is_404() {
    let app = spawn_app().await;
    assert_problem(
        app.get("/v1/users/nobody").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        app.get("/v1/users/-bad").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let patch = app
        .patch("/v1/users/nobody", &json!({"set": {"name": "x"}}))
        .await;
    assert_problem(patch, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.head().await, 0, "nothing was written");
    assert_eq!(app.list("").await["total"], 0);
}

#[tokio::test]
async fn min_position_by_query_or_header_reads_your_writes() {
    let app = spawn_app().await;
    let created = app
        .post("/v1/users", &json!({"id": "ryw", "name": "Before"}))
        .await;
    let _ = position(&created);
    let patched = app
        .patch("/v1/users/ryw", &json!({"set": {"name": "After"}}))
        .await;
    let at = position(&patched);
    let by_query = json(app.get(&format!("/v1/users/ryw?min_position={at}")).await).await;
    assert_eq!(by_query["name"], "After");
    assert_eq!(by_query["version"], 2);
    let by_header = app
        .request(Method::GET, "/v1/users/ryw")
        .header("x-roster-min-position", at.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), StatusCode::OK);
    assert_eq!(etag(&by_header), "\"2\"");
    assert_eq!(json(by_header).await["name"], "After");
    let listed = app
        .request(Method::GET, "/v1/users?search=after")
        .header("x-roster-min-position", at.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(ids(&json(listed).await), ["ryw"]);
}

#[tokio::test]
async fn min_position_that_is_not_a_number_is_refused() {
    let app = spawn_app().await;
    let response = app.get("/v1/users?min_position=soon").await;
    let problem = assert_invalid(response).await;
    assert_eq!(fields(&problem), ["min_position"]);
}

#[tokio::test]
async fn min_position_beyond_the_log_gives_503_projection_lagging() {
    let app = spawn_app().await;
    let response = app.get("/v1/users?min_position=1000000").await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "projection_lagging",
    )
    .await;
}

#[tokio::test]
async fn as_of_a_position_or_a_time_gives_the_user_as_it_was() {
    let app = spawn_app().await;
    let v1 = app
        .post(
            "/v1/users",
            &json!({"id": "hist", "name": "One", "custom": {"n": 1}}),
        )
        .await;
    let p1 = position(&v1);
    let v1 = json(v1).await;
    let t1 = v1["updated_at"].as_str().unwrap().to_owned();
    let other = app.post("/v1/users", &json!({"id": "other"})).await;
    let p_other = position(&other);
    let v2 = app
        .patch(
            "/v1/users/hist",
            &json!({"set": {"name": "Two", "custom.n": 2}}),
        )
        .await;
    let p2 = position(&v2);
    let v2 = json(v2).await;
    let t2 = v2["updated_at"].as_str().unwrap().to_owned();
    let v3 = app
        .patch("/v1/users/hist", &json!({"unset": ["name"]}))
        .await;
    let p3 = position(&v3);

    let at = |q: String| {
        let app = &app;
        async move {
            let response = app.get(&format!("/v1/users/hist?as_of={q}")).await;
            assert_eq!(response.status(), StatusCode::OK, "as_of={q}");
            let tag = etag(&response);
            (tag, json(response).await)
        }
    };
    let (tag, user) = at(p1.to_string()).await;
    assert_eq!(
        (
            tag.as_str(),
            &user["name"],
            &user["custom"]["n"],
            &user["version"]
        ),
        ("\"1\"", &json!("One"), &json!(1), &json!(1))
    );
    // A position between the user's events shows the user after its last event before it.
    let (_, user) = at(p_other.to_string()).await;
    assert_eq!(user["name"], "One");
    let (_, user) = at(p2.to_string()).await;
    assert_eq!(
        (&user["name"], &user["custom"]["n"], &user["version"]),
        (&json!("Two"), &json!(2), &json!(2))
    );
    let (_, user) = at(p3.to_string()).await;
    assert_eq!(user["name"], Value::Null);
    assert_eq!(user["version"], 3);
    // Times: the commit time of each version.
    let (_, user) = at(urlencode(&t1)).await;
    assert_eq!(user["version"], 1, "as_of={t1}");
    let (_, user) = at(urlencode(&t2)).await;
    assert_eq!(user["version"], 2, "as_of={t2}");
    assert_eq!(user["name"], "Two");
    // Before the user existed: 404.
    let missing = app.get(&format!("/v1/users/hist?as_of={}", p1 - 1)).await;
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
    let missing = app.get("/v1/users/hist?as_of=2000-01-01T00:00:00Z").await;
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
    // The present is untouched.
    assert_eq!(app.user("hist").await.unwrap()["version"], 3);
    // Not a position or a time.
    let bad = app.get("/v1/users/hist?as_of=yesterday").await;
    let problem = assert_invalid(bad).await;
    assert_eq!(fields(&problem), ["as_of"]);
}

/// Percent-encodes the `+` and `:` of an RFC 3339 time for a query string.
fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn patch_sets_and_unsets_top_level_fields() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "p", "name": "Old", "display_name": "Oldie", "location": "Here", "role": "admin"})).await;
    let response = app
        .patch(
            "/v1/users/p",
            &json!({"set": {"name": "New", "timezone": "UTC", "role": "editor"}, "unset": ["display_name", "location"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(etag(&response), "\"2\"");
    let at = position(&response);
    let user = json(response).await;
    assert_eq!(user["position"], at);
    assert_eq!(
        (&user["name"], &user["timezone"], &user["role"]),
        (&json!("New"), &json!("UTC"), &json!("editor"))
    );
    assert_eq!(
        (&user["display_name"], &user["location"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(user["version"], 2);
    assert_ne!(user["updated_at"], user["created_at"]);
    let stored = app.user("p").await.unwrap();
    assert_eq!(stored["name"], "New");
    assert_eq!(stored["display_name"], Value::Null);
    // Unsetting the role gives the default back; setting a field to null clears it.
    let user = json(
        app.patch(
            "/v1/users/p",
            &json!({"set": {"name": null}, "unset": ["role"]}),
        )
        .await,
    )
    .await;
    assert_eq!(user["role"], "user");
    assert_eq!(user["name"], Value::Null);
}

#[tokio::test]
async fn patch_dotted_paths_create_intermediates_and_unset_leaves() {
    let app = spawn_app().await;
    app.create_user(
        &json!({"id": "d", "custom": {"keep": 1, "drop": 2}, "metadata": {"tier": "gold"}}),
    )
    .await;
    let user = json(
        app.patch(
            "/v1/users/d",
            &json!({
                "set": {"custom.field2.subfield": "x", "metadata.flags.beta": true, "prefs.ui.theme": "dark"},
                "unset": ["custom.drop", "metadata.tier"]
            }),
        )
        .await,
    )
    .await;
    assert_eq!(
        user["custom"],
        json!({"keep": 1, "field2": {"subfield": "x"}})
    );
    assert_eq!(user["metadata"], json!({"flags": {"beta": true}}));
    assert_eq!(user["prefs"], json!({"ui": {"theme": "dark"}}));
    let user = json(
        app.patch("/v1/users/d", &json!({"set": {"custom.field2.other": 3}}))
            .await,
    )
    .await;
    assert_eq!(
        user["custom"],
        json!({"keep": 1, "field2": {"subfield": "x", "other": 3}})
    );
    // Replacing an object whole, and unsetting it whole.
    let user = json(
        app.patch(
            "/v1/users/d",
            &json!({"set": {"custom": {"only": true}}, "unset": ["prefs"]}),
        )
        .await,
    )
    .await;
    assert_eq!(user["custom"], json!({"only": true}));
    assert_eq!(user["prefs"], json!({}));
    assert_eq!(
        app.user("d").await.unwrap()["custom"],
        json!({"only": true})
    );
}

#[tokio::test]
async fn patch_of_each_read_only_path_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "ro", "name": "Same"})).await;
    let before = app.user("ro").await.unwrap();
    let head = app.head().await;
    let values = [
        ("id", json!("other")),
        ("organization_id", json!("other")),
        ("wallet", json!({"coins": 5})),
        ("wallet.coins", json!(5)),
        ("status", json!("blocked")),
        ("version", json!(9)),
        ("created_at", json!("2020-01-01T00:00:00Z")),
        ("updated_at", json!("2020-01-01T00:00:00Z")),
        ("deactivated_at", json!("2020-01-01T00:00:00Z")),
        ("deleted_at", json!("2020-01-01T00:00:00Z")),
        ("email_verified", json!(true)),
        ("phone_verified", json!(true)),
        ("password", json!("a new password")),
    ];
    for (path, value) in values {
        let response = app
            .patch(
                "/v1/users/ro",
                &json!({"set": {path: value, "name": "Changed"}}),
            )
            .await;
        let problem = assert_invalid(response).await;
        assert_eq!(fields(&problem), [format!("set.{path}")], "{problem}");
        let response = app.patch("/v1/users/ro", &json!({"unset": [path]})).await;
        let problem = assert_invalid(response).await;
        assert_eq!(fields(&problem), ["unset[0]"], "{problem}");
    }
    assert_eq!(app.head().await, head, "nothing was appended");
    assert_eq!(app.user("ro").await.unwrap(), before);
}

#[tokio::test]
async fn patch_of_a_path_both_set_and_unset_is_422() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "both", "custom": {"a": {"b": 1}}}))
        .await;
    let head = app.head().await;
    for body in [
        json!({"set": {"name": "x"}, "unset": ["name"]}),
        json!({"set": {"custom.a.b": 2}, "unset": ["custom.a.b"]}),
        json!({"set": {"custom.a.b": 2}, "unset": ["custom"]}),
        json!({"set": {"custom": {}}, "unset": ["custom.a"]}),
    ] {
        let response = app.patch("/v1/users/both", &body).await;
        let problem = assert_invalid(response).await;
        assert_eq!(fields(&problem), ["unset[0]"], "{body}: {problem}");
    }
    assert_eq!(app.head().await, head);
    assert_eq!(
        app.user("both").await.unwrap()["custom"],
        json!({"a": {"b": 1}})
    );
}

#[tokio::test]
async fn patch_with_unknown_or_malformed_paths_is_422() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "paths"})).await;
    let head = app.head().await;
    for (body, field) in [
        (json!({"set": {"nickname": "x"}}), "set.nickname"),
        (json!({"set": {"name.first": "x"}}), "set.name.first"),
        (json!({"set": {"custom..a": 1}}), "set.custom..a"),
        (json!({"set": {"custom.a b": 1}}), "set.custom.a b"),
        (json!({"set": {"custom": {"a.b": 1}}}), "set.custom.a.b"),
        (json!({"set": {"name": 5}}), "set.name"),
        (json!({"set": {"custom": 5}}), "set.custom"),
        (json!({"set": {"username": "has space"}}), "set.username"),
        (json!({"set": {"email": "not-an-email"}}), "set.email"),
        (json!({"set": {"name": "n".repeat(129)}}), "set.name"),
        (
            json!({"set": {"metadata.big": "x".repeat(16 * 1024)}}),
            "metadata",
        ),
        (json!({"unset": ["nickname"]}), "unset[0]"),
    ] {
        let response = app.patch("/v1/users/paths", &body).await;
        let problem = assert_invalid(response).await;
        assert_eq!(fields(&problem), [field], "{problem}");
    }
    assert_eq!(app.head().await, head);
    assert_eq!(app.user("paths").await.unwrap()["version"], 1);
}

#[tokio::test]
async fn if_match_current_version_applies_and_stale_is_412() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "im", "name": "v1"})).await;
    let ok = app
        .request(Method::PATCH, "/v1/users/im")
        .header("if-match", "\"1\"")
        .json(&json!({"set": {"name": "v2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(etag(&ok), "\"2\"");
    let head = app.head().await;
    let stale = app
        .request(Method::PATCH, "/v1/users/im")
        .header("if-match", "\"1\"")
        .json(&json!({"set": {"name": "lost update"}}))
        .send()
        .await
        .unwrap();
    assert_problem(stale, StatusCode::PRECONDITION_FAILED, "version_mismatch").await;
    assert_eq!(app.head().await, head, "nothing was appended");
    let user = app.user("im").await.unwrap();
    assert_eq!((&user["name"], &user["version"]), (&json!("v2"), &json!(2)));
    // A future version is just as stale; a malformed one is a 400.
    let future = app
        .request(Method::PATCH, "/v1/users/im")
        .header("if-match", "\"7\"")
        .json(&json!({"set": {"name": "x"}}))
        .send()
        .await
        .unwrap();
    assert_problem(future, StatusCode::PRECONDITION_FAILED, "version_mismatch").await;
    let malformed = app
        .request(Method::PATCH, "/v1/users/im")
        .header("if-match", "banana")
        .json(&json!({"set": {"name": "x"}}))
        .send()
        .await
        .unwrap();
    assert_problem(malformed, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(app.head().await, head);
}

#[tokio::test]
async fn a_patch_that_changes_nothing_keeps_the_version() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/v1/users",
            &json!({"id": "same", "name": "Same", "custom": {"a": 1}}),
        )
        .await;
    let p1 = position(&created);
    let created = json(created).await;
    for body in [
        json!({"set": {"name": "Same"}}),
        json!({"set": {"custom.a": 1}, "unset": ["location", "custom.missing"]}),
        json!({}),
    ] {
        let response = app.patch("/v1/users/same", &body).await;
        assert_eq!(response.status(), StatusCode::OK, "{body}");
        assert_eq!(etag(&response), "\"1\"");
        assert_eq!(
            position(&response),
            p1,
            "the position of the user's last event"
        );
        let user = json(response).await;
        assert_eq!(user["version"], 1);
        assert_eq!(user["updated_at"], created["updated_at"]);
    }
    assert_eq!(app.head().await, p1, "nothing was appended");
}

#[tokio::test]
async fn a_user_whose_id_is_a_route_name_is_reachable() {
    let app = spawn_app().await;
    let response = app
        .post("/v1/users", &json!({"id": "upsert", "name": "Route Name"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/v1/users/upsert");
    let at = position(&response);
    let fetched = app.get_at("/v1/users/upsert", at).await;
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(json(fetched).await["name"], "Route Name");
    let patched = app
        .patch("/v1/users/upsert", &json!({"set": {"name": "Renamed"}}))
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(json(patched).await["version"], 2);
}
