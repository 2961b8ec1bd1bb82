//! Third-party contract checks (issue 18, item 11), run against the real binary:
//!
//! - `openapi-python-client` must accept the served `/openapi.json` and generate a client,
//!   and that client must create, get, list and patch a user (`ops/test/client_smoke.py`);
//! - schemathesis runs against `/openapi.json` with every check on, bounded in time
//!   (`ops/test/schemathesis.toml`), and must find nothing.
//!
//! The tools are the pinned ones `make test-deps` installs into `target/testenv`; without them
//! these tests fail and say how to get them (they never skip).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;

fn testenv() -> PathBuf {
    std::env::var_os("ROSTER_TESTENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/testenv"))
}

fn tool(name: &str) -> PathBuf {
    let path = testenv().join("bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make test-deps` (it installs the pinned schemathesis and \
         openapi-python-client into target/testenv)",
        path.display()
    );
    path
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

async fn server() -> (Roster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = Roster::start(store.to_str().unwrap(), &store, &[]).await;
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_works() {
    let generator = tool("openapi-python-client");
    let python = tool("python");
    let (server, dir) = server().await;
    let document = reqwest::get(format!("{}/openapi.json", server.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let spec = dir.path().join("openapi.json");
    std::fs::write(&spec, &document).unwrap();
    let out = dir.path().join("client");
    let generated = run(
        Command::new(&generator)
            .args(["generate", "--meta", "none", "--path"])
            .arg(&spec)
            .arg("--output-path")
            .arg(&out)
            .arg("--config")
            .arg(repo().join("ops/test/openapi-python-client.yaml")),
        "openapi-python-client generate",
    );
    // What it leaves out: bodies it has no type for — the NDJSON export download and the
    // NDJSON form of the import's body, which are files, not models (the import's JSON form
    // is generated). Anything else it could not read is a failure.
    let unexpected: Vec<&str> = generated
        .lines()
        .filter(|l| l.starts_with("WARNING") || l.contains("Unable to parse"))
        .filter(|l| !l.contains("GET /v1/tasks/{id}/result"))
        .filter(|l| !l.contains("POST /v1/users/import"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the generator could not read parts of the document: {unexpected:?}\n{generated}"
    );
    let smoke = run(
        Command::new(&python)
            .arg(repo().join("ops/test/client_smoke.py"))
            .arg(&out)
            .arg(&server.url)
            .arg(KEY),
        "the generated client's create/get/list/patch",
    );
    println!("{smoke}");
    assert!(smoke.contains("client smoke: ok"), "{smoke}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let st = tool("st");
    let (server, dir) = server().await;
    let started = Instant::now();
    let report = dir.path().join("schemathesis");
    let out = Command::new(&st)
        .arg("--config-file")
        .arg(repo().join("ops/test/schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/openapi.json", server.url))
        .args(["--checks", "all"])
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("Test cases:"))
        .take(2)
        .chain(text.lines().rfind(|l| l.starts_with("====")))
        .map(str::trim)
        .collect();
    println!(
        "schemathesis: {:.0} s; {}",
        started.elapsed().as_secs_f64(),
        summary.join(" | ")
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(server_alive(&server).await, "the server survived the run");
}

async fn server_alive(server: &Roster) -> bool {
    reqwest::get(format!("{}/healthz", server.url))
        .await
        .is_ok_and(|r| r.status().is_success())
}
