//! An import of 30 000 lines survives a SIGKILL of the server once a real part of it is done
//! (progress > 0 and < total): after the restart the task resumes at its last atomic chunk,
//! completes, and every line landed exactly once — no `id_taken` failure (which a chunk
//! imported twice would give), every user there, each with one `UserImported`.

mod common;

use std::time::{Duration, Instant};

use common::{Api, KEY, Roster};
use serde_json::{Value, json};

const LINES: u64 = 30_000;

async fn task(api: &Api, server: &Roster, id: &str) -> Option<Value> {
    let r = api.get(server, &format!("/v1/tasks/{id}")).await.ok()?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_import_resumes_and_imports_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    let store_arg = store.to_str().unwrap().to_owned();
    let api = Api::new();
    let server = Roster::start(&store_arg, &data, &[]).await;
    let mut body = String::new();
    for i in 0..LINES {
        // Half the lines name their id, half get one derived from the task and line.
        let line = match i % 2 {
            0 => json!({"id": format!("imp{i:05}"), "username": format!("imp{i:05}"),
                        "email": format!("imp{i:05}@example.com"), "wallet": {"coins": i}}),
            _ => json!({"username": format!("imp{i:05}"), "status": "deactivated"}),
        };
        body.push_str(&line.to_string());
        body.push('\n');
    }
    let accepted: Value = api
        .http
        .post(format!("{}/v1/users/import", server.url))
        .header("x-api-key", KEY)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["task_id"].as_str().expect("a task").to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done_at_kill = loop {
        let t = task(&api, &server, &id).await.unwrap_or_default();
        let done = t["progress"]["done"].as_u64().unwrap_or(0);
        if done > 0 {
            assert!(
                done < LINES,
                "the import ended before it could be killed: {t}"
            );
            break done;
        }
        assert!(
            Instant::now() < deadline,
            "the import made no progress: {t}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    server.kill();

    let server = Roster::start(&store_arg, &data, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = loop {
        let t = task(&api, &server, &id).await.unwrap_or_default();
        if t["status"] == "completed" || t["status"] == "failed" {
            break t;
        }
        assert!(Instant::now() < deadline, "the import did not finish: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "import: killed at {done_at_kill} of {LINES} lines done; after the restart {}",
        finished["progress"]
    );
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(
        finished["progress"],
        json!({"done": LINES, "total": LINES, "failed": 0})
    );
    assert_eq!(finished["result"]["failures"], json!([]));
    assert_eq!(finished["result"]["created"], LINES);
    let head: Value = api
        .get(&server, "/readyz")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let position = head["log_position"].as_u64().expect("log_position");
    let (_, page) = api.get_at(&server, "/v1/users?limit=1", position).await;
    assert_eq!(page["total"], LINES, "every line is one user");
    for (user, expected) in [
        ("imp00000".to_owned(), json!({"coins": 0})),
        ("imp29998".to_owned(), json!({"coins": 29998})),
        (format!("{id}-30000"), json!({})),
    ] {
        let (status, body) = api
            .get_at(&server, &format!("/v1/users/{user}"), position)
            .await;
        assert_eq!(status, 200, "{user}: {body}");
        assert_eq!(body["wallet"], expected);
        let (_, events) = api
            .get_at(&server, &format!("/v1/users/{user}/events"), position)
            .await;
        let imported = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "UserImported")
            .count();
        assert_eq!(imported, 1, "{user} imported once");
    }
}
