//! Unique usernames (normalized), emails (case-insensitive) and ids, on create and on patch.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn usernames_collide_by_normalized_form() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "john", "username": "john.doe"}))
        .await;
    let head = app.head().await;
    for variant in [
        "john.doe",
        "JOHN_DOE",
        "JohnDoe",
        "john-doe",
        "j.o.h.n.d.o.e",
        "Ｊｏｈｎ－Ｄｏｅ",
    ] {
        let response = app.post("/v1/users", &json!({"username": variant})).await;
        let problem = assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
        assert_eq!(fields(&problem), ["username"], "{variant}: {problem}");
    }
    // A space is not allowed in a username at all.
    let response = app
        .post("/v1/users", &json!({"username": "John Doe"}))
        .await;
    assert_invalid(response).await;
    assert_eq!(app.head().await, head, "nothing was appended");
    assert_eq!(app.list_ids("").await, ["john"]);
    // Names that normalize differently are free.
    app.create_user(&json!({"username": "john.doe2"})).await;
    app.create_user(&json!({"username": "jon.doe"})).await;
}

#[tokio::test]
async fn emails_collide_case_insensitively() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "a", "email": "Alice@Example.com"}))
        .await;
    let head = app.head().await;
    for variant in [
        "alice@example.com",
        "ALICE@EXAMPLE.COM",
        "Alice@Example.com",
    ] {
        let response = app.post("/v1/users", &json!({"email": variant})).await;
        let problem = assert_problem(response, StatusCode::CONFLICT, "email_taken").await;
        assert_eq!(fields(&problem), ["email"]);
    }
    assert_eq!(app.head().await, head);
    app.create_user(&json!({"email": "alice@example.org"}))
        .await;
    app.create_user(&json!({"email": "alice.l@example.com"}))
        .await;
}

#[tokio::test]
async fn an_id_taken_is_409_and_the_user_is_untouched() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "dup", "name": "First", "username": "first"}))
        .await;
    let head = app.head().await;
    let response = app
        .post(
            "/v1/users",
            &json!({"id": "dup", "name": "Second", "username": "second"}),
        )
        .await;
    assert_problem(response, StatusCode::CONFLICT, "id_taken").await;
    assert_eq!(app.head().await, head);
    let user = app.user("dup").await.unwrap();
    assert_eq!(
        (&user["name"], &user["version"]),
        (&json!("First"), &json!(1))
    );
    // The refused create claimed nothing: its username is still free.
    app.create_user(&json!({"username": "second"})).await;
}

#[tokio::test]
async fn a_patched_username_frees_the_old_one_and_checks_the_new_one() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "a", "username": "first", "email": "a@example.com"}))
        .await;
    app.create_user(&json!({"id": "b", "username": "second", "email": "b@example.com"}))
        .await;
    let head = app.head().await;
    let response = app
        .patch("/v1/users/a", &json!({"set": {"username": "SECOND"}}))
        .await;
    let problem = assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    assert_eq!(fields(&problem), ["username"]);
    let response = app
        .patch("/v1/users/b", &json!({"set": {"email": "A@EXAMPLE.COM"}}))
        .await;
    assert_problem(response, StatusCode::CONFLICT, "email_taken").await;
    assert_eq!(app.head().await, head, "nothing was appended");
    assert_eq!(app.user("a").await.unwrap()["username"], "first");
    assert_eq!(app.user("b").await.unwrap()["email"], "b@example.com");

    let user = json(
        app.patch(
            "/v1/users/a",
            &json!({"set": {"username": "third", "email": "a2@example.com"}}),
        )
        .await,
    )
    .await;
    assert_eq!(user["username"], "third");
    // The old values are free for anyone; the new ones are held.
    app.create_user(&json!({"id": "c", "username": "First", "email": "a@example.com"}))
        .await;
    let response = app.post("/v1/users", &json!({"username": "third"})).await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    let response = app
        .post("/v1/users", &json!({"email": "a2@example.com"}))
        .await;
    assert_problem(response, StatusCode::CONFLICT, "email_taken").await;
    // Unsetting (or nulling) frees as well.
    app.patch(
        "/v1/users/a",
        &json!({"unset": ["username"], "set": {"email": null}}),
    )
    .await;
    app.create_user(&json!({"username": "third", "email": "a2@example.com"}))
        .await;
}

#[tokio::test]
async fn a_user_may_change_the_spelling_of_its_own_username_and_email() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "a", "username": "john.doe", "email": "john@example.com"}))
        .await;
    let response = app
        .patch(
            "/v1/users/a",
            &json!({"set": {"username": "John_Doe", "email": "John@Example.COM"}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let user = json(response).await;
    assert_eq!(
        (&user["username"], &user["email"]),
        (&json!("John_Doe"), &json!("John@Example.COM"))
    );
    let response = app.post("/v1/users", &json!({"username": "johndoe"})).await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    let response = app
        .post("/v1/users", &json!({"email": "JOHN@example.com"}))
        .await;
    assert_problem(response, StatusCode::CONFLICT, "email_taken").await;
}

#[tokio::test]
async fn lookups_find_users_by_any_spelling() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "a", "username": "Mary.Jane", "email": "MJ@Example.com"}))
        .await;
    assert_eq!(app.list_ids("usernames=maryjane").await, ["a"]);
    assert_eq!(app.list_ids("usernames=MARY_JANE").await, ["a"]);
    assert_eq!(app.list_ids("emails=mj%40example.COM").await, ["a"]);
    let page = app.list("usernames=mary").await;
    assert_eq!(page["users"], Value::Array(vec![]));
}
