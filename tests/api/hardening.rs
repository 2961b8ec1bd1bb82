//! What an attacker and an unlucky client tried (issue 18), and what must hold: every error
//! is problem+json, slow requests time out with 408, parameters are checked before any wait,
//! objects are objects, one sign-in budget per account, spoofable names are refused, streams
//! per key are capped.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Sends raw bytes on a fresh connection and reads the answer until the server closes it.
async fn raw(app: &TestApp, bytes: &[u8]) -> String {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    until_closed(stream).await
}

/// Everything the server sends on `stream` until it closes it.
async fn until_closed(mut stream: TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status and problem body of a raw HTTP answer.
fn parse_raw(answer: &str) -> (u16, Value) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"));
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    (status, serde_json::from_str(body).expect("a JSON problem"))
}

#[tokio::test]
async fn every_error_is_problem_json() {
    let app = spawn_app().await;
    // A path that does not percent-decode to UTF-8 (axum's own rejection, text/plain before).
    let response = app.get("/v1/users/%ff%fe").await;
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = app.get("/no/such/route").await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app.request(Method::PUT, "/v1/users").send().await.unwrap();
    assert_problem(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let big = "x".repeat(2 << 20);
    let response = app
        .request(Method::POST, "/v1/users")
        .header("content-type", "application/json")
        .body(format!(r#"{{"name": "{big}"}}"#))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // Refused below the router, before hyper sees them (hyper's answers had empty bodies).
    let long = format!(
        "GET /v1/users?search={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(100_000)
    );
    let (status, body) = parse_raw(&raw(&app, long.as_bytes()).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (414, Some("uri_too_long")),
        "{body}"
    );
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let head = format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    let (status, body) = parse_raw(&raw(&app, head.as_bytes()).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (431, Some("headers_too_large"))
    );
    let (status, body) =
        parse_raw(&raw(&app, b"GET /healthz HTTP/1.1\r\nbad header\r\n\r\n").await);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _) = parse_raw(
        &raw(
            &app,
            b"POST /v1/users HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        )
        .await,
    );
    assert_eq!(status, 400);
    // A keep-alive connection serves requests after a chunked body (the framing is followed).
    let pipelined = format!(
        "POST /v1/users HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
         a\r\n{{\"id\": \"c\"\r\n1\r\n}}\r\n0\r\n\r\n\
         GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        key = app.api_key
    );
    let answer = raw(&app, pipelined.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{answer}");
}

async fn app_with_short_timeouts() -> TestApp {
    spawn_app_with(tempfile::tempdir().unwrap(), |c| {
        c.connection.header_timeout = Duration::from_secs(1);
        c.connection.body_timeout = Duration::from_secs(1);
    })
    .await
}

#[test]
fn the_default_timeouts_are_the_promised_ones() {
    let limits = roster_api::ConnectionLimits::default();
    assert!(limits.header_timeout <= Duration::from_secs(10));
    assert!(limits.body_timeout <= Duration::from_secs(30));
    assert!(limits.send_timeout <= Duration::from_secs(60));
    assert!(roster_api::StreamLimits::default().per_key <= 16);
}

#[tokio::test]
async fn slow_heads_and_bodies_get_408() {
    let app = app_with_short_timeouts().await;
    // A head that never ends (slowloris): trickled bytes do not extend its time.
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nx-a: 1\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The server may already have answered and closed: a failed write is fine.
        let _ = stream.write_all(b"x-b: 2\r\n").await;
    }
    let (status, body) = parse_raw(&until_closed(stream).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (408, Some("request_timeout"))
    );

    // A body declared 1000 bytes with 1 sent.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/users HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{",
        app.api_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = parse_raw(&until_closed(stream).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (408, Some("request_timeout"))
    );
    assert!(app.user_count().await == 0, "nothing was created");
}

impl TestApp {
    async fn user_count(&self) -> u64 {
        self.list("limit=1").await["total"].as_u64().unwrap()
    }
}

#[tokio::test]
async fn parameters_are_checked_before_any_wait() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "alice", "username": "alice"}))
        .await;
    // A position far ahead would wait 5 s and answer 503; a bad parameter answers first.
    let response = app
        .get("/v1/users/alice/events?limit=-5&min_position=999999")
        .await;
    let body = assert_invalid(response).await;
    assert_eq!(fields(&body), ["limit"]);
    let response = app
        .request(Method::GET, "/v1/users/alice?min_position=999999")
        .header("x-organization-id", "-bad org")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let long_search = format!("/v1/users?search={}&min_position=999999", "s".repeat(257));
    for query in [
        "/v1/users?limit=0&min_position=999999",
        "/v1/users?status=gone&min_position=999999",
        "/v1/events?limit=10001&min_position=999999",
        "/v1/users/alice?as_of=yesterday&min_position=999999",
        long_search.as_str(),
    ] {
        let response = app.get(query).await;
        assert_invalid(response).await;
    }
    let response = app
        .request(Method::GET, "/v1/users/alice")
        .header("x-roster-min-position", "999999")
        .header("idempotency-key", "k".repeat(256))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = app.get("/v1/users/alice?typo=1&min_position=999999").await;
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Without credentials the answer is still 401, not a validation error.
    let response = app
        .anonymous(Method::GET, "/v1/users?limit=0&min_position=999999")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Valid parameters still wait (and here find their position reached).
    let response = app.get("/v1/users/alice?min_position=1").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn arrays_are_not_objects() {
    let app = spawn_app().await;
    let before = app.head().await;
    let items: Vec<Value> = (0..15).map(|i| json!(format!("v{i}"))).collect();
    let response = app.post("/v1/users", &Value::Array(items)).await;
    assert_invalid(response).await;
    assert_eq!(app.head().await, before, "no user was created");

    let created = app
        .create_user(&json!({"id": "p", "display_name": "Before"}))
        .await;
    let response = app
        .patch("/v1/users/p", &json!([{"display_name": "P"}, []]))
        .await;
    assert_invalid(response).await;
    // Nested objects too.
    let response = app
        .post("/v1/users/upsert", &json!({"users": [["q", "q"]]}))
        .await;
    assert_invalid(response).await;
    let user = app.user("p").await.unwrap();
    assert_eq!(user["display_name"], "Before");
    assert_eq!(user["version"], created["version"], "nothing changed");
}

async fn sign_in(app: &TestApp, body: Value) -> StatusCode {
    app.anonymous(Method::POST, "/v1/sessions")
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn one_sign_in_budget_per_account_whatever_the_identifier() {
    let app = spawn_app().await;
    app.create_user(&json!({
        "id": "victim", "username": "victim", "email": "victim@example.com",
        "password": "the-real-password"
    }))
    .await;
    for _ in 0..10 {
        let status = sign_in(
            &app,
            json!({"username": "victim", "password": "guess-1234"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The same account by its email: the budget is spent.
    let response = app
        .anonymous(Method::POST, "/v1/sessions")
        .json(&json!({"email": "VICTIM@example.com", "password": "guess-5678"}))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Another account is not affected.
    app.create_user(&json!({"id": "other", "username": "other", "password": "other-password"}))
        .await;
    let status = sign_in(
        &app,
        json!({"username": "other", "password": "other-password"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn spoofable_names_are_refused_and_idn_emails_are_one_address() {
    let app = spawn_app().await;
    for username in ["ad\u{202E}nim", "a\u{2066}b\u{2069}", "pla\u{200B}in"] {
        let response = app.post("/v1/users", &json!({"username": username})).await;
        let body = assert_invalid(response).await;
        assert_eq!(fields(&body), ["username"]);
    }
    let response = app
        .post(
            "/v1/users",
            &json!({"display_name": "Ad\u{2066}min\u{2069}"}),
        )
        .await;
    let body = assert_invalid(response).await;
    assert_eq!(fields(&body), ["display_name"]);
    let created = app
        .create_user(&json!({"id": "u", "display_name": "Plain"}))
        .await;
    let response = app
        .patch(
            "/v1/users/u",
            &json!({"set": {"display_name": "x\u{202E}y"}}),
        )
        .await;
    assert_invalid(response).await;
    assert_eq!(app.user("u").await.unwrap()["version"], created["version"]);

    app.create_user(
        &json!({"id": "case", "email": "case@exämple.com", "password": "pw-case-1234"}),
    )
    .await;
    for spelling in ["case@xn--exmple-cua.com", "CASE@EXÄMPLE.COM"] {
        let response = app.post("/v1/users", &json!({"email": spelling})).await;
        assert_problem(response, StatusCode::CONFLICT, "email_taken").await;
    }
    let status = sign_in(
        &app,
        json!({"email": "case@xn--exmple-cua.com", "password": "pw-case-1234"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "either spelling signs in");
    let listed = app.list_ids("emails=Case@xn--exmple-cua.com").await;
    assert_eq!(listed, ["case"]);
}

#[tokio::test]
async fn streams_per_key_are_capped() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "s"})).await;
    let mut open = Vec::new();
    for _ in 0..16 {
        let response = app.get("/v1/events/stream?after=0").await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let response = app.get("/v1/events/stream?after=0").await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let response = app
        .request(Method::GET, "/v1/events")
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Closing one frees its place (the permit goes with the body).
    drop(open.pop());
    let mut freed = None;
    for _ in 0..100 {
        let response = app.get("/v1/events/stream?after=0").await;
        if response.status() == StatusCode::OK {
            freed = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed.is_some(), "a closed stream's place is given back");
}
