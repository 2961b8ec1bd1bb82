//! Login throughput and its effect on other requests (issue 5's closing note).
//!
//! ```sh
//! cargo run --release -p roster-api --example login_bench [-- <seconds per phase>]
//! ```
//!
//! 1. Single-thread argon2id hashes/s with the server's parameters (the cost of one login).
//! 2. A real server (port 0, temp dir): logins/s through `POST /v1/sessions` at concurrency 32,
//!    and that as a ratio of (1) — the ideal on N cores is about N.
//! 3. p99 latency of `GET /v1/users/{id}`, alone and while the logins saturate the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::PasswordHasher as _;
use argon2::password_hash::{SaltString, rand_core::OsRng};
use hdrhistogram::Histogram;
use serde_json::json;

const CONCURRENCY: usize = 32;
const USERS: usize = 64;
const PASSWORD: &str = "correct horse battery staple";

fn single_thread_hashes_per_second(window: Duration) -> f64 {
    let argon2 = roster_api::password::argon2();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < window {
        let salt = SaltString::generate(&mut OsRng);
        argon2
            .hash_password(PASSWORD.as_bytes(), &salt)
            .expect("argon2id hashes");
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn read_latencies(
    client: &reqwest::Client,
    base: &str,
    window: Duration,
    stop: Option<&AtomicBool>,
) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < window && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        let t = Instant::now();
        let response = client
            .get(format!("{base}/v1/users/u{}", i % USERS))
            .header("x-api-key", "bench-key")
            .send()
            .await
            .expect("GET sent");
        assert!(response.status().is_success(), "{}", response.status());
        let _ = response.bytes().await;
        histogram
            .record(t.elapsed().as_micros() as u64)
            .expect("in range");
        i += 1;
        // A steady trickle of reads, as a client population would send.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    histogram
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let phase = Duration::from_secs(
        std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hashes =
        tokio::task::spawn_blocking(move || single_thread_hashes_per_second(phase / 2)).await?;
    println!("cores: {cores}");
    println!("single-thread argon2id (m=19456 KiB, t=2, p=1): {hashes:.1} hashes/s");

    let dir = tempfile::tempdir()?;
    let mut config = roster_api::Config::new(dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    config.api_keys = vec!["bench-key".into()];
    let app = roster_api::Application::build(config).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY * 2)
        .build()?;
    let users: Vec<_> = (0..USERS)
        .map(|i| json!({"id": format!("u{i}"), "username": format!("u{i}"), "password": PASSWORD}))
        .collect();
    let response = client
        .post(format!("{base}/v1/users/upsert"))
        .header("x-api-key", "bench-key")
        .json(&json!({"users": users}))
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "{}", response.status());
    let at = response.headers()["x-roster-position"].to_str()?.to_owned();
    client
        .get(format!("{base}/v1/users/u0?min_position={at}"))
        .header("x-api-key", "bench-key")
        .send()
        .await?;

    let idle = read_latencies(&client, &base, phase / 2, None).await;
    println!(
        "GET /v1/users/{{id}} alone:            p50 {:.2} ms, p99 {:.2} ms ({} requests)",
        idle.value_at_quantile(0.5) as f64 / 1e3,
        idle.value_at_quantile(0.99) as f64 / 1e3,
        idle.len()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (client, base, stop, logins, failures) = (
            client.clone(),
            base.clone(),
            stop.clone(),
            logins.clone(),
            failures.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let response = client
                    .post(format!("{base}/v1/sessions"))
                    .json(&json!({"username": format!("u{}", i % USERS), "password": PASSWORD}))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        logins.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += CONCURRENCY;
            }
        }));
    }
    // Let the pool fill up, then measure logins and reads over the same window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = logins.load(Ordering::Relaxed);
    let started = Instant::now();
    let busy = read_latencies(&client, &base, phase, None).await;
    let elapsed = started.elapsed().as_secs_f64();
    let done = logins.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let rate = done as f64 / elapsed;
    println!(
        "logins at c={CONCURRENCY}: {rate:.1} logins/s ({done} in {elapsed:.1} s, {} failed) = {:.2} x single-thread hashes/s",
        failures.load(Ordering::Relaxed),
        rate / hashes
    );
    println!(
        "GET /v1/users/{{id}} during the logins: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
        busy.value_at_quantile(0.5) as f64 / 1e3,
        busy.value_at_quantile(0.99) as f64 / 1e3,
        busy.max() as f64 / 1e3,
        busy.len()
    );
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}
