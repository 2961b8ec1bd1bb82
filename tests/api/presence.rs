//! Presence (docs/presence.md): heartbeats, `appear_online`, custom status, the SSE stream;
//! nothing in the event log; the same on every server of a NATS deployment.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::sessions::{as_client, sign_in, user_with_password};

async fn heartbeat(app: &TestApp, session: &Value, body: Value) -> Value {
    let response = as_client(
        app,
        &session["access_token"],
        Method::POST,
        "/v1/account/presence",
    )
    .json(&body)
    .send()
    .await
    .unwrap();
    let status = response.status();
    let body = json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn profile(app: &TestApp, id: &str) -> Value {
    json(app.get(&format!("/v1/profiles?ids={id}")).await).await["users"][0].clone()
}

/// The next presence events of an SSE response, `n` of them (10 s at most).
pub(crate) async fn next_events(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Unpin),
    buffer: &mut String,
    n: usize,
) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                out.push(serde_json::from_str(data).unwrap());
            }
            if out.len() == n {
                return out;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a presence event within 10 s")
            .expect("stream open")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
    out
}

#[tokio::test]
async fn heartbeats_settings_and_messages_show_on_profiles_and_users() {
    let app = spawn_app().await;
    user_with_password(&app, "mia").await;
    let session = sign_in(&app, "mia").await;
    let before = profile(&app, "mia").await;
    assert_eq!(
        (before["online"].as_bool(), before["last_seen_at"].is_null()),
        (Some(false), true)
    );
    let head = app.head().await;
    let own = heartbeat(&app, &session, json!({"message": "in a match"})).await;
    assert_eq!(
        (own["online"].as_bool(), own["message"].as_str()),
        (Some(true), Some("in a match"))
    );
    let seen = profile(&app, "mia").await;
    assert_eq!(seen["online"], true);
    assert_eq!(seen["presence_message"], "in a match");
    let at = chrono::DateTime::parse_from_rfc3339(seen["last_seen_at"].as_str().unwrap()).unwrap();
    assert_eq!(at.timestamp() % 60, 0, "to the minute");
    assert_eq!(
        app.user("mia").await.unwrap()["online"],
        true,
        "the user object too"
    );
    // A heartbeat without the fields keeps them; null clears the message.
    heartbeat(&app, &session, json!({})).await;
    assert_eq!(profile(&app, "mia").await["presence_message"], "in a match");
    heartbeat(&app, &session, json!({"message": null})).await;
    assert!(profile(&app, "mia").await["presence_message"].is_null());
    // Hidden: offline, no message, no last seen, until it appears again.
    heartbeat(
        &app,
        &session,
        json!({"appear_online": false, "message": "secret"}),
    )
    .await;
    let hidden = profile(&app, "mia").await;
    assert_eq!(
        (
            hidden["online"].as_bool(),
            hidden["presence_message"].is_null(),
            hidden["last_seen_at"].is_null()
        ),
        (Some(false), true, true)
    );
    heartbeat(&app, &session, json!({})).await;
    assert_eq!(
        profile(&app, "mia").await["online"],
        false,
        "the setting lasts until changed"
    );
    heartbeat(&app, &session, json!({"appear_online": true})).await;
    let back = profile(&app, "mia").await;
    assert_eq!(
        (back["online"].as_bool(), back["presence_message"].as_str()),
        (Some(true), Some("secret"))
    );
    // Bad input changes nothing; nothing of this went to the event log.
    let long = as_client(
        &app,
        &session["access_token"],
        Method::POST,
        "/v1/account/presence",
    )
    .json(&json!({"message": "x".repeat(129)}))
    .send()
    .await
    .unwrap();
    assert_invalid(long).await;
    assert_eq!(app.head().await, head, "presence is not in the event log");
    // Pruning erases last_seen_at.
    assert_eq!(
        app.delete("/v1/users/mia?mode=pruning").await.status(),
        StatusCode::OK
    );
    let pruned = app.user("mia").await.unwrap();
    assert!(
        pruned["last_seen_at"].is_null() && pruned["presence_message"].is_null(),
        "{pruned}"
    );
}

#[tokio::test]
async fn the_stream_says_every_change() {
    let app = spawn_app().await;
    user_with_password(&app, "kai").await;
    user_with_password(&app, "lea").await;
    let kai = sign_in(&app, "kai").await;
    let response = app
        .request(Method::GET, "/v1/presence/stream?user_ids=kai&user_ids=lea")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let first = next_events(&mut stream, &mut buffer, 2).await;
    assert!(first.iter().all(|e| e["online"] == false), "{first:?}");
    heartbeat(&app, &kai, json!({"message": "hi"})).await;
    let online = next_events(&mut stream, &mut buffer, 1).await;
    assert_eq!(
        online[0],
        json!({"user_id": "kai", "online": true, "message": "hi"})
    );
    heartbeat(&app, &kai, json!({"appear_online": false})).await;
    let hidden = next_events(&mut stream, &mut buffer, 1).await;
    assert_eq!(
        hidden[0],
        json!({"user_id": "kai", "online": false, "message": null})
    );
    let bad = app.get("/v1/presence/stream").await;
    assert_invalid(bad).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_the_same_on_every_server() {
    use crate::nats_helpers::{namespace, spawn_nats_app};
    let nats = roster_testsupport::NatsServer::shared();
    let ns = namespace("presence");
    let a = spawn_nats_app(&nats.url(), &ns).await;
    let b = spawn_nats_app(&nats.url(), &ns).await;
    let created = a
        .post(
            "/v1/users",
            &json!({"id": "noa", "username": "noa", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created_at = position(&created);
    let session: Value = a
        .client
        .post(format!("{}/v1/sessions", a.address))
        .json(&json!({"username": "noa", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stream = b.get("/v1/presence/stream?user_ids=noa").await;
    let mut stream = stream.bytes_stream();
    let mut buffer = String::new();
    assert_eq!(
        next_events(&mut stream, &mut buffer, 1).await[0]["online"],
        false
    );
    let beat = a
        .client
        .post(format!("{}/v1/account/presence", a.address))
        .bearer_auth(session["access_token"].as_str().unwrap())
        .json(&json!({"message": "from a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(beat.status(), StatusCode::OK);
    // Server b's stream and profiles see what a heard.
    let seen = next_events(&mut stream, &mut buffer, 1).await;
    assert_eq!(
        seen[0],
        json!({"user_id": "noa", "online": true, "message": "from a"})
    );
    let profile = b.get_at("/v1/profiles?ids=noa", created_at).await;
    assert_eq!(profile["users"][0]["presence_message"], "from a");
    // And a server started later reads the bucket's current state.
    let c = spawn_nats_app(&nats.url(), &ns).await;
    let started = std::time::Instant::now();
    let profile = loop {
        let profile = c.get_at("/v1/profiles?ids=noa", created_at).await;
        if profile["users"][0]["presence_message"] == "from a"
            || started.elapsed() > Duration::from_secs(10)
        {
            break profile;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("server c showed the presence after {:?}", started.elapsed());
    assert_eq!(
        profile["users"][0]["presence_message"], "from a",
        "{profile}"
    );
    assert!(profile["users"][0]["last_seen_at"].is_string(), "{profile}");
}
