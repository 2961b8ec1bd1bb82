//! Authentication (server API keys) and the operational endpoints that need none.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// Every implemented endpoint that needs a server key.
const PROTECTED: &[(&str, &str)] = &[
    ("POST", "/v1/users"),
    ("GET", "/v1/users"),
    ("PATCH", "/v1/users"),
    ("POST", "/v1/users/upsert"),
    ("GET", "/v1/users/someone"),
    ("PATCH", "/v1/users/someone"),
    ("GET", "/v1/settings"),
    ("PATCH", "/v1/settings"),
];

fn body_for(method: &str, path: &str) -> serde_json::Value {
    match (method, path) {
        ("POST", "/v1/users") => json!({"id": "intruder"}),
        ("POST", "/v1/users/upsert") => json!({"users": [{"id": "intruder"}]}),
        ("PATCH", "/v1/users") => json!({"users": [{"id": "someone", "set": {"name": "x"}}]}),
        ("PATCH", "/v1/settings") => json!({"enforce_unique_usernames": "no"}),
        _ => json!({"set": {"name": "x"}}),
    }
}

#[tokio::test]
async fn no_key_or_a_wrong_key_is_401_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "someone", "name": "Someone"}))
        .await;
    let head = app.head().await;
    for (method, path) in PROTECTED {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = body_for(method.as_str(), path);
        let attempts = [
            app.anonymous(method.clone(), path).json(&body),
            app.anonymous(method.clone(), path)
                .header("authorization", "Bearer wrong-key")
                .json(&body),
            app.anonymous(method.clone(), path)
                .header("x-api-key", "wrong-key")
                .json(&body),
            app.anonymous(method.clone(), path)
                .header("authorization", "Basic dGVzdC1rZXk6")
                .json(&body),
            app.anonymous(method.clone(), path)
                .header("authorization", "Bearer")
                .json(&body),
        ];
        for attempt in attempts {
            let response = attempt.send().await.unwrap();
            assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
    }
    assert_eq!(app.head().await, head, "nothing was appended");
    let user = app.user("someone").await.unwrap();
    assert_eq!(
        (&user["name"], &user["version"]),
        (&json!("Someone"), &json!(1))
    );
    assert!(app.user("intruder").await.is_none());
    assert_eq!(
        json(app.get("/v1/settings").await).await["enforce_unique_usernames"],
        "app"
    );
}

#[tokio::test]
async fn the_key_works_as_bearer_or_as_x_api_key() {
    let app = spawn_app().await;
    let response = app
        .anonymous(Method::POST, "/v1/users")
        .header("x-api-key", "test-key")
        .json(&json!({"id": "via-header"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let at = position(&response);
    let response = app
        .anonymous(
            Method::GET,
            &format!("/v1/users/via-header?min_position={at}"),
        )
        .header("authorization", "bearer test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the scheme is case-insensitive"
    );
    let response = app.get("/v1/users/via-header").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn healthz_and_readyz_need_no_key() {
    let app = spawn_app().await;
    let response = app.anonymous(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["status"], "ok");
    let response = app.anonymous(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ready = json(response).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["log_position"], 0);
    // readyz follows the log.
    let at = position(&app.post("/v1/users", &json!({"id": "one"})).await);
    let ready = json(
        app.anonymous(Method::GET, &format!("/readyz?min_position={at}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ready["log_position"], at);
    assert_eq!(ready["projection_position"], at);
    assert_eq!(ready["projection_lag"], 0);
    // A key, even a wrong one, does not get in the way.
    let response = app
        .anonymous(Method::GET, "/healthz")
        .header("authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let a = app.get("/v1/users").await;
    let b = app
        .anonymous(Method::GET, "/v1/users")
        .send()
        .await
        .unwrap();
    let id = |r: &reqwest::Response| {
        r.headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert!(id(&a).is_some() && id(&b).is_some());
    assert_ne!(id(&a), id(&b));
}

#[tokio::test]
async fn unauthenticated_reads_get_401_without_waiting_for_min_position() {
    let app = spawn_app().await;
    let started = std::time::Instant::now();
    for path in [
        "/v1/users?min_position=1000000",
        "/v1/users/x?min_position=1000000",
        "/v1/settings?min_position=1000000",
    ] {
        let response = app.anonymous(Method::GET, path).send().await.unwrap();
        assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let response = app
        .anonymous(Method::GET, "/v1/users")
        .header("x-roster-min-position", "1000000")
        .header("x-api-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let response = app.get("/v1/nothing?min_position=1000000").await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
