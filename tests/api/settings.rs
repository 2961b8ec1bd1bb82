//! `GET`/`PATCH /v1/settings`: `enforce_unique_usernames`.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

async fn set_unique_usernames(app: &TestApp, value: &str) -> u64 {
    let response = app
        .patch("/v1/settings", &json!({"enforce_unique_usernames": value}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let at = position(&response);
    let body = json(response).await;
    assert_eq!(body["enforce_unique_usernames"], value);
    assert_eq!(body["position"], at);
    at
}

#[tokio::test]
async fn usernames_are_unique_by_default() {
    let app = spawn_app().await;
    let settings = json(app.get("/v1/settings").await).await;
    assert_eq!(settings["enforce_unique_usernames"], "app");
}

#[tokio::test]
async fn no_allows_duplicates_and_app_keeps_them_but_enforces_from_then_on() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "a", "username": "dup"}))
        .await;
    set_unique_usernames(&app, "no").await;
    assert_eq!(
        json(app.get("/v1/settings").await).await["enforce_unique_usernames"],
        "no"
    );
    app.create_user(&json!({"id": "b", "username": "DUP"}))
        .await;
    app.create_user(&json!({"id": "c", "username": "other", "email": "c@example.com"}))
        .await;
    app.create_user(&json!({"id": "d", "username": "Other"}))
        .await;
    // Emails stay unique whatever the setting.
    let response = app
        .post("/v1/users", &json!({"email": "C@example.com"}))
        .await;
    assert_problem(response, StatusCode::CONFLICT, "email_taken").await;

    set_unique_usernames(&app, "app").await;
    let page = app.list("usernames=dup").await;
    assert_eq!(ids(&page), ["a", "b"], "existing duplicates are kept");
    assert_eq!(app.list_ids("usernames=other").await, ["c", "d"]);
    let head = app.head().await;
    for name in ["d.u.p", "OTHER", "dup"] {
        let response = app.post("/v1/users", &json!({"username": name})).await;
        assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    }
    let response = app
        .patch("/v1/users/c", &json!({"set": {"username": "D_U_P"}}))
        .await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    assert_eq!(app.head().await, head);
    // The duplicates themselves can still be changed, and can move to a free username.
    let user = json(
        app.patch("/v1/users/b", &json!({"set": {"name": "Bee"}}))
            .await,
    )
    .await;
    assert_eq!(
        (&user["username"], &user["name"]),
        (&json!("DUP"), &json!("Bee"))
    );
    let user = json(
        app.patch("/v1/users/b", &json!({"set": {"username": "bee"}}))
            .await,
    )
    .await;
    assert_eq!(user["username"], "bee");
    // `a` still holds `dup`.
    let response = app.post("/v1/users", &json!({"username": "Dup"})).await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    let response = app.post("/v1/users", &json!({"username": "B.E.E"})).await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
}

#[tokio::test]
async fn invalid_settings_are_422_and_change_nothing() {
    let app = spawn_app().await;
    for body in [
        json!({"enforce_unique_usernames": "sometimes"}),
        json!({"enforce_unique_usernames": true}),
        json!({"unique": "no"}),
    ] {
        let response = app.patch("/v1/settings", &body).await;
        assert_invalid(response).await;
    }
    let response = app
        .request(Method::PATCH, "/v1/settings")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(app.head().await, 0);
    assert_eq!(
        json(app.get("/v1/settings").await).await["enforce_unique_usernames"],
        "app"
    );
}

#[tokio::test]
async fn setting_the_current_value_changes_nothing() {
    let app = spawn_app().await;
    let response = app
        .patch("/v1/settings", &json!({"enforce_unique_usernames": "app"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["enforce_unique_usernames"], "app");
    let response = app.patch("/v1/settings", &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.head().await, 0);
    let at = set_unique_usernames(&app, "no").await;
    app.create_user(&json!({"id": "later"})).await;
    let response = app
        .patch("/v1/settings", &json!({"enforce_unique_usernames": "no"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        position(&response),
        at,
        "the position of the last settings change"
    );
    let body = json(response).await;
    assert_eq!(
        (&body["enforce_unique_usernames"], &body["position"]),
        (&json!("no"), &json!(at))
    );
    assert_eq!(app.head().await, at + 1, "nothing was appended");
}

#[tokio::test]
async fn settings_belong_to_one_organization() {
    let app = spawn_app().await;
    set_unique_usernames(&app, "no").await;
    let other = app
        .in_org("other-org", Method::GET, "/v1/settings")
        .send()
        .await
        .unwrap();
    assert_eq!(json(other).await["enforce_unique_usernames"], "app");
    app.create_user(&json!({"username": "twin"})).await;
    app.create_user(&json!({"username": "twin"})).await;
    let create = |id: &'static str| {
        app.in_org("other-org", Method::POST, "/v1/users")
            .json(&json!({"id": id, "username": "twin"}))
            .send()
    };
    assert_eq!(create("x").await.unwrap().status(), StatusCode::CREATED);
    assert_problem(
        create("y").await.unwrap(),
        StatusCode::CONFLICT,
        "username_taken",
    )
    .await;
}

/// Duplicates kept from a `no` period share the username's reservation: whichever of them
/// renames or is deleted first, the others still protect the name under `app`; only when the
/// last of them lets it go may someone else take it.
#[tokio::test]
async fn a_kept_duplicate_stays_protected_after_the_holder_renames() {
    let app = spawn_app().await;
    set_unique_usernames(&app, "no").await;
    app.create_user(&json!({"id": "holder", "username": "dup"}))
        .await;
    app.create_user(&json!({"id": "duplicate", "username": "dup"}))
        .await;
    app.create_user(&json!({"id": "third", "username": "D.U.P"}))
        .await;
    set_unique_usernames(&app, "app").await;
    let response = app
        .patch("/v1/users/holder", &json!({"set": {"username": "renamed"}}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // `duplicate` and `third` still have `dup`: under `app`, nobody else may take it.
    let response = app.post("/v1/users", &json!({"username": "DUP"})).await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    let response = app
        .patch("/v1/users/holder", &json!({"set": {"username": "dup"}}))
        .await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;

    // One more lets it go by deletion, the last by renaming: then it is free.
    let response = app.delete("/v1/users/duplicate?mode=hard").await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.post("/v1/users", &json!({"username": "dup"})).await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    let response = app
        .patch("/v1/users/third", &json!({"unset": ["username"]}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .post("/v1/users", &json!({"id": "newcomer", "username": "Dup"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    // And it is enforced again for the newcomer.
    let response = app.post("/v1/users", &json!({"username": "dup"})).await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
}
