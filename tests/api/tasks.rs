//! Bulk operations as pollable tasks (docs/contract.md §4).

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn bulk_deactivate_acts_on_each_user_once_and_lists_failures() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("d", 1200).await;
    let mut request: Vec<String> = ids.clone();
    request.extend(["ghost-1".to_string(), "-bad id".to_string(), ids[0].clone()]);
    let response = app
        .post(
            "/v1/users/deactivate",
            &json!({"user_ids": request, "created_by_id": "admin-7"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let at = position(&response);
    let accepted = json(response).await;
    assert_eq!(accepted["position"], at);
    let task_id = accepted["task_id"].as_str().unwrap().to_owned();
    // Pollable at once, even before the read models catch up.
    let first = json(app.get(&format!("/v1/tasks/{task_id}")).await).await;
    assert_eq!(first["kind"], "deactivate_users");
    let task = app.wait_task(&task_id).await;
    assert_eq!(task["status"], "completed", "{task}");
    // The repeated id counts once: 1200 users + 2 bad ids.
    assert_eq!(
        task["progress"],
        json!({"done": 1200, "total": 1202, "failed": 2})
    );
    let failures = task["result"]["failures"].as_array().unwrap();
    let failed: HashSet<&str> = failures
        .iter()
        .map(|f| f["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(failed, HashSet::from(["ghost-1", "-bad id"]));
    assert!(failures.iter().all(|f| f["code"] == "not_found"));
    for f in ["created_at", "started_at", "finished_at"] {
        assert!(task[f].is_string(), "{f} in {task}");
    }
    let user = app.user(&ids[777]).await.unwrap();
    assert_eq!(user["status"], "deactivated");
    let events = app.events_of(&ids[777]).await;
    let deactivations: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "UserDeactivated")
        .collect();
    assert_eq!(deactivations.len(), 1);
    assert_eq!(
        deactivations[0]["metadata"]["causation_id"],
        task_id.as_str()
    );
    assert_eq!(
        deactivations[0]["metadata"]["actor"],
        format!("task:{task_id}")
    );
    assert_eq!(deactivations[0]["data"]["created_by_id"], "admin-7");
}

#[tokio::test]
async fn users_already_in_the_requested_state_count_as_done() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("r", 30).await;
    let first = app
        .start_task("/v1/users/deactivate", &json!({"user_ids": ids[..10]}))
        .await;
    app.wait_task(&first).await;
    let again = app
        .start_task("/v1/users/deactivate", &json!({"user_ids": ids[..20]}))
        .await;
    let task = app.wait_task(&again).await;
    assert_eq!(
        task["progress"],
        json!({"done": 20, "total": 20, "failed": 0})
    );
    assert_eq!(
        app.events_of(&ids[3])
            .await
            .iter()
            .filter(|e| e["type"] == "UserDeactivated")
            .count(),
        1
    );
    let back = app
        .start_task("/v1/users/reactivate", &json!({"user_ids": ids}))
        .await;
    let task = app.wait_task(&back).await;
    assert_eq!(task["progress"]["done"], 30);
    assert_eq!(app.user(&ids[3]).await.unwrap()["status"], "active");
}

#[tokio::test]
async fn bulk_delete_in_each_mode() {
    let app = spawn_app().await;
    let soft = app
        .create_user(&json!({"id": "soft-1", "username": "soft1", "email": "soft1@example.com"}))
        .await;
    app.create_user(
        &json!({"id": "prune-1", "username": "prune1", "email": "Prune.Canary@example.com"}),
    )
    .await;
    app.create_user(&json!({"id": "hard-1", "username": "hard1"}))
        .await;
    let _ = soft;
    for (id, mode) in [
        ("soft-1", "soft"),
        ("prune-1", "pruning"),
        ("hard-1", "hard"),
    ] {
        let task = app
            .start_task("/v1/users/delete", &json!({"user_ids": [id], "user": mode}))
            .await;
        assert_eq!(app.wait_task(&task).await["status"], "completed");
    }
    let head = app.head().await;
    let soft = json(app.get_at("/v1/users/soft-1", head).await).await;
    assert_eq!(soft["status"], "deleted");
    assert_eq!(soft["email"], "soft1@example.com");
    let pruned = json(app.get_at("/v1/users/prune-1", head).await).await;
    assert_eq!(pruned["email"], Value::Null);
    assert_eq!(pruned["erased"], true);
    assert_eq!(
        app.get_at("/v1/users/hard-1", head).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_not_on_disk(app.dir.path(), &["prune.canary"], "after a pruning task");
    // The hard-deleted user's username is free again.
    app.create_user(&json!({"id": "hard-2", "username": "hard1"}))
        .await;
}

#[tokio::test]
async fn export_streams_every_user_and_the_listed_ones() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("e", 250).await;
    app.create_user(&json!({"id": "exp-canary", "name": "Exportcanary Person"}))
        .await;
    let all = app.start_task("/v1/users/export", &json!({})).await;
    let task = app.wait_task(&all).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["progress"]["done"], 251);
    assert_eq!(task["result"]["lines"], 251);
    let response = app.get(&format!("/v1/tasks/{all}/result")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.text().await.unwrap();
    let users: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(users.len(), 251);
    let exported: HashSet<&str> = users.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|id| exported.contains(id.as_str())));
    assert!(users.iter().any(|u| u["name"] == "Exportcanary Person"));
    // The file on disk holds the export sealed, not in clear.
    assert_not_on_disk(
        app.dir.path(),
        &["exportcanary"],
        "with an export file present",
    );

    let listed = app
        .start_task(
            "/v1/users/export",
            &json!({"user_ids": [&ids[1], "nobody", &ids[2]], "format": "ndjson"}),
        )
        .await;
    let task = app.wait_task(&listed).await;
    assert_eq!(
        task["progress"],
        json!({"done": 2, "total": 3, "failed": 1})
    );
    assert_eq!(task["result"]["failures"][0]["user_id"], "nobody");
    let lines = app
        .get(&format!("/v1/tasks/{listed}/result"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(lines.lines().count(), 2);
}

#[tokio::test]
async fn an_export_erases_with_its_users() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "gone", "name": "Erasemetoo"}))
        .await;
    app.create_user(&json!({"id": "kept", "name": "Keepme"}))
        .await;
    let export = app.start_task("/v1/users/export", &json!({})).await;
    app.wait_task(&export).await;
    let response = app.delete("/v1/users/gone?mode=pruning").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = app
        .get(&format!("/v1/tasks/{export}/result"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!body.to_lowercase().contains("erasemetoo"), "{body}");
    assert!(body.contains("Keepme"));
    let gone: Value = body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|u| u["id"] == "gone")
        .unwrap();
    assert_eq!(gone["erased"], true);
}

#[tokio::test]
async fn results_that_are_not_there() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("x", 3).await;
    let deactivate = app
        .start_task("/v1/users/deactivate", &json!({"user_ids": ids}))
        .await;
    app.wait_task(&deactivate).await;
    assert_problem(
        app.get(&format!("/v1/tasks/{deactivate}/result")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        app.get("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        app.get("/v1/tasks/not-a-task/result").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let export = app.start_task("/v1/users/export", &json!({})).await;
    app.wait_task(&export).await;
    // Past its retention the file is deleted: 410.
    let file = app
        .dir
        .path()
        .join("exports")
        .join("default")
        .join(format!("{export}.ndjson"));
    std::fs::remove_file(&file).expect("export file where the docs say");
    assert_problem(
        app.get(&format!("/v1/tasks/{export}/result")).await,
        StatusCode::GONE,
        "gone",
    )
    .await;
}

#[tokio::test]
async fn cancel_stops_a_running_task_and_keeps_what_is_done() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("c", 4000).await;
    let task_id = app
        .start_task("/v1/users/deactivate", &json!({"user_ids": ids}))
        .await;
    let response = app
        .post(&format!("/v1/tasks/{task_id}/cancel"), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let canceled = json(response).await;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    let task = app.wait_task(&task_id).await;
    assert_eq!(task["status"], "canceled");
    let done = task["progress"]["done"].as_u64().unwrap();
    assert!(done < 4000, "canceled before the end: {task}");
    // Exactly the recorded number of users were deactivated, once each, and nothing after.
    let head = app.head().await;
    let page = json(
        app.get_at("/v1/users?status=deactivated&limit=1", head)
            .await,
    )
    .await;
    assert_eq!(page["total"], done);
    // Canceling an ended task answers with it as it is.
    let again = json(
        app.post(&format!("/v1/tasks/{task_id}/cancel"), &json!({}))
            .await,
    )
    .await;
    assert_eq!(again["status"], "canceled");
}

#[tokio::test]
async fn tasks_are_listed_newest_first_with_filters_and_cursor() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("l", 2).await;
    let mut started = Vec::new();
    for i in 0..5 {
        let path = if i % 2 == 0 {
            "/v1/users/deactivate"
        } else {
            "/v1/users/export"
        };
        let body = if i % 2 == 0 {
            json!({"user_ids": ids})
        } else {
            json!({})
        };
        let id = app.start_task(path, &body).await;
        app.wait_task(&id).await;
        started.push(id);
    }
    let page = json(app.get("/v1/tasks?limit=2").await).await;
    let first: Vec<&str> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, vec![started[4].as_str(), started[3].as_str()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = json(
        app.get(&format!("/v1/tasks?limit=10&cursor={cursor}"))
            .await,
    )
    .await;
    assert_eq!(rest["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(rest["next_cursor"], Value::Null);
    let exports = json(app.get("/v1/tasks?kind=export_users").await).await;
    assert_eq!(exports["tasks"].as_array().unwrap().len(), 2);
    let completed = json(
        app.get("/v1/tasks?status=completed&kind=deactivate_users")
            .await,
    )
    .await;
    assert_eq!(completed["tasks"].as_array().unwrap().len(), 3);
    assert_problem(
        app.get("/v1/tasks?status=sleeping").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    // Another organization sees none of them.
    let other = app
        .in_org("acme", reqwest::Method::GET, "/v1/tasks")
        .send()
        .await
        .unwrap();
    assert_eq!(json(other).await["tasks"], json!([]));
}

#[tokio::test]
async fn bad_bulk_requests_change_nothing() {
    let app = spawn_app().await;
    let head = app.head().await;
    let too_many: Vec<String> = (0..100_001).map(|i| format!("u{i}")).collect();
    for (path, body) in [
        ("/v1/users/deactivate", json!({"user_ids": []})),
        ("/v1/users/deactivate", json!({"user_ids": too_many})),
        ("/v1/users/reactivate", json!({})),
        (
            "/v1/users/delete",
            json!({"user_ids": ["a"], "user": "shred"}),
        ),
        (
            "/v1/users/delete",
            json!({"user_ids": ["a"], "mode": "soft"}),
        ),
        ("/v1/users/export", json!({"format": "csv"})),
    ] {
        let response = app.post(path, &body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}"
        );
    }
    assert_eq!(app.head().await, head, "nothing was appended");
}

#[tokio::test]
async fn a_repeated_bulk_request_with_an_idempotency_key_starts_one_task() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("i", 3).await;
    let send = || async {
        let r = app
            .request(reqwest::Method::POST, "/v1/users/deactivate")
            .header("idempotency-key", "bulk-1")
            .json(&json!({"user_ids": ids}))
            .send()
            .await
            .unwrap();
        (r.status(), json(r).await)
    };
    let (s1, b1) = send().await;
    let (s2, b2) = send().await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(b1["task_id"], b2["task_id"]);
    let tasks = json(app.get("/v1/tasks").await).await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn ordinary_commands_keep_their_semantics_during_a_task() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("o", 2000).await;
    let task_id = app
        .start_task("/v1/users/deactivate", &json!({"user_ids": ids}))
        .await;
    // While the task runs, patch some of the same users: every patch lands, no conflict.
    for id in ids.iter().step_by(97) {
        let r = app
            .patch(
                &format!("/v1/users/{id}"),
                &json!({"set": {"custom.touched": true}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(app.wait_task(&task_id).await["progress"]["done"], 2000);
    let head = app.head().await;
    for id in ids.iter().step_by(97) {
        let user = json(app.get_at(&format!("/v1/users/{id}"), head).await).await;
        assert_eq!(user["custom"]["touched"], true);
        assert_eq!(user["status"], "deactivated");
    }
}
