//! Servers on a NATS JetStream store: several in-process `Application`s sharing one
//! test-started nats-server (never the machine's own), each with its own data directory.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use crate::helpers::Running;

/// The API key every test server accepts.
pub const KEY: &str = "nats-test-key";

/// A namespace (stream and buckets) no other test of this process uses.
pub fn namespace(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}n{}{test}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A running server on a NATS store.
pub struct NatsApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The server (stopped before the directory below is removed).
    pub running: Running,
    /// This server's own data directory (read models, export scratch files).
    pub data_dir: tempfile::TempDir,
}

/// Starts a server on the store `url` (comma-separated NATS URLs) and `namespace`.
pub async fn spawn_nats_app(url: &str, namespace: &str) -> NatsApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    spawn_nats_app_in(url, namespace, data_dir).await
}

/// Starts a server over an existing data directory (to test restarts).
pub async fn spawn_nats_app_in(url: &str, namespace: &str, data_dir: tempfile::TempDir) -> NatsApp {
    spawn_nats_app_with(url, namespace, data_dir, |_| {}).await
}

/// Like [`spawn_nats_app_in`], with the test settings changed by `configure`.
pub async fn spawn_nats_app_with(
    url: &str,
    namespace: &str,
    data_dir: tempfile::TempDir,
    configure: impl FnOnce(&mut roster_api::Config),
) -> NatsApp {
    let store = roster_api::Store::parse(url).expect("a NATS store");
    let mut config = roster_api::Config::with_store(store, data_dir.path());
    config.api_keys = vec![KEY.into()];
    config.nats.namespace = namespace.into();
    config.nats.unavailable_timeout = Duration::from_secs(5);
    configure(&mut config);
    let running = Running::start(config).await;
    NatsApp {
        address: running.address.clone(),
        client: reqwest::Client::new(),
        data_dir,
        running,
    }
}

impl NatsApp {
    /// A request with the server key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.address, path))
            .header("x-api-key", KEY)
    }

    /// POST JSON with the server key.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// GET with the server key.
    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path)
            .send()
            .await
            .expect("request sent")
    }

    /// GET once this server's read models have applied `position`; panics unless 200.
    pub async fn get_at(&self, path: &str, position: u64) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let response = self
            .get(&format!("{path}{sep}min_position={position}"))
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Waits until task `id` (as this server's read models hold it) has ended; returns it.
    pub async fn wait_task(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let task: Value = self
                .get(&format!("/v1/tasks/{id}"))
                .await
                .json()
                .await
                .expect("task JSON");
            let status = task["status"].as_str().unwrap_or_default();
            if matches!(status, "completed" | "failed" | "canceled") {
                return task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task did not end: {task}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server gracefully and returns its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.running.stop().await;
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data_dir, dir)
    }
}
