//! Guests and anonymous tokens (docs/guests.md): off until allowed, rate limited, a guest is a
//! user with a session at once that upgrades in place, stops working at its expiry and is
//! pruned by the server; an anonymous token reads public profiles only.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::sessions::{account_status, as_client};

async fn allow(app: &TestApp, settings: Value) {
    assert_eq!(
        app.patch("/v1/settings", &settings).await.status(),
        StatusCode::OK
    );
}

async fn new_guest(app: &TestApp, body: Value) -> reqwest::Response {
    app.anonymous(Method::POST, "/v1/guests")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_guest_starts_signed_in_and_upgrades_in_place() {
    let app = spawn_app().await;
    assert_problem(
        new_guest(&app, json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    allow(&app, json!({"allow_guests": true})).await;
    for bad in [
        json!({"ttl_seconds": 0}),
        json!({"ttl_seconds": 2_592_001}),
        json!({"role": "admin"}),
    ] {
        assert_invalid(new_guest(&app, bad).await).await;
    }
    let response = new_guest(
        &app,
        json!({"display_name": "Visitor", "ttl_seconds": 3600}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let guest = json(response).await;
    let id = guest["user_id"].as_str().unwrap().to_owned();
    assert_eq!(guest["user"]["id"], id.as_str());
    assert_eq!(guest["user"]["role"], "guest");
    assert_eq!(guest["user"]["display_name"], "Visitor");
    assert_eq!(account_status(&app, &guest).await, StatusCode::OK);
    assert_eq!(app.list("role=guest").await["total"], 1);
    // The upgrade claims a username like any other: a taken one is refused.
    app.create_user(&json!({"id": "taken", "username": "alice"}))
        .await;
    let upgrade = |body: Value| {
        as_client(
            &app,
            &guest["access_token"],
            Method::POST,
            "/v1/account/upgrade",
        )
        .json(&body)
        .send()
    };
    let refused = upgrade(json!({"username": "Alice", "password": "correct horse"}))
        .await
        .unwrap();
    assert_problem(refused, StatusCode::CONFLICT, "username_taken").await;
    let short = upgrade(json!({"username": "vis", "password": "short"}))
        .await
        .unwrap();
    assert_invalid(short).await;
    let done = upgrade(
        json!({"username": "visitor", "email": "v@example.com", "password": "correct horse"}),
    )
    .await
    .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let user = json(done).await;
    assert_eq!(
        (user["id"].as_str(), user["role"].as_str()),
        (Some(id.as_str()), Some("user"))
    );
    assert_eq!(
        (user["username"].as_str(), user["email_verified"].as_bool()),
        (Some("visitor"), Some(false))
    );
    let types: Vec<Value> = app
        .events_of(&id)
        .await
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(types, ["UserCreated", "GuestExpirySet", "GuestUpgraded"]);
    // No longer a guest: a second upgrade is refused, and the password signs in.
    let again = upgrade(json!({"username": "other", "password": "correct horse"}))
        .await
        .unwrap();
    assert_problem(again, StatusCode::FORBIDDEN, "forbidden").await;
    let signed_in = app
        .anonymous(Method::POST, "/v1/sessions")
        .json(&json!({"username": "visitor", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_expired_guest_stops_working_at_once_and_is_pruned() {
    let app = spawn_app().await;
    allow(&app, json!({"allow_guests": true})).await;
    let guest =
        json(new_guest(&app, json!({"display_name": "Brief", "ttl_seconds": 2})).await).await;
    let keeper = json(new_guest(&app, json!({"ttl_seconds": 3600})).await).await;
    let id = guest["user_id"].as_str().unwrap().to_owned();
    assert_eq!(account_status(&app, &guest).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        account_status(&app, &guest).await,
        StatusCode::UNAUTHORIZED,
        "at once, swept or not"
    );
    let refresh = app
        .anonymous(Method::POST, "/v1/sessions/refresh")
        .json(&json!({"refresh_token": guest["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    // The server prunes it on its own (it sweeps every 15 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let user = app.user(&id).await.unwrap();
        if user["status"] == "deleted" {
            assert!(user["display_name"].is_null(), "pruning erased it: {user}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not pruned: {user}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let deleted = app
        .events_of(&id)
        .await
        .into_iter()
        .find(|e| e["type"] == "UserDeleted")
        .unwrap();
    assert_eq!(deleted["data"]["mode"], "pruning");
    assert_eq!(deleted["metadata"]["actor"], "system:guest-sweep");
    assert_eq!(
        account_status(&app, &keeper).await,
        StatusCode::OK,
        "an unexpired guest stays"
    );
}

#[tokio::test]
async fn creation_is_rate_limited_per_address() {
    let app = spawn_app_with(tempfile::tempdir().unwrap(), |c| {
        c.guest_limits.per_address_per_minute = 3;
    })
    .await;
    allow(&app, json!({"allow_guests": true, "allow_anonymous": true})).await;
    for _ in 0..2 {
        assert_eq!(
            new_guest(&app, json!({})).await.status(),
            StatusCode::CREATED
        );
    }
    let anonymous = app
        .anonymous(Method::POST, "/v1/sessions/anonymous")
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        StatusCode::CREATED,
        "guests and anonymous sessions share the budget"
    );
    let limited = new_guest(&app, json!({})).await;
    assert!(limited.headers().get("retry-after").is_some());
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(
        app.list("role=guest").await["total"],
        2,
        "the refused one created nothing"
    );
}

#[tokio::test]
async fn an_anonymous_token_reads_public_profiles_and_nothing_else() {
    let app = spawn_app().await;
    let refused = app
        .anonymous(Method::POST, "/v1/sessions/anonymous")
        .send()
        .await
        .unwrap();
    assert_problem(refused, StatusCode::FORBIDDEN, "forbidden").await;
    allow(&app, json!({"allow_anonymous": true})).await;
    let response = app
        .anonymous(Method::POST, "/v1/sessions/anonymous")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let token = json(response).await["access_token"].clone();
    app.create_user(&json!({"id": "pub", "username": "pub", "email": "pub@example.com"}))
        .await;
    let head = app.head().await;
    let profiles = as_client(&app, &token, Method::GET, "/v1/profiles?ids=pub")
        .send()
        .await
        .unwrap();
    assert_eq!(profiles.status(), StatusCode::OK);
    let profile = &json(profiles).await["users"][0];
    assert_eq!(profile["username"], "pub");
    assert!(profile.get("email").is_none());
    // Every other client and server route refuses it.
    let document = json(app.get("/openapi.json").await).await;
    let mut tried = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            if path == "/v1/profiles" || path == "/v1/presence/stream" {
                continue;
            }
            let concrete = path.replace("{id}", "pub").replace(['{', '}'], "");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Endpoints anyone may call (signing in, health) are not the token's to refuse.
            let bare = app
                .anonymous(method.clone(), &concrete)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            if bare.status() != StatusCode::UNAUTHORIZED {
                continue;
            }
            let status = as_client(&app, &token, method.clone(), &concrete)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
            tried += 1;
        }
    }
    assert!(tried > 50, "tried {tried} routes");
    assert_eq!(app.head().await, head, "nothing was written");
}
