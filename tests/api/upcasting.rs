//! Versioned events (docs/architecture.md): a `StatusChanged` recorded by an older server as schema
//! v1 (`{"blocked": bool}`) sits in a real log; this server folds it into the user, answers
//! commands from it, and shows it as v2 (`{"status": "active"|"blocked"}`), while new events are
//! written as v2. The log itself is never rewritten.

use reqwest::StatusCode;
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::{EventLog, ExpectedVersion, NewEvent, StreamAppend, StreamId, Transaction};
use serde_json::json;

use crate::helpers::{json, spawn_app, spawn_app_in};

/// Appends what a v1 server wrote when it blocked a user, straight into the stopped server's
/// embedded log. Returns the event's position.
async fn record_v1_block(dir: &std::path::Path, user: &str, expected_version: u64) -> u64 {
    let log = EmbeddedLog::open(&dir.join("log"), EmbeddedOptions::default())
        .await
        .expect("the log opens");
    let committed = log
        .append(Transaction {
            appends: vec![StreamAppend {
                stream: StreamId::new("default", format!("user-{user}")),
                expected: ExpectedVersion::Exact(expected_version),
                events: vec![NewEvent {
                    id: ulid::Ulid::new(),
                    event_type: "StatusChanged".into(),
                    schema_version: 1,
                    data: br#"{"blocked":true}"#.to_vec().into(),
                    metadata: br#"{"actor":"server:v1"}"#.to_vec().into(),
                }],
            }],
            reservations: vec![],
        })
        .await
        .expect("the v1 event is appended");
    log.close().await.expect("the log closes");
    committed.last_position
}

#[tokio::test]
async fn a_v1_status_change_in_the_log_replays_and_renders_as_v2() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "old", "username": "old"}))
        .await;
    let dir = app.stop().await;
    let v1_position = record_v1_block(dir.path(), "old", 1).await;

    let app = spawn_app_in(dir).await;
    // The read models applied it (upcast on the way in).
    let user = app.user("old").await.expect("the user exists");
    assert_eq!(user["status"], "blocked", "{user}");
    assert_eq!(user["version"], 2);
    // So did the aggregate the commands use: blocking again changes nothing.
    let again = app
        .patch("/v1/users/old/status", &json!({"status": false}))
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let again = json(again).await;
    assert_eq!(
        (again["status"].clone(), again["version"].clone()),
        (json!("blocked"), json!(2))
    );
    // And folding up to a position.
    let then = json(app.get(&format!("/v1/users/old?as_of={v1_position}")).await).await;
    assert_eq!(then["status"], "blocked");

    // Unblocking is written as v2.
    let unblocked = json(
        app.patch("/v1/users/old/status", &json!({"status": true}))
            .await,
    )
    .await;
    assert_eq!(unblocked["status"], "active");
    assert_eq!(unblocked["version"], 3);

    let events = app.events_of("old").await;
    let shown: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e["type"].clone(),
                e["schema_version"].clone(),
                e["data"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shown[1..],
        [
            (
                json!("StatusChanged"),
                json!(2),
                json!({"status": "blocked"})
            ),
            (
                json!("StatusChanged"),
                json!(2),
                json!({"status": "active"})
            ),
        ]
    );
    assert_eq!(events[1]["position"], v1_position);
    assert_eq!(events[1]["metadata"]["actor"], "server:v1");

    // The log still holds the v1 bytes: history is read differently, never rewritten.
    let dir = app.stop().await;
    let log = EmbeddedLog::open(&dir.path().join("log"), EmbeddedOptions::default())
        .await
        .unwrap();
    let records = log
        .read_stream(&StreamId::new("default", "user-old"), 2, 10)
        .await
        .unwrap();
    assert_eq!(records[0].schema_version, 1);
    assert_eq!(&records[0].data[..], br#"{"blocked":true}"#);
    assert_eq!(records[1].schema_version, 2);
    // New events are stored in format 2 (typed, MessagePack): the first byte says so.
    assert_eq!(records[1].data[0], 2, "format 2");
    log.close().await.unwrap();
}

#[tokio::test]
async fn a_v1_block_ends_sessions_and_refuses_sign_in_like_v2() {
    let app = spawn_app().await;
    app.create_user(
        &json!({"id": "v1user", "email": "v1@example.com", "password": "correct horse"}),
    )
    .await;
    let dir = app.stop().await;
    record_v1_block(dir.path(), "v1user", 1).await;
    let app = spawn_app_in(dir).await;
    app.user("v1user").await.expect("projected");
    let response = app
        .anonymous(reqwest::Method::POST, "/v1/sessions")
        .json(&json!({"email": "v1@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(response, StatusCode::FORBIDDEN, "user_blocked").await;
}
