//! Webhooks (docs/webhooks.md) against a real HTTP receiver started by each test: signed
//! batches in log order, retries behind a failing receiver, redirects not followed, the
//! address rule, replay, a password reset token shown only to a webhook that lists its type,
//! and a server SIGKILLed mid-delivery losing nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, assert_invalid, json, spawn_app_with};

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    /// The connection it came on.
    peer: std::net::SocketAddr,
}

impl Received {
    fn events(&self) -> Vec<Value> {
        let body: Value = serde_json::from_slice(&self.body).expect("a JSON body");
        body["events"].as_array().expect("events").clone()
    }
}

/// A webhook receiver on a free port: answers with the queued statuses first (then 200),
/// after `delay` each.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<Vec<u16>>>,
    delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Receiver {
            url,
            got: Arc::default(),
            answers: Arc::default(),
            delay: Arc::default(),
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                    std::net::SocketAddr,
                >,
                      headers: HeaderMap,
                      body: Bytes| {
                    let state = state.clone();
                    async move {
                        let delay = *state.delay.lock().unwrap();
                        tokio::time::sleep(delay).await;
                        state.got.lock().unwrap().push(Received {
                            headers,
                            body,
                            peer,
                        });
                        let next = {
                            let mut answers = state.answers.lock().unwrap();
                            (!answers.is_empty()).then(|| answers.remove(0))
                        };
                        let status = AxumStatus::from_u16(next.unwrap_or(200)).unwrap();
                        let mut response = axum::response::Response::new(axum::body::Body::from(
                            "a body the server never shows",
                        ));
                        *response.status_mut() = status;
                        if status.is_redirection() {
                            response.headers_mut().insert(
                                "location",
                                "http://127.0.0.1:1/elsewhere".parse().unwrap(),
                            );
                        }
                        response
                    }
                },
            ),
        );
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Every event received, in arrival order.
    fn events(&self) -> Vec<Value> {
        self.received().iter().flat_map(Received::events).collect()
    }

    /// Waits until `done` holds for what was received (at most `secs`).
    async fn wait_until(&self, secs: u64, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if done(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver got {} requests: {:#?}",
                got.len(),
                got.iter().map(Received::events).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The ids of the users created in what was received.
fn created_ids(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .flat_map(Received::events)
        .filter(|e| e["type"] == "UserCreated")
        .map(|e| e["stream"].as_str().unwrap()["user-".len()..].to_owned())
        .collect()
}

/// Checks `x-roster-signature` over the exact bytes received.
fn assert_signed(received: &Received, secret: &str) {
    let header = received.headers["x-roster-signature"].to_str().unwrap();
    let (t, v1) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("signature header {header}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&received.body);
    assert_eq!(v1, hex::encode(mac.finalize().into_bytes()), "signature");
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!(
        (0..60).contains(&age),
        "t is the attempt's time ({age} s ago)"
    );
    assert_eq!(
        received.headers["content-length"].to_str().unwrap(),
        received.body.len().to_string()
    );
}

async fn private_app() -> TestApp {
    spawn_app_with(tempfile::tempdir().unwrap(), |c| {
        c.allow_private_webhooks = true
    })
    .await
}

async fn create_hook(app: &TestApp, body: &Value) -> Value {
    let response = app.post("/v1/webhooks", body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    json(response).await
}

async fn hook(app: &TestApp, id: &str) -> Value {
    json(app.get(&format!("/v1/webhooks/{id}")).await).await
}

#[tokio::test]
async fn deliveries_are_signed_batched_in_log_order_and_filtered() {
    let app = private_app().await;
    let receiver = Receiver::start().await;
    let head = app.head().await;
    let created = create_hook(
        &app,
        &json!({"url": receiver.url, "types": ["UserCreated", "UserPartiallyUpdated"]}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "{created}");
    assert_eq!(created["status"], "active");
    assert_eq!(created["position"], head, "it starts at the head");
    assert!(
        hook(&app, &id).await.get("secret").is_none(),
        "shown only once"
    );

    // Paused, the events wait; resumed, they go out together.
    let paused = app
        .patch(&format!("/v1/webhooks/{id}"), &json!({"status": "paused"}))
        .await;
    assert_eq!(json(paused).await["status"], "paused");
    for i in 0..5 {
        app.create_user(&json!({"id": format!("u{i}")})).await;
    }
    let patched = app
        .patch("/v1/users/u1", &json!({"set": {"name": "Una"}}))
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    app.post("/v1/users/u2/deactivate", &json!({})).await;
    let other = app
        .in_org("other", Method::POST, "/v1/users")
        .json(&json!({"id": "elsewhere"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.received().is_empty(),
        "a paused webhook delivers nothing"
    );
    app.patch(&format!("/v1/webhooks/{id}"), &json!({"status": "active"}))
        .await;

    let got = receiver
        .wait_until(20, |got| {
            got.iter().map(|r| r.events().len()).sum::<usize>() >= 6
        })
        .await;
    assert!(got[0].events().len() > 1, "waiting events go in one batch");
    let events = receiver.events();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "UserCreated",
            "UserCreated",
            "UserCreated",
            "UserCreated",
            "UserCreated",
            "UserPartiallyUpdated"
        ],
        "only the listed types, of this organization only"
    );
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "log order: {positions:?}"
    );
    for received in &got {
        assert_signed(received, &secret);
        assert_eq!(received.headers["x-roster-webhook-id"], id.as_str());
        assert!(received.headers.contains_key("x-roster-delivery-id"));
    }
    // Each is the event object of /v1/events.
    let log = json(app.get("/v1/events?limit=1000").await).await;
    let logged = log["events"].as_array().unwrap();
    for event in &events {
        assert!(
            logged.contains(event),
            "{event} is not as /v1/events shows it"
        );
    }

    // Replay goes back: the same events come again, in order.
    let replayed = app
        .post(
            &format!("/v1/webhooks/{id}/replay"),
            &json!({"after": head}),
        )
        .await;
    assert_eq!(replayed.status(), StatusCode::OK);
    receiver
        .wait_until(20, |got| created_ids(got).len() >= 10)
        .await;
    assert_eq!(
        &created_ids(&receiver.received())[5..],
        ["u0", "u1", "u2", "u3", "u4"]
    );
    // Pausing records what was acknowledged: resumed, the webhook sends only what is new.
    for status in ["paused", "active"] {
        let r = app
            .patch(&format!("/v1/webhooks/{id}"), &json!({"status": status}))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    app.create_user(&json!({"id": "u5"})).await;
    receiver
        .wait_until(20, |got| created_ids(got).len() >= 11)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(created_ids(&receiver.received())[10..], ["u5"]);

    // The position is durable on the webhook's stream; its secret is in no event view.
    let shown = app.get("/v1/events?limit=1000").await.text().await.unwrap();
    assert!(shown.contains("WebhookProgressed"));
    assert!(
        !shown.contains(&secret),
        "the secret is redacted in /v1/events"
    );
    let metrics = app.anonymous(Method::GET, "/metrics").send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(&format!("roster_webhook_lag_events{{organization=\"default\",status=\"active\",webhook=\"{id}\"}}")),
        "{metrics}"
    );

    // Idle, a webhook writes nothing more (its own records never make it record again).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let settled = app.head().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app.head().await, settled, "an idle webhook appends nothing");

    let deleted = app.delete(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(
        app.get(&format!("/v1/webhooks/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_failing_receiver_holds_back_its_events_and_is_retried_with_the_same_delivery() {
    let app = private_app().await;
    let receiver = Receiver::start().await;
    // A redirect is not followed: it counts as a failure, like a 500.
    receiver.answers.lock().unwrap().extend([302, 500]);
    let created = create_hook(
        &app,
        &json!({"url": receiver.url, "types": ["UserCreated"]}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.create_user(&json!({"id": "first"})).await;

    receiver.wait_until(10, |got| !got.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failing = hook(&app, &id).await;
    assert_eq!(failing["status"], "failing", "{failing}");
    assert_eq!(failing["last_error"], "HTTP 302", "{failing}");
    app.create_user(&json!({"id": "second"})).await;

    // The first retry within 5 s, the second within 10 s more; then it goes through.
    let got = receiver
        .wait_until(25, |got| created_ids(got).contains(&"second".to_owned()))
        .await;
    let delivery = |r: &Received| r.headers["x-roster-delivery-id"].clone();
    assert!(got.len() >= 3, "two failures, then success");
    assert_eq!(delivery(&got[0]), delivery(&got[1]));
    assert_eq!(delivery(&got[1]), delivery(&got[2]));
    assert_eq!(
        got[2].events().len(),
        1,
        "the retried batch is the same batch"
    );
    assert_eq!(created_ids(&got), ["first", "first", "first", "second"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let healthy = hook(&app, &id).await;
    assert_eq!(healthy["status"], "active", "{healthy}");
    assert_eq!(healthy["last_error"], Value::Null);
    let shown = app.get("/v1/events?limit=1000").await.text().await.unwrap();
    assert!(!shown.contains("a body the server never shows"));
}

#[tokio::test]
async fn a_dead_or_slow_receiver_holds_back_only_its_own_webhook() {
    let app = private_app().await;
    let healthy = Receiver::start().await;
    let slow = Receiver::start().await;
    *slow.delay.lock().unwrap() = Duration::from_secs(8);
    let dead = format!("http://127.0.0.1:{}/hook", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let types = json!(["UserCreated"]);
    create_hook(&app, &json!({"url": dead, "types": types})).await;
    create_hook(&app, &json!({"url": slow.url, "types": types})).await;
    create_hook(&app, &json!({"url": healthy.url, "types": types})).await;
    for i in 0..5 {
        app.create_user(&json!({"id": format!("h{i}")})).await;
        if i == 0 {
            // Its deliverer is running: each create after this goes alone.
            healthy.wait_until(5, |got| !got.is_empty()).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // All of the healthy one's events arrive while the slow one still holds its first batch
    // (its receiver records a request only after 8 s).
    healthy
        .wait_until(5, |got| created_ids(got).len() == 5)
        .await;
    assert!(
        slow.received().is_empty(),
        "the slow one is still on its first batch"
    );
    let got = healthy.received();
    let connections: std::collections::HashSet<_> = got.iter().map(|r| r.peer).collect();
    assert!(got.len() > 1, "one create at a time, one batch each");
    assert_eq!(connections.len(), 1, "deliveries reuse their connection");
    let hooks = json(app.get("/v1/webhooks").await).await;
    let statuses: Vec<&str> = hooks["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[0], "failing", "{hooks}");
    assert!(
        hooks["webhooks"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("connecting"),
        "{hooks}"
    );
}

#[tokio::test]
async fn urls_that_reach_private_addresses_are_refused() {
    let app = crate::helpers::spawn_app().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "ftp://example.com/",
        "not a url",
    ] {
        let refused = app.post("/v1/webhooks", &json!({"url": url})).await;
        assert_invalid(refused).await;
    }
    let short = app
        .post(
            "/v1/webhooks",
            &json!({"url": "http://93.184.216.34/", "secret": "short"}),
        )
        .await;
    assert_invalid(short).await;
    let unknown = app
        .post(
            "/v1/webhooks",
            &json!({"url": "http://93.184.216.34/", "types": ["NoSuchEvent"]}),
        )
        .await;
    assert_invalid(unknown).await;
    let list = json(app.get("/v1/webhooks").await).await;
    assert_eq!(list["webhooks"], json!([]), "nothing was created");
}

#[tokio::test]
async fn a_reset_token_is_shown_only_to_a_webhook_that_lists_its_type() {
    let app = private_app().await;
    let listing = Receiver::start().await;
    let everything = Receiver::start().await;
    create_hook(
        &app,
        &json!({"url": listing.url, "types": ["PasswordResetRequested"]}),
    )
    .await;
    create_hook(&app, &json!({"url": everything.url})).await;
    app.create_user(
        &json!({"id": "dora", "email": "dora@example.com", "password": "old password 1"}),
    )
    .await;
    let asked = app
        .anonymous(Method::POST, "/v1/account/recovery")
        .json(&json!({"email": "dora@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), StatusCode::ACCEPTED);

    let got = listing.wait_until(20, |got| !got.is_empty()).await;
    let event = &got[0].events()[0];
    assert_eq!(event["type"], "PasswordResetRequested");
    let token = event["data"]["token"]
        .as_str()
        .expect("the token, in clear")
        .to_owned();
    assert_eq!(event["data"]["token_hash"], Value::Null);
    let others = everything
        .wait_until(20, |got| {
            got.iter()
                .flat_map(Received::events)
                .any(|e| e["type"] == "PasswordResetRequested")
        })
        .await;
    let seen = others
        .iter()
        .flat_map(Received::events)
        .find(|e| e["type"] == "PasswordResetRequested")
        .unwrap();
    assert_eq!(seen["data"]["token"], Value::Null, "{seen}");
    assert_eq!(seen["data"]["redacted"], true);

    // The application turns it into a link; the user resets with it.
    let reset = app
        .anonymous(Method::POST, "/v1/account/password/reset")
        .json(&json!({"token": token, "password": "new password 2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::OK);
}

/// The `roster` binary of this workspace, built if needed.
fn roster_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", "roster-cli", "--bin", "roster"])
        .status()
        .expect("running cargo build");
    assert!(built.success(), "building the roster binary");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/roster")
}

/// `roster serve` as a process of its own (so that it can be SIGKILLed).
fn serve(binary: &std::path::Path, store: &std::path::Path, port: u16) -> std::process::Child {
    std::process::Command::new(binary)
        .args([
            "serve",
            "--allow-private-webhooks",
            "--api-key",
            "crash-key",
        ])
        .arg("--store")
        .arg(store)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting roster")
}

async fn ready(client: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("roster at {base} never became ready");
}

#[tokio::test]
async fn a_server_killed_mid_delivery_loses_nothing() {
    let binary = tokio::task::spawn_blocking(roster_binary).await.unwrap();
    let store = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth("crash-key")
            .json(&body)
            .send()
    };
    let mut server = serve(&binary, store.path(), port);
    ready(&client, &base).await;
    let receiver = Receiver::start().await;
    *receiver.delay.lock().unwrap() = Duration::from_secs(2);
    let created = post(
        "/v1/webhooks",
        json!({"url": receiver.url, "types": ["UserCreated"]}),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = format!("k{i:02}");
        let r = post("/v1/users", json!({"id": id})).await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed while a delivery waits for its answer (the receiver takes 2 s each), with events
    // written after that delivery left (a loaded machine may have put all 40 in it).
    receiver.wait_until(20, |got| !got.is_empty()).await;
    for i in 40..50 {
        let id = format!("k{i:02}");
        let r = post("/v1/users", json!({"id": id})).await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        ids.push(id);
    }
    server.kill().expect("SIGKILL");
    server.wait().unwrap();
    let before = created_ids(&receiver.received()).len();
    assert!(
        before < ids.len(),
        "killed before everything went out ({before})"
    );

    *receiver.delay.lock().unwrap() = Duration::ZERO;
    let mut server = serve(&binary, store.path(), port);
    ready(&client, &base).await;
    let got = receiver
        .wait_until(30, |got| {
            let seen = created_ids(got);
            ids.iter().all(|id| seen.contains(id))
        })
        .await;
    for received in &got {
        let positions: Vec<u64> = received
            .events()
            .iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }
    // At least once: what was sent before the kill may come again, nothing is missing, and
    // after the restart deliveries go on in order.
    let seen = created_ids(&got);
    let mut last_first_seen = 0;
    for id in &ids {
        let first = seen.iter().position(|s| s == id).unwrap();
        assert!(first >= last_first_seen, "{id} out of order in {seen:?}");
        last_first_seen = first;
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The workers that recorded the webhook's progress, in log order, as `/v1/events` shows them.
async fn holders(server: &crate::nats_helpers::NatsApp) -> Vec<String> {
    let events: Value = server
        .get("/v1/events?types=WebhookProgressed&types=WebhookFailing&limit=1000")
        .await
        .json()
        .await
        .unwrap();
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["worker"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_one_server_delivers_a_webhook_and_another_takes_over_when_it_is_gone() {
    use crate::nats_helpers::{namespace, spawn_nats_app_with};
    let nats = roster_testsupport::NatsServer::shared();
    let ns = namespace("webhooks");
    let settings = |c: &mut roster_api::Config| {
        c.allow_private_webhooks = true;
        c.task_lease = Duration::from_secs(3);
    };
    let a = spawn_nats_app_with(&nats.url(), &ns, tempfile::tempdir().unwrap(), settings).await;
    let receiver = Receiver::start().await;
    let created = a
        .post(
            "/v1/webhooks",
            &json!({"url": receiver.url, "types": ["UserCreated"]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    a.post("/v1/users", &json!({"id": "n0"})).await;
    receiver
        .wait_until(20, |got| created_ids(got).len() == 1)
        .await;

    // A second server: the webhook stays with the first, whichever server takes the writes.
    let b = spawn_nats_app_with(&nats.url(), &ns, tempfile::tempdir().unwrap(), settings).await;
    for i in 1..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        let r = server
            .post("/v1/users", &json!({"id": format!("n{i}")}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    receiver
        .wait_until(20, |got| created_ids(got).len() >= 6)
        .await;
    // Longer than a lease: the holder renews it, nobody else takes the webhook.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = holders(&b).await;
    let first = before[0].clone();
    assert!(before.iter().all(|w| *w == first), "one holder: {before:?}");

    // The holder goes; a lease later the other server delivers what follows.
    a.stop().await;
    for i in 6..10 {
        let r = b.post("/v1/users", &json!({"id": format!("n{i}")})).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let got = receiver
        .wait_until(30, |got| {
            let seen = created_ids(got);
            (0..10).all(|i| seen.contains(&format!("n{i}")))
        })
        .await;
    let after = holders(&b).await;
    let second = after.last().unwrap().clone();
    assert_ne!(second, first, "taken over: {after:?}");
    let switch = after.iter().position(|w| *w == second).unwrap();
    assert!(
        after[..switch].iter().all(|w| *w == first) && after[switch..].iter().all(|w| *w == second),
        "one server at a time: {after:?}"
    );
    let seen = created_ids(&got);
    for i in 1..10 {
        let (prev, this) = (format!("n{}", i - 1), format!("n{i}"));
        let first_seen = |id: &str| seen.iter().position(|s| s == id).unwrap();
        assert!(first_seen(&prev) < first_seen(&this), "log order: {seen:?}");
    }
}
