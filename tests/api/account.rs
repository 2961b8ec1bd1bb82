//! The client's own account and public profiles (docs/contract.md §5).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::sessions::{
    PASSWORD, account_status, as_client, sign_in, try_sign_in, user_with_password,
};

#[tokio::test]
async fn a_client_reads_and_changes_its_own_fields_only() {
    let app = spawn_app().await;
    user_with_password(&app, "alice").await;
    user_with_password(&app, "bob").await;
    app.patch(
        "/v1/users/alice",
        &json!({"set": {"metadata": {"vip": true}, "custom": {"c": 1}}}),
    )
    .await;
    let session = sign_in(&app, "alice").await;
    let token = &session["access_token"];
    let put = |body: Value| {
        as_client(&app, token, Method::PUT, "/v1/account")
            .json(&body)
            .send()
    };
    let response = put(json!({
        "display_name": "Alice L.", "avatar_url": "https://example.com/a.png", "lang_tag": "fr",
        "location": "Paris", "timezone": "Europe/Paris", "username": "alice2"
    }))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let at = position(&response);
    let user = json(response).await;
    assert_eq!(
        (&user["display_name"], &user["username"], &user["timezone"]),
        (&json!("Alice L."), &json!("alice2"), &json!("Europe/Paris"))
    );
    assert_eq!(user["metadata"], json!({"vip": true}), "other fields stay");
    let response = as_client(
        &app,
        token,
        Method::GET,
        &format!("/v1/account?min_position={at}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(json(response).await["location"], "Paris");
    // null removes a field.
    let user = json(put(json!({"location": null})).await.unwrap()).await;
    assert_eq!(user["location"], Value::Null);
    // Anything else is refused whole, with 403, and nothing changes.
    let head = app.head().await;
    for body in [
        json!({"role": "admin"}),
        json!({"metadata": {"vip": false}}),
        json!({"wallet": {"coins": 100}}),
        json!({"status": "active"}),
        json!({"email_verified": true}),
        json!({"phone_verified": true}),
        json!({"email": "x@example.com"}),
        json!({"id": "bob"}),
        json!({"display_name": "ok", "custom": {"c": 2}}),
    ] {
        let response = put(body.clone()).await.unwrap();
        assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    assert_eq!(app.head().await, head);
    // Validation and uniqueness still apply.
    let response = put(json!({"username": "bob"})).await.unwrap();
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    let response = put(json!({"lang_tag": 7})).await.unwrap();
    let problem = assert_invalid(response).await;
    assert_eq!(fields(&problem), ["lang_tag"]);
    let user = app.user("alice").await.unwrap();
    assert_eq!(
        (&user["role"], &user["metadata"]),
        (&json!("user"), &json!({"vip": true}))
    );
    // A server has no account of its own.
    assert_problem(
        app.get("/v1/account").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let response = app
        .anonymous(Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn idempotency_keys_of_clients_never_cross_users() {
    let app = spawn_app().await;
    user_with_password(&app, "carol").await;
    user_with_password(&app, "dave").await;
    let carol = sign_in(&app, "carol").await;
    let dave = sign_in(&app, "dave").await;
    let body = json!({"display_name": "Same"});
    let mut ids = Vec::new();
    for session in [&carol, &dave, &carol] {
        let response = as_client(&app, &session["access_token"], Method::PUT, "/v1/account")
            .header("idempotency-key", "shared-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        ids.push(json(response).await["id"].clone());
    }
    assert_eq!(ids, [json!("carol"), json!("dave"), json!("carol")]);
    assert_eq!(app.user("dave").await.unwrap()["display_name"], "Same");
}

#[tokio::test]
async fn deleting_the_account_soft_deletes_and_signs_out() {
    let app = spawn_app().await;
    user_with_password(&app, "erin").await;
    let session = sign_in(&app, "erin").await;
    let other = sign_in(&app, "erin").await;
    let response = as_client(
        &app,
        &session["access_token"],
        Method::DELETE,
        "/v1/account",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(
        (&body["deleted"], &body["mode"]),
        (&json!("erin"), &json!("soft"))
    );
    assert_eq!(
        account_status(&app, &session).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(account_status(&app, &other).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.user("erin").await.unwrap()["status"], "deleted");
    let response = try_sign_in(&app, &json!({"username": "erin", "password": PASSWORD})).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Restorable by a server, as any soft deletion; then the password works again.
    let response = app
        .post("/v1/users/restore", &json!({"user_ids": ["erin"]}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    sign_in(&app, "erin").await;
}

#[tokio::test]
async fn profiles_are_public_fields_only_for_clients_and_servers() {
    let app = spawn_app().await;
    user_with_password(&app, "frank").await;
    user_with_password(&app, "grace").await;
    app.create_user(&json!({"id": "gone", "username": "gone"}))
        .await;
    app.patch(
        "/v1/users/grace",
        &json!({"set": {"metadata": {"level": 3}, "custom": {"secret": 1}, "prefs": {"p": 1}}}),
    )
    .await;
    app.post(
        "/v1/users/grace/wallet",
        &json!({"changeset": {"coins": 5}}),
    )
    .await;
    app.delete("/v1/users/gone").await;
    let session = sign_in(&app, "frank").await;
    let path = "/v1/profiles?ids=grace&usernames=FRANK&ids=gone&ids=nobody&usernames=grace";
    let from_client = as_client(&app, &session["access_token"], Method::GET, path)
        .send()
        .await
        .unwrap();
    assert_eq!(from_client.status(), StatusCode::OK);
    let from_client = json(from_client).await;
    let from_server = json(app.get(path).await).await;
    assert_eq!(from_client, from_server);
    let users = from_client["users"].as_array().unwrap();
    assert_eq!(ids(&from_client), ["grace", "frank"]);
    let mut keys: Vec<&String> = users[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "avatar_url",
            "created_at",
            "display_name",
            "id",
            "lang_tag",
            "last_seen_at",
            "location",
            "metadata",
            "online",
            "presence_message",
            "timezone",
            "username"
        ]
    );
    assert_eq!(users[0]["metadata"], json!({"level": 3}));
    let response = app
        .anonymous(Method::GET, "/v1/profiles?ids=grace")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
