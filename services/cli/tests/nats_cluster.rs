//! Roster on the 3-node JetStream cluster of `ops/nats/cluster/` (issue 7, item 3): two
//! `roster serve` processes, replicas 3. A node is killed during a write load: every
//! acknowledged write is readable afterwards, on both servers, and Roster keeps serving.
//! With a second node down there is no quorum: writes get 503 `unavailable` problem+json
//! (no panic, no hang); when the nodes return, writes succeed again.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Writers running concurrently, spread over both servers.
const WRITERS: usize = 8;

/// What the load saw acknowledged: user id → (position, coins if the adjustment's outcome
/// is known).
type Acked = Arc<Mutex<BTreeMap<String, (u64, Option<i64>)>>>;

/// Creates users (each with a wallet adjustment) until `stop`, alternating servers; records
/// what was acknowledged. Failures (503 while a leader is elected, a dropped connection)
/// are simply not acknowledged.
async fn load(
    api: Arc<Api>,
    servers: Arc<[Roster; 2]>,
    writer: String,
    stop: Arc<AtomicBool>,
    acked: Acked,
) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let server = &servers[i % 2];
        let id = format!("{writer}-{i}");
        i += 1;
        let coins = (i % 5) as i64 + 1;
        let created = api
            .post(server, "/v1/users", &json!({"id": id, "username": id}))
            .await;
        let r = match created {
            Ok(r) if r.status() == 201 => r,
            Ok(r) => {
                failed += 1;
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                eprintln!("create {status}: {body}");
                continue;
            }
            Err(e) => {
                failed += 1;
                eprintln!("create: {e}");
                continue;
            }
        };
        let mut at = position(&r);
        let adjusted = api
            .post(
                server,
                &format!("/v1/users/{id}/wallet"),
                &json!({"changeset": {"coins": coins}}),
            )
            .await;
        // Acknowledged: the coins are there. A 503 may or may not have landed; unknown.
        let balance = match adjusted {
            Ok(r) if r.status() == 200 => {
                at = position(&r);
                Some(coins)
            }
            Ok(r) if r.status().is_client_error() => Some(0),
            _ => None,
        };
        acked.lock().await.insert(id, (at, balance));
        ok += 1;
    }
    (ok, failed)
}

/// Runs the load for at least `min` and until `after_kill` more writes were acknowledged.
async fn run_load(
    phase: &str,
    api: &Arc<Api>,
    servers: &Arc<[Roster; 2]>,
    acked: &Acked,
    until: impl std::future::Future<Output = ()>,
) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(load(
                api.clone(),
                servers.clone(),
                format!("{phase}{w}"),
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();
    until.await;
    stop.store(true, Ordering::Relaxed);
    let mut totals = (0, 0);
    for w in writers {
        let (ok, failed) = w.await.expect("writer");
        totals = (totals.0 + ok, totals.1 + failed);
    }
    totals
}

async fn acked_count(acked: &Acked) -> usize {
    acked.lock().await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_survives_a_node_and_reports_lost_quorum() {
    let t0 = Instant::now();
    let mut cluster = OpsCluster::start();
    let urls = cluster.urls();
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--nats-replicas", "3", "--nats-timeout", "4"];
    let servers = Arc::new([
        Roster::start(&urls, &dir.path().join("a"), &flags).await,
        Roster::start(&urls, &dir.path().join("b"), &flags).await,
    ]);
    let api = Arc::new(Api::new());
    eprintln!("{:?}: cluster and servers up", t0.elapsed());
    let acked: Acked = Arc::default();

    // Load on both servers; a node is killed once writes flow.
    let before_kill = run_load("p", &api, &servers, &acked, async {
        while acked_count(&acked).await < 150 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let before = acked_count(&acked).await;
    let killed_at = Instant::now();
    // Kill a node while writes are in flight.
    let during = run_load("q", &api, &servers, &acked, async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.kill(0);
        // Keeps serving: writes are acknowledged again after the node is gone.
        let deadline = Instant::now() + Duration::from_secs(40);
        while acked_count(&acked).await < before + 300 {
            assert!(
                Instant::now() < deadline,
                "writes did not resume with two nodes; A:\n{}\nB:\n{}",
                servers[0].log_text(),
                servers[1].log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    eprintln!(
        "writes ok/failed: {before_kill:?} before the kill, {during:?} after; serving again {:?} after the kill",
        killed_at.elapsed()
    );

    // Every acknowledged write is readable, on both servers, with its wallet.
    let acked = acked.lock().await.clone();
    let last = acked.values().map(|(p, _)| *p).max().unwrap();
    eprintln!("{:?}: verifying", t0.elapsed());
    for server in servers.iter() {
        let (status, page) = api.get_at(server, "/v1/users?limit=1", last).await;
        assert_eq!(status, 200, "{page}");
        assert!(
            page["total"].as_u64().unwrap() >= acked.len() as u64,
            "{page}"
        );
        for (id, (at, coins)) in &acked {
            let (status, user) = api.get_at(server, &format!("/v1/users/{id}"), *at).await;
            assert_eq!(status, 200, "acknowledged {id} at {at}: {user}");
            if let Some(coins) = coins {
                assert_eq!(
                    user["wallet"]["coins"].as_i64().unwrap_or(0),
                    *coins,
                    "{user}"
                );
            }
        }
    }

    // Two nodes down: no quorum. A write answers 503 `unavailable` in bounded time.
    eprintln!("{:?}: killing a second node", t0.elapsed());
    cluster.kill(1);
    let started = Instant::now();
    let r = api
        .post(&servers[0], "/v1/users", &json!({"id": "no-quorum"}))
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "unavailable", "{problem}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    // Reads of what is already applied keep working from the local read models.
    let some = acked.keys().next().unwrap();
    let (status, _) = api
        .get_at(&servers[1], &format!("/v1/users/{some}"), 0)
        .await;
    assert_eq!(status, 200);

    // The nodes return: writes succeed again (the client retries, as it would in life).
    eprintln!("{:?}: restarting", t0.elapsed());
    cluster.restart(0);
    cluster.restart(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    for (n, server) in servers.iter().enumerate() {
        loop {
            let r = api
                .post(server, "/v1/users", &json!({"id": format!("back-{n}")}))
                .await;
            match r {
                Ok(r) if r.status() == 201 => break,
                Ok(r) if r.status() == 409 => break, // an earlier attempt landed
                Ok(r) => assert!(
                    r.status() == 503 && Instant::now() < deadline,
                    "service did not resume: {}",
                    r.status()
                ),
                Err(e) => assert!(Instant::now() < deadline, "service did not resume: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("{:?}: resumed", t0.elapsed());
    let servers = Arc::into_inner(servers).expect("no writer left");
    for (n, mut server) in servers.into_iter().enumerate() {
        assert!(
            server.is_running(),
            "server {n} exited:\n{}",
            server.log_text()
        );
        assert!(
            !server.log_text().contains("panicked"),
            "server {n} panicked:\n{}",
            server.log_text()
        );
    }
}
