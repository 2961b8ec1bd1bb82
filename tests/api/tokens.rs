//! Custom tokens (docs/contract.md §5): minted by a server, used once by a client to sign in,
//! signing the user up if the id is new.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::sessions::{account_status, as_client, sign_in, user_with_password};

async fn custom_token(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/tokens/custom", &body).await;
    let status = response.status();
    let body = json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].clone()
}

async fn token_sign_in(app: &TestApp, token: &Value) -> reqwest::Response {
    app.anonymous(Method::POST, "/v1/tokens/signin")
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_custom_token_signs_a_new_user_up_once() {
    let app = spawn_app().await;
    let token = custom_token(&app, json!({"user_id": "player-1"})).await;
    assert!(app.user("player-1").await.is_none());
    let response = token_sign_in(&app, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let session = json(response).await;
    assert_eq!(session["user_id"], "player-1");
    assert_eq!(account_status(&app, &session).await, StatusCode::OK);
    let user = app.user("player-1").await.unwrap();
    assert_eq!(
        (&user["status"], &user["version"]),
        (&json!("active"), &json!(1))
    );
    let sessions = json(app.get("/v1/users/player-1/sessions").await).await;
    assert_eq!(sessions["sessions"][0]["method"], "custom_token");
    // Single use.
    let response = token_sign_in(&app, &token).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // A new token for the now existing user signs it in without changing it.
    let again = token_sign_in(
        &app,
        &custom_token(&app, json!({"user_id": "player-1", "ttl_seconds": 60})).await,
    )
    .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(app.user("player-1").await.unwrap()["version"], 1);
    // Refresh works as for any session.
    let response = app
        .anonymous(Method::POST, "/v1/sessions/refresh")
        .json(&json!({"refresh_token": session["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_sign_ins_with_one_token_succeed_once() {
    let app = spawn_app().await;
    let token = custom_token(&app, json!({"user_id": "racer"})).await;
    let results = futures::future::join_all((0..6).map(|_| token_sign_in(&app, &token))).await;
    let statuses: Vec<StatusCode> = results.iter().map(|r| r.status()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| matches!(*s, StatusCode::OK | StatusCode::UNAUTHORIZED))
    );
    assert_eq!(app.user("racer").await.unwrap()["version"], 1);
}

#[tokio::test]
async fn custom_tokens_are_checked() {
    let app = spawn_app().await;
    user_with_password(&app, "blocked").await;
    app.patch("/v1/users/blocked/status", &json!({"status": false}))
        .await;
    let token = custom_token(&app, json!({"user_id": "blocked"})).await;
    assert_problem(
        token_sign_in(&app, &token).await,
        StatusCode::FORBIDDEN,
        "user_blocked",
    )
    .await;
    for body in [
        json!({"user_id": "ok", "ttl_seconds": 3601}),
        json!({"user_id": "ok", "ttl_seconds": 0}),
        json!({"user_id": "-bad"}),
    ] {
        let response = app.post("/v1/tokens/custom", &body).await;
        assert_invalid(response).await;
    }
    // Minting needs a server key.
    let response = app
        .anonymous(Method::POST, "/v1/tokens/custom")
        .json(&json!({"user_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    user_with_password(&app, "client").await;
    let session = sign_in(&app, "client").await;
    let response = as_client(
        &app,
        &session["access_token"],
        Method::POST,
        "/v1/tokens/custom",
    )
    .json(&json!({"user_id": "client"}))
    .send()
    .await
    .unwrap();
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    // Access tokens and garbage are not custom tokens.
    for token in [session["access_token"].clone(), json!("not.a.token")] {
        assert_problem(
            token_sign_in(&app, &token).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    // A custom token is not an access token either.
    let token = custom_token(&app, json!({"user_id": "client"})).await;
    let response = as_client(&app, &token, Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // A token minted for one organization does not sign in to another.
    let other = {
        let response = app
            .in_org("acme", Method::POST, "/v1/tokens/custom")
            .json(&json!({"user_id": "client"}))
            .send()
            .await
            .unwrap();
        json(response).await["token"].clone()
    };
    let response = app
        .anonymous(Method::POST, "/v1/tokens/signin")
        .header("x-organization-id", "other")
        .json(&json!({"token": other}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let response = token_sign_in(&app, &other).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the token's own organization"
    );
    assert_eq!(json(response).await["user_id"], "client");
    let response = app
        .in_org("acme", Method::GET, "/v1/users/client")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "signed up in acme");
}
