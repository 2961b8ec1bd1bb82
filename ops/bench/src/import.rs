//! The `import` job (issue 14): `users` users from one NDJSON body — a tenth with a bcrypt
//! hash, the rest without a password — through `POST /v1/users/import`, timed from the
//! request to the task completed and the read models caught up, with the server's RSS growth.
//! Judged against the baseline's bulk load rate measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;

use crate::client::{Conn, Target, call_json, caught_up, wait_task};
use crate::proc::Monitor;
use crate::report::JobResult;

/// A bcrypt hash (cost 10) the lines carry: parsed and checked at import, never verified.
const BCRYPT: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

/// The NDJSON body: line `i` is user `imp<i>` with a username and an email.
pub fn body(users: u64) -> Bytes {
    let mut out = Vec::with_capacity(users as usize * 130);
    for i in 0..users {
        let line = if i % 10 == 0 {
            json!({"id": format!("imp{i}"), "username": format!("imp{i}"),
                   "email": format!("imp{i}@example.com"),
                   "password_hash": {"algorithm": "bcrypt", "hash": BCRYPT}})
        } else {
            json!({"id": format!("imp{i}"), "username": format!("imp{i}"),
                   "email": format!("imp{i}@example.com")})
        };
        serde_json::to_writer(&mut out, &line).expect("JSON serializes");
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// Runs the job against a server (process `pid`) whose store is empty.
pub async fn run(target: &Arc<Target>, pid: u32, users: u64) -> JobResult {
    let name = format!("import {users} users from NDJSON (1/10 bcrypt)");
    let body = body(users);
    let bytes = body.len();
    let monitor = Monitor::start(pid, &[]);
    let started = Instant::now();
    let outcome: anyhow::Result<f64> = async {
        let mut conn = Conn::open(target.clone()).await?;
        let (status, answer) = conn.send_ndjson("/v1/users/import", body).await?;
        if status != StatusCode::ACCEPTED {
            bail!(
                "POST /v1/users/import: {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        let id = answer["task_id"].as_str().context("no task_id")?.to_owned();
        let accepted = started.elapsed().as_secs_f64();
        let task = wait_task(target, &id, Duration::from_secs(3600)).await?;
        if task["status"] != "completed" {
            bail!("import task {}", task["status"]);
        }
        if task["progress"]["done"] != users {
            bail!("imported {} of {users}", task["progress"]);
        }
        caught_up(target, Duration::from_secs(600)).await?;
        Ok(accepted)
    }
    .await;
    let secs = started.elapsed().as_secs_f64();
    let usage = monitor.finish().await;
    let timing = sign_in_timing(target).await;
    match outcome {
        Ok(upload_s) => {
            let mut job = JobResult::done("import", name, users, "users", secs);
            match timing {
                Ok(medians) => {
                    println!("  import sign-in medians (wrong password), ms: {medians}");
                    job.details.insert("sign_in_median_ms".into(), medians);
                }
                Err(e) => {
                    job.details
                        .insert("sign_in_timing_error".into(), json!(format!("{e:#}")));
                }
            }
            job.rss_peak_mb = Some(usage.rss_peak_mb);
            let growth = usage.rss_peak_mb - usage.rss_start_mb;
            job.details.insert("upload_s".into(), json!(upload_s));
            job.details.insert("body_bytes".into(), json!(bytes));
            job.details
                .insert("rss_before_mb".into(), json!(usage.rss_start_mb));
            job.details.insert("rss_growth_mb".into(), json!(growth));
            job.details
                .insert("server_cpu_cores".into(), json!(usage.server_cpu_cores));
            job.note = Some(format!(
                "body {:.0} MB stored in {upload_s:.1} s; server RSS {:.0} MB before (+{growth:.0} MB)",
                bytes as f64 / 1e6,
                usage.rss_start_mb
            ));
            println!(
                "  import {:<50}{:>9.0} users/s ({secs:.1} s; +{growth:.0} MiB RSS)",
                job.name, job.rate_per_sec
            );
            job
        }
        Err(e) => {
            println!("  import failed: {e:#}");
            JobResult::missing("import", name, "failed", format!("{e:#}"))
        }
    }
}

/// Sign-ins with a wrong password of 25 argon2id users, 25 users imported with an md5 hash
/// and 25 unknown usernames, interleaved (one attempt per account, under the per-address
/// limit): the median of each, in ms. They should be equal within noise (docs/import.md).
async fn sign_in_timing(target: &Arc<Target>) -> anyhow::Result<serde_json::Value> {
    const N: usize = 25;
    let own: Vec<serde_json::Value> = (0..N)
        .map(|k| json!({"id": format!("t-own-{k}"), "username": format!("t-own-{k}"), "password": "the right password"}))
        .collect();
    call_json(
        target,
        Method::POST,
        "/v1/users/upsert",
        Some(json!({"users": own})),
        StatusCode::OK,
    )
    .await?;
    // md5("the right password"), unsalted.
    let md5 = {
        use md5::Digest;
        hex::encode(md5::Md5::digest(b"the right password"))
    };
    let weak: Vec<serde_json::Value> = (0..N)
        .map(|k| {
            json!({"id": format!("t-md5-{k}"), "username": format!("t-md5-{k}"),
                        "password_hash": {"algorithm": "md5", "hash": md5}})
        })
        .collect();
    let answer = call_json(
        target,
        Method::POST,
        "/v1/users/import",
        Some(json!({"users": weak})),
        StatusCode::ACCEPTED,
    )
    .await?;
    let id = answer["task_id"].as_str().context("no task_id")?.to_owned();
    let task = wait_task(target, &id, Duration::from_secs(60)).await?;
    if task["status"] != "completed" {
        bail!("md5 users' import task {}", task["status"]);
    }
    let public = Target::new(target.addr, None)?;
    let mut conn = Conn::open(public).await?;
    let mut times: [Vec<f64>; 3] = Default::default();
    for k in 0..N {
        for (kind, username) in [
            format!("t-own-{k}"),
            format!("t-md5-{k}"),
            format!("t-nobody-{k}"),
        ]
        .into_iter()
        .enumerate()
        {
            let body = json!({"username": username, "password": "a wrong password"}).to_string();
            let started = Instant::now();
            let (status, _) = conn
                .send(Method::POST, "/v1/sessions", Some(Bytes::from(body)))
                .await?;
            if status != StatusCode::UNAUTHORIZED {
                bail!("a wrong password answered {status}");
            }
            times[kind].push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(json!({
        "argon2id": median(&mut times[0]),
        "md5": median(&mut times[1]),
        "unknown": median(&mut times[2]),
    }))
}
