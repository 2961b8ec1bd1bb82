//! Several processes (here: several connections) on one stream: every write is decided
//! against everything the others wrote, and all of them see the same log.

use crate::common::*;
use roster_eventlog::contract::{claim, read_everything, single, with_reservations};
use roster_eventlog::{AppendError, EventLog, ExpectedVersion, StreamId};
use roster_testsupport::NatsServer;
use std::collections::HashSet;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_log() {
    let server = NatsServer::shared();
    let options = fresh_options("two_processes");
    let logs: Vec<Arc<dyn EventLog>> = vec![
        Arc::new(connect(&server.url(), &options).await),
        Arc::new(connect(&server.url(), &options).await),
    ];

    // Independent writers on both.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let log = logs[w % 2].clone();
        tasks.push(tokio::spawn(async move {
            let s = StreamId::new("acme", format!("writer-{w}"));
            for i in 0..20 {
                log.append(one(&s, ExpectedVersion::Any, &format!("{w}-{i}")))
                    .await
                    .expect("append");
            }
        }));
    }
    // Read-modify-write on one stream from both: no lost update.
    let contended = StreamId::new("acme", "contended");
    logs[0]
        .append(one(&contended, ExpectedVersion::NoStream, "create"))
        .await
        .expect("create");
    for t in 0..10 {
        let log = logs[t % 2].clone();
        let s = contended.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let v = log.stream_version(&s).await.expect("version").unwrap_or(0);
                match log
                    .append(one(&s, ExpectedVersion::Exact(v), "update"))
                    .await
                {
                    Ok(_) => return,
                    Err(AppendError::WrongExpectedVersion { .. }) => tokio::task::yield_now().await,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }

    // A reservation raced from both: one winner.
    let key = "acme/email/same@example.org";
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let log = logs[i % 2].clone();
            tokio::spawn(async move {
                let s = StreamId::new("acme", format!("racer-{i}"));
                log.append(with_reservations(
                    &s,
                    ExpectedVersion::NoStream,
                    vec![claim(key, &s.name)],
                ))
                .await
            })
        })
        .collect();
    let mut winners = 0;
    for r in racers {
        match r.await.expect("racer") {
            Ok(_) => winners += 1,
            Err(AppendError::ReservationHeld { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners, 1, "one claim wins across processes");

    let head = logs[0].head().max(logs[1].head());
    wait_for_head(&*logs[0], head).await;
    wait_for_head(&*logs[1], head).await;
    let keys = vec![key.to_owned()];
    let a = snapshot(&*logs[0], &keys).await;
    let b = snapshot(&*logs[1], &keys).await;
    assert_eq!(a, b, "both processes see the same log");
    assert_eq!(a.head, 8 * 20 + 1 + 10 + 1);
    for (i, e) in a.events.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "gap-free");
        if i > 0 {
            assert!(e.time >= a.events[i - 1].time, "times never decrease");
        }
    }
    assert_eq!(a.versions[&contended], Some(11), "no lost update");
    let ids: HashSet<_> = a.events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), a.events.len(), "every event once");
    for log in logs {
        log.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_rebuilds_the_same_state() {
    let server = NatsServer::shared();
    let options = fresh_options("rebuild");
    let log = connect(&server.url(), &options).await;
    let keys: Vec<String> = (0..5).map(|i| format!("acme/username/u{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let s = StreamId::new("acme", format!("user-{i}"));
        let mut tx = with_reservations(&s, ExpectedVersion::NoStream, vec![claim(key, &s.name)]);
        tx.appends[0].events.push(event("second"));
        log.append(tx).await.expect("append");
        log.append(single(&s, ExpectedVersion::Exact(2), vec![event("third")]))
            .await
            .expect("append");
    }
    let before = snapshot(&log, &keys).await;
    log.close().await.expect("close");

    let again = connect(&server.url(), &options).await;
    assert_eq!(snapshot(&again, &keys).await, before);
    // And it writes on where the first left off.
    let s = StreamId::new("acme", "user-0");
    let c = again
        .append(one(&s, ExpectedVersion::Exact(3), "fourth"))
        .await
        .expect("append");
    assert_eq!((c.first_position, c.versions[0]), (before.head + 1, 4));
    assert_eq!(read_everything(&again).await.len() as u64, before.head + 1);
    again.close().await.expect("close");
}
