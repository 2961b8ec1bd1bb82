//! Append throughput of the JetStream log against JetStream's raw publish rate, on a
//! nats-server started for the run (a free port, a temporary store; never port 4222).
//!
//! ```text
//! cargo run --release -p roster-eventlog --example nats_bench [SECONDS]
//! ```
//! Raw: 300-byte messages published asynchronously, up to 4096 awaiting their
//! acknowledgement. Log: each append is one 300-byte event to a stream of its own
//! (`NoStream`), appenders run concurrently, each waiting for its acknowledgement.

use async_nats::jetstream::{self, stream};
use futures::stream::{FuturesUnordered, StreamExt};
use roster_eventlog::nats::{NatsLog, NatsOptions};
use roster_eventlog::{EventLog, ExpectedVersion, NewEvent, StreamAppend, StreamId, Transaction};
use roster_testsupport::NatsServer;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PAYLOAD: usize = 300;
const WINDOW: usize = 4096;

/// Acknowledged raw JetStream publishes per second.
async fn raw_rate(url: &str, seconds: f64) -> Result<f64, async_nats::Error> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(WINDOW)
        .build(client);
    js.create_stream(stream::Config {
        name: "BENCH_RAW".into(),
        subjects: vec!["bench.raw.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let mut in_flight = FuturesUnordered::new();
    let (start, mut acked, mut i) = (Instant::now(), 0u64, 0u64);
    while start.elapsed().as_secs_f64() < seconds {
        while in_flight.len() < WINDOW {
            let ack = js
                .publish(format!("bench.raw.{}", i % 1024), payload.clone())
                .await?;
            in_flight.push(ack.into_future());
            i += 1;
        }
        if let Some(ack) = in_flight.next().await {
            ack?;
            acked += 1;
        }
    }
    let rate = acked as f64 / start.elapsed().as_secs_f64();
    while let Some(ack) = in_flight.next().await {
        ack?;
    }
    Ok(rate)
}

/// Appends per second with `appenders` concurrent appenders over `seconds`.
async fn append_rate(url: &str, appenders: usize, seconds: f64) -> Result<f64, String> {
    let options = NatsOptions {
        stream: format!("BENCH_LOG_{appenders}"),
        subject_prefix: format!("benchlog{appenders}"),
        ..NatsOptions::default()
    };
    let log = Arc::new(
        NatsLog::connect(url, options)
            .await
            .map_err(|e| e.to_string())?,
    );
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
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
                    log.append(tx).await.map_err(|e| e.to_string())?;
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    log.close().await.map_err(|e| e.to_string())?;
    Ok(rate)
}

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let server = NatsServer::start();
    let url = server.url();

    let raw = raw_rate(&url, seconds).await?;
    let mut rates = Vec::new();
    for appenders in [1, 16, 256] {
        rates.push((appenders, append_rate(&url, appenders, seconds).await?));
    }

    println!(
        "nats-server at {url} (store {}), {seconds} s per measurement",
        server.store_dir().display()
    );
    println!("{:<52} {:>12} {:>9}", "measurement", "per second", "x raw");
    println!(
        "{:<52} {raw:>12.0} {:>9.2}",
        format!("raw JetStream publish+ack ({PAYLOAD} B, {WINDOW} in flight)"),
        1.0
    );
    for (appenders, rate) in rates {
        let label = format!("NatsLog append, {appenders} appender(s)");
        println!("{label:<52} {rate:>12.0} {:>9.3}", rate / raw);
    }
    Ok(())
}
