//! Append throughput of the embedded log against the disk's raw fsync rate.
//!
//! ```text
//! cargo run --release -p roster-eventlog --example append_bench [DIR] [SECONDS]
//! ```
//! `DIR` (default `./target/bench-tmp`) must be on the disk to measure: not a tmpfs `/tmp`.
//! Each append is one 200-byte event to a stream of its own (like registering a user), with
//! `NoStream`; appenders run concurrently, each waiting for its acknowledgement.

use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::{EventLog, ExpectedVersion, NewEvent, StreamAppend, StreamId, Transaction};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Writes 100 bytes + `fdatasync` in a loop: the rate one-fsync-per-append could reach.
fn raw_fsync_rate(dir: &Path, seconds: f64) -> std::io::Result<f64> {
    let path = dir.join("raw-fsync");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let buf = [0x42u8; 100];
    let (start, mut n, mut offset) = (Instant::now(), 0u64, 0u64);
    while start.elapsed().as_secs_f64() < seconds {
        file.write_all_at(&buf, offset)?;
        file.sync_data()?;
        offset += buf.len() as u64;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(rate)
}

/// Events per second with `appenders` concurrent appenders over `seconds`.
async fn append_rate(dir: &Path, appenders: usize, seconds: f64) -> f64 {
    let run_dir = tempfile::tempdir_in(dir).expect("bench dir");
    let log = Arc::new(
        EmbeddedLog::open(run_dir.path(), EmbeddedOptions::default())
            .await
            .expect("open"),
    );
    let payload = bytes::Bytes::from(vec![b'x'; 200]);
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let (log, payload, done, count) =
                (log.clone(), payload.clone(), done.clone(), count.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let tx = Transaction {
                        appends: vec![StreamAppend {
                            stream: StreamId::new("bench", format!("user-{a}-{i}")),
                            expected: ExpectedVersion::NoStream,
                            events: vec![NewEvent {
                                id: ulid::Ulid::new(),
                                event_type: "UserCreated".into(),
                                schema_version: 1,
                                data: payload.clone(),
                                metadata: bytes::Bytes::new(),
                            }],
                        }],
                        reservations: vec![],
                    };
                    log.append(tx).await.expect("append");
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("appender");
    }
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    log.close().await.expect("close");
    rate
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "./target/bench-tmp".into()));
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    std::fs::create_dir_all(&dir)?;

    // Virtual disks' fsync rates drift: measure before and after, compare with the mean.
    let before = raw_fsync_rate(&dir, seconds)?;
    let mut rates = Vec::new();
    for appenders in [1, 16, 256] {
        rates.push((appenders, append_rate(&dir, appenders, seconds).await));
    }
    let after = raw_fsync_rate(&dir, seconds)?;
    let fsync = (before + after) / 2.0;

    println!("dir: {}   ({seconds} s per measurement)", dir.display());
    println!(
        "{:<36} {:>12} {:>9}",
        "measurement", "per second", "x fsync"
    );
    println!(
        "{:<36} {before:>12.0}",
        "raw write(100 B)+fdatasync, before"
    );
    println!("{:<36} {after:>12.0}", "raw write(100 B)+fdatasync, after");
    println!("{:<36} {fsync:>12.0} {:>9.2}", "raw fdatasync, mean", 1.0);
    for (appenders, rate) in rates {
        let label = format!("embedded append, {appenders} appender(s)");
        println!("{label:<36} {rate:>12.0} {:>9.2}", rate / fsync);
    }
    Ok(())
}
