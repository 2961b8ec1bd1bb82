//! Bad input of every kind gets a problem+json response and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Starts an app holding one user, `existing`; returns the app and the log head.
async fn app_with_one_user() -> (TestApp, u64) {
    let app = spawn_app().await;
    app.create_user(
        &json!({"id": "existing", "username": "existing", "email": "existing@example.com"}),
    )
    .await;
    let head = app.head().await;
    (app, head)
}

/// Asserts nothing was appended since `head` and the only user is still `existing` at version 1.
async fn assert_unchanged(app: &TestApp, head: u64) {
    assert_eq!(app.head().await, head, "nothing was appended");
    let (total, users) = app.snapshot().await;
    assert_eq!(total, 1);
    assert_eq!(users[0]["id"], "existing");
    assert_eq!(users[0]["version"], 1);
}

async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.request(Method::POST, path)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn malformed_json_is_400_invalid_request() {
    let (app, head) = app_with_one_user().await;
    for (path, body) in [
        ("/v1/users", "{\"id\": "),
        ("/v1/users", "not json"),
        ("/v1/users", ""),
        ("/v1/users/upsert", "{\"users\": [}"),
    ] {
        let response = post_raw(&app, path, "application/json", body).await;
        assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let response = app
        .request(Method::PATCH, "/v1/users/existing")
        .header("content-type", "application/json")
        .body("{\"set\": {\"name\": \"x\"")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_unchanged(&app, head).await;
}

#[tokio::test]
async fn wrong_types_are_422_naming_the_field() {
    let (app, head) = app_with_one_user().await;
    for (body, field) in [
        (json!({"name": 5}), "name"),
        (json!({"username": ["a"]}), "username"),
        (json!({"custom": "red"}), "custom"),
        (json!({"metadata": [1, 2]}), "metadata"),
        (json!({"id": 7}), "id"),
        (json!({"email": true}), "email"),
    ] {
        let response = app.post("/v1/users", &body).await;
        let problem = assert_invalid(response).await;
        assert_eq!(fields(&problem), [field], "{body}: {problem}");
    }
    // The body itself of the wrong type.
    for body in [json!([]), json!("user"), json!(null)] {
        let response = app.post("/v1/users", &body).await;
        assert_invalid(response).await;
    }
    let response = app
        .patch("/v1/users/existing", &json!({"set": [], "unset": "name"}))
        .await;
    let problem = assert_invalid(response).await;
    assert_eq!(fields(&problem), ["set"]);
    assert_unchanged(&app, head).await;
}

#[tokio::test]
async fn unknown_and_read_only_fields_are_422() {
    let (app, head) = app_with_one_user().await;
    for body in [
        json!({"nickname": "x"}),
        json!({"wallet": {"coins": 1}}),
        json!({"status": "blocked"}),
        json!({"email_verified": true}),
        json!({"version": 3}),
        json!({"created_at": "2020-01-01T00:00:00Z"}),
    ] {
        let response = app.post("/v1/users", &body).await;
        let problem = assert_invalid(response).await;
        let name = body.as_object().unwrap().keys().next().unwrap().clone();
        assert_eq!(fields(&problem), [name], "{problem}");
    }
    let response = app
        .patch(
            "/v1/users/existing",
            &json!({"set": {"name": "x"}, "remove": ["name"]}),
        )
        .await;
    let problem = assert_invalid(response).await;
    assert_eq!(fields(&problem), ["remove"]);
    let response = app
        .patch("/v1/settings", &json!({"enforce_unique_usernames": true}))
        .await;
    let problem = assert_invalid(response).await;
    assert_eq!(
        fields(&problem),
        ["enforce_unique_usernames"],
        "a wrong type for an enum is 422 too"
    );
    assert_unchanged(&app, head).await;
}

#[tokio::test]
async fn field_rules_of_the_user_object() {
    let (app, head) = app_with_one_user().await;
    let long_email = format!(
        "{}@{}.{}.{}.com",
        "a".repeat(64),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(60)
    );
    assert!(long_email.len() > 254);
    for (body, field) in [
        (json!({"name": "n".repeat(129)}), "name"),
        (json!({"display_name": "n".repeat(129)}), "display_name"),
        (json!({"username": "u".repeat(129)}), "username"),
        (json!({"username": "John Doe"}), "username"),
        (json!({"username": ""}), "username"),
        (json!({"username": "tab\there"}), "username"),
        (json!({"email": long_email}), "email"),
        (json!({"email": "no-at-sign"}), "email"),
        (json!({"email": "a@b"}), "email"),
        (json!({"password": "p".repeat(257)}), "password"),
        (json!({"password": "7 chars"}), "password"),
        (json!({"phone": "4155550100"}), "phone"),
        (json!({"role": "Admin"}), "role"),
        (json!({"id": ""}), "id"),
        (json!({"id": "a".repeat(37)}), "id"),
        (json!({"id": "-starts-with-dash"}), "id"),
        (json!({"id": ".dot"}), "id"),
        (json!({"id": "_under"}), "id"),
        (json!({"id": "has space"}), "id"),
        (json!({"id": "é"}), "id"),
        (json!({"custom": {"a.b": 1}}), "custom.a.b"),
        (json!({"custom": {"a b": 1}}), "custom.a b"),
        (json!({"custom": {"x": "y".repeat(16 * 1024)}}), "custom"),
        (
            json!({"metadata": {"x": "y".repeat(16 * 1024)}}),
            "metadata",
        ),
        (json!({"prefs": {"x": "y".repeat(64 * 1024)}}), "prefs"),
    ] {
        let response = app.post("/v1/users", &body).await;
        let problem = assert_invalid(response).await;
        assert_eq!(fields(&problem), [field], "{problem}");
    }
    // Every broken rule is reported at once.
    let response = app
        .post(
            "/v1/users",
            &json!({"id": "-x", "name": "n".repeat(129), "email": "nope", "password": "short"}),
        )
        .await;
    let problem = assert_invalid(response).await;
    let mut got = fields(&problem);
    got.sort();
    assert_eq!(got, ["email", "id", "name", "password"]);
    assert_unchanged(&app, head).await;
}

#[tokio::test]
async fn limits_are_inclusive() {
    let app = spawn_app().await;
    let email = format!(
        "{}@{}.{}.{}.com",
        "a".repeat(64),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(57)
    );
    assert_eq!(email.len(), 254);
    // {"x":"…"} is 8 bytes of framing.
    let user = app
        .create_user(&json!({
            "id": "a".repeat(36),
            "name": "n".repeat(128),
            "username": "u".repeat(128),
            "email": email,
            "password": "p".repeat(256),
            "custom": {"x": "y".repeat(16 * 1024 - 8)},
            "metadata": {"x": "y".repeat(16 * 1024 - 8)},
            "prefs": {"x": "y".repeat(64 * 1024 - 8)},
        }))
        .await;
    assert_eq!(user["name"].as_str().unwrap().len(), 128);
    app.create_user(&json!({"password": "8 chars!", "username": "John.Doe"}))
        .await;
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let (app, head) = app_with_one_user().await;
    let body = json!({"id": "form"}).to_string();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let response = post_raw(&app, "/v1/users", content_type, body.clone()).await;
        assert_problem(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
        )
        .await;
    }
    assert_unchanged(&app, head).await;
    // JSON with parameters, and +json types, are JSON.
    let response = post_raw(&app, "/v1/users", "application/json; charset=utf-8", body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = post_raw(
        &app,
        "/v1/users",
        "application/merge-patch+json",
        json!({"id": "plus"}).to_string(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(app.user("form").await.is_some());
    assert!(app.user("plus").await.is_some());
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let (app, head) = app_with_one_user().await;
    let body = json!({"id": "big", "custom": {"x": "y".repeat(1024 * 1024 + 10)}});
    let response = app.post("/v1/users", &body).await;
    assert_eq!(
        response.headers()["connection"],
        "close",
        "the unread rest of the body ends the connection, and the answer says so"
    );
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let users: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("b{i}"), "name": "x".repeat(11_000)}))
        .collect();
    let response = app.post("/v1/users/upsert", &json!({"users": users})).await;
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_unchanged(&app, head).await;
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_405() {
    let (app, head) = app_with_one_user().await;
    for path in [
        "/v1/nothing",
        "/v2/users",
        "/v1/users/existing/nothing/here",
        "/",
    ] {
        assert_problem(app.get(path).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    for (method, path) in [
        (Method::DELETE, "/v1/users"),
        (Method::PUT, "/v1/users/existing"),
        (Method::POST, "/v1/users/existing"),
        (Method::PUT, "/v1/users/upsert"),
        (Method::DELETE, "/v1/settings"),
        (Method::POST, "/healthz"),
    ] {
        let response = app
            .request(method.clone(), path)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_problem(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
    assert_unchanged(&app, head).await;
}

#[tokio::test]
async fn bad_organization_header_is_400() {
    let (app, head) = app_with_one_user().await;
    for org in ["has space", "-dash", &"o".repeat(37), "a/b"] {
        let response = app
            .in_org(org, Method::GET, "/v1/users")
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        let response = app
            .in_org(org, Method::POST, "/v1/users")
            .json(&json!({"id": "x"}))
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    assert_unchanged(&app, head).await;
}

#[tokio::test]
async fn bad_query_parameters_are_refused() {
    let (app, head) = app_with_one_user().await;
    for (query, status, field) in [
        ("colour=red", StatusCode::BAD_REQUEST, None),
        ("limit=0", StatusCode::UNPROCESSABLE_ENTITY, Some("limit")),
        ("limit=101", StatusCode::UNPROCESSABLE_ENTITY, Some("limit")),
        ("limit=-1", StatusCode::UNPROCESSABLE_ENTITY, Some("limit")),
        ("limit=ten", StatusCode::UNPROCESSABLE_ENTITY, Some("limit")),
        (
            "status=bogus",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("status"),
        ),
        (
            "cursor=not-a-cursor",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("cursor"),
        ),
        (
            "direction=sideways",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("direction"),
        ),
        (
            "order=random",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("order"),
        ),
    ] {
        let response = app.get(&format!("/v1/users?{query}")).await;
        let problem = assert_problem(response, status, "invalid_request").await;
        if let Some(field) = field {
            assert_eq!(fields(&problem), [field], "{query}: {problem}");
        }
    }
    let search = "s".repeat(257);
    let response = app.get(&format!("/v1/users?search={search}")).await;
    let problem = assert_invalid(response).await;
    assert_eq!(fields(&problem), ["search"]);
    let response = app.get("/v1/users/existing?colour=red").await;
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_unchanged(&app, head).await;
}
