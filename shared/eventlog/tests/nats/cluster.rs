//! A 3-node JetStream cluster, stream replicas 3: the log keeps working with one node down
//! and answers `Unavailable` (not a panic, not a hang) without quorum.

use crate::common::*;
use roster_eventlog::nats::NatsOptions;
use roster_eventlog::{
    AppendError, Committed, EventLog, ExpectedVersion, LogError, StreamId, contract,
};
use roster_testsupport::NatsCluster;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Appends one event at the stream's current version, retrying while unavailable (60 s: a new
/// leader takes seconds, longer on a loaded machine).
async fn append_eventually(log: &dyn EventLog, s: &StreamId, data: &str) -> Committed {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = log.stream_version(s).await.expect("version").unwrap_or(0);
        match log.append(one(s, ExpectedVersion::Exact(v), data)).await {
            Ok(c) => return c,
            Err(AppendError::Log(LogError::Unavailable(_))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The refused-but-stored append showed up between reading the version and now.
            Err(AppendError::WrongExpectedVersion { .. }) => {}
            Err(e) => panic!("appends do not recover: {e}"),
        }
    }
}

fn cluster_options(test: &str) -> NatsOptions {
    NatsOptions {
        replicas: 3,
        unavailable_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(1),
        ..fresh_options(test)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicas_three() {
    let mut cluster = NatsCluster::start(3);

    // Contract tests that race, against the cluster.
    let racing = [
        "reservation_race_has_one_winner",
        "concurrent_conflicts_have_one_winner_per_version",
    ];
    for (name, test) in contract::all()
        .into_iter()
        .filter(|(name, _)| racing.contains(name))
    {
        let log: Arc<dyn EventLog> =
            Arc::new(connect(&cluster.urls(), &cluster_options(name)).await);
        test(log.clone()).await;
        log.close().await.expect("close");
    }

    // Two processes, each connected to a different node.
    let options = cluster_options("shared");
    let a = Arc::new(connect(&cluster.url(0), &options).await);
    let b = Arc::new(connect(&cluster.url(2), &options).await);
    let s = StreamId::new("acme", "user-1");
    a.append(one(&s, ExpectedVersion::NoStream, "a"))
        .await
        .expect("append via n0");
    b.append(one(&s, ExpectedVersion::Exact(1), "b"))
        .await
        .expect("append via n2 sees n0's write");
    wait_for_head(&*a, 2).await;

    // One node down: quorum remains (once a new stream leader is elected, if n1 led it,
    // which nats-server 2.9 takes 4-9 s to do). Node 1 is connected to by neither.
    cluster.kill(1);
    let c = append_eventually(&*a, &s, "one down").await;
    assert_eq!(c.first_position, 3);

    // Two down: no quorum. Appends fail with Unavailable within the bounded time.
    cluster.kill(2);
    let started = Instant::now();
    match a
        .append(one(&s, ExpectedVersion::Exact(3), "no quorum"))
        .await
    {
        Err(AppendError::Log(LogError::Unavailable(_))) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));

    // Quorum back: the log goes on, gap-free. (The refused append may still have been
    // stored: the client re-sends it on reconnect; it is then simply in the log, once.)
    cluster.restart(1);
    let appended = append_eventually(&*a, &s, "back").await;
    assert_eq!(appended.last_position, a.head());
    let events = contract::read_everything(&*a).await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1);
    }
    a.close().await.expect("close");
    let _ = b.close().await;
}
