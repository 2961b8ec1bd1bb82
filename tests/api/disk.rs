//! The store on a small file system that fills up (a tmpfs mounted for the test; CI runs as
//! root): a full disk is a pause, not a failure. Appends get 503 `unavailable` with
//! `Retry-After`, `/readyz` says not ready, and once space is back the server writes again
//! by itself, without a restart; nothing acknowledged is lost.
//!
//! This test does not skip: where it cannot mount, it fails and says why.

use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => SmallDisk { dir },
            Ok(out) => panic!(
                "the disk-full test needs a small file system: `mount -t tmpfs` failed ({}): {}. \
                 Run the tests as root (CI does), or where mounting is allowed.",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("the disk-full test needs `mount` (util-linux): {e}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system with a ballast file until a write fails.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0xA5u8; 64 << 10];
    while file.write_all(&block).is_ok() {}
    // What is left is less than a block; take it too.
    while file.write_all(&block[..512]).is_ok() {}
    let _ = file.sync_all();
    path
}

async fn create(app: &TestApp, i: usize) -> Result<u64, (StatusCode, Value, bool)> {
    let response = app
        .post(
            "/v1/users",
            &json!({"id": format!("u{i}"), "username": format!("user{i}"), "email": format!("u{i}@example.com"),
                    "custom": {"pad": "p".repeat(2000)}}),
        )
        .await;
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    if status == StatusCode::CREATED {
        return Ok(position(&response));
    }
    Err((
        status,
        response.json().await.unwrap_or_default(),
        retry_after,
    ))
}

async fn ready(app: &TestApp) -> (StatusCode, Value) {
    let response = app.anonymous(Method::GET, "/readyz").send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_pause_not_a_failure() {
    let disk = SmallDisk::mount("24m");
    let dir = tempfile::TempDir::new_in(disk.path()).unwrap();
    let app = spawn_app_in(dir).await;

    let mut acknowledged = Vec::new();
    for i in 0..20 {
        acknowledged.push((i, create(&app, i).await.expect("room on the disk")));
    }
    let ballast = fill(disk.path());
    // Writes past the space: 503 unavailable with Retry-After, never 500.
    let mut refused = 0;
    let mut i = 20;
    while refused < 5 {
        match create(&app, i).await {
            Ok(position) => acknowledged.push((i, position)),
            Err((status, body, retry_after)) => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
                assert_eq!(body["code"], "unavailable", "{body}");
                assert!(retry_after, "503 comes with Retry-After");
                refused += 1;
            }
        }
        i += 1;
        assert!(i < 2000, "the disk never filled up");
    }
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["log_writable"], false);
    println!(
        "disk full after {} acknowledged creates; {refused} refused with 503",
        acknowledged.len()
    );

    // Space comes back: the server writes again by itself.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = ready(&app).await;
        if status == StatusCode::OK {
            assert_eq!(body["log_writable"], true);
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after = 0;
    for j in 0..20 {
        let n = 5000 + j;
        let position = create(&app, n)
            .await
            .unwrap_or_else(|e| panic!("create {n} after space returned: {e:?}"));
        acknowledged.push((n, position));
        after += 1;
    }
    assert_eq!(after, 20, "20 of 20 writes succeed once space is back");

    // Nothing acknowledged was lost, before or after a restart. (On a loaded machine the read
    // models may take longer than one `min_position` wait to apply what the full disk held
    // back: wait for them, then check every user.)
    let head = app.head().await;
    caught_up(&app, head).await;
    for (n, _) in &acknowledged {
        let response = app.get_at(&format!("/v1/users/u{n}"), head).await;
        assert_eq!(response.status(), StatusCode::OK, "u{n}");
    }
    let dir = app.stop().await;
    let app = spawn_app_in(dir).await;
    let head = app.head().await;
    caught_up(&app, head).await;
    for (n, _) in &acknowledged {
        let response = app.get_at(&format!("/v1/users/u{n}"), head).await;
        assert_eq!(response.status(), StatusCode::OK, "u{n} after a restart");
    }
    let total = app.list("limit=1").await["total"].as_u64().unwrap();
    assert_eq!(
        total,
        acknowledged.len() as u64,
        "exactly the acknowledged users: nothing refused was kept"
    );
    let _ = app.stop().await;
    drop(disk);
}

/// Waits (30 s at most) until the read models have applied `position`.
async fn caught_up(app: &TestApp, position: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = app.get_at("/v1/users?limit=1", position).await;
        if response.status() != StatusCode::SERVICE_UNAVAILABLE {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the read models never reached {position}"
        );
    }
}
