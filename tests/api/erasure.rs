//! Erasure that is real (docs/contract.md §3 deletion modes, docs/architecture.md "Personal data
//! never reaches disk in plain text"): personal data is sealed under a per-user key from the
//! start, and pruning or hard deletion destroys that key, so no file under the data directory can
//! give the data back — while the log stays whole and replayable.
//!
//! Every personal field gets a distinct canary, and every request carries a canary
//! `User-Agent`. The client address cannot be a canary here: every test request comes from
//! 127.0.0.1, which also appears in clear in files for reasons unrelated to users, so the ip is
//! checked through the API instead (present before, `null` after).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const AGENT: &str = "CanaryQ7xAgent/9.3";

/// Personal canaries (lowercase, as searched; the values sent mix cases).
const PERSONAL: &[&str] = &[
    "canaryq7xusr",
    "canaryq7xfullname",
    "canaryq7xdisplay",
    "canaryq7xmailbox",
    "canaryq7xmaildomain",
    "447911555093",
    "canaryq7xlocation",
    "canaryq7xavatarhost",
    "canaryq7xcustkey",
    "canaryq7xcustval",
    "canaryq7xmetakey",
    "canaryq7xmetaval",
    "canaryq7xprefkey",
    "canaryq7xprefval",
    "canaryq7xpatchkey",
    "canaryq7xpatchval",
    "canaryq7xmeta2key",
    "canaryq7xmeta2val",
    "canaryq7xnewmailbox",
    "canaryq7xnewdomain",
    "353915550172",
    "canaryq7xledgerkey",
    "canaryq7xledgerval",
    "canaryq7xagent",
    "canaryq7xpassword",
];

/// Not personal, stored in clear: proves the byte search finds what is there.
const PUBLIC: &str = "canaryq7xtimezonepublic";

async fn send(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app.request(method, path).header("user-agent", AGENT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request sent")
}

async fn ok(app: &TestApp, method: Method, path: &str, body: Value) -> u64 {
    let response = send(app, method.clone(), path, Some(body)).await;
    let status = response.status();
    assert!(status.is_success(), "{method} {path}: {status}");
    position(&response)
}

/// Which needles occur in a text (case-insensitive).
fn canaries_in(text: &str) -> Vec<&'static str> {
    let text = text.to_ascii_lowercase();
    PERSONAL
        .iter()
        .copied()
        .filter(|c| text.contains(c))
        .collect()
}

/// Gives user `id` every kind of personal data, with canaries; returns the idempotent PATCH's
/// key and body, to repeat later.
async fn fill(app: &TestApp, id: &str) -> (String, Value) {
    let created = send(
        app,
        Method::POST,
        "/v1/users",
        Some(json!({
            "id": id,
            "username": "CanaryQ7xUsr",
            "name": "Ann CanaryQ7xFullName",
            "display_name": "CanaryQ7xDisplay",
            "email": "CanaryQ7xMailbox@CanaryQ7xMailDomain.example",
            "phone": "+447911555093",
            "location": "CanaryQ7xLocation",
            "avatar_url": "https://CanaryQ7xAvatarHost.example/a.png",
            "timezone": "CanaryQ7xTimezonePublic",
            "custom": {"CanaryQ7xCustKey": "CanaryQ7xCustVal"},
            "metadata": {"CanaryQ7xMetaKey": "CanaryQ7xMetaVal"},
            "prefs": {"CanaryQ7xPrefKey": "CanaryQ7xPrefVal"},
            "password": "CanaryQ7xPassword-long"
        })),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let key = format!("erasure-{id}");
    let patch = json!({"set": {
        "custom.CanaryQ7xPatchKey": "CanaryQ7xPatchVal",
        "metadata.CanaryQ7xMeta2Key": {"deep": "CanaryQ7xMeta2Val"}
    }});
    let response = app
        .request(Method::PATCH, &format!("/v1/users/{id}"))
        .header("user-agent", AGENT)
        .header("idempotency-key", &key)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    ok(
        app,
        Method::PATCH,
        &format!("/v1/users/{id}/email"),
        json!({"email": "CanaryQ7xNewMailbox@CanaryQ7xNewDomain.example"}),
    )
    .await;
    ok(
        app,
        Method::PATCH,
        &format!("/v1/users/{id}/phone"),
        json!({"number": "+353915550172"}),
    )
    .await;
    ok(
        app,
        Method::POST,
        &format!("/v1/users/{id}/wallet"),
        json!({"changeset": {"coins": 7}, "metadata": {"CanaryQ7xLedgerKey": "CanaryQ7xLedgerVal"}, "update_ledger": true}),
    )
    .await;
    ok(
        app,
        Method::PATCH,
        &format!("/v1/users/{id}/prefs"),
        json!({"prefs": {"CanaryQ7xPrefKey": ["CanaryQ7xPrefVal"]}}),
    )
    .await;
    ok(
        app,
        Method::PATCH,
        &format!("/v1/users/{id}/verification"),
        json!({"email_verification": true}),
    )
    .await;
    let last = ok(
        app,
        Method::POST,
        &format!("/v1/users/{id}/deactivate"),
        json!({}),
    )
    .await;
    // The read models have applied it all.
    assert_eq!(
        app.get_at(&format!("/v1/users/{id}"), last).await.status(),
        StatusCode::OK
    );
    (key, patch)
}

async fn text(app: &TestApp, path: &str) -> String {
    let response = send(app, Method::GET, path, None).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.text().await.unwrap()
}

async fn erasure_is_real(mode: &str) {
    let id = format!("canaryq7x-subject-{mode}");
    let app = spawn_app().await;
    // A bystander whose data must stay readable.
    send(
        &app,
        Method::POST,
        "/v1/users",
        Some(json!({"id": "bystander", "name": "Bystander Bee"})),
    )
    .await;
    let (key, patch) = fill(&app, &id).await;

    // Before deletion: the API opens every canary (the events endpoint decrypts them)...
    let events_text = text(&app, &format!("/v1/users/{id}/events")).await;
    let seen = canaries_in(&events_text);
    let missing: Vec<_> = PERSONAL
        .iter()
        .filter(|c| !seen.contains(c) && **c != "canaryq7xpassword")
        .collect();
    assert!(
        missing.is_empty(),
        "events show every canary but the password: {missing:?}"
    );
    let logs = json(
        send(
            &app,
            Method::GET,
            &format!("/v1/users/{id}/logs?limit=100"),
            None,
        )
        .await,
    )
    .await;
    assert!(
        logs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["ip"] == "127.0.0.1" && i["user_agent"] == AGENT)
    );
    let ledger = text(&app, &format!("/v1/users/{id}/wallet/ledger")).await;
    assert!(canaries_in(&ledger).contains(&"canaryq7xledgerval"));
    // ... but no file holds any of them in clear, while the public canary is found.
    let dir = app.stop().await;
    assert_not_on_disk(dir.path(), PERSONAL, "before deletion");
    let public = find_in_files(dir.path(), &[PUBLIC, &id]);
    assert!(
        public.iter().all(|(_, files)| !files.is_empty()),
        "the search finds what is in clear: {public:?}"
    );

    let app = spawn_app_in(dir).await;
    let events_before = app.events_of(&id).await;
    let response = send(
        &app,
        Method::DELETE,
        &format!("/v1/users/{id}?mode={mode}"),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let deleted_at = position(&response);
    assert_eq!(json(response).await["mode"], mode);
    assert_eq!(
        app.head().await,
        deleted_at,
        "the deletion is the last event"
    );
    assert_not_on_disk(app.dir.path(), PERSONAL, "right after deletion");

    // The log is whole and replays, with erased fields null and "erased": true.
    let check_replay = |events: Vec<Value>| {
        assert_eq!(events.len(), events_before.len() + 1, "every event is kept");
        for (after, before) in events.iter().zip(&events_before) {
            for field in [
                "position",
                "id",
                "version",
                "type",
                "time",
                "stream",
                "schema_version",
            ] {
                assert_eq!(after[field], before[field], "{field}");
            }
            assert_eq!(after["metadata"]["actor"], before["metadata"]["actor"]);
            assert_eq!(after["metadata"]["ip"], Value::Null);
            assert_eq!(after["metadata"]["user_agent"], Value::Null);
            assert_eq!(after["metadata"]["erased"], true, "{after}");
        }
        let by_type = |t: &str| events.iter().find(|e| e["type"] == t).unwrap()["data"].clone();
        let created = by_type("UserCreated");
        assert_eq!(created["erased"], true);
        for field in [
            "username",
            "name",
            "display_name",
            "email",
            "phone",
            "location",
            "avatar_url",
            "custom",
            "metadata",
            "prefs",
        ] {
            assert_eq!(
                created["profile"][field],
                Value::Null,
                "UserCreated.profile.{field}"
            );
        }
        assert_eq!(created["profile"]["timezone"], "CanaryQ7xTimezonePublic");
        assert_eq!(created["password_hash"], Value::Null);
        assert_eq!(
            by_type("EmailChanged"),
            json!({"email": null, "erased": true})
        );
        assert_eq!(
            by_type("PhoneChanged"),
            json!({"phone": null, "erased": true})
        );
        assert_eq!(
            by_type("PrefsUpdated"),
            json!({"prefs": null, "erased": true})
        );
        let wallet = by_type("WalletAdjusted");
        assert_eq!(
            (wallet["metadata"].clone(), wallet["erased"].clone()),
            (Value::Null, json!(true))
        );
        assert_eq!(
            wallet["changeset"],
            json!({"coins": 7}),
            "what is not personal stays"
        );
        let patched = by_type("UserPartiallyUpdated");
        assert_eq!(patched["erased"], true, "{patched}");
        assert_eq!(by_type("VerificationChanged")["email_verified"], true);
        assert_eq!(events.last().unwrap()["data"]["mode"], mode);
    };
    let events_text = text(&app, &format!("/v1/users/{id}/events")).await;
    assert!(
        canaries_in(&events_text).is_empty(),
        "the key is destroyed: {events_text}"
    );
    check_replay(app.events_of(&id).await);
    // The activity log still lists every event, without ip or user agent.
    let logs = json(
        send(
            &app,
            Method::GET,
            &format!("/v1/users/{id}/logs?limit=100"),
            None,
        )
        .await,
    )
    .await;
    let items = logs["items"].as_array().unwrap();
    assert_eq!(items.len(), events_before.len() + 1);
    assert!(
        items.iter().all(|i| i["ip"].is_null()
            && i["user_agent"].is_null()
            && i["actor"].as_str().unwrap().starts_with("server:")),
        "{logs}"
    );
    // Every other view of the user is free of canaries too.
    let mut views = vec![
        format!("/v1/users/{id}/logs?limit=100"),
        format!("/v1/users/{id}/export"),
    ];
    match mode {
        "pruning" => {
            views.push(format!("/v1/users/{id}"));
            views.push(format!("/v1/users/{id}/prefs"));
            views.push(format!("/v1/users/{id}/wallet/ledger"));
            views.push("/v1/users?status=deleted".to_owned());
            let user = json(app.get(&format!("/v1/users/{id}")).await).await;
            assert_eq!(
                (user["erased"].clone(), user["status"].clone()),
                (json!(true), json!("deleted"))
            );
            assert_eq!(user["timezone"], "CanaryQ7xTimezonePublic");
        }
        _ => assert_eq!(
            app.get(&format!("/v1/users/{id}")).await.status(),
            StatusCode::NOT_FOUND
        ),
    }
    for position in [
        events_before[0]["position"].as_u64().unwrap(),
        deleted_at - 1,
    ] {
        let as_of = format!("/v1/users/{id}?as_of={position}");
        match mode {
            // A hard-deleted user's history is erased with it: not even a shell of it is
            // shown as of an earlier position.
            "hard" => assert_eq!(
                app.get(&as_of).await.status(),
                StatusCode::NOT_FOUND,
                "{as_of}"
            ),
            _ => views.push(as_of),
        }
    }
    for view in &views {
        let body = text(&app, view).await;
        assert!(canaries_in(&body).is_empty(), "{view}: {body}");
    }
    // The remembered idempotent response is rebuilt from the log: nothing personal in it now.
    let again = app
        .request(Method::PATCH, &format!("/v1/users/{id}"))
        .header("user-agent", AGENT)
        .header("idempotency-key", &key)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let body = again.text().await.unwrap();
    assert!(canaries_in(&body).is_empty(), "idempotent replay: {body}");
    assert_eq!(app.head().await, deleted_at, "the replay acted on nothing");
    // The bystander is untouched.
    assert_eq!(
        app.user("bystander").await.unwrap()["name"],
        "Bystander Bee"
    );

    // After a graceful restart on the same directory: still nothing on disk, still replayable.
    let dir = app.stop().await;
    assert_not_on_disk(dir.path(), PERSONAL, "after deletion and a graceful stop");
    let app = spawn_app_in(dir).await;
    check_replay(app.events_of(&id).await);
    assert!(canaries_in(&text(&app, &format!("/v1/users/{id}/events")).await).is_empty());
    assert_eq!(
        app.user("bystander").await.unwrap()["name"],
        "Bystander Bee"
    );
    assert_not_on_disk(app.dir.path(), PERSONAL, "after the restart");
    assert!(
        !find_in_files(app.dir.path(), &[PUBLIC])[0].1.is_empty(),
        "the public canary stays"
    );
    // The username and email are free again.
    send(&app, Method::POST, "/v1/users", Some(json!({"username": "canaryq7xusr", "email": "canaryq7xnewmailbox@canaryq7xnewdomain.example"})))
        .await
        .error_for_status()
        .expect("username and email released");
}

#[tokio::test]
async fn pruning_erases_personal_data_from_every_file() {
    erasure_is_real("pruning").await;
}

#[tokio::test]
async fn hard_deletion_erases_personal_data_from_every_file() {
    erasure_is_real("hard").await;
}
