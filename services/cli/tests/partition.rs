//! A network partition, not a kill (issue 18): three JetStream nodes and two Roster servers,
//! each in its own network namespace on one bridge. While both servers create users, claim
//! the same usernames and adjust one wallet, the JetStream leader of the log's stream is cut
//! off from everyone (its link goes down; the process keeps running), then the link comes
//! back. Clients retry with their `Idempotency-Key` until they get an answer, as clients
//! should. After healing: no acknowledged write is lost, no username is held twice, the
//! wallet holds exactly the sum of the acknowledged adjustments, and both servers' reads agree
//! at the same `min_position`.
//!
//! Needs `ip netns` (root; CI runs as root). Where network namespaces are not available the
//! test says so on its output and returns: it never passes silently.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::KEY;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Names of this run's namespaces, links and bridge (short: link names are ≤ 15 bytes).
struct Net {
    tag: String,
    subnet: u8,
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Hosts 1..=n in namespaces of their own, on one bridge with the address `.254`.
    fn create(n: usize) -> Result<Net, String> {
        let pid = std::process::id() % 100_000;
        let net = Net {
            tag: format!("rp{pid}"),
            subnet: (pid % 200 + 20) as u8,
            namespaces: Vec::new(),
        };
        let mut net = net;
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.77.{}.254/24", net.subnet),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for host in 1..=n {
            let ns = format!("{}-{host}", net.tag);
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let (outside, inside) = (net.link(host), format!("{}i{host}", net.tag));
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            let address = format!("{}/24", net.address(host));
            ip(&["-n", &ns, "addr", "add", &address, "dev", &inside])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    fn link(&self, host: usize) -> String {
        format!("{}o{host}", self.tag)
    }

    fn address(&self, host: usize) -> String {
        format!("10.77.{}.{host}", self.subnet)
    }

    /// Cuts `host` off from every other host (its process keeps running).
    fn cut(&self, host: usize) {
        ip(&["link", "set", &self.link(host), "down"]).expect("cut the link");
    }

    fn heal(&self, host: usize) {
        ip(&["link", "set", &self.link(host), "up"]).expect("heal the link");
    }

    /// `program args…` inside `host`'s namespace.
    fn spawn(&self, host: usize, program: &Path, args: &[String], log: &Path) -> Child {
        let log = std::fs::File::create(log).expect("a log file");
        Command::new("ip")
            .args(["netns", "exec", &self.namespaces[host - 1]])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "info,sled=warn,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a process in a namespace")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn node_config(net: &Net, host: usize, store: &Path) -> String {
    let routes: Vec<String> = (1..=3)
        .map(|h| format!("\"nats-route://{}:6222\"", net.address(h)))
        .collect();
    format!(
        "server_name: \"n{host}\"\nlisten: \"{a}:4222\"\n{js}cluster {{\n  name: \"roster-partition\"\n  \
         listen: \"{a}:6222\"\n  routes: [{routes}]\n}}\n",
        a = net.address(host),
        js = roster_testsupport::jetstream_block(store),
        routes = routes.join(", "),
    )
}

async fn wait_http(url: &str, what: &str, log: &Path) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the file at `log` contains `needle`, for at most 60 s.
async fn wait_log(log: &Path, needle: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no \"{needle}\" in its log after 60 s; log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server that leads the log's stream, as a node sees it.
async fn stream_leader(net: &Net, nodes: &[usize]) -> Option<String> {
    for &node in nodes {
        let url = format!("nats://{}:4222", net.address(node));
        let Ok(Ok(client)) =
            tokio::time::timeout(Duration::from_secs(3), async_nats::connect(url)).await
        else {
            continue;
        };
        let js = async_nats::jetstream::new(client);
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(3), js.get_stream("ROSTER")).await
        else {
            continue;
        };
        if let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(3), stream.info()).await
            && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
        {
            return Some(leader);
        }
    }
    None
}

/// What the clients saw acknowledged.
#[derive(Default)]
struct Tally {
    users: Vec<String>,
    /// Creates whose retry (same Idempotency-Key) was answered `id_taken`: the first attempt
    /// landed although its answer was lost.
    landed_unanswered: Vec<String>,
    claims: HashMap<String, Vec<String>>,
    refused_claims: usize,
    wallet: i64,
    adjustments: usize,
    max_position: u64,
    retries: usize,
}

/// Sends `body` until the answer is final (not 5xx, not a transport error, not a plain
/// conflict), with the same `Idempotency-Key`, for at most 120 s.
async fn until_final(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
    tally: &Mutex<Tally>,
) -> (u16, Value, u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sent = http
            .post(url)
            .header("x-api-key", KEY)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            let position = response
                .headers()
                .get("x-roster-position")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let body: Value = response.json().await.unwrap_or_default();
            let plain_conflict = status == 409 && body["code"] == "conflict";
            if status < 500 && !plain_conflict {
                return (status, body, position);
            }
        }
        tally.lock().retries += 1;
        assert!(
            Instant::now() < deadline,
            "no final answer for {key} in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_loses_nothing_acknowledged() {
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the partition test needs root for `ip netns` (CI runs as root)");
        return;
    }
    let net = match Net::create(5) {
        Ok(net) => net,
        Err(e) => {
            println!("SKIPPED: network namespaces are not available here: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let nats = roster_testsupport::nats_server_binary();
    let mut procs = Procs(Vec::new());
    for host in 1..=3 {
        let store = dir.path().join(format!("n{host}"));
        std::fs::create_dir_all(&store).unwrap();
        let conf = dir.path().join(format!("n{host}.conf"));
        std::fs::write(&conf, node_config(&net, host, &store)).unwrap();
        let log = dir.path().join(format!("n{host}.log"));
        procs.0.push(net.spawn(
            host,
            &nats,
            &["-c".into(), conf.display().to_string()],
            &log,
        ));
    }
    // The servers give up on a log without quorum after `--nats-timeout`: start them only
    // once every node knows the JetStream metadata leader (a slow machine takes seconds).
    for host in 1..=3 {
        wait_log(
            &dir.path().join(format!("n{host}.log")),
            "metadata leader",
            &format!("JetStream node n{host}"),
        )
        .await;
    }
    let urls: Vec<String> = (1..=3)
        .map(|h| format!("nats://{}:4222", net.address(h)))
        .collect();
    let roster = PathBuf::from(env!("CARGO_BIN_EXE_roster"));
    let mut servers = Vec::new();
    for host in [4, 5] {
        let data = dir.path().join(format!("roster-{host}"));
        let log = dir.path().join(format!("roster-{host}.log"));
        let args: Vec<String> = [
            "serve",
            "--store",
            &urls.join(","),
            "--nats-replicas",
            "3",
            "--nats-timeout",
            "5",
            "--api-key",
            KEY,
            "--listen",
            &format!("{}:8080", net.address(host)),
            "--data-dir",
            data.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        procs.0.push(net.spawn(host, &roster, &args, &log));
        let url = format!("http://{}:8080", net.address(host));
        wait_http(&format!("{url}/readyz"), "a Roster server", &log).await;
        servers.push(url);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (status, _, created) = until_final(
        &http,
        &format!("{}/v1/users", servers[0]),
        "create-wallet",
        &json!({"id": "wallet", "username": "wallet"}),
        &tally,
    )
    .await;
    assert_eq!(status, 201);
    // Every server knows the wallet's user before both adjust it: a server's view of the log
    // follows it a moment behind (the partition, not that moment, is what this test is about).
    for server in &servers {
        let url = format!("{server}/v1/users/wallet?min_position={created}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sent = http.get(&url).header("x-api-key", KEY).send().await;
            if sent.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{server} never saw the wallet's user"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        // Users with ids of their own.
        {
            let (http, tally, stop, server) =
                (http.clone(), tally.clone(), stop.clone(), server.clone());
            workers.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("s{s}-u{n}");
                    let (status, body, position) = until_final(
                        &http,
                        &format!("{server}/v1/users"),
                        &id,
                        &json!({"id": id, "email": format!("{id}@example.com")}),
                        &tally,
                    )
                    .await;
                    let mut t = tally.lock();
                    if status == 409 && body["code"] == "id_taken" {
                        // A retry after an ambiguous failure whose first attempt did land:
                        // answered id_taken instead of the first answer (see docs/security.md).
                        // Not acknowledged; checked below to be there exactly once.
                        t.landed_unanswered.push(id);
                    } else {
                        assert_eq!(status, 201, "{id}: {body}");
                        t.users.push(id);
                        t.max_position = t.max_position.max(position);
                    }
                    n += 1;
                }
            }));
        }
        // The same usernames claimed from both servers.
        {
            let (http, tally, stop, server) = (
                http.clone(),
                tally.clone(),
                stop.clone(),
                servers[s].clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("dup-{k}");
                    let id = format!("claim-s{s}-{k}");
                    let (status, body, position) = until_final(
                        &http,
                        &format!("{server}/v1/users"),
                        &id,
                        &json!({"id": id, "username": name}),
                        &tally,
                    )
                    .await;
                    {
                        let mut t = tally.lock();
                        match status {
                            201 => {
                                t.claims.entry(name).or_default().push(id);
                                t.max_position = t.max_position.max(position);
                            }
                            409 if body["code"] == "username_taken" => t.refused_claims += 1,
                            other => panic!("claim {name} from server {s}: {other} {body}"),
                        }
                    }
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        // One wallet, adjusted from both servers.
        {
            let (http, tally, stop, server) = (
                http.clone(),
                tally.clone(),
                stop.clone(),
                servers[s].clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut n = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    let amount = 1 + n % 3;
                    let (status, body, position) = until_final(
                        &http,
                        &format!("{server}/v1/users/wallet/wallet"),
                        &format!("wallet-s{s}-{n}"),
                        &json!({"changeset": {"coins": amount}}),
                        &tally,
                    )
                    .await;
                    assert_eq!(status, 200, "adjustment {n} from server {s}: {body}");
                    let mut t = tally.lock();
                    t.wallet += amount;
                    t.adjustments += 1;
                    t.max_position = t.max_position.max(position);
                    n += 1;
                }
            }));
        }
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = stream_leader(&net, &[1, 2, 3])
        .await
        .expect("the log's stream has a leader");
    let cut: usize = leader
        .trim_start_matches('n')
        .parse()
        .expect("a leader named n1..n3");
    let before_cut = tally.lock().users.len();
    println!("cutting off {leader}, the leader of the log's stream");
    net.cut(cut);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let others: Vec<usize> = (1..=3).filter(|h| *h != cut).collect();
    let new_leader = stream_leader(&net, &others).await;
    assert!(
        new_leader.as_ref().is_some_and(|l| *l != leader),
        "the two connected nodes elected another leader (got {new_leader:?})"
    );
    let during_cut = tally.lock().users.len() - before_cut;
    net.heal(cut);
    println!("healed {leader}; the leader is now {new_leader:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("a worker");
    }

    let t = std::mem::take(&mut *tally.lock());
    let at = t.max_position;
    // A server whose read models are behind `at` answers 503 projection_lagging with
    // Retry-After (after waiting 5 s): retried as a client would, and the time it took said.
    for (server, host) in servers.iter().zip([4, 5]) {
        let started = Instant::now();
        loop {
            let r = http
                .get(format!("{server}/v1/users?limit=1&min_position={at}"))
                .header("x-api-key", KEY)
                .send()
                .await;
            if r.as_ref().is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{server} did not reach position {at} in 60 s; log:\n{}",
                std::fs::read_to_string(dir.path().join(format!("roster-{host}.log")))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        println!("{server} reached position {at} in {:?}", started.elapsed());
    }
    let mut lost = 0;
    let mut double = 0;
    let mut wallets = Vec::new();
    let mut totals = Vec::new();
    for server in &servers {
        let get = |path: String| {
            let http = http.clone();
            async move {
                let r = http
                    .get(format!(
                        "{path}{}min_position={at}",
                        if path.contains('?') { '&' } else { '?' }
                    ))
                    .header("x-api-key", KEY)
                    .send()
                    .await
                    .expect("a read");
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or_default())
            }
        };
        for id in t
            .users
            .iter()
            .chain(t.claims.values().flatten())
            .chain(&t.landed_unanswered)
        {
            let (status, _) = get(format!("{server}/v1/users/{id}")).await;
            if status != 200 {
                lost += 1;
                println!("lost on {server}: {id} ({status})");
            }
        }
        let names: Vec<&String> = t.claims.keys().collect();
        for name in names {
            let (status, page) = get(format!("{server}/v1/users?usernames={name}")).await;
            assert_eq!(status, 200);
            let holders = page["users"].as_array().map_or(0, Vec::len);
            if holders != 1 {
                double += 1;
                let claimed = &t.claims[name];
                let (_, user) = get(format!("{server}/v1/users/{}", claimed[0])).await;
                println!(
                    "{name} on {server}: {holders} holders; its claimant {} reads {}",
                    claimed[0], user["username"]
                );
            }
        }
        let (status, wallet) = get(format!("{server}/v1/users/wallet")).await;
        assert_eq!(status, 200);
        wallets.push(wallet["wallet"]["coins"].as_i64().unwrap_or(0));
        let (_, page) = get(format!("{server}/v1/users?limit=1")).await;
        totals.push(page["total"].as_u64().unwrap_or(0));
    }
    let claimed_twice = t.claims.values().filter(|ids| ids.len() > 1).count();
    println!(
        "partition: {} user writes acknowledged ({during_cut} while the leader was cut off), \
         {lost} lost; usernames claimed from both servers: {} taken, {} claims refused \
         (username_taken), {claimed_twice} taken twice; wallet: {} acknowledged adjustments \
         summing to {}, balances {wallets:?}; {} retries ({} creates landed although their \
         answer was lost); both servers at position {at}: totals {totals:?}",
        t.users.len(),
        t.claims.len(),
        t.refused_claims,
        t.adjustments,
        t.wallet,
        t.retries,
        t.landed_unanswered.len(),
    );
    assert_eq!(lost, 0, "no acknowledged write is lost");
    assert_eq!(claimed_twice, 0, "no username is claimed twice");
    assert_eq!(
        double, 0,
        "every claimed username has exactly one holder on both servers"
    );
    assert_eq!(
        wallets,
        [t.wallet, t.wallet],
        "the balance is the sum of acknowledged adjustments"
    );
    assert_eq!(
        totals[0], totals[1],
        "both servers read the same at the same position"
    );
    let expected = t.users.len() + t.claims.len() + t.landed_unanswered.len() + 1;
    assert_eq!(
        totals[0] as usize, expected,
        "every user there is one a client was answered for (or whose create landed): nothing \
         refused was written"
    );
    drop(procs);
}
