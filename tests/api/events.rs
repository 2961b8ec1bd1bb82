//! `/v1/events`: pages, filters, NDJSON to the end of the log, SSE live tail with resume.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn positions(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn pages_filter_by_type_user_and_organization() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "ann", "username": "ann"}))
        .await;
    app.create_user(&json!({"id": "ben"})).await;
    app.patch("/v1/users/ann", &json!({"set": {"name": "Ann"}}))
        .await;
    let other = app
        .in_org("acme", reqwest::Method::POST, "/v1/users")
        .json(&json!({"id": "ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);

    let all = json(app.get("/v1/events").await).await;
    assert_eq!(
        positions(&all["events"]),
        vec![1, 2, 3],
        "the acme event is not visible from default"
    );
    let first = &all["events"][0];
    for field in [
        "position",
        "id",
        "stream",
        "version",
        "type",
        "schema_version",
        "time",
        "organization_id",
        "data",
        "metadata",
    ] {
        assert!(!first[field].is_null(), "{field} in {first}");
    }
    assert_eq!(first["stream"], "user-ann");
    assert_eq!(
        first["data"]["profile"]["username"], "ann",
        "personal data is opened for the server"
    );

    let paged = json(app.get("/v1/events?limit=2").await).await;
    assert_eq!(positions(&paged["events"]), vec![1, 2]);
    let rest = json(
        app.get(&format!("/v1/events?after={}", paged["next_after"]))
            .await,
    )
    .await;
    assert_eq!(positions(&rest["events"]), vec![3]);

    let created = json(app.get("/v1/events?types=UserCreated").await).await;
    assert_eq!(positions(&created["events"]), vec![1, 2]);
    let of_ann = json(app.get("/v1/events?user_id=ann").await).await;
    assert_eq!(positions(&of_ann["events"]), vec![1, 3]);
    let both = json(
        app.get("/v1/events?types=UserPartiallyUpdated&types=UserCreated&user_id=ann")
            .await,
    )
    .await;
    assert_eq!(positions(&both["events"]), vec![1, 3]);

    let acme = json(
        app.in_org("acme", reqwest::Method::GET, "/v1/events")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(positions(&acme["events"]), vec![4]);
    assert_problem(
        app.get("/v1/events?limit=10001").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.anonymous(reqwest::Method::GET, "/v1/events")
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn ndjson_streams_to_the_end_of_the_log() {
    let app = spawn_app().await;
    app.seed_users("n", 2500).await;
    let response = app
        .request(reqwest::Method::GET, "/v1/events?after=10")
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2490);
    let got: Vec<u64> = lines
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (11..=2500).collect::<Vec<_>>());
}

/// Reads SSE events (id and data) from a response until `n` have arrived.
async fn read_sse(response: reqwest::Response, n: usize) -> Vec<(u64, Value)> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(|v| v.parse::<u64>().unwrap());
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(|v| serde_json::from_str::<Value>(v).unwrap());
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

#[tokio::test]
async fn sse_tail_resumes_with_last_event_id_without_gap_or_duplicate() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create_user(&json!({"id": format!("s{i}")})).await;
    }
    // First connection: catch up on 5, then see 3 live ones, then drop.
    let first = app
        .request(reqwest::Method::GET, "/v1/events/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(
        first.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let writer = {
        let (address, client) = (app.address.clone(), app.client.clone());
        tokio::spawn(async move {
            for i in 5..8 {
                client
                    .post(format!("{address}/v1/users"))
                    .bearer_auth("test-key")
                    .json(&json!({"id": format!("s{i}")}))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let seen = read_sse(first, 8).await;
    writer.await.unwrap();
    // More events while disconnected, then resume from the last id seen.
    for i in 8..12 {
        app.create_user(&json!({"id": format!("s{i}")})).await;
    }
    let last = seen.last().unwrap().0;
    let resumed = app
        .request(reqwest::Method::GET, "/v1/events/stream")
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    let rest = read_sse(resumed, 4).await;
    let ids: Vec<u64> = seen.iter().chain(&rest).map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=12).collect::<Vec<_>>(), "no gap, no duplicate");
    assert!(
        seen.iter()
            .chain(&rest)
            .all(|(id, e)| e["position"] == *id && e["type"] == "UserCreated")
    );
}
