//! Files only the server can read: after a run that makes every kind of file the server
//! writes (log segments, checkpoints, keys, secrets, read models and a rebuilt copy, export
//! files, the server id), the store directory and every directory in it is 0700 and every file
//! 0600. A store left world-readable by an older release is tightened when it is opened.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// Every entry under `root` (itself included) whose mode is not private: `(path, mode)`.
fn not_private(root: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if (meta.is_dir() || meta.is_file()) && mode != want {
            out.push((path.display().to_string(), mode));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out
}

fn count_files(root: &Path) -> usize {
    all_files(root).len()
}

#[tokio::test]
async fn every_file_the_server_writes_is_private() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("m", 30).await;
    app.create_user(&json!({"id": "pw", "username": "pw", "email": "pw@example.com", "password": "a-password-1"}))
        .await;
    let signin = app
        .anonymous(Method::POST, "/v1/sessions")
        .json(&json!({"username": "pw", "password": "a-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), StatusCode::CREATED);
    let export = app
        .start_task("/v1/users/export", &json!({"user_ids": ids}))
        .await;
    assert_eq!(app.wait_task(&export).await["status"], "completed");
    let download = app.get(&format!("/v1/tasks/{export}/result")).await;
    assert_eq!(download.status(), StatusCode::OK);
    let _ = download.bytes().await.unwrap();
    let rebuild = app
        .start_task("/v1/projections/read_models/rebuild", &json!({}))
        .await;
    assert_eq!(app.wait_task(&rebuild).await["status"], "completed");
    app.request(Method::DELETE, "/v1/users/m0?mode=hard")
        .send()
        .await
        .unwrap();
    let dir = app.stop().await;
    // A restart writes a checkpoint and reopens everything.
    let app = spawn_app_in(dir).await;
    app.create_user(&json!({"id": "after-restart"})).await;
    let dir = app.stop().await;

    let files = count_files(dir.path());
    assert!(files > 10, "the run wrote the store's files ({files})");
    for expected in [
        "keys.dat",
        "server_id",
        "secrets/index.key",
        "secrets/token.key",
        "readmodels.current",
    ] {
        assert!(dir.path().join(expected).exists(), "{expected} was written");
    }
    assert!(
        all_files(dir.path())
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "ndjson")),
        "an export file was written"
    );
    let open = not_private(dir.path());
    assert!(open.is_empty(), "readable by others: {open:#?}");
}

#[tokio::test]
async fn a_store_an_older_release_left_readable_is_tightened_on_open() {
    let app = spawn_app().await;
    app.seed_users("o", 5).await;
    let dir = app.stop().await;
    // As the releases before left them: directories 0755, files 0644.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = if meta.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    assert!(!not_private(dir.path()).is_empty());
    let app = spawn_app_in(dir).await;
    assert_eq!(app.list("limit=1").await["total"], 5);
    let open = not_private(app.dir.path());
    assert!(open.is_empty(), "still readable by others: {open:#?}");
    let _ = app.stop().await;
}
