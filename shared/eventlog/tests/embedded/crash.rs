//! Crash test: a child process appends from many tasks and is SIGKILLed at random moments,
//! over and over, on the same directory. After each kill the parent reopens the log and checks
//! that every acknowledged append survived exactly once, where it was acknowledged, and that
//! the log and its reservations are consistent.
//!
//! The child is this same test binary, re-run on the ignored test `crash_child` with
//! `ROSTER_CRASH_DIR` set; that works under `cargo test` and `cargo nextest run` alike.

use crate::common::*;
use rand::Rng;
use roster_eventlog::embedded::{EmbeddedOptions, OpenReport};
use roster_eventlog::{
    AppendError, EventLog, ExpectedVersion, RecordedEvent, Reservation, StreamId,
};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ENV_DIR: &str = "ROSTER_CRASH_DIR";
const TASKS: usize = 32;
/// Tasks below this index also race for the shared keys.
const RACERS: usize = 12;
const KEYS: usize = 3;
const ROUNDS: usize = 22;

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        segment_size: 256 << 10,
        checkpoint_interval: 128 << 10,
        ..EmbeddedOptions::default()
    }
}

/// One acknowledged append as the child reported it.
#[derive(Debug, Clone, PartialEq)]
struct Ack {
    stream: String,
    version: u64,
    position: u64,
    id: String,
    op: String,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let ack = Ack {
        stream: parts.next()?.to_owned(),
        version: parts.next()?.parse().ok()?,
        position: parts.next()?.parse().ok()?,
        id: parts.next()?.to_owned(),
        op: parts.next()?.to_owned(),
    };
    parts.next().is_none().then_some(ack)
}

/// The child: appends until killed (or for at most 20 s), printing each acknowledgement.
#[test]
#[ignore = "run by crash_recovery as a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let log = Arc::new(open(Path::new(&dir), options()).await);
        println!("READY");
        let deadline = Instant::now() + Duration::from_secs(20);
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move { child_task(&*log, t, deadline).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

async fn child_task(log: &dyn EventLog, t: usize, deadline: Instant) {
    let stream = StreamId::new("crash", format!("t{t}"));
    let owner = stream.name.clone();
    let mut version = log.stream_version(&stream).await.unwrap().unwrap_or(0);
    // Which shared key this task holds, as far as the log says.
    let mut held = None;
    for k in 0..KEYS {
        let holder = log.reservation(&format!("key{k}")).await.unwrap();
        if holder.is_some_and(|r| r.owner == owner) {
            held = Some(k);
        }
    }
    let mut attempt = 0usize;
    // Racers alternate: a plain append, then one that claims or releases.
    let mut plain = false;
    while Instant::now() < deadline {
        attempt += 1;
        plain = !plain;
        let (op, reservation) = match held {
            _ if t >= RACERS || plain => ("none".to_owned(), None),
            Some(k) => (
                format!("release:key{k}"),
                Some(Reservation::Release {
                    key: format!("key{k}"),
                    owner: owner.clone(),
                }),
            ),
            None => {
                let k = (t + attempt) % KEYS;
                (
                    format!("claim:key{k}"),
                    Some(Reservation::Claim {
                        key: format!("key{k}"),
                        owner: owner.clone(),
                        expires_at: None,
                    }),
                )
            }
        };
        let mut tx = one(&stream, ExpectedVersion::Exact(version), &op);
        if version == 0 {
            tx.appends[0].expected = ExpectedVersion::NoStream;
        }
        let id = tx.appends[0].events[0].id;
        tx.reservations.extend(reservation);
        match log.append(tx).await {
            Ok(c) => {
                version = c.versions[0];
                held = match op.split_once(':') {
                    Some(("claim", k)) => k.strip_prefix("key").and_then(|k| k.parse().ok()),
                    Some(("release", _)) => None,
                    _ => held,
                };
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "ACK {} {} {} {} {}",
                    stream.name, version, c.first_position, id, op
                )
                .unwrap();
                out.flush().unwrap();
            }
            Err(AppendError::ReservationHeld { .. }) => {}
            Err(e) => panic!("child append: {e}"),
        }
    }
}

/// Runs one child and kills it after `kill_after`; returns the acknowledgements it printed.
fn run_child(dir: &Path, kill_after: Duration) -> Vec<Ack> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "crash::crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        // A line cut by the kill has no newline: it was not (fully) reported, skip it.
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let complete = line.strip_suffix('\n').map(str::trim_end);
            if let Some(ack) = complete.and_then(parse_ack) {
                acks.push(ack);
            }
            line.clear();
        }
        acks
    });
    std::thread::sleep(kill_after);
    // Left alone, a child runs for 20 s: an earlier exit means it failed (its panic message
    // is on the inherited stderr).
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the child exited on its own: {status}");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Reopens the log and checks it against everything ever acknowledged.
async fn verify(dir: &Path, acked: &[Ack]) -> (usize, OpenReport) {
    let log = open(dir, options()).await;
    let mut events: Vec<RecordedEvent> = Vec::new();
    loop {
        let page = log.read_all(events.len() as u64, 20_000).await.unwrap();
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    assert_eq!(events.len() as u64, log.head());
    let mut ids = HashSet::new();
    let mut versions: HashMap<&str, u64> = HashMap::new();
    // Reservations replayed from the events' own account of what they claimed and released.
    let mut holders: HashMap<String, (String, u64)> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "positions are gap-free");
        assert!(ids.insert(e.id), "event {} appears twice", e.id);
        let v = versions.entry(e.stream.name.as_str()).or_default();
        *v += 1;
        assert_eq!(e.version, *v, "versions of {} are gap-free", e.stream);
        let op = std::str::from_utf8(&e.data).unwrap();
        match op.split_once(':') {
            Some(("claim", key)) => {
                if let Some((holder, _)) = holders.get(key) {
                    assert_eq!(holder, &e.stream.name, "a claim of a held key was accepted");
                }
                holders.insert(key.to_owned(), (e.stream.name.clone(), e.position));
            }
            Some(("release", key)) => {
                let holder = holders.remove(key);
                assert_eq!(holder.map(|h| h.0).as_deref(), Some(e.stream.name.as_str()));
            }
            _ => {}
        }
    }
    for ack in acked {
        let e = events
            .get(ack.position as usize - 1)
            .unwrap_or_else(|| panic!("acknowledged {ack:?} is missing (head {})", log.head()));
        assert_eq!(
            e.id.to_string(),
            ack.id,
            "position {} holds another event",
            ack.position
        );
        assert_eq!(
            (e.stream.name.as_str(), e.version),
            (ack.stream.as_str(), ack.version)
        );
        assert_eq!(std::str::from_utf8(&e.data).unwrap(), ack.op);
    }
    for k in 0..KEYS {
        let key = format!("key{k}");
        let actual = log
            .reservation(&key)
            .await
            .unwrap()
            .map(|r| (r.owner, r.position));
        assert_eq!(
            actual,
            holders.get(&key).cloned(),
            "reservation {key} matches its events"
        );
    }
    // Drop without close, like a crash: no checkpoint from the parent.
    (events.len(), log.open_report())
}

#[test]
fn crash_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut rng = rand::thread_rng();
    let mut acked: Vec<Ack> = Vec::new();
    let mut events = 0;
    let mut torn = 0;
    for round in 0..ROUNDS {
        // Some kills land during open (recovery), most during appends and checkpoints.
        let kill_after = Duration::from_millis(rng.gen_range(30..500));
        let acks = run_child(dir.path(), kill_after);
        acked.extend(acks);
        if round % 3 == 2 {
            // SIGKILL never tears a single write(2), so also leave what a power cut during
            // an unacknowledged write would: garbage after the last record.
            let garbage: Vec<u8> = (0..rng.gen_range(1..300)).map(|_| rng.r#gen()).collect();
            let last = segment_files(dir.path()).pop().unwrap();
            let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
            f.write_all(&garbage).unwrap();
        }
        let report;
        (events, report) = rt.block_on(verify(dir.path(), &acked));
        assert!(events >= acked.len());
        torn += u64::from(report.truncated_bytes > 0);
        eprintln!(
            "round {round}: killed after {kill_after:?}; {} acked, {events} in the log; \
             checkpoint at {}, scanned {} B, truncated {} B",
            acked.len(),
            report.checkpoint_head,
            report.scanned_bytes,
            report.truncated_bytes
        );
    }
    assert!(
        acked.len() > 100,
        "the children made progress: {} acks",
        acked.len()
    );
    assert!(
        acked.iter().any(|a| a.op.starts_with("claim"))
            && acked.iter().any(|a| a.op.starts_with("release")),
        "reservations were exercised"
    );
    assert!(segment_files(dir.path()).len() > 1 || events < 2000);
    eprintln!(
        "{ROUNDS} rounds in {:?}; {torn} torn tails cut",
        started.elapsed()
    );
    assert!(
        torn >= ROUNDS as u64 / 3,
        "the injected garbage was cut each time"
    );
}
