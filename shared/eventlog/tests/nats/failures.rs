//! Failures: a crashed server, an unreachable one, and a stream holding foreign messages.

use crate::common::*;
use roster_eventlog::contract::read_everything;
use roster_eventlog::nats::NatsOptions;
use roster_eventlog::{AppendError, EventLog, ExpectedVersion, LogError, StreamId};
use roster_testsupport::NatsServer;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Appends acknowledged before `nats-server` is killed (SIGKILL) are there after it restarts:
/// nats-server writes each message to its file before acknowledging it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_server_crash() {
    let mut server = NatsServer::start();
    let options = fresh_options("crash");
    let log = Arc::new(connect(&server.url(), &options).await);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let s = StreamId::new("acme", format!("user-{i}"));
                let e = event(&format!("e{i}"));
                let id = e.id;
                let c = log
                    .append(roster_eventlog::contract::single(
                        &s,
                        ExpectedVersion::NoStream,
                        vec![e],
                    ))
                    .await
                    .expect("append");
                (c.first_position, id)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.expect("task"));
    }
    server.kill();
    server.restart();

    let after = connect(&server.url(), &options).await;
    let events = read_everything(&after).await;
    assert_eq!(events.len(), 50);
    for (position, id) in acked {
        assert_eq!(
            events[position as usize - 1].id,
            id,
            "acked event at its position"
        );
    }
    after.close().await.expect("close");
    let _ = log.close().await;
}

/// With the server down, an append fails with `Unavailable` after the bounded retry time
/// (no panic, no hang); once the server is back, the same handle appends again and the log
/// stays gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_while_the_server_is_down_then_recovers() {
    let mut server = NatsServer::start();
    let mut options = fresh_options("down");
    options.unavailable_timeout = Duration::from_secs(2);
    options.request_timeout = Duration::from_millis(500);
    let log = connect(&server.url(), &options).await;
    let s = StreamId::new("acme", "user-1");
    log.append(one(&s, ExpectedVersion::NoStream, "before"))
        .await
        .expect("append");

    server.kill();
    let started = Instant::now();
    match log
        .append(one(&s, ExpectedVersion::Exact(1), "during"))
        .await
    {
        Err(AppendError::Log(LogError::Unavailable(_))) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "retried for about unavailable_timeout, took {took:?}"
    );

    // The client re-sends what it buffered once the server is back, so the refused append
    // may yet be stored — at most once, and only where it was validated (the log's answer
    // was "may or may not have been written").
    server.restart();
    let mut appended = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let v = log.stream_version(&s).await.expect("version").unwrap_or(0);
        match log
            .append(one(&s, ExpectedVersion::Exact(v), "after"))
            .await
        {
            Ok(c) => {
                appended = Some(c);
                break;
            }
            Err(AppendError::Log(LogError::Unavailable(_))) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(AppendError::WrongExpectedVersion { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let c = appended.expect("appends work again once the server is back");
    let events = read_everything(&log).await;
    let data: Vec<_> = events.iter().map(|e| e.data.clone()).collect();
    assert!(
        data == ["before", "after"] || data == ["before", "during", "after"],
        "got {data:?}"
    );
    assert_eq!(c.last_position, events.len() as u64);
    for (i, e) in events.iter().enumerate() {
        assert_eq!((e.position, e.version), (i as u64 + 1, i as u64 + 1));
    }
    log.close().await.expect("close");
}

/// A message in the stream that the log did not write makes the log fail loudly (it cannot
/// know what it means), rather than skipping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_fails_the_log() {
    let server = NatsServer::shared();
    let options = fresh_options("foreign");
    let log = connect(&server.url(), &options).await;
    let s = StreamId::new("acme", "user-1");
    log.append(one(&s, ExpectedVersion::NoStream, "ours"))
        .await
        .expect("append");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.publish(
        format!("{}.acme.intruder", options.subject_prefix),
        "hello".into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match log.stream_version(&s).await {
            Err(LogError::Corrupt(_)) => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("expected the log to fail, got {other:?}"),
        }
    }
    match log.append(one(&s, ExpectedVersion::Exact(1), "more")).await {
        Err(AppendError::Log(LogError::Corrupt(_))) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        log.read_all(0, 10).await,
        Err(LogError::Corrupt(_))
    ));
    log.close().await.expect("close");
}

/// A process whose consumer has gone silent (as one can after a quorum loss, while the
/// stream holds messages it never delivers) still appends: it reads what other processes
/// wrote directly, judges against it, and never stays stuck as Unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_on_when_the_consumer_is_silent() {
    let server = NatsServer::shared();
    let options = NatsOptions {
        unavailable_timeout: Duration::from_secs(5),
        ..fresh_options("silent")
    };
    let a = connect(&server.url(), &options).await;
    let b = connect(&server.url(), &options).await;
    let s = StreamId::new("acme", "user-1");
    a.append(one(&s, ExpectedVersion::NoStream, "a1"))
        .await
        .expect("first append");
    wait_for_head(&b, 1).await;
    a.silence_consumer_for_tests();

    // Another process writes three events; `a`'s consumer drops them.
    for i in 2..=4 {
        b.append(one(&s, ExpectedVersion::Exact(i - 1), &format!("b{i}")))
            .await
            .expect("append by b");
    }

    // An append judged against a's stale view: refused for what b wrote, not Unavailable.
    match a.append(one(&s, ExpectedVersion::Exact(1), "stale")).await {
        Err(AppendError::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, Some(4)),
        other => panic!("expected WrongExpectedVersion after catching up, got {other:?}"),
    }
    // And one that fits the latest state lands after b's events.
    let started = Instant::now();
    let c = a
        .append(one(&s, ExpectedVersion::Exact(4), "a5"))
        .await
        .expect("append after catching up");
    assert_eq!(c.first_position, 5);
    assert!(started.elapsed() < Duration::from_secs(3), "no long wait");
    // b (consumer alive) and a agree on the whole log.
    wait_for_head(&b, 5).await;
    assert_eq!(
        read_everything(&a).await,
        read_everything(&b).await,
        "one log"
    );
    a.close().await.expect("close");
    b.close().await.expect("close");
}

/// A process that only reads, whose consumer has gone silent, still catches up with what
/// others wrote: the consumer, idle, checks the stream's last sequence and the missing
/// messages are read directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_catches_up_when_the_consumer_is_silent() {
    let server = NatsServer::shared();
    let options = fresh_options("silent_reader");
    let a = connect(&server.url(), &options).await;
    let b = connect(&server.url(), &options).await;
    a.silence_consumer_for_tests();
    let s = StreamId::new("acme", "user-1");
    writes_three(&b, &s).await;
    // Without the idle check `a` would stay at 0 forever (wait_for_head gives up after 30 s).
    wait_for_head(&a, 3).await;
    assert_eq!(a.stream_version(&s).await.expect("version"), Some(3));
    assert_eq!(read_everything(&a).await, read_everything(&b).await);
    a.close().await.expect("close");
    b.close().await.expect("close");
}

/// `sync` returns only once this process's reads include what another one wrote before the
/// call, even with its consumer silent (a server answering "not found" first syncs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_makes_reads_include_what_another_process_wrote() {
    let server = NatsServer::shared();
    let options = fresh_options("sync");
    let a = connect(&server.url(), &options).await;
    let b = connect(&server.url(), &options).await;
    a.silence_consumer_for_tests();
    let s = StreamId::new("acme", "user-1");
    writes_three(&b, &s).await;
    assert!(a.sync().await.expect("sync"), "a shared log syncs");
    assert_eq!(a.stream_version(&s).await.expect("version"), Some(3));
    assert_eq!(a.read_stream(&s, 1, 10).await.expect("read").len(), 3);
    a.close().await.expect("close");
    b.close().await.expect("close");
}

/// `log` writes three events to a new stream `s`.
async fn writes_three(log: &dyn EventLog, s: &StreamId) {
    for i in 1..=3 {
        let expected = if i == 1 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(i - 1)
        };
        log.append(one(s, expected, &format!("b{i}")))
            .await
            .expect("append by b");
    }
}
