//! `spawn_app()` and request helpers shared by every test.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

/// A running server and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The server API key.
    pub api_key: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The server (stopped before the directory below is removed).
    pub running: Running,
    /// The data directory (kept until the app is dropped).
    pub dir: tempfile::TempDir,
}

/// A server running on a runtime of its own in this process: its address and how to stop it.
/// When it stops (or is dropped, unless the test already failed) every event of its log is
/// checked against its committed schema ([`crate::event_schemas`]); then it is asked to stop,
/// and waited for.
pub struct Running {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// A key of the server's (to read its log; a key of its own, so that the streams a test
    /// holds do not count against it).
    api_key: Option<String>,
    /// Organizations other than the default one the test wrote to (their logs are checked too).
    pub orgs: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<std::sync::mpsc::Receiver<Result<(), String>>>,
    /// Whether the log is checked against the event schemas when the server stops.
    pub check_events: bool,
}

impl Running {
    /// Builds the server from `config` (listening on port 0) and runs it on its own thread.
    pub async fn start(mut config: roster_api::Config) -> Self {
        config.listen = "127.0.0.1:0".parse().unwrap();
        // Without keys the server makes one of its own, which a test finds in its file.
        let api_key = (!config.api_keys.is_empty()).then(|| "event-schema-check".to_owned());
        config.api_keys.extend(api_key.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let app = match roster_api::Application::build(config).await {
                    Ok(app) => app,
                    Err(e) => return drop(ready_tx.send(Err(format!("{e:#}")))),
                };
                let _ = ready_tx.send(Ok(app.port()));
                let result = app
                    .run_until_stopped(async {
                        let _ = rx.await;
                    })
                    .await
                    .map_err(|e| format!("{e:#}"));
                let _ = stopped_tx.send(result);
            });
        });
        let port = ready_rx
            .await
            .expect("server thread")
            .unwrap_or_else(|e| panic!("server builds: {e}"));
        Self {
            address: format!("http://127.0.0.1:{port}"),
            check_events: api_key.is_some(),
            api_key,
            orgs: Default::default(),
            shutdown: Some(tx),
            stopped: Some(stopped_rx),
        }
    }

    /// Checks the log against the event schemas, stops the server gracefully and waits until
    /// it has.
    pub async fn stop(&mut self) {
        if let Some(check) = self.event_check()
            && let Err(e) = check.run().await
        {
            panic!("events that do not match their schemas:\n{e}");
        }
        self.check_events = false;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let result = tokio::task::spawn_blocking(move || stopped.recv())
                .await
                .expect("waiting for the server");
            result
                .expect("server thread")
                .expect("server stopped cleanly");
        }
    }
}

impl Running {
    /// What the event check reads, while the server runs and the check is wanted.
    fn event_check(&self) -> Option<crate::event_schemas::Check> {
        let key = self.api_key.clone().filter(|_| self.check_events)?;
        self.shutdown.as_ref()?;
        Some(crate::event_schemas::Check {
            address: self.address.clone(),
            api_key: key,
            orgs: self.orgs.lock().unwrap().iter().cloned().collect(),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The test's runtime may be single-threaded and is blocked here: read the log from a
        // thread of its own (the server runs on its own runtime).
        let check = self
            .event_check()
            .filter(|_| !std::thread::panicking())
            .map(|check| {
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime")
                        .block_on(check.run())
                })
                .join()
                .expect("checking the log")
            });
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.recv_timeout(std::time::Duration::from_secs(10));
        }
        if let Some(Err(e)) = check {
            panic!("events that do not match their schemas:\n{e}");
        }
    }
}

/// Starts the real server on port 0 over a fresh temporary directory.
pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    spawn_app_in(dir).await
}

/// Starts the server over an existing directory (to test restarts).
pub async fn spawn_app_in(dir: tempfile::TempDir) -> TestApp {
    spawn_app_with(dir, |_| {}).await
}

/// Starts the server over `dir` with the test settings, changed by `configure`.
pub async fn spawn_app_with(
    dir: tempfile::TempDir,
    configure: impl FnOnce(&mut roster_api::Config),
) -> TestApp {
    let mut config = roster_api::Config::new(dir.path());
    config.api_keys = vec!["test-key".into()];
    config.body_limit = 1024 * 1024;
    configure(&mut config);
    let running = Running::start(config).await;
    TestApp {
        address: running.address.clone(),
        api_key: "test-key".into(),
        client: reqwest::Client::new(),
        dir,
        running,
    }
}

impl TestApp {
    /// A request with the server key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.address, path))
            .header("authorization", format!("Bearer {}", self.api_key))
    }

    /// A request without credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.address, path))
    }

    /// POST JSON with the server key.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// PATCH JSON with the server key.
    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PATCH, path)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// GET with the server key, reading its own writes: it first waits (`x-roster-min-position`)
    /// for the read models to reach the log's head, as a client does that needs to see what it
    /// wrote. A `min_position` in `path` takes precedence.
    pub async fn get(&self, path: &str) -> Response {
        let head = self.head().await;
        self.request(Method::GET, path)
            .header("x-roster-min-position", head.to_string())
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a user and returns its body; panics unless 201.
    pub async fn create_user(&self, body: &Value) -> Value {
        let response = self.post("/v1/users", body).await;
        let status = response.status();
        let json: Value = response.json().await.expect("JSON body");
        assert_eq!(status, StatusCode::CREATED, "{json}");
        json
    }

    /// GET that first waits for the read models to reach `position`.
    pub async fn get_at(&self, path: &str, position: u64) -> Response {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.get(&format!("{path}{sep}min_position={position}"))
            .await
    }

    /// A request with the server key in another organization (`x-organization-id`).
    pub fn in_org(&self, org: &str, method: Method, path: &str) -> RequestBuilder {
        if roster_domain::OrgId::parse(org).is_ok() {
            self.running.orgs.lock().unwrap().insert(org.to_owned());
        }
        self.request(method, path).header("x-organization-id", org)
    }

    /// The log's head position, from `/readyz` (unchanged ⇔ nothing was appended).
    pub async fn head(&self) -> u64 {
        let body = json(
            self.anonymous(Method::GET, "/readyz")
                .send()
                .await
                .expect("request sent"),
        )
        .await;
        body["log_position"].as_u64().expect("log_position")
    }

    /// The user as the read models hold it once they have applied everything written so far;
    /// `None` on 404.
    pub async fn user(&self, id: &str) -> Option<Value> {
        let head = self.head().await;
        let response = self.get_at(&format!("/v1/users/{id}"), head).await;
        match response.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(json(response).await),
            other => panic!("GET /v1/users/{id}: {other}"),
        }
    }

    /// `GET /v1/users?<query>` once the read models have applied everything written so far.
    pub async fn list(&self, query: &str) -> Value {
        let head = self.head().await;
        let response = self.get_at(&format!("/v1/users?{query}"), head).await;
        let status = response.status();
        let body = json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Ids of `GET /v1/users?<query>`, in order.
    pub async fn list_ids(&self, query: &str) -> Vec<String> {
        ids(&self.list(query).await)
    }

    /// The first 100 users of the organization and the total, to compare before and after.
    pub async fn snapshot(&self) -> (u64, Vec<Value>) {
        let body = self.list("limit=100").await;
        let users = body["users"].as_array().expect("users").clone();
        (body["total"].as_u64().expect("total"), users)
    }

    /// Stops the server gracefully and returns its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.running.stop().await;
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }
}

/// Asserts a 422 `invalid_request` problem+json answer; returns the problem (see [`fields`]).
pub async fn assert_invalid(response: Response) -> Value {
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await
}

/// Asserts a problem+json response with a status and code; returns the body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("JSON problem");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["type"], format!("https://roster.dev/errors/{code}"));
    body
}

/// The `x-roster-position` header of a write.
pub fn position(response: &Response) -> u64 {
    response
        .headers()
        .get("x-roster-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("x-roster-position header")
}

/// The JSON body of a response.
pub async fn json(response: Response) -> Value {
    response.json().await.expect("JSON body")
}

/// The ids of a `{"users": [...]}` page, in order.
pub fn ids(page: &Value) -> Vec<String> {
    page["users"]
        .as_array()
        .expect("users array")
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The `errors[].field` of a problem, in order.
pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A response's `ETag` header.
pub fn etag(response: &Response) -> String {
    response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("ETag header")
        .to_owned()
}

impl TestApp {
    /// DELETE with the server key.
    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path)
            .send()
            .await
            .expect("request sent")
    }

    /// The user's raw events (`GET /v1/users/{id}/events`), every page.
    pub async fn events_of(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let response = self
                .get(&format!("/v1/users/{id}/events?after={after}&limit=1000"))
                .await;
            assert_eq!(response.status(), StatusCode::OK, "events of {id}");
            let page = json(response).await;
            out.extend(page["events"].as_array().expect("events").iter().cloned());
            match page["next_after"].as_u64() {
                Some(next) => after = next,
                None => return out,
            }
        }
    }
}

/// The top-level fields of two user objects that differ, leaving out the ones every write
/// changes (`version`, `updated_at`, `position`).
pub fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !matches!(k.as_str(), "version" | "updated_at" | "position"))
        .filter(|k| b.get(*k) != a.get(*k))
        .cloned()
        .collect()
}

/// Every file under `dir`, recursively.
pub fn all_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// For each needle, the files under `dir` whose bytes contain it, compared case-insensitively
/// (ASCII). Reads every file once.
pub fn find_in_files(dir: &std::path::Path, needles: &[&str]) -> Vec<(String, Vec<String>)> {
    let needles: Vec<Vec<u8>> = needles
        .iter()
        .map(|n| n.to_ascii_lowercase().into_bytes())
        .collect();
    let mut hits: Vec<Vec<String>> = vec![Vec::new(); needles.len()];
    for path in all_files(dir) {
        let bytes = std::fs::read(&path)
            .unwrap_or_default()
            .to_ascii_lowercase();
        for (needle, found) in needles.iter().zip(hits.iter_mut()) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                found.push(path.display().to_string());
            }
        }
    }
    needles
        .into_iter()
        .map(|n| String::from_utf8(n).expect("ASCII needle"))
        .zip(hits)
        .collect()
}

/// Panics naming every needle found in a file under `dir`.
pub fn assert_not_on_disk(dir: &std::path::Path, needles: &[&str], when: &str) {
    let leaks: Vec<_> = find_in_files(dir, needles)
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .collect();
    assert!(leaks.is_empty(), "{when}: stored in clear: {leaks:?}");
}

impl TestApp {
    /// Upserts `n` users `<prefix>00000…` in batches of 100; returns their ids and the last position.
    pub async fn seed_users(&self, prefix: &str, n: usize) -> (Vec<String>, u64) {
        let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i:05}")).collect();
        let mut last = 0;
        for batch in ids.chunks(100) {
            let users: Vec<Value> = batch
                .iter()
                .map(|id| serde_json::json!({"id": id, "name": format!("Seed {id}")}))
                .collect();
            let response = self
                .post("/v1/users/upsert", &serde_json::json!({"users": users}))
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            last = position(&response);
        }
        (ids, last)
    }

    /// Starts a bulk task; returns its id (asserts 202).
    pub async fn start_task(&self, path: &str, body: &Value) -> String {
        let response = self.post(path, body).await;
        let status = response.status();
        let body = json(response).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["task_id"].as_str().expect("task_id").to_owned()
    }

    /// Polls `GET /v1/tasks/{id}` until the task ends (at most 60 s) and returns it.
    pub async fn wait_task(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let task = json(self.get(&format!("/v1/tasks/{id}")).await).await;
            if matches!(
                task["status"].as_str(),
                Some("completed" | "failed" | "canceled")
            ) {
                return task;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "task did not end: {task}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// Copies a directory tree (a fixture store) into `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
