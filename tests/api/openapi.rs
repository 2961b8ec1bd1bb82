//! `GET /openapi.json` and `GET /docs` (docs/contract.md §7): the document covers every route the
//! server answers, and only those.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{TestApp, json, spawn_app};

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// The contract's routes (docs/contract.md §3–§7), kept by hand: each one the server serves must be
/// in the document.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/v1/users"),
    ("post", "/v1/users/upsert"),
    ("patch", "/v1/users"),
    ("patch", "/v1/users/{id}"),
    ("get", "/v1/users/{id}"),
    ("get", "/v1/users"),
    ("patch", "/v1/users/{id}/email"),
    ("patch", "/v1/users/{id}/name"),
    ("patch", "/v1/users/{id}/password"),
    ("patch", "/v1/users/{id}/phone"),
    ("get", "/v1/users/{id}/prefs"),
    ("patch", "/v1/users/{id}/prefs"),
    ("patch", "/v1/users/{id}/status"),
    ("patch", "/v1/users/{id}/verification"),
    ("patch", "/v1/users/{id}/verification/phone"),
    ("post", "/v1/users/{id}/deactivate"),
    ("post", "/v1/users/{id}/reactivate"),
    ("delete", "/v1/users/{id}"),
    ("post", "/v1/users/restore"),
    ("post", "/v1/users/{id}/wallet"),
    ("get", "/v1/users/{id}/wallet/ledger"),
    ("get", "/v1/users/{id}/logs"),
    ("get", "/v1/users/{id}/events"),
    ("get", "/v1/users/{id}/export"),
    ("get", "/v1/users/{id}/sessions"),
    ("delete", "/v1/users/{id}/sessions"),
    ("delete", "/v1/users/{id}/sessions/{session_id}"),
    ("get", "/v1/settings"),
    ("patch", "/v1/settings"),
    ("post", "/v1/users/deactivate"),
    ("post", "/v1/users/reactivate"),
    ("post", "/v1/users/delete"),
    ("post", "/v1/users/export"),
    ("get", "/v1/tasks/{id}"),
    ("get", "/v1/tasks"),
    ("post", "/v1/tasks/{id}/cancel"),
    ("get", "/v1/tasks/{id}/result"),
    ("post", "/v1/sessions"),
    ("post", "/v1/sessions/refresh"),
    ("delete", "/v1/sessions/current"),
    ("post", "/v1/tokens/custom"),
    ("post", "/v1/tokens/signin"),
    ("get", "/v1/account"),
    ("put", "/v1/account"),
    ("delete", "/v1/account"),
    ("post", "/v1/users/{id}/tokens"),
    ("post", "/v1/account/verification"),
    ("post", "/v1/account/password/reset"),
    ("post", "/v1/sessions/magic"),
    ("post", "/v1/account/recovery"),
    ("patch", "/v1/account/password"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("get", "/v1/webhooks/{id}"),
    ("patch", "/v1/webhooks/{id}"),
    ("delete", "/v1/webhooks/{id}"),
    ("post", "/v1/webhooks/{id}/replay"),
    ("get", "/v1/account/sessions"),
    ("delete", "/v1/account/sessions/{session_id}"),
    ("get", "/v1/profiles"),
    ("get", "/v1/events"),
    ("get", "/v1/events/stream"),
    ("get", "/v1/projections"),
    ("post", "/v1/projections/{name}/rebuild"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .anonymous(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    json(response).await
}

/// Every (method, path template) of the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert(((*method).to_owned(), path.clone()));
            }
        }
    }
    out
}

/// How the router answers an anonymous request (no body) to a path template with `probe` in
/// each parameter: `None` when no route matches the path and method (405, or the router's own
/// 404), else the status.
async fn served(app: &TestApp, method: &str, template: &str) -> Option<StatusCode> {
    let path: String = template
        .split('/')
        .map(|s| if s.starts_with('{') { "probe" } else { s })
        .collect::<Vec<_>>()
        .join("/");
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let response = app.anonymous(method, &path).send().await.unwrap();
    let status = response.status();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return None;
    }
    let body = response.text().await.unwrap_or_default();
    if status == StatusCode::NOT_FOUND && body.contains("No such route.") {
        return None;
    }
    Some(status)
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_both_kinds_of_credentials() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "{version}");
    assert_eq!(doc["info"]["title"], "Roster");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["server_api_key"]["type"], "http");
    assert_eq!(schemes["server_api_key"]["scheme"], "bearer");
    assert_eq!(schemes["server_api_key_header"]["type"], "apiKey");
    assert_eq!(schemes["server_api_key_header"]["in"], "header");
    assert_eq!(schemes["server_api_key_header"]["name"], "x-api-key");
    assert_eq!(schemes["client_access_token"]["scheme"], "bearer");
    // The same document as the library builds (and as `schemas/openapi.json` holds).
    let built = serde_json::to_value(&*roster_api::routes::openapi()).unwrap();
    assert_eq!(doc, built);

    let security = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method]["security"]
            .as_array()
            .map(|s| {
                s.iter()
                    .flat_map(|r| r.as_object().unwrap().keys().cloned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        security("get", "/v1/users/{id}"),
        ["server_api_key", "server_api_key_header"]
    );
    assert_eq!(security("get", "/v1/account"), ["client_access_token"]);
    assert_eq!(
        security("get", "/v1/profiles"),
        [
            "server_api_key",
            "server_api_key_header",
            "client_access_token"
        ]
    );
    for public in ["/healthz", "/metrics", "/openapi.json", "/docs"] {
        assert!(security("get", public).is_empty(), "{public}");
    }
    assert!(security("post", "/v1/sessions").is_empty());
}

#[tokio::test]
async fn operations_carry_bodies_parameters_and_problem_responses() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let op = |method: &str, path: &str| doc["paths"][path][method].clone();
    let schema_ref = |v: &Value| v["$ref"].as_str().unwrap_or_default().to_owned();

    let create = op("post", "/v1/users");
    assert_eq!(
        schema_ref(&create["requestBody"]["content"]["application/json"]["schema"]),
        "#/components/schemas/UserInput"
    );
    assert_eq!(
        schema_ref(&create["responses"]["201"]["content"]["application/json"]["schema"]),
        "#/components/schemas/User"
    );
    assert!(create["responses"]["201"]["headers"]["ETag"].is_object());
    assert!(create["responses"]["201"]["headers"]["x-roster-position"].is_object());
    for status in ["400", "401", "403", "409", "413", "415", "422", "500"] {
        assert_eq!(
            schema_ref(&create["responses"][status]),
            format!("#/components/responses/Problem{status}"),
            "{status}"
        );
    }
    let conflict = &doc["components"]["responses"]["Problem409"];
    let description = conflict["description"].as_str().unwrap();
    for code in [
        "username_taken",
        "email_taken",
        "id_taken",
        "wallet_negative",
    ] {
        assert!(description.contains(code), "{description}");
    }
    assert_eq!(
        schema_ref(&conflict["content"]["application/problem+json"]["schema"]),
        "#/components/schemas/Problem"
    );
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail", "code", "errors"] {
        assert!(problem[field].is_object(), "Problem.{field}");
    }

    // Query parameters come from the same declarations the handlers check.
    let list = op("get", "/v1/users");
    let names: Vec<String> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    for name in [
        "search",
        "ids",
        "usernames",
        "emails",
        "status",
        "role",
        "limit",
        "cursor",
        "direction",
        "order",
    ] {
        assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
    }
    let references: Vec<String> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(&schema_ref)
        .collect();
    assert!(references.contains(&"#/components/parameters/MinPosition".to_owned()));
    assert!(references.contains(&"#/components/parameters/OrganizationId".to_owned()));
    let patch = op("patch", "/v1/users/{id}");
    let references: Vec<String> = patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(&schema_ref)
        .collect();
    assert!(references.contains(&"#/components/parameters/IfMatch".to_owned()));
    assert!(references.contains(&"#/components/parameters/IdempotencyKey".to_owned()));

    // Every path parameter is declared, every operation has an id and a 2xx response.
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let operation = op(&method, &path);
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_owned()),
            "{method} {path}: id {id:?} repeated"
        );
        let declared: Vec<&str> = operation["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                assert!(
                    declared.contains(&name),
                    "{method} {path}: {name} undeclared"
                );
            }
        }
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path}: no success response"
        );
    }
}

/// The router is the source of truth: for every path the document names, each method the
/// server answers is documented and each documented method is answered; and every route of
/// the contract is answered and documented.
#[tokio::test]
async fn every_route_the_server_answers_is_documented() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let documented = operations(&doc);
    assert!(
        documented.len() >= 50,
        "only {} operations",
        documented.len()
    );
    let paths: BTreeSet<String> = documented.iter().map(|(_, p)| p.clone()).collect();
    for path in &paths {
        for method in METHODS {
            let in_doc = documented.contains(&((*method).to_owned(), path.clone()));
            let answer = served(&app, method, path).await;
            assert_eq!(
                in_doc,
                answer.is_some(),
                "{method} {path}: documented {in_doc}, served {answer:?}"
            );
        }
    }
    for (method, path) in CONTRACT {
        assert!(
            served(&app, method, path).await.is_some(),
            "{method} {path} of the contract is not served"
        );
        assert!(
            documented.contains(&((*method).to_owned(), (*path).to_owned())),
            "{method} {path} is served but not in /openapi.json"
        );
    }
}

#[tokio::test]
async fn the_docs_page_needs_no_credentials_and_no_network() {
    let app = spawn_app().await;
    let response = app.anonymous(Method::GET, "/docs").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.contains("/openapi.json"));
    // Scripts and styles are inline (the page embeds Scalar), and its web fonts are off.
    for remote in ["<script src", "<link", "@import url(http"] {
        assert!(!page.contains(remote), "the page loads {remote}…");
    }
    assert!(page.contains("withDefaultFonts: false"));
    assert!(page.len() > 1_000_000, "Scalar is embedded");
}
