//! Racing requests: uniqueness holds under any concurrency; concurrent changes all land.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

const RACERS: usize = 20;

/// Sends every body to `POST /v1/users` at once; returns the statuses and bodies.
async fn race_creates(
    app: &TestApp,
    bodies: Vec<serde_json::Value>,
) -> Vec<(StatusCode, serde_json::Value)> {
    join_all(bodies.iter().map(|body| async move {
        let response = app.post("/v1/users", body).await;
        (response.status(), json(response).await)
    }))
    .await
}

fn count(
    results: &[(StatusCode, serde_json::Value)],
    status: StatusCode,
    code: Option<&str>,
) -> usize {
    results
        .iter()
        .filter(|(s, b)| *s == status && code.is_none_or(|c| b["code"] == c))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_colliding_usernames_give_exactly_one_user() {
    let app = spawn_app().await;
    let spellings = [
        "race.name",
        "RACE_NAME",
        "RaceName",
        "race-name",
        "racename",
    ];
    let bodies = (0..RACERS)
        .map(|i| json!({"username": spellings[i % spellings.len()]}))
        .collect();
    let results = race_creates(&app, bodies).await;
    assert_eq!(count(&results, StatusCode::CREATED, None), 1, "{results:?}");
    assert_eq!(
        count(&results, StatusCode::CONFLICT, Some("username_taken")),
        RACERS - 1,
        "{results:?}"
    );
    let winner = results
        .iter()
        .find(|(s, _)| *s == StatusCode::CREATED)
        .unwrap()
        .1["id"]
        .clone();
    let page = app.list("usernames=racename").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["users"][0]["id"], winner);
    assert_eq!(app.list("").await["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_of_one_id_give_exactly_one_user() {
    let app = spawn_app().await;
    let bodies = (0..RACERS)
        .map(|i| json!({"id": "same-id", "name": format!("racer {i}")}))
        .collect();
    let results = race_creates(&app, bodies).await;
    assert_eq!(count(&results, StatusCode::CREATED, None), 1, "{results:?}");
    assert_eq!(
        count(&results, StatusCode::CONFLICT, Some("id_taken")),
        RACERS - 1,
        "{results:?}"
    );
    let winner = &results
        .iter()
        .find(|(s, _)| *s == StatusCode::CREATED)
        .unwrap()
        .1;
    let stored = app.user("same-id").await.unwrap();
    assert_eq!(stored["name"], winner["name"]);
    assert_eq!(stored["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_of_one_email_give_exactly_one_user() {
    let app = spawn_app().await;
    let bodies = (0..RACERS)
        .map(|i| json!({"email": if i % 2 == 0 { "race@example.com" } else { "RACE@Example.COM" }}))
        .collect();
    let results = race_creates(&app, bodies).await;
    assert_eq!(count(&results, StatusCode::CREATED, None), 1, "{results:?}");
    assert_eq!(
        count(&results, StatusCode::CONFLICT, Some("email_taken")),
        RACERS - 1,
        "{results:?}"
    );
    assert_eq!(app.list("").await["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_renames_to_one_username_give_it_to_exactly_one_user() {
    let app = spawn_app().await;
    let users: Vec<serde_json::Value> = (0..RACERS)
        .map(|i| json!({"id": format!("r{i}"), "username": format!("before{i}")}))
        .collect();
    assert_eq!(
        app.post("/v1/users/upsert", &json!({"users": users}))
            .await
            .status(),
        StatusCode::OK
    );
    let results = join_all((0..RACERS).map(|i| {
        let app = &app;
        async move {
            let response = app
                .patch(
                    &format!("/v1/users/r{i}"),
                    &json!({"set": {"username": "The.Winner"}}),
                )
                .await;
            response.status()
        }
    }))
    .await;
    assert_eq!(
        results.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        RACERS - 1,
        "{results:?}"
    );
    assert_eq!(app.list("usernames=thewinner").await["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_of_one_user_all_land() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "busy"})).await;
    let results = join_all((0..RACERS).map(|i| {
        let app = &app;
        async move {
            app.patch(
                "/v1/users/busy",
                &json!({"set": {format!("custom.k{i}"): i}}),
            )
            .await
            .status()
        }
    }))
    .await;
    assert!(results.iter().all(|s| *s == StatusCode::OK), "{results:?}");
    let user = app.user("busy").await.unwrap();
    assert_eq!(user["version"], RACERS as u64 + 1);
    assert_eq!(user["custom"].as_object().unwrap().len(), RACERS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_with_the_same_if_match_give_one_winner() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "cas"})).await;
    let results = join_all((0..10).map(|i| {
        let app = &app;
        async move {
            app.request(Method::PATCH, "/v1/users/cas")
                .header("if-match", "\"1\"")
                .json(&json!({"set": {"name": format!("writer {i}")}}))
                .send()
                .await
                .unwrap()
                .status()
        }
    }))
    .await;
    assert_eq!(
        results.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results
            .iter()
            .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
            .count(),
        9,
        "{results:?}"
    );
    assert_eq!(app.user("cas").await.unwrap()["version"], 2);
}
