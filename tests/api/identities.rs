//! Linked identities (docs/identities.md): unique per organization, looked up by
//! `identity=provider:subject`, released by unlinking or erasing the user, and a custom token
//! for an identity signs its holder in — or signs a new holder up.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

impl TestApp {
    async fn link(&self, user: &str, provider: &str, subject: &str) -> reqwest::Response {
        self.post(
            &format!("/v1/users/{user}/identities"),
            &json!({"provider": provider, "subject": subject}),
        )
        .await
    }
}

async fn sign_in_by_identity(app: &TestApp, provider: &str, subject: &str) -> Value {
    let minted = app
        .post(
            "/v1/tokens/custom",
            &json!({"identity": {"provider": provider, "subject": subject}}),
        )
        .await;
    assert_eq!(minted.status(), StatusCode::OK);
    let minted = json(minted).await;
    assert!(minted["user_id"].is_null());
    let response = app
        .anonymous(Method::POST, "/v1/tokens/signin")
        .json(&json!({"token": minted["token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

#[tokio::test]
async fn identities_are_unique_looked_up_and_released() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "ann", "username": "ann"}))
        .await;
    app.create_user(&json!({"id": "ben"})).await;
    let response = app.link("ann", "facebook", "10001").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let user = json(response).await;
    assert_eq!(
        user["identities"],
        json!([{"provider": "facebook", "subject": "10001"}])
    );
    let head = app.head().await;
    let taken = app.link("ben", "facebook", "10001").await;
    assert_problem(taken, StatusCode::CONFLICT, "identity_taken").await;
    for (provider, subject) in [
        ("Face Book", "1"),
        ("facebook", ""),
        ("x".repeat(33).as_str(), "1"),
        ("g", "a\u{1}b"),
    ] {
        assert_invalid(app.link("ben", provider, subject).await).await;
    }
    assert_problem(
        app.link("nobody", "google", "1").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(app.head().await, head, "refusals append nothing");
    // The same identity under another provider is another identity.
    assert_eq!(
        app.link("ben", "google", "10001").await.status(),
        StatusCode::CREATED
    );
    // Linking again changes nothing.
    assert_eq!(
        app.link("ann", "facebook", "10001").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(app.user("ann").await.unwrap()["version"], 2);

    assert_eq!(app.list_ids("identity=facebook:10001").await, ["ann"]);
    assert_eq!(
        app.list_ids("identity=facebook:10001&identity=google:10001")
            .await,
        ["ann", "ben"]
    );
    assert!(app.list_ids("identity=facebook:99").await.is_empty());
    assert_invalid(app.get("/v1/users?identity=nocolon").await).await;
    let profiles = json(app.get("/v1/profiles?identity=google:10001").await).await;
    assert_eq!(profiles["users"][0]["id"], "ben");
    assert!(
        profiles["users"][0].get("identities").is_none(),
        "profiles never show identities"
    );

    // Unlinking frees it for someone else; unlinking what is not linked is 404.
    let unlinked = app.delete("/v1/users/ann/identities/facebook/10001").await;
    assert_eq!(json(unlinked).await["identities"], json!([]));
    assert_problem(
        app.delete("/v1/users/ann/identities/facebook/10001").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        app.link("ben", "facebook", "10001").await.status(),
        StatusCode::CREATED
    );
    // Pruning erases and releases a user's identities; a soft deletion keeps them.
    assert_eq!(
        app.delete("/v1/users/ben?mode=soft").await.status(),
        StatusCode::OK
    );
    assert_problem(
        app.link("ann", "facebook", "10001").await,
        StatusCode::CONFLICT,
        "identity_taken",
    )
    .await;
    assert_eq!(
        app.delete("/v1/users/ben?mode=pruning").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.link("ann", "facebook", "10001").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.link("ann", "google", "10001").await.status(),
        StatusCode::CREATED
    );
    let events = app.events_of("ann").await;
    let linked = events
        .iter()
        .find(|e| e["type"] == "IdentityLinked")
        .unwrap();
    assert_eq!(linked["data"]["subject"], "10001");
}

#[tokio::test]
async fn a_token_for_an_identity_signs_its_holder_in_or_a_new_holder_up() {
    let app = spawn_app().await;
    let first = sign_in_by_identity(&app, "device", "phone-1").await;
    let id = first["user_id"].as_str().unwrap().to_owned();
    let user = app.user(&id).await.unwrap();
    assert_eq!(
        user["identities"],
        json!([{"provider": "device", "subject": "phone-1"}])
    );
    assert_eq!(
        app.list_ids("identity=device:phone-1").await,
        vec![id.clone()]
    );
    // Again: the same user, not a new one.
    let second = sign_in_by_identity(&app, "device", "phone-1").await;
    assert_eq!(second["user_id"], id.as_str());
    assert_eq!(app.list("").await["total"], 1);
    // An identity linked by the server signs that user in.
    app.create_user(&json!({"id": "carol"})).await;
    assert_eq!(
        app.link("carol", "steam", "765").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        sign_in_by_identity(&app, "steam", "765").await["user_id"],
        "carol"
    );
    let neither = app.post("/v1/tokens/custom", &json!({})).await;
    assert_invalid(neither).await;
    let both = app
        .post(
            "/v1/tokens/custom",
            &json!({"user_id": "carol", "identity": {"provider": "steam", "subject": "765"}}),
        )
        .await;
    assert_invalid(both).await;
}
