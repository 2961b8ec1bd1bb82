//! Names and addresses taken before the rules of issue 18 (no invisible format characters in
//! names, email domains compared after IDNA) stay taken, however they are spelled now.
//!
//! `tests/fixtures/names-store/` was written once by the release before those rules
//! (`tests/fixtures/make_names_store.py`, commit 6b275a3): a username with a right-to-left
//! override, a display name with bidi isolates, `case@exämple.com` typed in Unicode, and
//! `Reader@XN--BCHER-KVA.example` typed in punycode. Its reservations are blind hashes of those
//! values as that release normalized them; today's server opens a copy.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

fn fixture() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/names-store"))
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> StatusCode {
    app.anonymous(Method::POST, "/v1/sessions")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn what_an_older_release_reserved_stays_reserved() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(fixture(), dir.path());
    let app = spawn_app_in(dir).await;
    // The old users read as they were written (names kept, even those refused today).
    let spoof = app.user("spoof").await.expect("the old user");
    assert_eq!(spoof["username"], "ad\u{202E}nim");
    assert_eq!(spoof["display_name"], "Ad\u{2066}min\u{2069}");

    // Usernames: the normalized form never changed; the spoofed one still holds "adnim".
    let taken = app.post("/v1/users", &json!({"username": "ADNIM"})).await;
    assert_problem(taken, StatusCode::CONFLICT, "username_taken").await;
    let taken = app.post("/v1/users", &json!({"username": "plain"})).await;
    assert_problem(taken, StatusCode::CONFLICT, "username_taken").await;
    // ... and the spoofing spellings themselves are refused now.
    let refused = app
        .post("/v1/users", &json!({"username": "pl\u{200B}ain2"}))
        .await;
    assert_invalid(refused).await;

    // Emails: the address typed in Unicode is taken in its punycode spelling ...
    for spelling in [
        "case@xn--exmple-cua.com",
        "CASE@EXÄMPLE.COM",
        "case@exämple.com",
    ] {
        let taken = app.post("/v1/users", &json!({"email": spelling})).await;
        assert_problem(taken, StatusCode::CONFLICT, "email_taken").await;
    }
    // ... and the address typed in punycode in its Unicode spelling.
    for spelling in ["reader@bücher.example", "READER@xn--bcher-kva.example"] {
        let taken = app.post("/v1/users", &json!({"email": spelling})).await;
        assert_problem(taken, StatusCode::CONFLICT, "email_taken").await;
    }
    // The Unicode-typed address signs in by either spelling (its index key never changed).
    assert_eq!(
        sign_in(&app, "case@xn--exmple-cua.com", "spoof-password-1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        sign_in(&app, "case@exämple.com", "spoof-password-1").await,
        StatusCode::CREATED
    );

    // The punycode-typed address: its old read-model index entry is keyed by the ASCII form,
    // so after the upgrade it is found once the read models are rebuilt (docs/security.md).
    let rebuild = app
        .start_task("/v1/projections/read_models/rebuild", &json!({}))
        .await;
    assert_eq!(app.wait_task(&rebuild).await["status"], "completed");
    assert_eq!(
        sign_in(&app, "reader@bücher.example", "puny-password-1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        sign_in(&app, "Reader@XN--BCHER-KVA.example", "puny-password-1").await,
        StatusCode::CREATED
    );

    // Releasing an old address frees every spelling of it.
    let response = app
        .patch(
            "/v1/users/puny",
            &json!({"set": {"email": "new@example.com"}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let freed = app
        .post(
            "/v1/users",
            &json!({"id": "next", "email": "reader@bücher.example"}),
        )
        .await;
    assert_eq!(freed.status(), StatusCode::CREATED);
}
