//! Child processes for the scale-out tests: `roster serve` on a NATS store, and a JetStream
//! cluster started from the checked-in `ops/nats/cluster/*.conf` (ports and store directories
//! templated, so tests never touch a NATS someone left running).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The API key every test server accepts.
pub const KEY: &str = "scaleout-test-key";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

/// A `roster serve` child process; SIGKILLed and reaped on drop.
pub struct Roster {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Roster {
    /// Starts `roster serve --store <store> --data-dir <data_dir>` with `extra` flags, logging
    /// to `<data_dir>.log`, and waits until `/readyz` answers 200.
    pub async fn start(store: &str, data_dir: &Path, extra: &[&str]) -> Roster {
        let port = free_port();
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the server log");
        let child = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["serve", "--store", store, "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--api-key", KEY])
            .args(extra)
            .env("RUST_LOG", "info,sled=warn,async_nats=warn")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("roster starts");
        let mut server = Roster {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", server.url)).send().await
                && r.status().is_success()
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "roster exited ({status}) at start; log:\n{}",
                    server.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "roster did not become ready; log:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process still runs (it has not panicked or exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Roster {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A client with the server key.
pub struct Api {
    pub http: reqwest::Client,
}

impl Api {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub async fn post(
        &self,
        server: &Roster,
        path: &str,
        body: &Value,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(format!("{}{path}", server.url))
            .header("x-api-key", KEY)
            .json(body)
            .send()
            .await
    }

    pub async fn get(&self, server: &Roster, path: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .get(format!("{}{path}", server.url))
            .header("x-api-key", KEY)
            .send()
            .await
    }

    /// GET once the server's read models have applied `position`; the JSON and the status.
    pub async fn get_at(&self, server: &Roster, path: &str, position: u64) -> (u16, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = self
            .get(server, &format!("{path}{sep}min_position={position}"))
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }
}

/// The `x-roster-position` of a write.
pub fn position(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("x-roster-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("x-roster-position header")
}

/// Where `nats-server` is (`make test-deps` installs 2.15 under target/testenv).
pub fn nats_server_binary() -> PathBuf {
    roster_testsupport::nats_server_binary()
}

/// Whether this nats-server understands `sync_interval` (from 2.10 on).
pub fn supports_sync_interval(binary: &Path) -> bool {
    roster_testsupport::supports_sync_interval(binary)
}

/// One node of [`OpsCluster`].
struct Node {
    conf: PathBuf,
    log: PathBuf,
    client_port: u16,
    child: Option<Child>,
}

/// The 3-node JetStream cluster of `ops/nats/cluster/n{1,2,3}.conf`: the same files with
/// free ports and a temporary store; `sync_interval: always` enabled where supported.
pub struct OpsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    binary: PathBuf,
}

impl OpsCluster {
    pub fn start() -> OpsCluster {
        let binary = nats_server_binary();
        let sync = supports_sync_interval(&binary);
        let dir = tempfile::Builder::new()
            .prefix("roster-ops-cluster-")
            .tempdir()
            .expect("temp dir");
        let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/nats/cluster");
        // The checked-in ports, each mapped to a free one.
        let mut ports = Vec::new();
        for base in [14222u16, 18222, 16222] {
            for i in 0..3 {
                ports.push((base + i, free_port()));
            }
        }
        let mut nodes = Vec::new();
        for i in 1..=3u16 {
            let mut text = std::fs::read_to_string(ops.join(format!("n{i}.conf")))
                .expect("read an ops/nats/cluster config");
            for (from, to) in &ports {
                text = text.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
            }
            let store = dir.path().join(format!("n{i}"));
            text = text.replace(
                &format!("\"data/cluster/n{i}\""),
                &format!("\"{}\"", store.display()),
            );
            if sync {
                text = text.replace("# sync_interval: always", "sync_interval: always");
            }
            assert!(
                !text.contains("1422") && text.contains(&store.display().to_string()),
                "the config was templated:\n{text}"
            );
            let conf = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&conf, text).expect("write a node config");
            let client_port = ports
                .iter()
                .find(|(from, _)| *from == 14221 + i)
                .expect("client port")
                .1;
            nodes.push(Node {
                conf,
                log: dir.path().join(format!("n{i}.log")),
                client_port,
                child: None,
            });
        }
        let mut cluster = OpsCluster { dir, nodes, binary };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_ready(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.conf)
            .arg("-l")
            .arg(&node.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        node.child = Some(child);
    }

    /// Waits until node `i` accepts clients and has seen a JetStream metadata leader.
    fn wait_ready(&self, i: usize) {
        let node = &self.nodes[i];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            if std::net::TcpStream::connect(("127.0.0.1", node.client_port)).is_ok()
                && log.contains("metadata leader")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node n{} not ready; log:\n{log}",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Every node's client URL, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its config and store.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// The directory holding the nodes' configs, logs and stores.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OpsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
