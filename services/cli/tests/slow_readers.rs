//! Slow stream readers cost bounded memory (issue 18, item 2): on a log of tens of MB, clients
//! that open `GET /v1/events/stream` (SSE) or `GET /v1/events` (NDJSON) and then never read
//! cost the server at most 1 MiB each, `/healthz` and writes go on, and the stalled clients
//! are cut off once they have taken nothing for the send timeout.
//!
//! The server is the real binary in a child process, so its resident memory is its own.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Stalled clients of each kind.
const STALLED: usize = 24;
/// The send timeout the server runs with here (the default is 60 s).
const SEND_TIMEOUT: u64 = 6;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("linux /proc");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("linux /proc");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Waits until the server has used no CPU for half a second (it has filled every buffer it
/// may fill and stopped), at most `limit`; returns the highest resident size seen meanwhile.
async fn until_quiet(pid: u32, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let mut last = cpu_ticks(pid);
    let mut peak = rss_bytes(pid);
    loop {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak = peak.max(rss_bytes(pid));
        }
        let now = cpu_ticks(pid);
        if now == last || Instant::now() > deadline {
            return peak;
        }
        last = now;
    }
}

/// A client that sends `request`, reads the first bytes of the answer, then stops reading.
async fn stalled(address: &str, request: String) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    // A small window, as a slow phone has: the server's data waits on the server's side.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address.parse().unwrap()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "the stream was accepted");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_readers_cost_bounded_memory_and_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let send_timeout = SEND_TIMEOUT.to_string();
    let server = Roster::start(
        store.to_str().unwrap(),
        &store,
        &[
            "--send-timeout",
            &send_timeout,
            "--max-streams-per-key",
            "64",
        ],
    )
    .await;
    let api = Api::new();

    // Tens of MB of log: users with 2.5 KB of custom data each, 100 per upsert.
    let pad = "x".repeat(2500);
    let mut last = 0;
    for batch in 0..100 {
        let users: Vec<_> = (0..100)
            .map(|i| json!({"id": format!("u{batch}-{i}"), "name": "Slow Reader", "custom": {"pad": pad}}))
            .collect();
        let r = api
            .post(&server, "/v1/users/upsert", &json!({"users": users}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        last = position(&r);
    }
    // One reader that does read: the whole log, and a warm server to measure from.
    let ndjson = api
        .http
        .get(format!("{}/v1/events", server.url))
        .header("x-api-key", KEY)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let log_bytes = ndjson.len();
    assert!(
        log_bytes > 20 << 20,
        "a log of tens of MB: {log_bytes} bytes"
    );
    assert_eq!(ndjson.iter().filter(|b| **b == b'\n').count() as u64, last);

    let pid = server.pid();
    until_quiet(pid, Duration::from_secs(20)).await;
    // Freed pages go back to the system a few seconds after a burst (jemalloc's decay): start
    // from the settled size.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = rss_bytes(pid);
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut clients = Vec::new();
    for _ in 0..STALLED {
        let sse = format!(
            "GET /v1/events/stream?after=0 HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\n\r\n"
        );
        clients.push(stalled(&address, sse).await);
        let ndjson = format!(
            "GET /v1/events HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\naccept: application/x-ndjson\r\n\r\n"
        );
        clients.push(stalled(&address, ndjson).await);
    }
    let peak = until_quiet(pid, Duration::from_secs(30)).await;
    let after = peak.max(rss_bytes(pid));
    let growth = after.saturating_sub(before);
    let per_client = growth / clients.len() as u64;
    println!(
        "log {:.1} MB; {} stalled clients: server RSS {:.1} MB -> {:.1} MB at most, {:.0} KiB per client",
        log_bytes as f64 / 1e6,
        clients.len(),
        before as f64 / 1e6,
        after as f64 / 1e6,
        per_client as f64 / 1024.0
    );
    assert!(
        per_client <= 1 << 20,
        "a stalled reader costs at most 1 MiB: {per_client} bytes each"
    );

    // The server still answers, at once and for writes too.
    let started = Instant::now();
    let health = api
        .http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let health_ms = started.elapsed().as_millis();
    let created = api
        .post(&server, "/v1/users", &json!({"id": "still-writes"}))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    println!(
        "/healthz answered in {health_ms} ms with {} stalled clients",
        clients.len()
    );

    // Nothing taken for the send timeout: every stalled client is cut off. Reading now, each
    // gets what was in flight and then the end, well before the whole log (NDJSON) or ever
    // (SSE, which never ends by itself).
    tokio::time::sleep(Duration::from_secs(SEND_TIMEOUT + 2)).await;
    for mut client in clients {
        let mut got = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the server closed the stalled stream");
        assert!(
            got.len() < log_bytes,
            "cut off before the end: {} bytes",
            got.len()
        );
    }
    println!("every stalled client was cut off after {SEND_TIMEOUT} s without progress");
}
