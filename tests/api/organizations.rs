//! Tenancy: `x-organization-id` separates users, reservations and idempotency keys.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

async fn send(
    app: &TestApp,
    org: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let request = app.in_org(org, method, path);
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    request.send().await.expect("request sent")
}

#[tokio::test]
async fn the_same_id_username_and_email_in_two_organizations_are_independent() {
    let app = spawn_app().await;
    let body =
        json!({"id": "shared", "username": "same", "email": "same@example.com", "name": "Default"});
    app.create_user(&body).await;
    let mut acme_body = body.clone();
    acme_body["name"] = json!("Acme");
    let response = send(&app, "acme", Method::POST, "/v1/users", Some(&acme_body)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let at = position(&response);
    let acme = json(response).await;
    assert_eq!(acme["organization_id"], "acme");
    assert_eq!(acme["version"], 1);

    let patched = send(
        &app,
        "acme",
        Method::PATCH,
        "/v1/users/shared",
        Some(&json!({"set": {"name": "Acme 2"}})),
    )
    .await;
    let at = at.max(position(&patched));
    let default_user = json(app.get_at("/v1/users/shared", at).await).await;
    assert_eq!(
        (
            &default_user["name"],
            &default_user["organization_id"],
            &default_user["version"]
        ),
        (&json!("Default"), &json!("default"), &json!(1))
    );
    let acme_user = json(
        send(
            &app,
            "acme",
            Method::GET,
            &format!("/v1/users/shared?min_position={at}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (&acme_user["name"], &acme_user["version"]),
        (&json!("Acme 2"), &json!(2))
    );
    // Explicit `default` is the default organization.
    let explicit = json(send(&app, "default", Method::GET, "/v1/users/shared", None).await).await;
    assert_eq!(explicit["name"], "Default");
    // Uniqueness still holds inside each organization.
    let response = send(
        &app,
        "acme",
        Method::POST,
        "/v1/users",
        Some(&json!({"username": "SAME"})),
    )
    .await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    let response = send(
        &app,
        "acme",
        Method::POST,
        "/v1/users",
        Some(&json!({"email": "Same@Example.com"})),
    )
    .await;
    assert_problem(response, StatusCode::CONFLICT, "email_taken").await;
    let response = send(
        &app,
        "acme",
        Method::POST,
        "/v1/users",
        Some(&json!({"id": "shared"})),
    )
    .await;
    assert_problem(response, StatusCode::CONFLICT, "id_taken").await;
}

#[tokio::test]
async fn a_user_of_one_organization_is_invisible_from_another() {
    let app = spawn_app().await;
    let response = send(
        &app,
        "org-a",
        Method::POST,
        "/v1/users",
        Some(&json!({"id": "secret", "username": "hidden", "email": "hidden@example.com"})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let at = position(&response);
    for org in ["org-b", "default"] {
        let response = send(
            &app,
            org,
            Method::GET,
            &format!("/v1/users/secret?min_position={at}"),
            None,
        )
        .await;
        assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
        let response = send(
            &app,
            org,
            Method::GET,
            &format!("/v1/users/secret?as_of={at}"),
            None,
        )
        .await;
        assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
        for query in [
            "",
            "search=hid",
            "search=secret",
            "ids=secret",
            "usernames=hidden",
            "emails=hidden%40example.com",
        ] {
            let page = json(
                send(
                    &app,
                    org,
                    Method::GET,
                    &format!("/v1/users?{query}&min_position={at}"),
                    None,
                )
                .await,
            )
            .await;
            assert_eq!(page["total"], 0, "{org} {query}: {page}");
            assert_eq!(page["users"], json!([]));
        }
        let response = send(
            &app,
            org,
            Method::PATCH,
            "/v1/users/secret",
            Some(&json!({"set": {"name": "x"}})),
        )
        .await;
        assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_eq!(app.head().await, at, "nothing was appended");
    // Org A sees it.
    let page = json(send(&app, "org-a", Method::GET, "/v1/users?search=hid", None).await).await;
    assert_eq!(ids(&page), ["secret"]);
    // An upsert of the same id elsewhere creates a separate user rather than replacing it.
    let response = send(
        &app,
        "org-b",
        Method::POST,
        "/v1/users/upsert",
        Some(&json!({"users": [{"id": "secret", "name": "B"}]})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["users"]["secret"]["version"], 1);
    let original = json(
        send(
            &app,
            "org-a",
            Method::GET,
            &format!("/v1/users/secret?min_position={}", app.head().await),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (
            &original["username"],
            &original["name"],
            &original["version"]
        ),
        (&json!("hidden"), &Value::Null, &json!(1))
    );
}

#[tokio::test]
async fn idempotency_keys_belong_to_one_organization() {
    let app = spawn_app().await;
    let body = json!({"name": "Keyed"});
    let mut ids = Vec::new();
    for org in ["one", "two"] {
        let response = app
            .in_org(org, Method::POST, "/v1/users")
            .header("idempotency-key", "k")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        ids.push(json(response).await["id"].clone());
    }
    assert_ne!(ids[0], ids[1]);
    let head = app.head().await;
    for org in ["one", "two"] {
        let page = json(
            send(
                &app,
                org,
                Method::GET,
                &format!("/v1/users?min_position={head}"),
                None,
            )
            .await,
        )
        .await;
        assert_eq!(page["total"], 1);
    }
}
