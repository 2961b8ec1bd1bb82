//! Helpers shared by the JetStream-backend tests.

use roster_eventlog::nats::{NatsLog, NatsOptions};
use roster_eventlog::{
    EventLog, ExpectedVersion, NewEvent, RecordedEvent, ReservationInfo, StreamAppend, StreamId,
    Transaction, Version,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Logs of the log itself when `RUST_LOG` is set (to see why a test failed).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Options for a stream nobody else in this process uses.
pub fn fresh_options(test: &str) -> NatsOptions {
    init_tracing();
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    NatsOptions {
        stream: format!("NATS_{pid}_{n}_{test}"),
        subject_prefix: format!("nats{pid}n{n}"),
        unavailable_timeout: Duration::from_secs(10),
        ..NatsOptions::default()
    }
}

pub async fn connect(url: &str, options: &NatsOptions) -> NatsLog {
    NatsLog::connect(url, options.clone())
        .await
        .expect("connect")
}

pub fn event(data: &str) -> NewEvent {
    NewEvent {
        id: ulid::Ulid::new(),
        event_type: "Test".into(),
        schema_version: 1,
        data: bytes::Bytes::from(data.to_owned()),
        metadata: bytes::Bytes::from_static(b"{}"),
    }
}

pub fn one(stream: &StreamId, expected: ExpectedVersion, data: &str) -> Transaction {
    Transaction {
        appends: vec![StreamAppend {
            stream: stream.clone(),
            expected,
            events: vec![event(data)],
        }],
        reservations: vec![],
    }
}

/// Everything observable about a log, for comparing two views of it.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub head: u64,
    pub events: Vec<RecordedEvent>,
    pub versions: BTreeMap<StreamId, Option<Version>>,
    pub reservations: BTreeMap<String, Option<ReservationInfo>>,
}

pub async fn snapshot(log: &dyn EventLog, keys: &[String]) -> Snapshot {
    let events = roster_eventlog::contract::read_everything(log).await;
    let mut versions = BTreeMap::new();
    for e in &events {
        versions.insert(e.stream.clone(), None);
    }
    for (stream, version) in versions.iter_mut() {
        *version = log.stream_version(stream).await.expect("stream_version");
        let read = log
            .read_stream(stream, 1, usize::MAX)
            .await
            .expect("read_stream");
        assert_eq!(Some(read.len() as u64), *version);
    }
    let mut reservations = BTreeMap::new();
    for key in keys {
        let info = log.reservation(key).await.expect("reservation");
        reservations.insert(key.clone(), info);
    }
    Snapshot {
        head: log.head(),
        events,
        versions,
        reservations,
    }
}

/// Waits until `log` has applied `position`.
pub async fn wait_for_head(log: &dyn EventLog, position: u64) {
    let mut head = log.watch_head();
    tokio::time::timeout(Duration::from_secs(30), async {
        while *head.borrow_and_update() < position {
            head.changed().await.expect("log open");
        }
    })
    .await
    .expect("the log catches up");
}
