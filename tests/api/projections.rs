//! The read models' state and their rebuild while the server keeps serving (docs/contract.md §6):
//! `GET /v1/projections` and `POST /v1/projections/{name}/rebuild`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Events per second a paced rebuild replays: slow enough for a test to watch it run.
const PACE: u32 = 200;

async fn paced_app() -> TestApp {
    spawn_app_with(tempfile::tempdir().expect("temp dir"), |config| {
        config.rebuild_rate = Some(PACE)
    })
    .await
}

/// The one projection of `GET /v1/projections`.
async fn projection(app: &TestApp) -> Value {
    let response = app.get("/v1/projections").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    let list = body["projections"].as_array().expect("projections");
    assert_eq!(list.len(), 1, "{body}");
    list[0].clone()
}

/// Polls `GET /v1/projections` until `check` holds (at most 30 s); returns that projection.
async fn wait_projection(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = projection(app).await;
        if check(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "never {what}: {p}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every user listed by `GET /v1/users?<query>`, page after page.
async fn all_users(app: &TestApp, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{query}&limit=100&cursor={c}"),
            None => format!("{query}&limit=100"),
        };
        let page = app.list(&path).await;
        out.extend(page["users"].as_array().expect("users").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// The read-model directories in the data directory, sorted.
fn read_model_dirs(data: &Path) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(data)
        .expect("data dir")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n == "readmodels" || n.starts_with("readmodels-"))
        .collect();
    dirs.sort();
    dirs
}

/// The directory the pointer file names (`None`: no pointer, the default `readmodels`).
fn pointer(data: &Path) -> Option<String> {
    std::fs::read_to_string(data.join("readmodels.current"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Waits until the read-model directories are exactly `expected` (old ones are removed in
/// the background once no request holds them).
async fn wait_dirs(data: &Path, expected: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_model_dirs(data) != expected {
        assert!(
            Instant::now() < deadline,
            "read-model directories {:?}, expected {expected:?}",
            read_model_dirs(data)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the read models answer about `ids` and about the organization, to compare before and
/// after a rebuild.
async fn picture(app: &TestApp, ids: &[&str]) -> Value {
    let mut users = serde_json::Map::new();
    for id in ids {
        let user = app.user(id).await.unwrap_or(Value::Null);
        let ledger = json(
            app.get(&format!("/v1/users/{id}/wallet/ledger?limit=100"))
                .await,
        )
        .await;
        users.insert((*id).to_owned(), json!({"user": user, "ledger": ledger}));
    }
    json!({
        "users": users,
        "active": all_users(app, "status=active").await,
        "deactivated": all_users(app, "status=deactivated").await,
        "deleted": all_users(app, "status=deleted").await,
        "by_username": app.list("usernames=Name.7").await,
        "by_email": app.list("emails=P3%40EXAMPLE.com").await,
        "search": app.list("search=person").await,
        "tasks": json(app.get("/v1/tasks?kind=deactivate_users").await).await,
        "settings": json(app.get("/v1/settings").await).await,
    })
}

/// Users with usernames, emails and wallets, a bulk task, a deletion and a settings change:
/// something of every read model.
async fn seed(app: &TestApp) {
    app.seed_users("s", 250).await;
    let people: Vec<Value> = (0..20)
        .map(|i| {
            json!({"id": format!("p{i}"), "username": format!("name{i}"), "name": format!("Person {i}"),
                   "email": format!("p{i}@example.com")})
        })
        .collect();
    let response = app
        .post("/v1/users/upsert", &json!({"users": people}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    for i in 0..5 {
        for coins in [10, -3] {
            let response = app
                .post(
                    &format!("/v1/users/p{i}/wallet"),
                    &json!({"changeset": {"coins": coins}, "update_ledger": true}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    let task = app
        .start_task(
            "/v1/users/deactivate",
            &json!({"user_ids": ["s00001", "s00002", "ghost"]}),
        )
        .await;
    assert_eq!(app.wait_task(&task).await["status"], "completed");
    assert_eq!(app.delete("/v1/users/p9").await.status(), StatusCode::OK);
    let response = app
        .patch("/v1/settings", &json!({"enforce_unique_usernames": "no"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The JSON paths where `a` and `b` differ.
fn differences(a: &Value, b: &Value) -> Vec<String> {
    fn walk(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let (l, r) = (
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    );
                    walk(l, r, format!("{path}.{k}"), out);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (l, r)) in x.iter().zip(y).enumerate() {
                    walk(l, r, format!("{path}[{i}]"), out);
                }
            }
            _ if a != b => out.push(format!("{path}: {a} ≠ {b}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(a, b, String::new(), &mut out);
    out
}

async fn start_rebuild(app: &TestApp) -> String {
    app.start_task("/v1/projections/read_models/rebuild", &json!(null))
        .await
}

#[tokio::test]
async fn projections_show_the_position_the_lag_and_the_status() {
    let app = spawn_app().await;
    let (_, at) = app.seed_users("u", 30).await;
    let response = app.get(&format!("/v1/projections?min_position={at}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert!(
        body["server_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    let p = &body["projections"][0];
    assert_eq!(p["name"], "read_models");
    assert_eq!(p["status"], "live");
    assert_eq!(p["position"], at, "{p}");
    assert_eq!(p["head"], app.head().await);
    assert_eq!(p["lag"], 0);
    assert_eq!(p["error"], Value::Null);
    assert_eq!(p["rebuild"], Value::Null);
    let models: Vec<&str> = p["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for model in [
        "users",
        "username_index",
        "email_index",
        "wallet_ledger",
        "tasks",
    ] {
        assert!(models.contains(&model), "{model} in {models:?}");
    }

    // Server credentials only; unknown parameters refused.
    let anonymous = app
        .anonymous(Method::GET, "/v1/projections")
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_problem(
        app.get("/v1/projections?verbose=1").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn an_unknown_projection_is_404_and_starts_nothing() {
    let app = spawn_app().await;
    app.seed_users("u", 3).await;
    let head = app.head().await;
    for name in ["users", "READ_MODELS", "read_models2"] {
        let response = app
            .post(&format!("/v1/projections/{name}/rebuild"), &json!(null))
            .await;
        let problem = assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("read_models"),
            "{problem}"
        );
    }
    assert_problem(
        app.post("/v1/projections/read_models/rebuild?now=1", &json!(null))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    let anonymous = app
        .anonymous(Method::POST, "/v1/projections/read_models/rebuild")
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(app.head().await, head, "nothing was appended");
    let tasks = json(app.get("/v1/tasks?kind=rebuild_projection").await).await;
    assert_eq!(tasks["tasks"], json!([]));
    assert_eq!(pointer(app.dir.path()), None);
}

/// The main story: while a (paced) rebuild runs, every read answers from the old read models
/// and writes go on; after the switch the rebuilt read models answer exactly as the old ones
/// did, hold the writes made meanwhile, and a restart keeps using them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_keeps_serving_and_switches_to_identical_read_models() {
    let app = paced_app().await;
    seed(&app).await;
    let sample = ["p0", "p1", "p4", "p7", "p9", "s00001", "s00100", "nobody"];
    let before = picture(&app, &sample).await;
    let active_before = before["active"].as_array().unwrap().len();
    assert!(active_before > 250, "{active_before}");

    // Readers hammer the server for the whole rebuild; every answer must be a full one.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..3 {
        let (client, address, key) = (app.client.clone(), app.address.clone(), app.api_key.clone());
        let (stop, reads) = (stop.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let path = match (r + i) % 3 {
                    0 => "/v1/users?limit=50&status=active".to_owned(),
                    1 => format!("/v1/users/s{:05}", (i * 7) % 240 + 3),
                    _ => "/v1/users?usernames=name3".to_owned(),
                };
                let response = client
                    .get(format!("{address}{path}"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .expect("request sent");
                let status = response.status();
                let body: Value = response.json().await.expect("JSON body");
                assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
                match body["users"].as_array() {
                    Some(users) => assert!(!users.is_empty(), "GET {path}: {body}"),
                    None => assert!(body["id"].is_string(), "GET {path}: {body}"),
                }
                if path.contains("status=active") {
                    assert!(
                        body["total"].as_u64().unwrap() >= active_before as u64,
                        "{body}"
                    );
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let head_before = app.head().await;
    let task_id = start_rebuild(&app).await;
    let running = wait_projection(&app, "rebuilding", |p| {
        p["status"] == "rebuilding" && p["rebuild"]["done"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(running["rebuild"]["task_id"], task_id.as_str());
    assert_eq!(running["rebuild"]["organization_id"], "default");
    assert_eq!(running["rebuild"]["phase"], "replaying");
    let total = running["rebuild"]["total"].as_u64().unwrap();
    assert!(total > head_before, "{running}");
    // The old read models keep following the log meanwhile.
    assert!(running["position"].as_u64().unwrap() >= total, "{running}");

    // Writes while it replays: after the head it replays to, so only the catch-up brings them.
    let mut written = Vec::new();
    for i in 0..5 {
        let mut user = app
            .create_user(&json!({"id": format!("during{i}"), "username": format!("during{i}")}))
            .await;
        user.as_object_mut().unwrap().remove("position");
        written.push(user);
    }
    let response = app
        .post(
            "/v1/users/during0/wallet",
            &json!({"changeset": {"gems": 4}, "update_ledger": true}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let last_write = position(&response);
    assert!(last_write > total);
    let still = projection(&app).await;
    assert_eq!(
        still["status"], "rebuilding",
        "the writes came during the rebuild: {still}"
    );
    let mid = json(app.get(&format!("/v1/tasks/{task_id}")).await).await;
    assert_eq!(mid["status"], "running");
    assert_eq!(mid["kind"], "rebuild_projection");
    assert_eq!(mid["progress"]["total"], total);

    let task = app.wait_task(&task_id).await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader
            .await
            .expect("every read during the rebuild succeeded");
    }
    assert!(reads.load(Ordering::Relaxed) >= 10, "the readers ran");
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(
        task["progress"],
        json!({"done": total, "total": total, "failed": 0})
    );
    let result = &task["result"];
    assert_eq!(result["projection"], "read_models");
    assert!(result["replayed"].as_u64().unwrap() >= total, "{result}");
    assert!(
        result["position"].as_u64().unwrap() >= last_write,
        "{result}"
    );
    let directory = result["directory"].as_str().unwrap().to_owned();
    assert!(directory.starts_with("readmodels-"), "{directory}");

    // Switched: the pointer names the new directory, the old one goes.
    assert_eq!(pointer(app.dir.path()).as_deref(), Some(directory.as_str()));
    wait_dirs(app.dir.path(), &[directory.as_str()]).await;
    let p = projection(&app).await;
    assert_eq!(p["status"], "live");
    assert_eq!(p["rebuild"], Value::Null);

    // The same answers as before, plus the writes made during the rebuild.
    let mut after = picture(&app, &sample).await;
    for user in &written[1..] {
        let id = user["id"].as_str().unwrap();
        assert_eq!(app.user(id).await.as_ref(), Some(user), "{id}");
        let found = app.list(&format!("usernames={id}")).await;
        assert_eq!(ids(&found), [id]);
    }
    let active = after["active"].as_array_mut().unwrap();
    active.retain(|u| !u["id"].as_str().unwrap().starts_with("during"));
    let during0 = app.user("during0").await.unwrap();
    assert_eq!(during0["wallet"], json!({"gems": 4}));
    let ledger = &json(app.get("/v1/users/during0/wallet/ledger").await).await["items"];
    assert_eq!(ledger[0]["changeset"], json!({"gems": 4}));
    assert_eq!(differences(&before, &after), Vec::<String>::new());

    // A restart keeps the new directory (and removes nothing it needs).
    let before_restart = picture(&app, &sample).await;
    let head = app.head().await;
    let dir = app.stop().await;
    assert_eq!(pointer(dir.path()).as_deref(), Some(directory.as_str()));
    let app = spawn_app_in(dir).await;
    assert_eq!(read_model_dirs(app.dir.path()), [directory.as_str()]);
    let p = projection(&app).await;
    assert_eq!(
        p["position"], head,
        "the rebuilt read models were opened as they were: {p}"
    );
    let after_restart = picture(&app, &sample).await;
    assert_eq!(
        differences(&before_restart, &after_restart),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn one_rebuild_at_a_time() {
    let app = paced_app().await;
    app.seed_users("u", 300).await;
    let first = app
        .request(Method::POST, "/v1/projections/read_models/rebuild")
        .header("idempotency-key", "rebuild-1")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first = json(first).await;
    let task_id = first["task_id"].as_str().unwrap().to_owned();

    let problem = assert_problem(
        app.post("/v1/projections/read_models/rebuild", &json!(null))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains(&task_id),
        "{problem}"
    );
    // In another organization too: the read models are the server's.
    let other = app
        .in_org("acme", Method::POST, "/v1/projections/read_models/rebuild")
        .send()
        .await
        .unwrap();
    assert_problem(other, StatusCode::CONFLICT, "conflict").await;
    // The request that started it, repeated, gets its first answer.
    let again = app
        .request(Method::POST, "/v1/projections/read_models/rebuild")
        .header("idempotency-key", "rebuild-1")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(json(again).await, first);
    let listed = json(app.get("/v1/tasks?kind=rebuild_projection").await).await;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1, "{listed}");

    assert_eq!(app.wait_task(&task_id).await["status"], "completed");
    // Once it ended, another may start.
    let second = start_rebuild(&app).await;
    assert_ne!(second, task_id);
    assert_eq!(app.wait_task(&second).await["status"], "completed");
    let directory =
        json(app.get(&format!("/v1/tasks/{second}")).await).await["result"]["directory"]
            .as_str()
            .unwrap()
            .to_owned();
    wait_dirs(app.dir.path(), &[directory.as_str()]).await;
}

#[tokio::test]
async fn a_canceled_rebuild_leaves_the_old_read_models_in_use() {
    let app = paced_app().await;
    app.seed_users("u", 300).await;
    let (total, users) = app.snapshot().await;
    let task_id = start_rebuild(&app).await;
    wait_projection(&app, "rebuilding", |p| {
        p["rebuild"]["done"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(
        read_model_dirs(app.dir.path()).len(),
        2,
        "the new one is being built"
    );
    let response = app
        .post(&format!("/v1/tasks/{task_id}/cancel"), &json!(null))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let task = app.wait_task(&task_id).await;
    assert_eq!(task["status"], "canceled");
    assert!(
        task["progress"]["done"].as_u64().unwrap() < task["progress"]["total"].as_u64().unwrap(),
        "{task}"
    );
    wait_projection(&app, "live again", |p| p["status"] == "live").await;
    // Not switched, and the half-built copy is gone.
    assert_eq!(pointer(app.dir.path()), None);
    wait_dirs(app.dir.path(), &["readmodels"]).await;
    assert_eq!(app.snapshot().await, (total, users));
}

/// A stop mid-rebuild (as a crash would) leaves the old read models in use; the next start
/// removes the half-built directory, and the task starts over and completes.
#[tokio::test]
async fn a_rebuild_stopped_half_way_leaves_the_old_read_models_and_starts_over() {
    let app = paced_app().await;
    app.seed_users("u", 300).await;
    let snapshot = app.snapshot().await;
    let task_id = start_rebuild(&app).await;
    wait_projection(&app, "rebuilding", |p| {
        p["rebuild"]["done"].as_u64() > Some(0)
    })
    .await;
    let dir = app.stop().await;
    assert_eq!(pointer(dir.path()), None, "not switched");
    let dirs = read_model_dirs(dir.path());
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let half_built = dirs.iter().find(|d| *d != "readmodels").unwrap().clone();

    let app = spawn_app_in(dir).await;
    assert!(
        !app.dir.path().join(&half_built).exists(),
        "the half-built read models were removed at start"
    );
    assert_eq!(app.snapshot().await, snapshot, "the old read models answer");
    let task = app.wait_task(&task_id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let directory = task["result"]["directory"].as_str().unwrap().to_owned();
    assert_ne!(directory, half_built);
    assert_eq!(pointer(app.dir.path()).as_deref(), Some(directory.as_str()));
    wait_dirs(app.dir.path(), &[directory.as_str()]).await;
    assert_eq!(app.snapshot().await, snapshot);
}

/// On NATS each server keeps its own read models: a rebuild asked of one server runs on that
/// server only. While that server is down, the others leave the task alone (their workers do
/// take over other tasks of a vanished server); when it comes back with its data directory, it
/// starts the rebuild over and completes it. The others' read models are untouched, and the
/// task is visible from every server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_a_rebuild_runs_only_on_the_server_that_was_asked() {
    use crate::nats_helpers::{namespace, spawn_nats_app, spawn_nats_app_with};
    let nats = roster_testsupport::NatsServer::shared();
    let ns = namespace("rebuild");
    let a = spawn_nats_app(&nats.url(), &ns).await;
    let b = spawn_nats_app_with(&nats.url(), &ns, tempfile::tempdir().unwrap(), |c| {
        c.rebuild_rate = Some(PACE)
    })
    .await;
    let users: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("n{i:02}"), "email": format!("n{i}@example.com")}))
        .collect();
    let response = a.post("/v1/users/upsert", &json!({"users": users})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let at = position(&response);
    let b_id = b.get_at("/v1/projections", at).await["server_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_id = a.get_at("/v1/projections", at).await["server_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(a_id, b_id);

    let response = b
        .post("/v1/projections/read_models/rebuild", &json!(null))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let created = position(&response);
    let task_id = json(response).await["task_id"].as_str().unwrap().to_owned();
    // B goes away half-way (paced, it cannot have finished).
    let b_dir = b.stop().await;
    assert_eq!(pointer(b_dir.path()), None);
    // A's worker looks at unfinished tasks every second; it must leave this one alone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let waiting = a.get_at(&format!("/v1/tasks/{task_id}"), created).await;
    assert!(
        matches!(waiting["status"].as_str(), Some("pending" | "running")),
        "{waiting}"
    );
    assert_eq!(pointer(a.data_dir.path()), None);
    assert_eq!(read_model_dirs(a.data_dir.path()), ["readmodels"]);

    let b = spawn_nats_app_with(&nats.url(), &ns, b_dir, |_| {}).await;
    let task = b.wait_task(&task_id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["server_id"], b_id.as_str());
    let directory = task["result"]["directory"].as_str().unwrap();
    assert_eq!(pointer(b.data_dir.path()).as_deref(), Some(directory));
    assert_eq!(pointer(a.data_dir.path()), None);
    assert_eq!(read_model_dirs(a.data_dir.path()), ["readmodels"]);
    let head = b.get_at("/v1/projections", 0).await["projections"][0]["head"]
        .as_u64()
        .unwrap();
    let seen = a.get_at(&format!("/v1/tasks/{task_id}"), head).await;
    assert_eq!(seen["status"], "completed");
    let on_a = a.get_at("/v1/users?limit=100", head).await;
    let on_b = b.get_at("/v1/users?limit=100", head).await;
    assert_eq!(on_a["total"], 100);
    assert_eq!(on_a, on_b);
}
