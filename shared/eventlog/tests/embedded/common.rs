//! Helpers shared by the embedded-log tests.

use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::{
    EventLog, ExpectedVersion, NewEvent, RecordedEvent, ReservationInfo, StreamAppend, StreamId,
    Transaction, Version,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub async fn open(dir: &Path, options: EmbeddedOptions) -> EmbeddedLog {
    EmbeddedLog::open(dir, options).await.expect("open")
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

/// Everything observable about a log, for comparing before and after a restart.
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

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, ".seg")
}

pub fn checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, ".ckpt")
}
