//! `GET /metrics` (docs/contract.md §7): Prometheus text with requests per route template,
//! event-log appends, projection lag and tasks.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, json, spawn_app};

async fn scrape(app: &TestApp) -> String {
    let response = app.anonymous(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of the sample `name{labels}` (labels as rendered, sorted by name), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

#[tokio::test]
async fn requests_are_counted_by_route_template_method_and_status_class() {
    let app = spawn_app().await;
    let created = app
        .create_user(&json!({"id": "alice", "username": "alice"}))
        .await;
    let at = created["position"].as_u64().expect("position");
    for _ in 0..3 {
        assert_eq!(
            app.get_at("/v1/users/alice", at).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        app.get("/v1/users/nobody").await.status(),
        StatusCode::NOT_FOUND
    );
    let unmatched = app.get("/no/such/route").await;
    assert_eq!(unmatched.status(), StatusCode::NOT_FOUND);

    let text = scrape(&app).await;
    let get_user = |class: &str| {
        sample(
            &text,
            &format!(
                r#"roster_http_requests_total{{method="GET",route="/v1/users/{{id}}",status="{class}"}}"#
            ),
        )
    };
    assert_eq!(get_user("2xx"), 3.0, "{text}");
    assert_eq!(get_user("4xx"), 1.0);
    assert_eq!(
        sample(
            &text,
            r#"roster_http_requests_total{method="POST",route="/v1/users",status="2xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"roster_http_requests_total{method="GET",route="unmatched",status="4xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"roster_http_request_duration_seconds_count{method="GET",route="/v1/users/{id}",status="2xx"}"#
        ),
        3.0
    );
    assert!(text.contains(
        r#"roster_http_request_duration_seconds_bucket{method="GET",route="/v1/users/{id}",status="2xx",le="+Inf"} 3"#
    ));
    // Raw paths never become labels.
    assert!(!text.contains("/v1/users/alice"));
    assert!(!text.contains("/no/such/route"));
}

#[tokio::test]
async fn appends_batch_sizes_lag_and_tasks_are_exposed() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    assert_eq!(
        sample(&before, r#"roster_log_appends_total{outcome="committed"}"#),
        0.0
    );
    // One append of one event, one append of three events (an atomic batch).
    app.create_user(&json!({"id": "u0"})).await;
    let batch = app
        .post(
            "/v1/users/upsert",
            &json!({"users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}]}),
        )
        .await;
    assert_eq!(batch.status(), StatusCode::OK);
    // A refused append: the username is claimed by another user (the log's reservation
    // decides, at the append).
    app.create_user(&json!({"id": "named", "username": "taken"}))
        .await;
    let taken = app
        .post("/v1/users", &json!({"id": "other", "username": "taken"}))
        .await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    let task = app
        .post(
            "/v1/users/deactivate",
            &json!({"user_ids": ["u1", "u2", "missing"]}),
        )
        .await;
    assert_eq!(task.status(), StatusCode::ACCEPTED);
    let task_id = json(task).await["task_id"].as_str().unwrap().to_owned();
    let task = app.wait_task(&task_id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let head = app.head().await;
    // The read models have applied everything: lag 0.
    assert_eq!(app.get_at("/v1/tasks", head).await.status(), StatusCode::OK);

    let text = scrape(&app).await;
    let committed = sample(&text, r#"roster_log_appends_total{outcome="committed"}"#);
    // u0, the batch, `named`, the task's creation, start, chunk and completion (at least).
    assert!(committed >= 5.0, "{committed}\n{text}");
    assert!(sample(&text, r#"roster_log_appends_total{outcome="conflict"}"#) >= 1.0);
    assert_eq!(sample(&text, "roster_log_append_events_count"), committed);
    assert!(sample(&text, r#"roster_log_append_events_bucket{le="1"}"#) >= 1.0);
    let three_or_more = sample(&text, r#"roster_log_append_events_bucket{le="+Inf"}"#)
        - sample(&text, r#"roster_log_append_events_bucket{le="2"}"#);
    assert!(three_or_more >= 1.0, "the batch of three\n{text}");
    assert_eq!(
        sample(&text, "roster_log_appended_events_total"),
        head as f64,
        "every event of the log was appended by this server"
    );
    assert_eq!(sample(&text, "roster_log_head_position"), head as f64);
    assert_eq!(sample(&text, "roster_projection_position"), head as f64);
    assert_eq!(sample(&text, "roster_projection_lag_events"), 0.0);
    assert_eq!(
        sample(
            &text,
            r#"roster_tasks{kind="deactivate_users",status="completed"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"roster_tasks{kind="export_users",status="running"}"#
        ),
        0.0
    );
    assert!(text.contains("# TYPE roster_http_request_duration_seconds histogram"));
    assert!(text.contains("# TYPE roster_projection_lag_events gauge"));
}

#[tokio::test]
async fn the_aggregate_cache_reports_its_hits_misses_and_budget() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "carol"})).await;
    let before = scrape(&app).await;
    let hits = |text: &str| {
        sample(
            text,
            r#"roster_aggregate_cache_lookups_total{result="hit"}"#,
        )
    };
    for n in 0..3 {
        let response = app
            .patch(
                "/v1/users/carol",
                &json!({"set": {"name": format!("Carol {n}")}}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let after = scrape(&app).await;
    // Each update after the first finds the state its predecessor left in the cache.
    assert!(hits(&after) - hits(&before) >= 2.0, "{after}");
    assert!(
        sample(
            &after,
            r#"roster_aggregate_cache_lookups_total{result="miss"}"#
        ) >= 1.0
    );
    assert!(
        sample(&after, "roster_aggregate_cache_bytes") > 0.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "roster_aggregate_cache_budget_bytes"),
        64.0 * 1024.0 * 1024.0,
        "the default budget is 64 MiB"
    );
}
