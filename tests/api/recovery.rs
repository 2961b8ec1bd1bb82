//! Purpose tokens, account recovery and self-service sessions (docs/recovery.md).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::sessions::{
    PASSWORD, account_status, as_client, sign_in, try_sign_in, user_with_password,
};

/// Issues a token of `purpose` for `id` (server key); panics unless 201.
async fn issue(app: &TestApp, id: &str, purpose: &str, ttl: Option<u64>) -> String {
    let mut body = json!({"purpose": purpose});
    if let Some(ttl) = ttl {
        body["ttl_seconds"] = json!(ttl);
    }
    let response = app.post(&format!("/v1/users/{id}/tokens"), &body).await;
    let status = response.status();
    let body = json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["purpose"], purpose);
    assert!(body["expires_at"].is_string(), "{body}");
    body["token"].as_str().expect("a token").to_owned()
}

/// POSTs `body` to `path` without credentials.
async fn anonymous_post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.anonymous(Method::POST, path)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// Asserts the one 401 of a token that does not work; returns its detail.
async fn assert_refused(response: reqwest::Response) -> String {
    let problem = assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    problem["detail"].as_str().unwrap().to_owned()
}

/// The events of `id` of type `kind`.
async fn events_of_type(app: &TestApp, id: &str, kind: &str) -> Vec<Value> {
    app.events_of(id)
        .await
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

#[tokio::test]
async fn tokens_verify_the_contact_reset_the_password_and_sign_in_once() {
    let app = spawn_app().await;
    user_with_password(&app, "alice").await;
    app.patch("/v1/users/alice", &json!({"set": {"phone": "+15550100"}}))
        .await;

    // Email and phone verification: the flag is set, the token works once.
    let token = issue(&app, "alice", "email_verification", None).await;
    let response = anonymous_post(&app, "/v1/account/verification", &json!({"token": token})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let user = json(response).await;
    assert_eq!(user["email_verified"], true, "{user}");
    assert_eq!(user["phone_verified"], false);
    let again = anonymous_post(&app, "/v1/account/verification", &json!({"token": token})).await;
    let used = assert_refused(again).await;
    let phone = issue(&app, "alice", "phone_verification", None).await;
    let response = anonymous_post(&app, "/v1/account/verification", &json!({"token": phone})).await;
    assert_eq!(json(response).await["phone_verified"], true);

    // A password reset ends every session; the old password stops working, the new one works.
    let session = sign_in(&app, "alice").await;
    let reset = issue(&app, "alice", "password_reset", None).await;
    // A reset token is not a verification token, nor a magic link.
    let wrong_kind =
        anonymous_post(&app, "/v1/account/verification", &json!({"token": reset})).await;
    assert_eq!(assert_refused(wrong_kind).await, used);
    let response = anonymous_post(
        &app,
        "/v1/account/password/reset",
        &json!({"token": reset, "password": "a new passphrase"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let account = as_client(&app, &session["access_token"], Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(account.status(), StatusCode::UNAUTHORIZED);
    let old = try_sign_in(&app, &json!({"username": "alice", "password": PASSWORD})).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = try_sign_in(
        &app,
        &json!({"username": "alice", "password": "a new passphrase"}),
    )
    .await;
    assert_eq!(new.status(), StatusCode::CREATED);
    let reused = anonymous_post(
        &app,
        "/v1/account/password/reset",
        &json!({"token": reset, "password": "yet another one"}),
    )
    .await;
    assert_eq!(assert_refused(reused).await, used);

    // A magic link signs in once.
    let magic = issue(&app, "alice", "magic_link", None).await;
    let response = anonymous_post(&app, "/v1/sessions/magic", &json!({"token": magic})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let session = json(response).await;
    assert_eq!(session["user_id"], "alice");
    let me = as_client(&app, &session["access_token"], Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(json(me).await["id"], "alice");
    let twice = anonymous_post(&app, "/v1/sessions/magic", &json!({"token": magic})).await;
    assert_eq!(assert_refused(twice).await, used);

    // What no token looks like, and a token of another user's shape, get the same answer.
    for bad in [
        "nonsense".to_owned(),
        format!("alice.{}", "A".repeat(43)),
        format!("bob.{}", &magic[6..]),
    ] {
        let response = anonymous_post(&app, "/v1/sessions/magic", &json!({"token": bad})).await;
        assert_eq!(assert_refused(response).await, used, "{bad}");
    }

    // The log shows that tokens were issued and used, never a token or its hash.
    let issued = events_of_type(&app, "alice", "TokenIssued").await;
    assert_eq!(issued.len(), 4);
    for event in &issued {
        let data = &event["data"];
        assert_eq!(data["token"], Value::Null, "{event}");
        assert_eq!(data["token_hash"], Value::Null, "{event}");
        assert_eq!(data["redacted"], true, "{event}");
    }
    assert_eq!(events_of_type(&app, "alice", "TokenUsed").await.len(), 4);
    let dir = app.stop().await;
    assert_not_on_disk(
        dir.path(),
        &[&token, &phone, &reset, &magic],
        "after redemption",
    );
}

#[tokio::test]
async fn a_token_dies_when_superseded_expired_or_the_password_or_address_changes() {
    let app = spawn_app().await;
    user_with_password(&app, "bob").await;
    let wrong = format!("bob.{}", "x".repeat(43));
    let response = anonymous_post(&app, "/v1/sessions/magic", &json!({"token": wrong})).await;
    let refused = assert_refused(response).await;

    // Superseded by a newer one of its purpose (the newer one works).
    let first = issue(&app, "bob", "magic_link", None).await;
    let second = issue(&app, "bob", "magic_link", None).await;
    let response = anonymous_post(&app, "/v1/sessions/magic", &json!({"token": first})).await;
    assert_eq!(assert_refused(response).await, refused);
    let response = anonymous_post(&app, "/v1/sessions/magic", &json!({"token": second})).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    // Expired.
    let short = issue(&app, "bob", "magic_link", Some(1)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = anonymous_post(&app, "/v1/sessions/magic", &json!({"token": short})).await;
    assert_eq!(assert_refused(response).await, refused);

    // A password change kills every token.
    let magic = issue(&app, "bob", "magic_link", None).await;
    let reset = issue(&app, "bob", "password_reset", None).await;
    let changed = app
        .patch(
            "/v1/users/bob/password",
            &json!({"password": "changed by an admin"}),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let response = anonymous_post(&app, "/v1/sessions/magic", &json!({"token": magic})).await;
    assert_eq!(assert_refused(response).await, refused);
    let response = anonymous_post(
        &app,
        "/v1/account/password/reset",
        &json!({"token": reset, "password": "whatever it is"}),
    )
    .await;
    assert_eq!(assert_refused(response).await, refused);

    // A verification token verifies only the address it was issued for.
    let verify = issue(&app, "bob", "email_verification", None).await;
    app.patch(
        "/v1/users/bob",
        &json!({"set": {"email": "robert@example.com"}}),
    )
    .await;
    let response =
        anonymous_post(&app, "/v1/account/verification", &json!({"token": verify})).await;
    assert_eq!(assert_refused(response).await, refused);
    assert_eq!(app.user("bob").await.unwrap()["email_verified"], false);

    // A user without a phone number gets no phone token; ttl beyond a day is refused.
    let response = app
        .post(
            "/v1/users/bob/tokens",
            &json!({"purpose": "phone_verification"}),
        )
        .await;
    assert_invalid(response).await;
    let response = app
        .post(
            "/v1/users/bob/tokens",
            &json!({"purpose": "magic_link", "ttl_seconds": 86401}),
        )
        .await;
    assert_invalid(response).await;
    let response = app
        .post("/v1/users/nobody/tokens", &json!({"purpose": "magic_link"}))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Issuing takes the server key: a client cannot.
    let session = sign_in_with(&app, "bob", "changed by an admin").await;
    let response = as_client(
        &app,
        &session["access_token"],
        Method::POST,
        "/v1/users/bob/tokens",
    )
    .json(&json!({"purpose": "magic_link"}))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

async fn sign_in_with(app: &TestApp, username: &str, password: &str) -> Value {
    let response = try_sign_in(app, &json!({"username": username, "password": password})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    json(response).await
}

#[tokio::test]
async fn recovery_answers_alike_for_any_address_and_records_a_sealed_token_once_a_minute() {
    let app = spawn_app().await;
    user_with_password(&app, "carol").await;
    let known = anonymous_post(
        &app,
        "/v1/account/recovery",
        &json!({"email": "CAROL@example.com"}),
    )
    .await;
    let unknown = anonymous_post(
        &app,
        "/v1/account/recovery",
        &json!({"email": "nobody@example.com"}),
    )
    .await;
    let names = |r: &reqwest::Response| {
        let mut names: Vec<String> = r
            .headers()
            .keys()
            .map(|k| k.to_string())
            .filter(|k| k != "date" && k != "x-request-id")
            .collect();
        names.sort();
        names
    };
    assert_eq!(known.status(), StatusCode::ACCEPTED);
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);
    assert_eq!(names(&known), names(&unknown));
    assert!(known.headers().get("x-roster-position").is_none());
    assert_eq!(json(known).await, json!({}));
    assert_eq!(json(unknown).await, json!({}));

    // The token goes out in `PasswordResetRequested`, sealed and redacted in every view.
    let mut requested = Vec::new();
    for _ in 0..100 {
        requested = events_of_type(&app, "carol", "PasswordResetRequested").await;
        if !requested.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(requested.len(), 1, "no PasswordResetRequested");
    let data = &requested[0]["data"];
    assert_eq!(data["purpose"], "password_reset");
    assert_eq!(data["token"], Value::Null);
    assert_eq!(data["redacted"], true);
    let key_id = data["key_id"]
        .as_str()
        .expect("a key of its own")
        .to_owned();

    // Within the minute, a second request issues nothing.
    let again = anonymous_post(
        &app,
        "/v1/account/recovery",
        &json!({"email": "carol@example.com"}),
    )
    .await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        events_of_type(&app, "carol", "PasswordResetRequested")
            .await
            .len(),
        1
    );

    // A server-issued reset supersedes it: the recovery token's key is destroyed.
    issue(&app, "carol", "password_reset", None).await;
    // An expiring one's key is destroyed by the server once it expires.
    let short = issue(&app, "carol", "magic_link", Some(1)).await;
    let issued = events_of_type(&app, "carol", "TokenIssued").await;
    let live_key = issued[0]["data"]["key_id"].as_str().unwrap().to_owned();
    let short_key = issued[1]["data"]["key_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let dir = app.stop().await;
    assert_not_on_disk(dir.path(), &[&short], "after expiry");
    let keys = roster_vault::FileKeyStore::open(&dir.path().join("keys.dat")).unwrap();
    use roster_vault::KeyStore;
    let get = |k: &str| {
        let id: roster_domain::KeyId = k.parse().unwrap();
        let keys = &keys;
        async move { keys.get(id).await.unwrap().is_some() }
    };
    assert!(
        !get(&key_id).await,
        "the superseded token's key is destroyed"
    );
    assert!(
        !get(&short_key).await,
        "the expired token's key is destroyed"
    );
    assert!(get(&live_key).await, "a live token's key is kept");
}

#[tokio::test]
async fn a_client_lists_and_ends_its_own_sessions_only() {
    let app = spawn_app().await;
    user_with_password(&app, "dave").await;
    user_with_password(&app, "erin").await;
    let first = sign_in(&app, "dave").await;
    let second = sign_in(&app, "dave").await;
    let erins = sign_in(&app, "erin").await;
    let page = json(
        as_client(
            &app,
            &first["access_token"],
            Method::GET,
            "/v1/account/sessions",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let listed: Vec<&str> = page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            second["session_id"].as_str().unwrap(),
            first["session_id"].as_str().unwrap()
        ],
        "{page}"
    );
    // Another user's session is not found; one's own ends.
    let path = |s: &Value| format!("/v1/account/sessions/{}", s["session_id"].as_str().unwrap());
    let response = as_client(&app, &first["access_token"], Method::DELETE, &path(&erins))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = as_client(&app, &first["access_token"], Method::DELETE, &path(&second))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let ended = as_client(&app, &second["access_token"], Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::UNAUTHORIZED);
    for session in [&first, &erins] {
        let still = as_client(&app, &session["access_token"], Method::GET, "/v1/account")
            .send()
            .await
            .unwrap();
        assert_eq!(still.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn changing_ones_own_password_keeps_only_the_calling_session() {
    let app = spawn_app().await;
    user_with_password(&app, "frank").await;
    let calling = sign_in(&app, "frank").await;
    let other = sign_in(&app, "frank").await;
    let magic = issue(&app, "frank", "magic_link", None).await;
    let change = |body: Value| {
        as_client(
            &app,
            &calling["access_token"],
            Method::PATCH,
            "/v1/account/password",
        )
        .json(&body)
        .send()
    };

    // A wrong current password: 403, and nothing changes.
    let wrong = change(json!({"current_password": "not it", "password": "my new passphrase"}))
        .await
        .unwrap();
    assert_problem(wrong, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(account_status(&app, &other).await, StatusCode::OK);

    let response = change(json!({"current_password": PASSWORD, "password": "my new passphrase"}))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let renewed = json(response).await;
    assert_eq!(renewed["session_id"], calling["session_id"]);
    // The calling session goes on with its new tokens; every other one has ended, and so have
    // the user's purpose tokens.
    assert_eq!(account_status(&app, &renewed).await, StatusCode::OK);
    assert_eq!(account_status(&app, &other).await, StatusCode::UNAUTHORIZED);
    // Its access token from before the change was replaced by the one in the answer.
    assert_eq!(
        account_status(&app, &calling).await,
        StatusCode::UNAUTHORIZED
    );
    let refreshed = anonymous_post(
        &app,
        "/v1/sessions/refresh",
        &json!({"refresh_token": renewed["refresh_token"]}),
    )
    .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(
        account_status(&app, &json(refreshed).await).await,
        StatusCode::OK
    );
    let response = anonymous_post(&app, "/v1/sessions/magic", &json!({"token": magic})).await;
    assert_refused(response).await;
    // The new password signs in; the old one does not.
    sign_in_with(&app, "frank", "my new passphrase").await;
    let old = try_sign_in(&app, &json!({"username": "frank", "password": PASSWORD})).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    // A server key is not a client: 403.
    let response = app
        .request(Method::PATCH, "/v1/account/password")
        .json(&json!({"current_password": PASSWORD, "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}
