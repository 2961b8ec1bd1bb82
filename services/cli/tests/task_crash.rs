//! A bulk deactivation of 5 000 users survives SIGKILLs of the server at random moments: after
//! each restart the task resumes where its last atomic chunk left it, it completes, and every
//! user got exactly one `UserDeactivated`, caused by the task.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use roster_eventlog::EventLog;
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use serde_json::{Value, json};

const USERS: usize = 5_000;
const KEY: &str = "crash-test-key";

struct Server {
    child: Child,
    url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(dir: &std::path::Path, http: &reqwest::Client) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "serve",
            "--store",
            dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-key",
            KEY,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("roster starts");
    // From here on the child is reaped by `Server`'s Drop, whatever happens.
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{}/readyz", server.url)).send().await
            && r.status().is_success()
        {
            return server;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// SIGKILL: no chance to flush or checkpoint.
fn kill(server: Server) {
    drop(server);
}

async fn task(http: &reqwest::Client, server: &Server, id: &str) -> Option<Value> {
    let r = http
        .get(format!("{}/v1/tasks/{id}", server.url))
        .header("x-api-key", KEY)
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_deactivate_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start(dir.path(), &http).await;
    let ids: Vec<String> = (0..USERS).map(|i| format!("u{i:05}")).collect();
    for batch in ids.chunks(100) {
        let users: Vec<Value> = batch
            .iter()
            .map(|id| json!({"id": id, "name": format!("User {id}")}))
            .collect();
        let r = http
            .post(format!("{}/v1/users/upsert", server.url))
            .header("x-api-key", KEY)
            .json(&json!({"users": users}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let r = http
        .post(format!("{}/v1/users/deactivate", server.url))
        .header("x-api-key", KEY)
        .json(&json!({"user_ids": ids}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let task_id = r.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Kill at a random moment after each chunk the task records, until it completes; restart
    // on the same directory each time.
    let mut kills_mid_task = 0;
    let mut handled = 0;
    let mut rng = rand::thread_rng();
    loop {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            let t = task(&http, &server, &task_id).await.unwrap_or_default();
            let status = t["status"].as_str().unwrap_or("unknown").to_owned();
            assert!(
                status != "failed" && status != "canceled",
                "task ended badly: {t}"
            );
            let now = t["progress"]["done"].as_u64().unwrap_or(0)
                + t["progress"]["failed"].as_u64().unwrap_or(0);
            if status == "completed" || now > handled {
                handled = now;
                break status;
            }
            assert!(Instant::now() < deadline, "no progress: {t}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if status == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
        kill(server);
        kills_mid_task += 1;
        server = start(dir.path(), &http).await;
    }
    // Stop for good, then count in the log itself.
    let final_task = task(&http, &server, &task_id).await.unwrap();
    assert_eq!(final_task["progress"]["done"], USERS as u64, "{final_task}");
    assert_eq!(final_task["progress"]["failed"], 0);
    kill(server);
    let log = EmbeddedLog::open(&dir.path().join("log"), EmbeddedOptions::default())
        .await
        .unwrap();
    let mut deactivated: HashMap<String, u32> = HashMap::new();
    let mut after = 0;
    loop {
        let events = log.read_all(after, 10_000).await.unwrap();
        let Some(last) = events.last() else { break };
        after = last.position;
        for e in events.iter().filter(|e| e.event_type == "UserDeactivated") {
            let meta = roster_projections::codec::public_meta(e);
            assert_eq!(
                meta.causation_id.as_deref(),
                Some(task_id.as_str()),
                "caused by the task"
            );
            *deactivated.entry(e.stream.name.clone()).or_default() += 1;
        }
    }
    assert_eq!(deactivated.len(), USERS, "every user deactivated");
    assert!(
        deactivated.values().all(|n| *n == 1),
        "no user deactivated twice"
    );
    eprintln!("killed the server {kills_mid_task} times mid-task");
    assert!(
        kills_mid_task >= 5,
        "killed {kills_mid_task} times mid-task"
    );
    log.close().await.unwrap();
}
