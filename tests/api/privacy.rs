//! Personal data at rest: nothing a user gave is stored in clear text under the data directory.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The files whose bytes, lowercased, contain `needle` (lowercase).
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_default().to_ascii_lowercase();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|path| path.display().to_string())
        .collect()
}

#[tokio::test]
async fn personal_data_is_never_stored_in_clear() {
    let app = spawn_app().await;
    let created = app
        .create_user(&json!({
            "id": "canary-user",
            "username": "QxCanaryUser",
            "name": "Zyx Canaryname",
            "display_name": "Canarydisplay Wq",
            "email": "Canary.Mail@Canarydomain.example",
            "phone": "+19995550123",
            "location": "Canarytown",
            "avatar_url": "https://canaryavatar.example/a.png",
            "custom": {"secret": "CanaryCustomValue", "CanaryKeyName": 1},
            "metadata": {"note": "CanaryMetadata"},
            "prefs": {"p": "CanaryPrefs"},
            "password": "CanaryPassword-123"
        }))
        .await;
    let user = app
        .request(reqwest::Method::PATCH, "/v1/users/canary-user")
        .header("user-agent", "CanaryAgent/1.0")
        .json(&json!({"set": {"custom.patched": "CanaryPatched", "name": "Zyx Canarypatchedname"}, "unset": ["custom.CanaryKeyName"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), StatusCode::OK);
    let at = position(&user);
    assert!(at > created["position"].as_u64().unwrap());
    // Make sure the read models wrote too, then flush everything to disk.
    assert_eq!(
        app.get_at("/v1/users/canary-user", at).await.status(),
        StatusCode::OK
    );
    let dir = app.stop().await;
    let app = spawn_app_in(dir).await;
    assert_eq!(
        app.user("canary-user").await.unwrap()["name"],
        "Zyx Canarypatchedname"
    );
    assert!(!files(app.dir.path()).is_empty());
    for canary in [
        "qxcanaryuser",
        "canaryname",
        "canarydisplay",
        "canary.mail",
        "canarydomain",
        "19995550123",
        "canarytown",
        "canaryavatar",
        "canarycustomvalue",
        "canarykeyname",
        "canarymetadata",
        "canaryprefs",
        "canarypassword",
        "canaryagent",
        "canarypatched",
    ] {
        let found = files_containing(app.dir.path(), canary);
        assert!(found.is_empty(), "{canary} is stored in clear in {found:?}");
    }
    // The id is not personal data; it is expected in clear (the search works at all).
    assert!(!files_containing(app.dir.path(), "canary-user").is_empty());
}
