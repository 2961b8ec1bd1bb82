//! A restart over the same data directory keeps everything.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn users_listing_uniqueness_and_positions_survive_a_restart() {
    let app = spawn_app().await;
    let users: Vec<Value> = (0..30)
        .map(|i| json!({"id": format!("u{i:02}"), "username": format!("user{i}"), "name": format!("Person {i}"), "email": format!("u{i}@example.com")}))
        .collect();
    assert_eq!(
        app.post("/v1/users/upsert", &json!({"users": users}))
            .await
            .status(),
        StatusCode::OK
    );
    let renamed = position(
        &app.patch(
            "/v1/users/u07",
            &json!({"set": {"name": "Renamed Seven", "custom.k": "v"}}),
        )
        .await,
    );
    let keyed = app
        .request(reqwest::Method::POST, "/v1/users")
        .header("idempotency-key", "before-restart")
        .json(&json!({"name": "Keyed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), StatusCode::CREATED);
    let keyed = json(keyed).await;
    let before_head = app.head().await;
    let (total, page) = app.snapshot().await;
    let u07 = app.user("u07").await.unwrap();
    let dir = app.stop().await;

    let app = spawn_app_in(dir).await;
    assert_eq!(app.head().await, before_head);
    assert_eq!(
        app.snapshot().await,
        (total, page),
        "every user and the list order are kept"
    );
    assert_eq!(app.user("u07").await.unwrap(), u07);
    assert_eq!(app.list_ids("search=renamed").await, ["u07"]);
    assert_eq!(app.list_ids("usernames=USER12").await, ["u12"]);
    assert_eq!(app.list_ids("emails=U3%40example.com").await, ["u03"]);
    let response = app
        .get(&format!("/v1/users/u07?as_of={}", renamed - 1))
        .await;
    assert_eq!(json(response).await["name"], "Person 7", "history is kept");
    let response = app.get(&format!("/v1/users/u07?as_of={renamed}")).await;
    assert_eq!(json(response).await["name"], "Renamed Seven");
    // Uniqueness reservations and idempotency keys are kept.
    assert_problem(
        app.post("/v1/users", &json!({"username": "User.3"})).await,
        StatusCode::CONFLICT,
        "username_taken",
    )
    .await;
    assert_problem(
        app.post("/v1/users", &json!({"email": "U4@EXAMPLE.COM"}))
            .await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    assert_problem(
        app.post("/v1/users", &json!({"id": "u05"})).await,
        StatusCode::CONFLICT,
        "id_taken",
    )
    .await;
    let again = app
        .request(reqwest::Method::POST, "/v1/users")
        .header("idempotency-key", "before-restart")
        .json(&json!({"name": "Keyed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(json(again).await, keyed);
    assert_eq!(app.head().await, before_head);
    // Positions continue; new writes are read back and listed after the old users.
    let response = app
        .post("/v1/users", &json!({"id": "after", "username": "after"}))
        .await;
    let at = position(&response);
    assert!(at > before_head, "{at} > {before_head}");
    let patched = app
        .patch("/v1/users/u07", &json!({"set": {"name": "Seven Again"}}))
        .await;
    assert_eq!(json(patched).await["version"], 3);
    let last = json(app.get_at("/v1/users?order=desc&limit=1", at).await).await;
    assert_eq!(ids(&last), ["after"]);
    assert_eq!(last["total"], total + 1);
}

#[tokio::test]
async fn settings_survive_a_restart() {
    let app = spawn_app().await;
    let response = app
        .patch("/v1/settings", &json!({"enforce_unique_usernames": "no"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let dir = app.stop().await;
    let app = spawn_app_in(dir).await;
    assert_eq!(
        json(app.get("/v1/settings").await).await["enforce_unique_usernames"],
        "no"
    );
    app.create_user(&json!({"username": "twin"})).await;
    app.create_user(&json!({"username": "twin"})).await;
}
