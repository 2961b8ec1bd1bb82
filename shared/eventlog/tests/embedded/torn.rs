//! Torn tails are cut off; damage before the tail is reported, never silently dropped.

use crate::common::*;
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::{EventLog, ExpectedVersion::Any, LogError, Reservation, StreamId};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

/// A log with 30 events over 3 streams and one reservation, closed.
async fn thirty(dir: &Path, options: EmbeddedOptions) -> Snapshot {
    let log = open(dir, options).await;
    for i in 0..30 {
        let stream = StreamId::new("acme", format!("s{}", i % 3));
        let mut tx = one(&stream, Any, &format!("event {i}"));
        if i == 7 {
            tx.reservations.push(Reservation::Claim {
                key: "name/x".into(),
                owner: "s1".into(),
                expires_at: None,
            });
        }
        log.append(tx).await.expect("append");
    }
    let snap = snapshot(&log, &keys()).await;
    log.close().await.expect("close");
    snap
}

fn keys() -> Vec<String> {
    vec!["name/x".into()]
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open segment");
    f.write_all(bytes).expect("write");
    f.sync_all().expect("sync");
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    segment_files(dir).pop().expect("a segment")
}

/// After the tail was cut, the earlier events are intact and appends continue at head + 1.
async fn assert_recovered(dir: &Path, before: &Snapshot, torn_bytes: u64) {
    let log = open(dir, EmbeddedOptions::default()).await;
    assert_eq!(log.open_report().truncated_bytes, torn_bytes);
    assert_eq!(&snapshot(&log, &keys()).await, before);
    let c = log
        .append(one(&StreamId::new("acme", "s0"), Any, "after repair"))
        .await
        .expect("append after repair");
    assert_eq!(c.first_position, before.head + 1);
    assert_eq!(
        c.versions,
        vec![before.versions[&StreamId::new("acme", "s0")].unwrap() + 1]
    );
    log.close().await.expect("close");
    // The repair is durable: a second open finds nothing to cut.
    let log = open(dir, EmbeddedOptions::default()).await;
    assert_eq!(log.open_report().truncated_bytes, 0);
    assert_eq!(log.head(), before.head + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_last_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let before = thirty(dir.path(), EmbeddedOptions::default()).await;
    let segment = last_segment(dir.path());
    let len = std::fs::metadata(&segment).unwrap().len();
    let garbage: Vec<u8> = (0..1000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    append_bytes(&segment, &garbage);
    assert_recovered(dir.path(), &before, 1000).await;
    assert!(
        std::fs::metadata(&segment).unwrap().len() > len,
        "the new append went there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_filled_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let before = thirty(dir.path(), EmbeddedOptions::default()).await;
    append_bytes(&last_segment(dir.path()), &[0; 4096]);
    assert_recovered(dir.path(), &before, 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let before = thirty(dir.path(), EmbeddedOptions::default()).await;
    let segment = last_segment(dir.path());
    let good_len = std::fs::metadata(&segment).unwrap().len();
    {
        let log = open(dir.path(), EmbeddedOptions::default()).await;
        let c = log
            .append(one(&StreamId::new("acme", "s2"), Any, "the torn one"))
            .await
            .unwrap();
        assert_eq!(c.first_position, 31);
        log.close().await.unwrap(); // its checkpoint now covers the record we tear
    }
    let full_len = std::fs::metadata(&segment).unwrap().len();
    let cut = good_len + (full_len - good_len) / 2;
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut)
        .unwrap();
    // The newest checkpoint points past the end of the file now: it must be ignored.
    assert_recovered(dir.path(), &before, cut - good_len).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_header_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let before = thirty(dir.path(), EmbeddedOptions::default()).await;
    append_bytes(&last_segment(dir.path()), &[7, 0, 0]);
    assert_recovered(dir.path(), &before, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_byte_before_the_last_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        segment_size: 1024,
        ..EmbeddedOptions::default()
    };
    thirty(dir.path(), options.clone()).await;
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3, "several segments: {segments:?}");
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(first, &bytes).unwrap();

    // With a checkpoint, open does not rescan the segment, but reading it fails loudly.
    assert!(!checkpoint_files(dir.path()).is_empty());
    let log = open(dir.path(), options.clone()).await;
    match log.read_all(0, usize::MAX).await {
        Err(LogError::Corrupt(msg)) => assert!(msg.contains(".seg"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    log.close().await.unwrap();

    // Without one, open scans it and refuses to start.
    for cp in checkpoint_files(dir.path()) {
        std::fs::remove_file(cp).unwrap();
    }
    match EmbeddedLog::open(dir.path(), options).await {
        Err(LogError::Corrupt(msg)) => assert!(msg.contains("not the last segment"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // And it left the damaged file as it was.
    assert_eq!(std::fs::read(first).unwrap(), bytes);
}
