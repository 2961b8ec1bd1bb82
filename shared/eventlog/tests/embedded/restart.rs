//! Restart: the state after reopening equals the state before, whether it comes from a
//! checkpoint plus tail or from a full scan.

use crate::common::*;
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::{AppendError, EventLog, ExpectedVersion, Reservation, StreamId};
use std::path::Path;
use std::sync::Arc;

fn keys() -> Vec<String> {
    (0..10).map(|k| format!("key-{k}")).collect()
}

/// Many appends from 16 tasks over 100 streams, with claims, releases and expiring claims.
async fn fill(log: &Arc<EmbeddedLog>, rounds: usize, salt: &str) {
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let log = log.clone();
            let salt = salt.to_owned();
            tokio::spawn(async move {
                for i in 0..rounds {
                    let stream =
                        StreamId::new(format!("org{}", t % 2), format!("s{}", (t * 7 + i) % 100));
                    let mut tx = one(&stream, ExpectedVersion::Any, &format!("{salt} {t} {i}"));
                    let key = format!("key-{}", (t + i) % 10);
                    let owner = format!("owner-{t}");
                    // Rounds end on i % 5 == 4, so some claims are held at the end.
                    tx.reservations.push(match i % 5 {
                        0 => Reservation::Claim {
                            key,
                            owner,
                            expires_at: None,
                        },
                        1 => Reservation::Release { key, owner },
                        2 => Reservation::Share { key, owner },
                        3 => Reservation::Claim {
                            key,
                            owner,
                            expires_at: Some(1),
                        }, // already expired
                        _ => Reservation::Claim {
                            key,
                            owner,
                            expires_at: Some(i64::MAX),
                        },
                    });
                    match log.append(tx).await {
                        Ok(_) | Err(AppendError::ReservationHeld { .. }) => {}
                        Err(e) => panic!("append: {e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        segment_size: 8 << 10,
        checkpoint_interval: 4 << 10,
        ..EmbeddedOptions::default()
    }
}

async fn reopen(dir: &Path) -> Arc<EmbeddedLog> {
    Arc::new(open(dir, options()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = reopen(dir.path()).await;
    fill(&log, 40, "first").await;
    let before = snapshot(&*log, &keys()).await;
    assert!(before.head >= 200, "head {}", before.head);
    assert!(
        before.reservations.values().any(Option::is_some),
        "some keys are held"
    );
    log.close().await.unwrap();
    drop(log);
    let checkpoints = checkpoint_files(dir.path());
    assert!(
        (1..=2).contains(&checkpoints.len()),
        "old checkpoints are pruned: {checkpoints:?}"
    );
    assert!(segment_files(dir.path()).len() > 2);

    // Closed cleanly: the checkpoint is at the head, nothing to scan.
    let log = reopen(dir.path()).await;
    let report = log.open_report();
    assert_eq!(
        (report.checkpoint_head, report.scanned_bytes),
        (before.head, 0)
    );
    assert_eq!(snapshot(&*log, &keys()).await, before);

    // More appends (no background checkpoint this time, so the tail is exactly them), then a
    // drop without close: checkpoint plus tail.
    let closed_head = before.head;
    drop(log);
    let no_background = EmbeddedOptions {
        checkpoint_interval: u64::MAX,
        ..options()
    };
    let log = Arc::new(open(dir.path(), no_background).await);
    fill(&log, 20, "second").await;
    let before = snapshot(&*log, &keys()).await;
    drop(log);
    let log = reopen(dir.path()).await;
    let report = log.open_report();
    assert_eq!(report.checkpoint_head, closed_head, "{report:?}");
    assert!(report.scanned_bytes > 0);
    assert_eq!(snapshot(&*log, &keys()).await, before);
    // Appends continue where they left off.
    let c = log
        .append(one(
            &StreamId::new("org0", "s0"),
            ExpectedVersion::Any,
            "next",
        ))
        .await
        .unwrap();
    assert_eq!(c.first_position, before.head + 1);
    let before = snapshot(&*log, &keys()).await;
    drop(log);

    // A corrupt newest checkpoint: fall back to the older one (or a full scan).
    let mut checkpoints = checkpoint_files(dir.path());
    let newest = checkpoints.pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();
    let log = reopen(dir.path()).await;
    assert!(log.open_report().checkpoint_head < before.head);
    assert_eq!(snapshot(&*log, &keys()).await, before);
    drop(log);

    // No checkpoint at all: a full scan gives the same state.
    for cp in checkpoint_files(dir.path()) {
        std::fs::remove_file(cp).unwrap();
    }
    let log = reopen(dir.path()).await;
    assert_eq!(log.open_report().checkpoint_head, 0);
    assert_eq!(snapshot(&*log, &keys()).await, before);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_checkpoint_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let log = reopen(dir.path()).await;
    fill(&log, 10, "x").await;
    let before = snapshot(&*log, &keys()).await;
    drop(log);
    for cp in checkpoint_files(dir.path()) {
        std::fs::remove_file(cp).unwrap();
    }
    // Named like a checkpoint, but not one; and one claiming segments that do not exist.
    std::fs::write(
        dir.path().join(format!("{:020}.ckpt", before.head)),
        b"garbage",
    )
    .unwrap();
    std::fs::write(
        dir.path().join(format!("{:020}.ckpt.tmp", before.head + 1)),
        b"half",
    )
    .unwrap();
    let log = reopen(dir.path()).await;
    assert_eq!(log.open_report().checkpoint_head, 0);
    assert_eq!(snapshot(&*log, &keys()).await, before);
    assert!(
        !dir.path()
            .join(format!("{:020}.ckpt.tmp", before.head + 1))
            .exists()
    );
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_opens_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), EmbeddedOptions::default()).await;
    let second = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).await;
    assert!(second.is_err(), "the LOCK is held");
    // `close` releases the directory, even while the handle lives on.
    log.close().await.unwrap();
    let again = open(dir.path(), EmbeddedOptions::default()).await;
    drop(log);
    again.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_transactions_are_invalid_and_big_records_span_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        segment_size: 4 << 10,
        max_record_size: 64 << 10,
        ..EmbeddedOptions::default()
    };
    let log = open(dir.path(), options.clone()).await;
    let s = StreamId::new("acme", "big");
    let big = "y".repeat(60 << 10);
    let c = log
        .append(one(&s, ExpectedVersion::Any, &big))
        .await
        .expect("below the max");
    let too_big = "z".repeat(70 << 10);
    let err = log
        .append(one(&s, ExpectedVersion::Any, &too_big))
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Invalid(_)), "{err:?}");
    log.append(one(&s, ExpectedVersion::Any, "small"))
        .await
        .unwrap();
    let events = log.read_stream(&s, 1, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].data.len(), big.len());
    assert_eq!(events[0].position, c.first_position);
    log.close().await.unwrap();
    drop(log);
    let log = open(dir.path(), options).await;
    assert_eq!(log.read_stream(&s, 1, 10).await.unwrap(), events);
    log.close().await.unwrap();
}
