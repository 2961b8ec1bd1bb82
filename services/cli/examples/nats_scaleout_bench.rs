//! Create-user throughput of `roster serve` on NATS JetStream, as a ratio to raw JetStream
//! async publish+ack of messages of the same size, measured in the same run on the same
//! nats-server(s): a single node, then a 3-node cluster with replicas 3. Servers are started
//! for the run (free ports, temporary stores; never port 4222).
//!
//! ```text
//! cargo build --release -p roster-cli
//! cargo run --release -p roster-cli --example nats_scaleout_bench [SECONDS] [CONCURRENCY]
//! ```
//! (`make bench-nats`.) Roster: `POST /v1/users` with id, username, email and name (each
//! user its own stream and subject, its own data key in the KV bucket, username and email
//! reservations), CONCURRENCY requests in flight over keep-alive HTTP. Raw: messages of the
//! size one created user adds to Roster's log stream (measured after the Roster run),
//! published asynchronously with up to 4096 awaiting acknowledgement, to a stream with the
//! same storage and replicas.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::stream::{FuturesUnordered, StreamExt};
use roster_testsupport::{NatsCluster, NatsServer};
use serde_json::json;

const KEY: &str = "bench-key";
const WINDOW: usize = 4096;

struct Roster(Child);

impl Drop for Roster {
    fn drop(&mut self) {
        // SIGTERM: a clean stop, as in production.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn roster_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("ROSTER_BIN") {
        return bin.into();
    }
    // Examples are built into `<target>/release/examples/`, the binary into `<target>/release/`
    // (whatever CARGO_TARGET_DIR says).
    let exe = std::env::current_exe().expect("path of this example");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("examples live in <target>/release/examples")
        .join("roster");
    assert!(
        bin.is_file(),
        "build it first: cargo build --release -p roster-cli"
    );
    bin
}

async fn start_roster(urls: &str, replicas: usize, data: &Path) -> (Roster, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(roster_binary())
        .args(["serve", "--store", urls, "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--api-key", KEY])
        .args(["--nats-replicas", &replicas.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start roster");
    let roster = Roster(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await
            && r.status().is_success()
        {
            return (roster, url);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("roster did not start");
}

/// Created users per second at `concurrency`, and how many were created.
async fn create_rate(url: &str, concurrency: usize, seconds: f64) -> (f64, u64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, next, created, stop) =
                (http.clone(), next.clone(), created.clone(), stop.clone());
            let url = url.to_owned();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let body = json!({
                        "id": format!("u{n:08}"),
                        "username": format!("user{n}"),
                        "email": format!("user{n}@example.com"),
                        "name": format!("Bench User {n}"),
                    });
                    let r = http
                        .post(format!("{url}/v1/users"))
                        .header("x-api-key", KEY)
                        .json(&body)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 201 => {
                            created.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => eprintln!("create: {}", r.status()),
                        Err(e) => eprintln!("create: {e}"),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let count = created.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    (count as f64 / elapsed, created.load(Ordering::Relaxed))
}

/// Bytes and messages of a stream.
async fn stream_size(js: &jetstream::Context, name: &str) -> (u64, u64) {
    let mut s = js.get_stream(name).await.expect("stream");
    let info = s.info().await.expect("stream info");
    (info.state.bytes, info.state.messages)
}

/// Acknowledged raw JetStream publishes of `size`-byte messages per second.
async fn raw_rate(js: &jetstream::Context, replicas: usize, size: usize, seconds: f64) -> f64 {
    js.create_stream(stream::Config {
        name: "BENCH_RAW".into(),
        subjects: vec!["benchraw.>".into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .expect("raw stream");
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let mut in_flight = FuturesUnordered::new();
    let (start, mut acked, mut i) = (Instant::now(), 0u64, 0u64);
    while start.elapsed().as_secs_f64() < seconds {
        while in_flight.len() < WINDOW {
            let ack = js
                .publish(format!("benchraw.{}", i % 1024), payload.clone())
                .await
                .expect("publish");
            in_flight.push(ack.into_future());
            i += 1;
        }
        if let Some(ack) = in_flight.next().await {
            ack.expect("ack");
            acked += 1;
        }
    }
    let rate = acked as f64 / start.elapsed().as_secs_f64();
    while let Some(ack) = in_flight.next().await {
        let _ = ack;
    }
    rate
}

struct Row {
    topology: &'static str,
    roster: f64,
    users: u64,
    size: usize,
    log_messages: u64,
    raw: f64,
}

async fn measure(
    topology: &'static str,
    urls: &str,
    replicas: usize,
    concurrency: usize,
    seconds: f64,
) -> Row {
    let data = tempfile::tempdir().unwrap();
    let (roster, url) = start_roster(urls, replicas, data.path()).await;
    let (roster_rate, users) = create_rate(&url, concurrency, seconds).await;
    drop(roster);
    let client = async_nats::connect(urls.split(',').next().unwrap())
        .await
        .unwrap();
    let js = jetstream::new(client);
    let (bytes, log_messages) = stream_size(&js, "ROSTER").await;
    // What one created user adds to the log stream (its events and reservations, its share
    // of a group-committed message and of the message headers).
    let size = (bytes / users.max(1)) as usize;
    let raw = raw_rate(&js, replicas, size, seconds).await;
    Row {
        topology,
        roster: roster_rate,
        users,
        size,
        log_messages,
        raw,
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let concurrency: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let mut rows = Vec::new();
    {
        let server = NatsServer::start();
        rows.push(measure("single node", &server.url(), 1, concurrency, seconds).await);
    }
    {
        let cluster = NatsCluster::start(3);
        rows.push(
            measure(
                "3-node cluster, R3",
                &cluster.urls(),
                3,
                concurrency,
                seconds,
            )
            .await,
        );
    }
    println!(
        "\ncreate-user through `roster serve` (release) at c={concurrency}, {seconds} s each, \
         vs raw JetStream async publish+ack ({WINDOW} in flight) of same-sized messages"
    );
    println!(
        "| topology | Roster creates/s | users (subjects) | log bytes/user | log messages | raw publish+ack/s | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {} | {} | {} | {:.0} | {:.3} |",
            r.topology,
            r.roster,
            r.users,
            r.size,
            r.log_messages,
            r.raw,
            r.roster / r.raw
        );
    }
}
