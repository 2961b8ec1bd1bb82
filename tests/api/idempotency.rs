//! `Idempotency-Key`: a repeat gets the first response again without acting twice.

use futures::future::join_all;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

async fn send(app: &TestApp, method: Method, path: &str, key: &str, body: &Value) -> Response {
    app.request(method, path)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// Status, the headers a client relies on, and the body.
async fn parts(
    response: Response,
) -> (
    StatusCode,
    Option<String>,
    Option<String>,
    Option<String>,
    Value,
) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (etag, position, location) = (
        header("etag"),
        header("x-roster-position"),
        header("location"),
    );
    (
        response.status(),
        etag,
        position,
        location,
        json(response).await,
    )
}

#[tokio::test]
async fn a_repeated_create_returns_the_first_response_and_creates_nothing() {
    let app = spawn_app().await;
    let body = json!({"id": "once", "username": "once", "email": "once@example.com", "password": "pass-word-1"});
    let first = parts(send(&app, Method::POST, "/v1/users", "key-1", &body).await).await;
    assert_eq!(first.0, StatusCode::CREATED);
    let head = app.head().await;
    let again = parts(send(&app, Method::POST, "/v1/users", "key-1", &body).await).await;
    assert_eq!(again, first);
    assert_eq!(app.head().await, head, "nothing was appended");
    // Without the key, the same body is a new request (and the id is taken).
    assert_problem(
        app.post("/v1/users", &body).await,
        StatusCode::CONFLICT,
        "id_taken",
    )
    .await;
}

#[tokio::test]
async fn a_repeated_create_without_an_id_returns_the_same_user() {
    let app = spawn_app().await;
    let body = json!({"name": "Anonymous"});
    let first = parts(send(&app, Method::POST, "/v1/users", "gen", &body).await).await;
    assert_eq!(first.0, StatusCode::CREATED);
    for _ in 0..3 {
        let again = parts(send(&app, Method::POST, "/v1/users", "gen", &body).await).await;
        assert_eq!(again, first);
    }
    let unique = json!({"id": "unique()", "name": "Anonymous"});
    let other = parts(send(&app, Method::POST, "/v1/users", "gen-unique", &unique).await).await;
    assert_eq!(
        parts(send(&app, Method::POST, "/v1/users", "gen-unique", &unique).await).await,
        other
    );
    assert_ne!(other.4["id"], first.4["id"]);
    assert_eq!(app.list("").await["total"], 2);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_422_idempotency_mismatch() {
    let app = spawn_app().await;
    let body = json!({"id": "k", "name": "First"});
    assert_eq!(
        send(&app, Method::POST, "/v1/users", "shared", &body)
            .await
            .status(),
        StatusCode::CREATED
    );
    let head = app.head().await;
    let other_body = json!({"id": "k2", "name": "Second"});
    let response = send(&app, Method::POST, "/v1/users", "shared", &other_body).await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_mismatch",
    )
    .await;
    let other_route = send(
        &app,
        Method::PATCH,
        "/v1/users/k",
        "shared",
        &json!({"set": {"name": "x"}}),
    )
    .await;
    assert_problem(
        other_route,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_mismatch",
    )
    .await;
    assert_eq!(app.head().await, head);
    assert!(app.user("k2").await.is_none());
    assert_eq!(app.user("k").await.unwrap()["name"], "First");
}

#[tokio::test]
async fn a_repeated_patch_returns_the_first_result_even_after_later_changes() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "p", "name": "Zero"})).await;
    let body = json!({"set": {"name": "One", "custom.n": 1}});
    let first = parts(send(&app, Method::PATCH, "/v1/users/p", "patch-1", &body).await).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first.4["version"], 2);
    app.patch("/v1/users/p", &json!({"set": {"name": "Two"}}))
        .await;
    let head = app.head().await;
    let again = parts(send(&app, Method::PATCH, "/v1/users/p", "patch-1", &body).await).await;
    assert_eq!(again, first);
    assert_eq!(app.head().await, head);
    let user = app.user("p").await.unwrap();
    assert_eq!(
        (&user["name"], &user["version"]),
        (&json!("Two"), &json!(3))
    );
}

#[tokio::test]
async fn a_repeated_batch_returns_the_first_response() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "unchanged", "name": "Same"}))
        .await;
    app.create_user(&json!({"id": "changed", "name": "Before"}))
        .await;
    let body = json!({"users": [
        {"id": "unchanged", "name": "Same"},
        {"id": "changed", "name": "After"},
        {"id": "new", "username": "new"},
        {"username": "generated"},
    ]});
    let first = parts(send(&app, Method::POST, "/v1/users/upsert", "batch-1", &body).await).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(
        first.4["users"].as_object().unwrap().len(),
        4,
        "{}",
        first.4
    );
    let head = app.head().await;
    let again = parts(send(&app, Method::POST, "/v1/users/upsert", "batch-1", &body).await).await;
    assert_eq!(again, first);
    assert_eq!(app.head().await, head);
    assert_eq!(app.list("").await["total"], 4);

    let patch = json!({"users": [{"id": "new", "set": {"name": "N"}}, {"id": "changed", "set": {"name": "After"}}]});
    let first = parts(send(&app, Method::PATCH, "/v1/users", "batch-2", &patch).await).await;
    assert_eq!(first.0, StatusCode::OK);
    let again = parts(send(&app, Method::PATCH, "/v1/users", "batch-2", &patch).await).await;
    assert_eq!(again, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_with_one_key_create_exactly_one_user() {
    let app = spawn_app().await;
    let body = json!({"username": "only.once", "email": "once@example.com", "name": "Once"});
    let results = join_all((0..10).map(|_| {
        let (app, body) = (&app, &body);
        async move { parts(send(app, Method::POST, "/v1/users", "race-key", body).await).await }
    }))
    .await;
    for result in &results {
        assert_eq!(
            result, &results[0],
            "every duplicate gets the first response"
        );
    }
    assert_eq!(results[0].0, StatusCode::CREATED, "{:?}", results[0]);
    assert_eq!(app.list("").await["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_with_one_key_and_an_id_get_one_response() {
    let app = spawn_app().await;
    let body = json!({"id": "fixed", "name": "Fixed"});
    let results = join_all((0..10).map(|_| {
        let (app, body) = (&app, &body);
        async move { parts(send(app, Method::POST, "/v1/users", "race-id", body).await).await }
    }))
    .await;
    for result in &results {
        assert_eq!(
            result, &results[0],
            "every duplicate gets the first response"
        );
    }
    assert_eq!(results[0].0, StatusCode::CREATED);
    assert_eq!(app.user("fixed").await.unwrap()["version"], 1);
}

#[tokio::test]
async fn failed_requests_are_not_remembered() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "holder", "username": "wanted"}))
        .await;
    let body = json!({"id": "late", "username": "wanted"});
    let response = send(&app, Method::POST, "/v1/users", "retry-me", &body).await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    app.patch("/v1/users/holder", &json!({"unset": ["username"]}))
        .await;
    let response = send(&app, Method::POST, "/v1/users", "retry-me", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn keys_longer_than_255_are_refused() {
    let app = spawn_app().await;
    let response = send(
        &app,
        Method::POST,
        "/v1/users",
        &"k".repeat(256),
        &json!({"id": "x"}),
    )
    .await;
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(app.head().await, 0);
    let response = send(
        &app,
        Method::POST,
        "/v1/users",
        &"k".repeat(255),
        &json!({"id": "x"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}
