//! Two `roster serve` processes on one NATS JetStream (issue 7, "several servers, one truth"):
//! a bulk task created on one server is polled on the other and completes; when the server
//! running it is SIGKILLed mid-task, the other takes it over after the lease and finishes it,
//! and no user is acted on twice.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use roster_eventlog::EventLog;
use roster_eventlog::nats::{NatsLog, NatsOptions};
use roster_testsupport::NatsServer;
use serde_json::{Value, json};

const USERS: usize = 8_000;
const NAMESPACE: &str = "scaleout";

async fn task(api: &Api, server: &Roster, id: &str) -> Value {
    match api.get(server, &format!("/v1/tasks/{id}")).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    }
}

fn ran_task(server: &Roster, task_id: &str) -> bool {
    server
        .log_text()
        .lines()
        .any(|l| l.contains("task started") && l.contains(task_id))
}

/// Every event caused by `task_id` in the shared log: (type, stream) pairs, in order.
async fn caused_by(log: &NatsLog, task_id: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let events = log.read_all(after, 10_000).await.expect("read the log");
        let Some(last) = events.last() else {
            return out;
        };
        after = last.position;
        for e in &events {
            let meta = roster_projections::codec::public_meta(e);
            if meta.causation_id.as_deref() == Some(task_id) {
                out.push((e.event_type.clone(), e.stream.name.clone()));
            }
        }
    }
}

/// Waits (up to 120 s) until `server` answers `path` with 200 once its read models have
/// applied `position`; a server catching up on a loaded machine may time a request out.
async fn caught_up(api: &Api, server: &Roster, path: &str, position: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let answer = api
            .get(server, &format!("{path}{sep}min_position={position}"))
            .await;
        match answer {
            Ok(r) if r.status() == 200 => return,
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                assert!(
                    status == 503 && Instant::now() < deadline,
                    "{path} at {position}: {status} {body}"
                );
            }
            Err(e) => assert!(Instant::now() < deadline, "{path} at {position}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_resumes_on_the_other_server_when_its_server_is_killed() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--nats-namespace", NAMESPACE, "--task-lease", "2"];
    let mut servers = vec![
        Roster::start(&nats.url(), &dir.path().join("a"), &flags).await,
        Roster::start(&nats.url(), &dir.path().join("b"), &flags).await,
    ];
    let api = Api::new();
    let log = NatsLog::connect(
        &nats.url(),
        NatsOptions {
            stream: NAMESPACE.to_ascii_uppercase(),
            subject_prefix: NAMESPACE.into(),
            ..NatsOptions::default()
        },
    )
    .await
    .expect("connect to the shared log");

    let ids: Vec<String> = (0..USERS).map(|i| format!("u{i:05}")).collect();
    for batch in ids.chunks(100) {
        let users: Vec<Value> = batch
            .iter()
            .map(|id| json!({"id": id, "name": format!("User {id}")}))
            .collect();
        let r = api
            .post(&servers[0], "/v1/users/upsert", &json!({"users": users}))
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    // Deactivate, then reactivate, … until a run was caught mid-task (the first, nearly
    // always; a run the killed server had already finished proves nothing and is redone).
    for (attempt, (op, event)) in [
        ("deactivate", "UserDeactivated"),
        ("reactivate", "UserReactivated"),
        ("deactivate", "UserDeactivated"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = api
            .post(
                &servers[0],
                &format!("/v1/users/{op}"),
                &json!({"user_ids": ids}),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let created_at = position(&r);
        let task_id = r.json::<Value>().await.unwrap()["task_id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Polled on the other server: there as soon as its read models have the request
        // (a replacement server started by an earlier attempt may still be catching up).
        caught_up(
            &api,
            &servers[1],
            &format!("/v1/tasks/{task_id}"),
            created_at,
        )
        .await;

        // Whichever server's worker claimed it (the one that took the request, nearly
        // always) is killed at a random moment up to 150 ms after it said so: before the end
        // (16 chunks of 500 users, each taking 40 ms or more), often after some chunks.
        let deadline = Instant::now() + Duration::from_secs(30);
        let runner = loop {
            if let Some(i) = (0..2).find(|i| ran_task(&servers[*i], &task_id)) {
                break i;
            }
            assert!(Instant::now() < deadline, "nobody claimed the task");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let delay = rand::Rng::gen_range(&mut rand::thread_rng(), 0..150);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let killed = servers.remove(runner);
        let killed_log = killed.log.clone();
        killed.kill();
        let other = &servers[0];

        // The other server takes it over after the lease (2 s) and completes it.
        let deadline = Instant::now() + Duration::from_secs(40);
        let done = loop {
            let t = task(&api, other, &task_id).await;
            match t["status"].as_str() {
                Some("completed") => break t,
                Some("failed" | "canceled") => panic!("task ended badly: {t}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "not taken over: {t}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(done["progress"]["done"], USERS as u64, "{done}");
        assert_eq!(done["progress"]["failed"], 0);

        // In the shared log: every user acted on exactly once, by the task.
        let caused = caused_by(&log, &task_id).await;
        let claims = caused.iter().filter(|(t, _)| t == "TaskStarted").count();
        let mut acted: HashMap<&str, u32> = HashMap::new();
        for (_, stream) in caused.iter().filter(|(t, _)| t == event) {
            *acted.entry(stream.as_str()).or_default() += 1;
        }
        assert_eq!(acted.len(), USERS, "every user: {event}");
        assert!(acted.values().all(|n| *n == 1), "no user twice");

        let other_log = other.log_text();
        let resumed = other_log
            .lines()
            .find(|l| l.contains("task started") && l.contains(&task_id));
        match resumed {
            Some(line) => {
                assert!(
                    claims >= 2,
                    "taken over by a second worker ({claims} claims)"
                );
                eprintln!("killed {delay} ms after the start; taken over: {line}");
                break;
            }
            None => {
                assert_eq!(claims, 1, "{caused:?}");
                eprintln!(
                    "attempt {attempt}: the killed server finished the task within {delay} ms; \
                     its log:\n{}",
                    std::fs::read_to_string(&killed_log).unwrap_or_default()
                );
                assert!(attempt < 2, "no attempt caught the task mid-way");
                let name = format!("again{attempt}");
                let again = Roster::start(&nats.url(), &dir.path().join(name), &flags).await;
                // Caught up with everything the surviving server has applied.
                let ready: Value = api
                    .get(&servers[0], "/readyz")
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let head = ready["projection_position"].as_u64().unwrap();
                caught_up(&api, &again, "/v1/tasks", head).await;
                servers.push(again);
            }
        }
    }
    log.close().await.unwrap();
}
