//! `roster-bench`: runs the performance suite (issue 8) and writes `results.json`,
//! `chart.svg` and `results.txt`. It builds nothing: `make bench` builds the release binaries
//! first, and this finds `roster`, `bench-ceiling` and `bench-baseline` beside itself.
//!
//! ```text
//! make bench          # full: ~10 min on 2 cores, 100k/1M users
//! make bench-quick    # quick: < 2 min, counts scaled down to 10k/20k
//! target/release/roster-bench --help
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http::{Method, StatusCode};
use roster_bench::client::{
    self, Conn, Target, call_json, caught_up, readyz, wait_task, wait_until_up,
};
use roster_bench::fixtures::loaded_id;
use roster_bench::load::{self, Pace};
use roster_bench::machine::{Machine, fs_type};
use roster_bench::proc::{Monitor, Server, free_addr, mib, pids_named, status_kib};
use roster_bench::report::{JobResult, Results, Stats, TargetCheck, WorkloadResult};
use roster_bench::webhooks;
use roster_bench::workloads::{CreateLoginUsers, Http, UPSERT_BATCH, Upsert, short_count};
use serde_json::{Map, Value, json};

/// The API key the bench's Roster accepts.
const KEY: &str = "bench-key";
/// W6 gives up after this long (the target, 250 000 events/s, replays 1M events in 4 s; a
/// replay of 1.2M events takes ~100 s today, so the limit leaves room to measure it).
const REPLAY_TIMEOUT_S: u64 = 240;
/// Loads of the preloaded set are not capped.
const NO_CAP: Duration = Duration::from_secs(3600);

#[derive(Parser, Clone)]
#[command(
    name = "roster-bench",
    about = "Roster's performance suite: Roster vs an axum echo ceiling vs axum + PostgreSQL"
)]
struct Args {
    /// Short run (< 2 min): 2 s per workload, counts scaled down to 10k users (20k for
    /// export/replay). Targets about sizes are then not judged.
    #[arg(long)]
    quick: bool,
    /// Where results.json, chart.svg and results.txt go.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// Scratch directory for stores and server logs; must be on the real disk (not tmpfs).
    #[arg(long, default_value = "bench/out")]
    work: PathBuf,
    /// Concurrent connections of the generator.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured seconds per workload (default 6, quick 2).
    #[arg(long)]
    duration: Option<f64>,
    /// Unrecorded warm-up seconds before each workload (default 1, quick 0.5).
    #[arg(long)]
    warmup: Option<f64>,
    /// Preloaded users for W2–W5 and W7 (default 100 000, quick 10 000).
    #[arg(long)]
    users: Option<u64>,
    /// Users in the store for W8 (export) and W6 (replay) (default 1 000 000, quick 20 000).
    #[arg(long)]
    big_users: Option<u64>,
    /// Longest the load up to --big-users may take, in seconds (keeps `make bench` under
    /// 15 min); W8 and W6 then run on the users loaded by then, and say so.
    #[arg(long, default_value_t = 420)]
    big_load_cap: u64,
    /// Concurrent upsert requests (100 users each) while preloading.
    #[arg(long, default_value_t = 16)]
    load_concurrency: usize,
    /// PostgreSQL for the baseline (libpq settings, no dbname).
    #[arg(
        long,
        env = "ROSTER_BENCH_PG",
        default_value = "host=127.0.0.1 port=5432 user=postgres"
    )]
    pg: String,
    /// The baseline's connection pool size.
    #[arg(long, default_value_t = 32)]
    pg_pool: usize,
    /// Systems to run (roster, ceiling, baseline).
    #[arg(long, value_delimiter = ',', default_value = "roster,ceiling,baseline")]
    systems: Vec<String>,
    /// Only these workloads and jobs (W1, W2, W3, W3-1, W3-10k, W4, W5, W6, W7, W8, W9,
    /// import, webhooks, teams); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Worker threads of the generator's tokio runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Where the binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// RUST_LOG for `roster serve` (default: unset, i.e. the server's default, info, written to
    /// bench/out/roster.log).
    #[arg(long)]
    roster_log: Option<String>,
    /// Keep Roster's store after the run.
    #[arg(long)]
    keep_store: bool,
    /// Run nothing: redraw the table, results.txt and chart.svg in --out from this
    /// results.json (e.g. after changing how they are drawn).
    #[arg(long)]
    redraw: Option<PathBuf>,
}

struct Plan {
    mode: &'static str,
    warmup: Duration,
    measure: Duration,
    users: u64,
    big_users: u64,
    w3_spread: u64,
}

impl Plan {
    fn of(a: &Args) -> Self {
        let quick = a.quick;
        let users = a.users.unwrap_or(if quick { 10_000 } else { 100_000 });
        Self {
            mode: if quick { "quick" } else { "full" },
            warmup: Duration::from_secs_f64(a.warmup.unwrap_or(if quick { 0.5 } else { 1.0 })),
            measure: Duration::from_secs_f64(a.duration.unwrap_or(if quick { 2.0 } else { 6.0 })),
            users,
            big_users: a
                .big_users
                .unwrap_or(if quick { 20_000 } else { 1_000_000 })
                .max(users),
            w3_spread: 10_000.min(users),
        }
    }

    fn http_workloads(&self) -> Vec<Http> {
        vec![
            Http::Create,
            Http::Patch,
            Http::Wallet { hot: 100 },
            Http::Wallet { hot: 1 },
            Http::Wallet {
                hot: self.w3_spread,
            },
            Http::Get,
            Http::List,
            Http::Login,
        ]
    }
}

/// The request shape the ceiling runs for a workload (all W3 variants send the same requests).
fn ceiling_shape(w: Http) -> Http {
    match w {
        Http::Wallet { .. } => Http::Wallet { hot: 100 },
        other => other,
    }
}

struct Bench {
    args: Args,
    plan: Plan,
    bins: PathBuf,
    notes: Vec<String>,
    config: Map<String, Value>,
    jobs: Vec<JobResult>,
    roster: BTreeMap<String, Stats>,
    roster_missing: BTreeMap<String, String>,
    ceiling: BTreeMap<String, Stats>,
    baseline: BTreeMap<String, Stats>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// Prints the table and writes results.txt and chart.svg (and results.json, unless redrawing).
fn write_outputs(results: &Results, out: &Path, with_json: bool) -> anyhow::Result<()> {
    let table = results.table();
    println!("\n{table}");
    std::fs::create_dir_all(out)?;
    if with_json {
        std::fs::write(
            out.join("results.json"),
            serde_json::to_string_pretty(results)? + "\n",
        )?;
    }
    std::fs::write(out.join("results.txt"), &table)?;
    roster_bench::chart::draw(results, &out.join("chart.svg"))?;
    println!(
        "wrote {0}/results.json, {0}/results.txt and {0}/chart.svg ({1:.0} s in all)",
        out.display(),
        results.total_secs
    );
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.redraw {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: Results = serde_json::from_str(&text)?;
        return write_outputs(&results, &args.out, false);
    }
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let bins = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the executable's directory")?
            .to_owned(),
    };
    for bin in ["roster", "bench-ceiling", "bench-baseline"] {
        if !bins.join(bin).exists() {
            bail!(
                "{} is missing: build first (`cargo build --release -p roster-cli -p roster-bench`, as `make bench` does)",
                bins.join(bin).display()
            );
        }
    }
    std::fs::create_dir_all(&args.work)?;
    std::fs::create_dir_all(&args.out)?;
    let plan = Plan::of(&args);
    println!(
        "roster-bench: {} mode, c={}, {:.1} s warm-up + {:.1} s per workload",
        plan.mode,
        args.concurrency,
        plan.warmup.as_secs_f64(),
        plan.measure.as_secs_f64()
    );
    let machine = Machine::describe(
        &args.work,
        Duration::from_millis(if args.quick { 500 } else { 2000 }),
    );
    println!("machine: {}", machine.summary());
    let mut notes = vec![format!(
        "the load generator ({} tokio worker threads, one keep-alive HTTP/1.1 connection per worker) shares the machine's {} cores with the server under test; its CPU is in the CPU column",
        args.client_threads, machine.cores
    )];
    if machine.store_fs == "tmpfs" {
        notes.push(format!(
            "WARNING: the store directory {} is on tmpfs: fsync costs nothing there, durable-write figures are not real",
            args.work.display()
        ));
    }
    if args.quick {
        notes.push(format!(
            "quick mode: {} preloaded users (not 100k), {} for export/replay (not 1M), {:.0} s per workload; size targets not judged",
            short_count(plan.users),
            short_count(plan.big_users),
            plan.measure.as_secs_f64()
        ));
    }
    let mut config = Map::new();
    config.insert("concurrency".into(), json!(args.concurrency));
    config.insert("warmup_s".into(), json!(plan.warmup.as_secs_f64()));
    config.insert("measure_s".into(), json!(plan.measure.as_secs_f64()));
    config.insert("users".into(), json!(plan.users));
    config.insert("big_users".into(), json!(plan.big_users));
    config.insert("load_concurrency".into(), json!(args.load_concurrency));
    config.insert("big_load_cap_s".into(), json!(args.big_load_cap));
    config.insert("client_threads".into(), json!(args.client_threads));
    config.insert("baseline_pool".into(), json!(args.pg_pool));
    let mut bench = Bench {
        args,
        plan,
        bins,
        notes,
        config,
        jobs: Vec::new(),
        roster: BTreeMap::new(),
        roster_missing: BTreeMap::new(),
        ceiling: BTreeMap::new(),
        baseline: BTreeMap::new(),
    };
    if bench.system("roster") {
        bench.roster_phase().await?;
    }
    if bench.system("ceiling") {
        bench.ceiling_phase().await?;
    }
    if bench.system("baseline") {
        bench.baseline_phase().await;
    }
    let results = bench.results(machine, started_at, started.elapsed().as_secs_f64());
    write_outputs(&results, &bench.args.out, true)?;
    Ok(())
}

impl Bench {
    fn system(&self, name: &str) -> bool {
        self.args.systems.iter().any(|s| s == name)
    }

    fn wanted(&self, id: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|o| o == id)
    }

    fn timed(&self) -> Pace {
        Pace::Timed {
            warmup: self.plan.warmup,
            measure: self.plan.measure,
        }
    }

    /// Runs one timed HTTP workload against a server and prints a line.
    async fn measure(
        &self,
        system: &str,
        pid: u32,
        extra_cpu: &[u32],
        target: &Arc<Target>,
        w: Http,
    ) -> Stats {
        self.measure_from(system, pid, extra_cpu, target, w, 0)
            .await
    }

    /// [`Self::measure`] with the generator's workers numbered from `first_worker` (a second
    /// run of W1 on the same store creates other ids).
    async fn measure_from(
        &self,
        system: &str,
        pid: u32,
        extra_cpu: &[u32],
        target: &Arc<Target>,
        w: Http,
        first_worker: usize,
    ) -> Stats {
        let users = self.plan.users;
        let monitor = Monitor::start(pid, extra_cpu);
        let outcome = load::run(target, self.args.concurrency, self.timed(), |i| {
            w.job(first_worker + i, users)
        })
        .await;
        let stats = Stats::new(&outcome, monitor.finish().await);
        println!(
            "  {:<7}{:<34}{:<9}{:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}{}",
            w.id(),
            w.name(users),
            system,
            stats.throughput,
            stats.p50_ms,
            stats.p99_ms,
            stats.errors,
            if stats.errors > 0 {
                format!(" {:?}", outcome.error_samples.first())
            } else {
                String::new()
            }
        );
        stats
    }

    /// Preloads users `from..to` with upserts of 100; the load's own figures are a job row.
    /// Returns how many users went in (fewer than asked if `cap` ran out first), or `None`
    /// if some batch failed.
    async fn load_users(
        &mut self,
        system: &str,
        pid: u32,
        target: &Arc<Target>,
        (from, to): (u64, u64),
        cap: Duration,
    ) -> Option<u64> {
        let c = self.args.load_concurrency;
        let monitor = Monitor::start(pid, &[]);
        let outcome = load::run(
            target,
            c,
            Pace::UntilDone { timeout: cap },
            Upsert::shared(from, to),
        )
        .await;
        let usage = monitor.finish().await;
        let loaded = (outcome.ok * UPSERT_BATCH).min(to - from);
        let mut job = JobResult::done(
            "load",
            format!(
                "{system}: load {} users (upsert ×100, c={c})",
                short_count(to - from)
            ),
            loaded,
            "users",
            outcome.secs,
        );
        job.rss_peak_mb = Some(usage.rss_peak_mb);
        let stats = Stats::new(&outcome, usage);
        job.details
            .insert("batch_p50_ms".into(), json!(stats.p50_ms));
        job.details
            .insert("batch_p99_ms".into(), json!(stats.p99_ms));
        job.details.insert(
            "server_cpu_cores".into(),
            json!(stats.usage.server_cpu_cores),
        );
        let ok = stats.errors == 0;
        if !ok {
            job.status = "errors".into();
            job.note = Some(format!(
                "{} errors: {:?}",
                stats.errors,
                outcome.error_samples.first()
            ));
        } else if outcome.timed_out {
            job.status = "partial".into();
            job.note = Some(format!(
                "stopped by the {:.0} s load cap after {} of {} users",
                cap.as_secs_f64(),
                loaded,
                to - from
            ));
        }
        println!(
            "  load   {:<50}{:>9.0} users/s ({:.1} s){}",
            job.name,
            job.rate_per_sec,
            job.secs,
            job.note
                .as_ref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default()
        );
        self.jobs.push(job);
        ok.then_some(loaded)
    }

    async fn start_roster(&self, store: &Path) -> anyhow::Result<(Server, Arc<Target>)> {
        self.start_roster_with(store, &[]).await
    }

    /// [`Self::start_roster`] with more `roster serve` arguments.
    async fn start_roster_with(
        &self,
        store: &Path,
        extra: &[&str],
    ) -> anyhow::Result<(Server, Arc<Target>)> {
        let addr = free_addr()?;
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--store".into(),
            store.display().to_string(),
            "--listen".into(),
            addr.to_string(),
            "--api-key".into(),
            KEY.into(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut envs: Vec<(&str, &str)> = Vec::new();
        if let Some(level) = &self.args.roster_log {
            envs.push(("RUST_LOG", level));
        }
        let mut server = Server::spawn(
            "roster",
            &self.bins.join("roster"),
            &args,
            &envs,
            addr,
            &self.args.work.join("roster.log"),
        )?;
        let target = Target::new(addr, Some(KEY))?;
        if !wait_until_up(&target, "/readyz", Duration::from_secs(60)).await || server.exited() {
            bail!("roster did not become ready:\n{}", server.log_tail());
        }
        Ok((server, target))
    }

    async fn roster_phase(&mut self) -> anyhow::Result<()> {
        println!("\n== Roster");
        let store = self.args.work.join("roster-store");
        if store.exists() {
            std::fs::remove_dir_all(&store)?;
        }
        std::fs::create_dir_all(&store)?;
        let fs = fs_type(&store);
        let (server, target) = self.start_roster(&store).await?;
        let pid = server.pid();
        let version = std::process::Command::new(self.bins.join("roster"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        self.config.insert("roster_version".into(), json!(version));
        self.config.insert("roster_store_fs".into(), json!(fs));
        let users = self.plan.users;

        for w in self.plan.http_workloads() {
            if !self.wanted(&w.id()) {
                continue;
            }
            match w {
                Http::Create => {}
                Http::Patch => {
                    // The preloaded users go in after W1, so W1 starts on an empty store.
                    if self
                        .load_users("roster", pid, &target, (0, users), NO_CAP)
                        .await
                        != Some(users)
                    {
                        bail!("loading users into Roster failed");
                    }
                    let lag = caught_up(&target, Duration::from_secs(300)).await?;
                    if let Some(job) = self.jobs.last_mut() {
                        job.details.insert("catch_up_s".into(), json!(lag));
                    }
                }
                Http::Login => match login_available(&target).await? {
                    false => {
                        self.roster_missing.insert(
                            w.id(),
                            "POST /v1/sessions answers 404 (sessions not built yet)".into(),
                        );
                        println!("  W9     logins: not available (POST /v1/sessions is 404)");
                        continue;
                    }
                    true => {
                        let o = load::run(
                            &target,
                            4,
                            Pace::UntilDone {
                                timeout: Duration::from_secs(120),
                            },
                            CreateLoginUsers::shared(),
                        )
                        .await;
                        if o.error_count() > 0 {
                            self.roster_missing.insert(
                                w.id(),
                                format!("creating the login users failed: {:?}", o.error_samples),
                            );
                            continue;
                        }
                    }
                },
                _ => {}
            }
            if !matches!(w, Http::Create) && !self.preloaded(&target).await {
                // W2+ need the preloaded users (when --only skipped W2's load).
                self.load_users("roster", pid, &target, (0, users), NO_CAP)
                    .await;
                caught_up(&target, Duration::from_secs(300)).await?;
            }
            let stats = self.measure("roster", pid, &[], &target, w).await;
            self.roster.insert(w.id(), stats);
        }

        if self.wanted("W7") {
            if !self.preloaded(&target).await {
                self.load_users("roster", pid, &target, (0, users), NO_CAP)
                    .await;
                caught_up(&target, Duration::from_secs(300)).await?;
            }
            let job = self.bulk_deactivate(pid, &target).await;
            self.jobs.push(job);
        }

        let big = self.plan.big_users;
        let want_big = self.wanted("W8") || self.wanted("W6");
        if want_big {
            let from = if self.preloaded(&target).await {
                users
            } else {
                0
            };
            let cap = Duration::from_secs(self.args.big_load_cap);
            if let Some(n) = self
                .load_users("roster", pid, &target, (from, big), cap)
                .await
            {
                let big = from + n;
                let lag = caught_up(&target, Duration::from_secs(600)).await?;
                if let Some(job) = self.jobs.last_mut() {
                    job.details.insert("catch_up_s".into(), json!(lag));
                }
                let rss = status_kib(pid, "VmRSS").map(mib).unwrap_or(0.0);
                let mut job = JobResult::done(
                    "RSS",
                    format!("server RSS with {} users loaded", short_count(big)),
                    big,
                    "users",
                    0.0,
                );
                job.rss_peak_mb = Some(rss);
                job.rate_per_sec = 0.0;
                let disk = disk_usage(&store);
                let per_user: Map<String, Value> = disk
                    .iter()
                    .map(|(part, bytes)| (part.clone(), json!(*bytes as f64 / big as f64)))
                    .collect();
                println!(
                    "  RSS    with {} users loaded: {rss:.0} MiB; disk bytes per user: {}",
                    short_count(big),
                    per_user
                        .iter()
                        .map(|(k, v)| format!("{k} {:.0}", v.as_f64().unwrap_or(0.0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                job.details.insert("disk_bytes".into(), json!(disk));
                job.details
                    .insert("disk_bytes_per_user".into(), Value::Object(per_user));
                self.jobs.push(job);
            }
            if self.wanted("W8") {
                let job = self.export(pid, &target).await;
                self.jobs.push(job);
            }
        }
        let head = readyz(&target).await.map(|r| r.0).unwrap_or(0);
        let stop = server.stop(Duration::from_secs(60)).await;
        self.config
            .insert("roster_shutdown_s".into(), json!(stop.as_secs_f64()));
        if want_big && let Some(loaded) = self.jobs.iter().find(|j| j.id == "RSS") {
            let job = self.start_up(&store, loaded.amount).await;
            self.jobs.push(job);
        }
        if self.wanted("W6") && want_big {
            let job = self.replay(&store, head).await;
            self.jobs.push(job);
        }
        if self.wanted("import") {
            let job = self.import().await;
            self.jobs.push(job);
        }
        if self.wanted("webhooks") {
            let job = self.webhooks().await;
            self.jobs.push(job);
        }
        if self.wanted("teams") {
            let job = self.team_joins().await;
            self.jobs.push(job);
        }
        if !self.args.keep_store {
            let _ = std::fs::remove_dir_all(&store);
        }
        Ok(())
    }

    /// Start-up: a new server on the loaded store, timed from spawn to `/readyz` and to the
    /// first answer of a search for the last user loaded; then its resident memory, idle.
    async fn start_up(&self, store: &Path, users: u64) -> JobResult {
        let name = format!("start-up of the {}-user store", short_count(users));
        let started = Instant::now();
        let result: anyhow::Result<(f64, f64, f64)> = async {
            let (server, target) = self.start_roster(store).await?;
            let ready = started.elapsed().as_secs_f64();
            let path = format!("/v1/users?search={}", loaded_id(users - 1));
            loop {
                let answer = call_json(&target, Method::GET, &path, None, StatusCode::OK).await;
                if answer.is_ok_and(|a| a["total"].as_u64().unwrap_or(0) >= 1) {
                    break;
                }
                if started.elapsed() > Duration::from_secs(120) {
                    bail!("no search answer within 120 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let searched = started.elapsed().as_secs_f64();
            let rss = status_kib(server.pid(), "VmRSS").map(mib).unwrap_or(0.0);
            server.stop(Duration::from_secs(60)).await;
            Ok((ready, searched, rss))
        }
        .await;
        match result {
            Ok((ready, searched, rss)) => {
                println!(
                    "  start  {}: /readyz after {ready:.2} s, a search answered after {searched:.2} s, {rss:.0} MiB resident",
                    short_count(users)
                );
                let mut job = JobResult::done("start", name, users, "users", searched);
                job.rate_per_sec = 0.0;
                job.rss_peak_mb = Some(rss);
                job.details.insert("readyz_s".into(), json!(ready));
                job.details.insert("search_s".into(), json!(searched));
                job.note = Some(format!(
                    "/readyz after {ready:.2} s, first search answered after {searched:.2} s"
                ));
                job
            }
            Err(e) => JobResult::missing("start", name, "failed", format!("{e:#}")),
        }
    }

    /// Whether the preloaded users are there (the last one exists).
    async fn preloaded(&self, target: &Arc<Target>) -> bool {
        let path = format!("/v1/users/{}", loaded_id(self.plan.users - 1));
        matches!(
            client::call(target, Method::GET, &path, None).await,
            Ok((StatusCode::OK, _))
        )
    }

    /// W7: deactivate every preloaded user with one bulk task; done when the task has
    /// completed and the read models have caught up.
    async fn bulk_deactivate(&self, pid: u32, target: &Arc<Target>) -> JobResult {
        let n = self.plan.users;
        let name = format!("bulk deactivate {} users (to caught up)", short_count(n));
        let ids: Vec<String> = (0..n).map(loaded_id).collect();
        let monitor = Monitor::start(pid, &[]);
        let started = Instant::now();
        let result: anyhow::Result<(Value, f64, f64)> = async {
            let answer = call_json(
                target,
                Method::POST,
                "/v1/users/deactivate",
                Some(json!({"user_ids": ids})),
                StatusCode::ACCEPTED,
            )
            .await?;
            let task_id = answer["task_id"].as_str().context("no task_id")?.to_owned();
            let task = wait_task(target, &task_id, Duration::from_secs(600)).await?;
            let task_secs = started.elapsed().as_secs_f64();
            caught_up(target, Duration::from_secs(300)).await?;
            Ok((task, task_secs, started.elapsed().as_secs_f64()))
        }
        .await;
        let usage = monitor.finish().await;
        match result {
            Ok((task, task_secs, secs)) => {
                let mut job = JobResult::done("W7", name, n, "users", secs);
                job.rss_peak_mb = Some(usage.rss_peak_mb);
                job.details.insert("task_s".into(), json!(task_secs));
                job.details
                    .insert("server_cpu_cores".into(), json!(usage.server_cpu_cores));
                let done = task["progress"]["done"].as_u64().unwrap_or(0);
                let failed = task["progress"]["failed"].as_u64().unwrap_or(0);
                if task["status"] != "completed" || done != n || failed != 0 {
                    job.status = "errors".into();
                    job.note = Some(format!(
                        "task {}: done {done}, failed {failed}",
                        task["status"]
                    ));
                } else {
                    job.note = Some(format!("task completed in {task_secs:.2} s"));
                }
                println!(
                    "  W7     {:<50}{:>9.0} users/s ({:.2} s; task {:.2} s)",
                    job.name, job.rate_per_sec, secs, task_secs
                );
                job
            }
            Err(e) => {
                println!("  W7     failed: {e:#}");
                JobResult::missing("W7", name, "failed", format!("{e:#}"))
            }
        }
    }

    /// W8: export every user; done when the whole file has been read.
    async fn export(&self, pid: u32, target: &Arc<Target>) -> JobResult {
        let name = "export every user (to last byte)".to_owned();
        let expected = match call_json(
            target,
            Method::GET,
            "/v1/users?limit=1",
            None,
            StatusCode::OK,
        )
        .await
        {
            Ok(v) => v["total"].as_u64(),
            Err(_) => None,
        };
        let monitor = Monitor::start(pid, &[]);
        let started = Instant::now();
        let result: anyhow::Result<(u64, u64, f64)> = async {
            let answer = call_json(
                target,
                Method::POST,
                "/v1/users/export",
                Some(json!({})),
                StatusCode::ACCEPTED,
            )
            .await?;
            let task_id = answer["task_id"].as_str().context("no task_id")?.to_owned();
            let task = wait_task(target, &task_id, Duration::from_secs(900)).await?;
            if task["status"] != "completed" {
                bail!("export task ended {}", task["status"]);
            }
            let task_secs = started.elapsed().as_secs_f64();
            let (mut bytes, mut lines) = (0u64, 0u64);
            let mut conn = Conn::open(target.clone()).await?;
            let status = conn
                .send_streamed(
                    Method::GET,
                    &format!("/v1/tasks/{task_id}/result"),
                    None,
                    |chunk| {
                        bytes += chunk.len() as u64;
                        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                    },
                )
                .await?;
            if status != StatusCode::OK {
                bail!("GET /v1/tasks/{task_id}/result: {status}");
            }
            Ok((lines, bytes, task_secs))
        }
        .await;
        let secs = started.elapsed().as_secs_f64();
        let usage = monitor.finish().await;
        match result {
            Ok((lines, bytes, task_secs)) => {
                let mut job = JobResult::done("W8", name, lines, "users", secs);
                job.rss_peak_mb = Some(usage.rss_peak_mb);
                job.details.insert("task_s".into(), json!(task_secs));
                job.details.insert("bytes".into(), json!(bytes));
                job.details
                    .insert("rss_before_mb".into(), json!(usage.rss_start_mb));
                job.details.insert(
                    "rss_growth_mb".into(),
                    json!(usage.rss_peak_mb - usage.rss_start_mb),
                );
                job.details
                    .insert("server_cpu_cores".into(), json!(usage.server_cpu_cores));
                job.note = Some(format!(
                    "task {task_s:.2} s, {mb:.0} MB read; server RSS {before:.0} MB before (+{growth:.0} MB)",
                    task_s = task_secs,
                    mb = bytes as f64 / 1e6,
                    before = usage.rss_start_mb,
                    growth = usage.rss_peak_mb - usage.rss_start_mb
                ));
                if expected.is_some_and(|e| e != lines) {
                    job.status = "errors".into();
                    job.note = Some(format!(
                        "{} lines, but the list says {} users",
                        lines,
                        expected.unwrap_or(0)
                    ));
                }
                println!(
                    "  W8     {:<50}{:>9.0} users/s ({:.2} s; peak RSS {:.0} MiB)",
                    job.name, job.rate_per_sec, secs, usage.rss_peak_mb
                );
                job
            }
            Err(e) => {
                println!("  W8     failed: {e:#}");
                JobResult::missing("W8", name, "failed", format!("{e:#}"))
            }
        }
    }

    /// `import`: the big user count through `POST /v1/users/import`, on a server of its own
    /// with an empty store ([`roster_bench::import`]).
    async fn import(&self) -> JobResult {
        let store = self.args.work.join("roster-import-store");
        let _ = std::fs::remove_dir_all(&store);
        if let Err(e) = std::fs::create_dir_all(&store) {
            return JobResult::missing("import", "import".into(), "failed", e.to_string());
        }
        let job = match self.start_roster(&store).await {
            Ok((server, target)) => {
                let job =
                    roster_bench::import::run(&target, server.pid(), self.plan.big_users).await;
                let _ = server.stop(Duration::from_secs(60)).await;
                job
            }
            Err(e) => JobResult::missing("import", "import".into(), "failed", format!("{e:#}")),
        };
        let _ = std::fs::remove_dir_all(&store);
        job
    }

    /// `webhooks`: on a server of its own, W1 creates without and then with an active webhook
    /// to a receiver that acknowledges at once ([`roster_bench::webhooks`]); then a drain —
    /// the webhook paused while `users` users are upserted, timed from its resumption until
    /// the receiver has the last of them.
    async fn webhooks(&self) -> JobResult {
        let users = self.plan.users;
        let name = format!(
            "webhook delivery of {} waiting events; W1 with a webhook",
            short_count(users)
        );
        let store = self.args.work.join("roster-webhook-store");
        let _ = std::fs::remove_dir_all(&store);
        let result: anyhow::Result<JobResult> = async {
            std::fs::create_dir_all(&store)?;
            let (server, target) = self
                .start_roster_with(&store, &["--allow-private-webhooks"])
                .await?;
            let pid = server.pid();
            let plain = self
                .measure("roster", pid, &[], &target, Http::Create)
                .await;
            let receiver = webhooks::Receiver::start().await?;
            let id = webhooks::subscribe(&target, &receiver.url).await?;
            let with = self
                .measure_from("+webhook", pid, &[], &target, Http::Create, 1_000_000)
                .await;
            if plain.errors + with.errors > 0 {
                bail!(
                    "W1 errors: {} without, {} with the webhook",
                    plain.errors,
                    with.errors
                );
            }
            webhooks::marker(&target, 1).await?;
            let behind = receiver.wait_for(1, Duration::from_secs(600)).await?;
            webhooks::set_status(&target, &id, "paused").await?;
            let loaded = load::run(
                &target,
                self.args.load_concurrency,
                Pace::UntilDone {
                    timeout: Duration::from_secs(600),
                },
                Upsert::shared(10_000_000, 10_000_000 + users),
            )
            .await;
            if loaded.error_count() > 0 {
                bail!("loading the waiting users: {:?}", loaded.error_samples);
            }
            webhooks::marker(&target, 2).await?;
            caught_up(&target, Duration::from_secs(300)).await?;
            let before = receiver.events();
            let monitor = Monitor::start(pid, &[]);
            let started = Instant::now();
            webhooks::set_status(&target, &id, "active").await?;
            receiver.wait_for(2, Duration::from_secs(1200)).await?;
            let secs = started.elapsed().as_secs_f64();
            let usage = monitor.finish().await;
            let delivered = receiver.events() - before;
            let mut job = JobResult::done("webhooks", name.clone(), delivered, "events", secs);
            job.rss_peak_mb = Some(usage.rss_peak_mb);
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            for (key, value) in [
                ("w1_creates_per_s", plain.throughput),
                ("w1_with_webhook_creates_per_s", with.throughput),
                ("w1_p99_ms", plain.p99_ms),
                ("w1_with_webhook_p99_ms", with.p99_ms),
                ("w1_p99_ratio", ratio(with.p99_ms, plain.p99_ms)),
                ("delivery_vs_w1", ratio(job.rate_per_sec, plain.throughput)),
                ("catch_up_after_w1_s", behind),
                ("server_cpu_cores", usage.server_cpu_cores),
            ] {
                job.details.insert(key.into(), json!(value));
            }
            println!(
                "  hooks  delivery {:.0} events/s = {:.2} × W1 creates; W1 p99 {:.2} -> {:.2} ms \
                 with a webhook ({:.2} ×), {:.0} -> {:.0} req/s",
                job.rate_per_sec,
                ratio(job.rate_per_sec, plain.throughput),
                plain.p99_ms,
                with.p99_ms,
                ratio(with.p99_ms, plain.p99_ms),
                plain.throughput,
                with.throughput
            );
            let _ = server.stop(Duration::from_secs(60)).await;
            Ok(job)
        }
        .await;
        let _ = std::fs::remove_dir_all(&store);
        result.unwrap_or_else(|e| JobResult::missing("webhooks", name, "failed", format!("{e:#}")))
    }

    /// `teams`: on a server of its own, W1 creates, then `POST /v1/teams/{id}/memberships` of
    /// the preloaded users into 100 teams (each a two-stream append: the team's `MemberAdded`
    /// and the user's `TeamJoined`), as a ratio to W1 in the same run.
    async fn team_joins(&self) -> JobResult {
        const TEAMS: u64 = 100;
        let users = self.plan.users;
        let name = format!(
            "team joins, {} users into {TEAMS} teams, vs W1",
            short_count(users)
        );
        let store = self.args.work.join("roster-teams-store");
        let _ = std::fs::remove_dir_all(&store);
        let result: anyhow::Result<JobResult> = async {
            std::fs::create_dir_all(&store)?;
            let (server, target) = self.start_roster(&store).await?;
            let pid = server.pid();
            let plain = self
                .measure("roster", pid, &[], &target, Http::Create)
                .await;
            let loaded = load::run(
                &target,
                self.args.load_concurrency,
                Pace::UntilDone {
                    timeout: Duration::from_secs(600),
                },
                Upsert::shared(0, users),
            )
            .await;
            if loaded.error_count() > 0 {
                bail!("loading the users: {:?}", loaded.error_samples);
            }
            for k in 0..TEAMS {
                let body = json!({"id": format!("bt{k}"), "name": format!("Team {k}")});
                call_json(
                    &target,
                    Method::POST,
                    "/v1/teams",
                    Some(body),
                    StatusCode::CREATED,
                )
                .await?;
            }
            caught_up(&target, Duration::from_secs(300)).await?;
            let joins = self
                .measure("roster", pid, &[], &target, Http::Join { teams: TEAMS })
                .await;
            if plain.errors + joins.errors > 0 {
                bail!(
                    "errors: {} in W1, {} in the joins",
                    plain.errors,
                    joins.errors
                );
            }
            let mut job =
                JobResult::done("teams", name.clone(), joins.requests, "joins", joins.secs);
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            for (key, value) in [
                ("w1_creates_per_s", plain.throughput),
                ("w1_p99_ms", plain.p99_ms),
                ("joins_per_s", joins.throughput),
                ("joins_p99_ms", joins.p99_ms),
                ("joins_vs_w1", ratio(joins.throughput, plain.throughput)),
                ("server_cpu_cores", joins.usage.server_cpu_cores),
            ] {
                job.details.insert(key.into(), json!(value));
            }
            println!(
                "  teams  joins {:.0}/s = {:.2} × W1 creates ({:.0}/s); p99 {:.2} ms (W1 {:.2} ms)",
                joins.throughput,
                ratio(joins.throughput, plain.throughput),
                plain.throughput,
                joins.p99_ms,
                plain.p99_ms
            );
            let _ = server.stop(Duration::from_secs(60)).await;
            Ok(job)
        }
        .await;
        let _ = std::fs::remove_dir_all(&store);
        result.unwrap_or_else(|e| JobResult::missing("teams", name, "failed", format!("{e:#}")))
    }

    /// W6: `roster replay` of the (stopped) store.
    async fn replay(&self, store: &Path, events: u64) -> JobResult {
        let name = format!("roster replay ({} events)", short_count(events));
        let roster = self.bins.join("roster");
        let help = std::process::Command::new(&roster)
            .args(["replay", "--help"])
            .output();
        let help = match help {
            Ok(h) if h.status.success() => String::from_utf8_lossy(&h.stdout).into_owned(),
            _ => {
                println!("  W6     roster replay: not available");
                return JobResult::missing(
                    "W6",
                    name,
                    "not available",
                    "`roster replay --help` fails: the command is not built yet".into(),
                );
            }
        };
        let mut args: Vec<String> = vec!["replay".into()];
        if help.contains("--store") {
            args.push("--store".into());
        }
        args.push(store.display().to_string());
        let log = self.args.work.join("replay.log");
        let started = Instant::now();
        let result: anyhow::Result<(bool, f64)> = async {
            let mut child = Server::spawn(
                "replay",
                &roster,
                &args,
                &[],
                SocketAddr::from(([127, 0, 0, 1], 0)),
                &log,
            )?;
            let pid = child.pid();
            let mut peak = 0u64;
            let deadline = started + Duration::from_secs(REPLAY_TIMEOUT_S);
            while !child.exited() {
                if Instant::now() > deadline {
                    bail!(
                        "still running after {REPLAY_TIMEOUT_S} s (killed): under {:.0} events/s",
                        events as f64 / REPLAY_TIMEOUT_S as f64
                    );
                }
                if let Some(rss) = status_kib(pid, "VmHWM").or_else(|| status_kib(pid, "VmRSS")) {
                    peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let ok = child.exit_success();
            Ok((ok, mib(peak)))
        }
        .await;
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok((true, peak)) => {
                let mut job = JobResult::done("W6", name, events, "events", secs);
                job.rss_peak_mb = Some(peak);
                job.note = Some(format!(
                    "roster {} (wall time of the process)",
                    args.join(" ")
                ));
                // `replayed N events in S s: R events/s (raw scan of the same log: T events/s, …)`
                let out = std::fs::read_to_string(&log).unwrap_or_default();
                if let Some(line) = out.lines().find(|l| l.starts_with("replayed ")) {
                    job.details.insert("replay_says".into(), json!(line));
                    let numbers: Vec<f64> = line
                        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                        .filter_map(|t| t.parse().ok())
                        .collect();
                    if let [_, _, rate, scan, ..] = numbers.as_slice() {
                        job.details
                            .insert("replay_events_per_s".into(), json!(rate));
                        job.details
                            .insert("raw_scan_events_per_s".into(), json!(scan));
                    }
                }
                println!(
                    "  W6     {:<50}{:>9.0} events/s ({secs:.2} s)",
                    job.name, job.rate_per_sec
                );
                job
            }
            Ok((false, _)) => JobResult::missing(
                "W6",
                name,
                "failed",
                format!(
                    "roster {} failed: {}",
                    args.join(" "),
                    roster_bench::proc::log_tail(&log)
                ),
            ),
            Err(e) => JobResult::missing("W6", name, "failed", format!("{e:#}")),
        }
    }

    async fn ceiling_phase(&mut self) -> anyhow::Result<()> {
        println!("\n== Ceiling (axum JSON echo)");
        let addr = free_addr()?;
        let mut server = Server::spawn(
            "ceiling",
            &self.bins.join("bench-ceiling"),
            &["--listen".into(), addr.to_string()],
            &[],
            addr,
            &self.args.work.join("ceiling.log"),
        )?;
        let target = Target::new(addr, Some(KEY))?;
        if !wait_until_up(&target, "/readyz", Duration::from_secs(30)).await || server.exited() {
            bail!("the ceiling did not start:\n{}", server.log_tail());
        }
        let mut done: BTreeSet<String> = BTreeSet::new();
        for w in self.plan.http_workloads() {
            let shape = ceiling_shape(w);
            if !self.wanted(&w.id()) || self.roster_missing.contains_key(&w.id()) {
                continue;
            }
            if done.insert(shape.id()) {
                let stats = self
                    .measure("ceiling", server.pid(), &[], &target, shape)
                    .await;
                self.ceiling.insert(shape.id(), stats);
            }
        }
        server.stop(Duration::from_secs(10)).await;
        Ok(())
    }

    async fn baseline_phase(&mut self) {
        println!("\n== Baseline (axum + PostgreSQL, synchronous_commit = on)");
        match self.baseline_inner().await {
            Ok(()) => {}
            Err(e) => {
                println!("  baseline skipped: {e:#}");
                self.notes.push(format!("baseline skipped: {e:#}"));
            }
        }
    }

    async fn baseline_inner(&mut self) -> anyhow::Result<()> {
        let pg = pg_addr(&self.args.pg).context("PostgreSQL host/port in --pg")?;
        TcpStream::connect_timeout(&pg, Duration::from_secs(2))
            .with_context(|| format!("no PostgreSQL server reachable at {pg}"))?;
        let addr = free_addr()?;
        let mut server = Server::spawn(
            "baseline",
            &self.bins.join("bench-baseline"),
            &[
                "--listen".into(),
                addr.to_string(),
                "--pg".into(),
                self.args.pg.clone(),
                "--pool".into(),
                self.args.pg_pool.to_string(),
            ],
            &[],
            addr,
            &self.args.work.join("baseline.log"),
        )?;
        let target = Target::new(addr, Some(KEY))?;
        if !wait_until_up(&target, "/readyz", Duration::from_secs(30)).await || server.exited() {
            bail!("the baseline did not start:\n{}", server.log_tail());
        }
        if let Ok(info) = call_json(&target, Method::GET, "/info", None, StatusCode::OK).await {
            println!("  PostgreSQL {info}");
            self.config.insert("baseline_postgres".into(), info);
        }
        let postgres = pids_named("postgres");
        let pid = server.pid();
        let users = self.plan.users;
        for w in [Http::Create, Http::Patch, Http::Get, Http::List] {
            if !self.wanted(&w.id()) {
                continue;
            }
            if w != Http::Create && !self.preloaded(&target).await {
                self.load_users("baseline", pid, &target, (0, users), NO_CAP)
                    .await;
            }
            let stats = self.measure("baseline", pid, &postgres, &target, w).await;
            self.baseline.insert(w.id(), stats);
        }
        server.stop(Duration::from_secs(30)).await;
        Ok(())
    }

    fn results(&mut self, machine: Machine, started_at: String, total_secs: f64) -> Results {
        let mut workloads = Vec::new();
        for w in self.plan.http_workloads() {
            let id = w.id();
            if !self.wanted(&id) {
                continue;
            }
            let ceiling = self.ceiling.get(&ceiling_shape(w).id()).cloned();
            let mut result = WorkloadResult::new(
                id.clone(),
                w.name(self.plan.users),
                self.roster.get(&id).cloned(),
                ceiling,
                self.baseline.get(&id).cloned(),
            );
            result.note = self.roster_missing.get(&id).cloned();
            if matches!(w, Http::Wallet { hot } if hot != 100) && result.ceiling.is_some() {
                result.note = Some("ceiling: the W3 run (same requests)".into());
            }
            workloads.push(result);
        }
        let targets = targets(&workloads, &self.jobs, self.args.quick, self.plan.users);
        let busy: Vec<String> = workloads
            .iter()
            .flat_map(|w| w.systems().into_iter().map(move |(n, s)| (w, n, s)))
            .filter(|(_, _, s)| s.stats.usage.other_cpu_cores > 0.25)
            .map(|(w, n, s)| format!("{} {n} {:.1}", w.id, s.stats.usage.other_cpu_cores))
            .collect();
        if !busy.is_empty() {
            let others: Vec<f64> = workloads
                .iter()
                .flat_map(|w| w.systems())
                .map(|(_, s)| s.stats.usage.other_cpu_cores)
                .collect();
            let mean = others.iter().sum::<f64>() / others.len().max(1) as f64;
            let max = others.iter().copied().fold(0.0, f64::max);
            self.notes.push(format!(
                "the machine was not idle: other processes used {mean:.1} cores on average (up to {max:.1}) during the timed workloads ({} of {} runs above 0.25 cores; column o): every figure is lower and noisier than on an idle machine",
                busy.len(),
                others.len()
            ));
        }
        Results {
            suite: "roster-bench".into(),
            mode: self.plan.mode.into(),
            started_at,
            total_secs,
            machine,
            config: self.config.clone(),
            notes: self.notes.clone(),
            workloads,
            jobs: self.jobs.clone(),
            targets,
        }
    }
}

/// `host=… port=…` → an address.
fn pg_addr(settings: &str) -> Option<SocketAddr> {
    let get = |key: &str| {
        settings
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    let host = get("host").unwrap_or("127.0.0.1");
    let port = get("port").unwrap_or("5432");
    format!("{host}:{port}").to_socket_addrs().ok()?.next()
}

/// Bytes on disk under each top-level entry of `store` (the log, the read models, the keys).
fn disk_usage(store: &Path) -> BTreeMap<String, u64> {
    fn bytes(path: &Path) -> u64 {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::read_dir(path)
                .map(|entries| entries.flatten().map(|e| bytes(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    std::fs::read_dir(store)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        bytes(&e.path()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `POST /v1/sessions` exists (404 = no such route yet).
async fn login_available(target: &Arc<Target>) -> anyhow::Result<bool> {
    let (status, _) = client::call(
        target,
        Method::POST,
        "/v1/sessions",
        Some(Bytes::from_static(b"{}")),
    )
    .await?;
    Ok(status != StatusCode::NOT_FOUND)
}

/// The typed core's targets (issue 13), each a ratio within this run where it can be; a
/// target the run's scale cannot show (a quick run, fewer users) is reported but not judged.
fn targets(
    workloads: &[WorkloadResult],
    jobs: &[JobResult],
    quick: bool,
    users: u64,
) -> Vec<TargetCheck> {
    let roster = |id: &str| {
        workloads
            .iter()
            .find(|w| w.id == id)
            .and_then(|w| w.roster.as_ref())
    };
    let job = |id: &str| jobs.iter().find(|j| j.id == id && j.status == "ok");
    let full = |met: bool| (!quick).then_some(met);
    let check = |goal: &str, measured: Option<String>, met: Option<bool>| TargetCheck {
        goal: goal.into(),
        measured: measured.unwrap_or_else(|| "not measured".into()),
        met,
    };
    let at_least = |goal: &str, ratio: Option<f64>, min: f64, of: &str| {
        check(
            goal,
            ratio.map(|r| format!("{r:.2} × {of}")),
            ratio.map(|r| r >= min),
        )
    };
    let baseline_ratio = |id: &str| roster(id).and_then(|r| r.vs_baseline.throughput);
    let w1 = roster("W1");
    let hot = roster("W3-1")
        .zip(w1)
        .map(|(hot, w1)| hot.stats.throughput / w1.stats.throughput);
    let load_rate = |system: &str| {
        jobs.iter()
            .find(|j| j.id == "load" && j.status == "ok" && j.name.starts_with(system))
            .map(|j| j.rate_per_sec)
    };
    let load = load_rate("roster:")
        .zip(load_rate("baseline:"))
        .map(|(r, b)| r / b);
    let replay = job("W6").and_then(|j| {
        let scan = j.details.get("raw_scan_events_per_s")?.as_f64()?;
        Some(j.rate_per_sec / scan)
    });
    let big = |j: &JobResult| j.amount >= 1_000_000;
    let growth = |j: &JobResult| {
        j.details
            .get("rss_growth_mb")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    vec![
        at_least(
            "W1 create ≥ 1.5 × baseline",
            baseline_ratio("W1"),
            1.5,
            "baseline",
        ),
        check(
            "W1 create p99 ≤ 20 ms",
            w1.map(|r| format!("p99 {:.2} ms", r.stats.p99_ms)),
            w1.map(|r| r.stats.p99_ms <= 20.0),
        ),
        at_least(
            "W2 partial update ≥ 2 × baseline",
            baseline_ratio("W2"),
            2.0,
            "baseline",
        ),
        at_least(
            "W4 get by id ≥ 2 × baseline",
            baseline_ratio("W4"),
            2.0,
            "baseline",
        ),
        at_least("W3-1 one hot wallet ≥ 0.5 × W1", hot, 0.5, "W1"),
        at_least(
            "bulk upsert load ≥ 1 × baseline's",
            load,
            1.0,
            "baseline's load rate",
        ),
        check(
            "import 1 000 000 users ≥ 1 × baseline's load rate, ≤ +128 MB",
            job("import").zip(load_rate("baseline:")).map(|(j, b)| {
                format!(
                    "{:.2} × baseline's load rate ({:.0} users/s), +{:.0} MB",
                    j.rate_per_sec / b,
                    j.rate_per_sec,
                    growth(j)
                )
            }),
            job("import")
                .filter(|j| big(j))
                .zip(load_rate("baseline:"))
                .and_then(|(j, b)| full(j.rate_per_sec >= b && growth(j) <= 128.0)),
        ),
        check(
            "W6 replay ≥ 0.25 × raw scan",
            replay.map(|r| format!("{r:.3} × raw scan")),
            replay.and_then(|r| full(r >= 0.25)),
        ),
        check(
            "W7 bulk deactivate 100 000 users ≤ 5 s",
            job("W7").map(|j| format!("{} users in {:.2} s", j.amount, j.secs)),
            job("W7").and_then(|j| full(users >= 100_000 && j.secs <= 5.0)),
        ),
        check(
            "W8 export 1 000 000 users ≤ 15 s, ≤ +64 MB",
            job("W8").map(|j| {
                format!(
                    "{} users in {:.2} s, +{:.0} MB",
                    j.amount,
                    j.secs,
                    growth(j)
                )
            }),
            job("W8")
                .filter(|j| big(j))
                .and_then(|j| full(j.secs <= 15.0 && growth(j) <= 64.0)),
        ),
        check(
            "server RSS with 1 000 000 users ≤ 1 GiB",
            job("RSS").map(|j| {
                format!(
                    "{:.0} MiB with {} users",
                    j.rss_peak_mb.unwrap_or(0.0),
                    j.amount
                )
            }),
            job("RSS")
                .filter(|j| big(j))
                .and_then(|j| full(j.rss_peak_mb.unwrap_or(0.0) <= 1024.0)),
        ),
        check(
            "start-up of 1 000 000 users: /readyz and a search ≤ 15 s",
            job("start").and_then(|j| j.note.clone()),
            job("start")
                .filter(|j| big(j))
                .and_then(|j| full(j.secs <= 15.0)),
        ),
    ]
}
