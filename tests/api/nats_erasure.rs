//! Erasure on the NATS store (issue 7): pruning a user through the API destroys its data key
//! in JetStream with the erasing message delete, so neither the nats-server's store
//! directory nor the server's local data directory holds the key or any personal value —
//! while a bystander's key and a non-personal value are still found by the same byte search.

use futures::StreamExt;
use reqwest::StatusCode;
use roster_testsupport::NatsServer;
use serde_json::{Value, json};

use crate::helpers::{assert_not_on_disk, find_in_files, position};
use crate::nats_helpers::*;

/// Personal canaries (lowercase, as searched).
const PERSONAL: &[&str] = &[
    "canaryn7usr",
    "canaryn7fullname",
    "canaryn7mailbox",
    "canaryn7custval",
    "canaryn7metaval",
    "canaryn7prefval",
    "447911555077",
    "canaryn7agent",
];
/// Not personal, stored in clear.
const PUBLIC: &str = "canaryn7timezonepublic";

/// Every data key in the bucket: (key id, key bytes).
async fn data_keys(url: &str, ns: &str) -> Vec<(String, Vec<u8>)> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let kv = js
        .get_key_value(format!("{ns}_keys"))
        .await
        .expect("key bucket");
    let names: Vec<String> = kv
        .keys()
        .await
        .expect("keys")
        .map(|k| k.expect("key"))
        .collect()
        .await;
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = kv.get(&name).await.expect("get") {
            // Format byte, then the 32 key bytes.
            out.push((name, value[1..].to_vec()));
        }
    }
    out.sort();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Files under `dir` holding `needle` (exact bytes).
fn files_with(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    crate::helpers::all_files(dir)
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .map(|f| f.display().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_on_nats_erases_the_key_from_every_jetstream_file() {
    let mut nats = NatsServer::start();
    let ns = namespace("erase");
    let app = spawn_nats_app(&nats.url(), &ns).await;
    let r = app
        .post(
            "/v1/users",
            &json!({"id": "bystander", "name": "Bystander Bee"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let id = "canaryn7-subject";
    let r = app
        .request(reqwest::Method::POST, "/v1/users")
        .header("user-agent", "CanaryN7Agent/1.0")
        .json(&json!({
            "id": id,
            "username": "CanaryN7Usr",
            "name": "Ann CanaryN7FullName",
            "email": "CanaryN7Mailbox@example.com",
            "phone": "+447911555077",
            "timezone": "CanaryN7TimezonePublic",
            "custom": {"k": "CanaryN7CustVal"},
            "metadata": {"k": "CanaryN7MetaVal"},
            "prefs": {"k": "CanaryN7PrefVal"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let at = position(&r);
    let user = app.get_at(&format!("/v1/users/{id}"), at).await;
    assert_eq!(user["name"], "Ann CanaryN7FullName");
    // Keys are made ahead of need: each user's is the one its `UserCreated` names.
    let keys = data_keys(&nats.url(), &ns).await;
    let key_of = async |user: &str| {
        let events = app.get_at(&format!("/v1/users/{user}/events"), at).await;
        let kid = events["events"][0]["data"]["key_id"]
            .as_str()
            .expect("a key id")
            .to_owned();
        keys.iter()
            .find(|(name, _)| name.ends_with(&kid))
            .unwrap_or_else(|| panic!("the key {kid} of {user} in the bucket"))
            .1
            .clone()
    };
    let subject_key = key_of(id).await;
    let bystander_key = key_of("bystander").await;

    // Before: the subject's key is in JetStream's files (else the search below proves
    // nothing), and no personal value is anywhere in clear.
    let data_dir = app.stop().await;
    nats.restart(); // a clean stop writes out everything the server buffers
    let store = nats.store_dir();
    assert!(
        !files_with(&store, &subject_key).is_empty(),
        "the key {} is on disk before the deletion",
        hex(&subject_key)
    );
    assert_not_on_disk(&store, PERSONAL, "JetStream files before deletion");
    assert_not_on_disk(data_dir.path(), PERSONAL, "data dir before deletion");

    let app = spawn_nats_app_in(&nats.url(), &ns, data_dir).await;
    let r = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/users/{id}?mode=pruning"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let at = position(&r);
    let user: Value = app.get_at(&format!("/v1/users/{id}"), at).await;
    assert_eq!(user["erased"], true, "{user}");
    assert_eq!(user["name"], Value::Null);

    // Right after the deletion returned, with the server still running...
    let found = files_with(&store, &subject_key);
    assert!(found.is_empty(), "destroyed key still in {found:?}");
    // ... and after both have stopped cleanly and nats-server has written everything out.
    let data_dir = app.stop().await;
    nats.restart();
    for dir in [store.as_path(), data_dir.path()] {
        let found = files_with(dir, &subject_key);
        assert!(found.is_empty(), "destroyed key in {found:?}");
        assert_not_on_disk(dir, PERSONAL, "after pruning");
    }
    // The same search finds what is meant to stay.
    assert!(
        !files_with(&store, &bystander_key).is_empty(),
        "the bystander's key stays"
    );
    assert!(
        !find_in_files(&store, &[PUBLIC])[0].1.is_empty(),
        "the public canary is in the log in clear"
    );
    // And the log still replays: a fresh server on the same store reads the user as erased.
    let app = spawn_nats_app(&nats.url(), &ns).await;
    let head = app.get("/readyz").await.json::<Value>().await.unwrap()["log_position"]
        .as_u64()
        .unwrap();
    let user = app.get_at(&format!("/v1/users/{id}"), head).await;
    assert_eq!(
        (user["erased"].clone(), user["timezone"].clone()),
        (json!(true), json!("CanaryN7TimezonePublic"))
    );
    let bystander = app.get_at("/v1/users/bystander", head).await;
    assert_eq!(bystander["name"], "Bystander Bee");
}
