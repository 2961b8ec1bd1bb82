//! Single-client behaviour: round trips, optimistic concurrency, atomicity, ordering, paging.

use super::*;
use crate::{AppendError, ExpectedVersion::*, Position};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Every field of every event survives append → `read_stream` / `read_all`, and `Committed`
/// describes what was written.
pub async fn round_trip_keeps_every_field(log: Arc<dyn EventLog>) {
    let s = stream("acme", "user-1");
    let mut first = event("UserCreated", "alice");
    first.schema_version = 3;
    first.metadata = Bytes::from_static(b"{\"causation\":\"c-1\"}");
    let mut second = event("EmailChanged", "alice@example.org");
    second.data = Bytes::from(vec![0u8, 255, 10, 13]); // opaque bytes, not just UTF-8
    second.metadata = Bytes::new();
    let sent = vec![first, second];

    let c = must_append(&*log, single(&s, NoStream, sent.clone())).await;
    assert_eq!((c.first_position, c.last_position), (1, 2));
    assert_eq!(c.versions, vec![2]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64;
    assert!(
        (c.time - now).abs() < 3_600_000_000,
        "commit time {} is near now {now}",
        c.time
    );

    let by_stream = log.read_stream(&s, 1, 10).await.expect("read_stream");
    let all = log.read_all(0, 10).await.expect("read_all");
    assert_eq!(by_stream, all, "both reads return the same events");
    assert_eq!(all.len(), 2);
    for (i, (got, sent)) in all.iter().zip(&sent).enumerate() {
        assert_eq!(got.position, 1 + i as u64);
        assert_eq!(got.version, 1 + i as u64);
        assert_eq!(got.stream, s);
        assert_eq!(got.id, sent.id);
        assert_eq!(got.event_type, sent.event_type);
        assert_eq!(got.schema_version, sent.schema_version);
        assert_eq!(got.data, sent.data);
        assert_eq!(got.metadata, sent.metadata);
        assert_eq!(got.time, c.time);
    }
    assert_eq!(log.stream_version(&s).await.expect("version"), Some(2));
    assert_eq!(
        log.stream_version(&stream("acme", "nobody"))
            .await
            .expect("v"),
        None
    );
    assert_eq!(log.head(), 2);
}

/// `Any` appends whether or not the stream exists.
pub async fn expected_version_any(log: Arc<dyn EventLog>) {
    let s = stream("acme", "any");
    let c1 = must_append(&*log, single(&s, Any, vec![event("A", "1")])).await;
    let c2 = must_append(&*log, single(&s, Any, vec![event("A", "2")])).await;
    assert_eq!((c1.versions[0], c2.versions[0]), (1, 2));
    assert_eq!(log.stream_version(&s).await.expect("version"), Some(2));
}

/// `NoStream` succeeds once; afterwards it conflicts, reporting the actual version, and
/// writes nothing.
pub async fn expected_version_no_stream(log: Arc<dyn EventLog>) {
    let s = stream("acme", "fresh");
    must_append(
        &*log,
        single(&s, NoStream, vec![event("A", "1"), event("A", "2")]),
    )
    .await;
    let err = log
        .append(single(&s, NoStream, vec![event("A", "3")]))
        .await
        .expect_err("NoStream on an existing stream must conflict");
    assert!(is_wrong_version(&err, &s, Some(2)), "got {err:?}");
    assert_eq!(log.head(), 2, "the conflicting append wrote nothing");
    assert_eq!(log.read_stream(&s, 1, 10).await.expect("read").len(), 2);
}

/// `Exact(v)` succeeds when the stream is at `v`; otherwise it conflicts, reporting the
/// actual version (`None` for a missing stream), and writes nothing.
pub async fn expected_version_exact(log: Arc<dyn EventLog>) {
    let s = stream("acme", "exact");
    let err = log
        .append(single(&s, Exact(1), vec![event("A", "x")]))
        .await
        .expect_err("Exact(1) on a missing stream must conflict");
    assert!(is_wrong_version(&err, &s, None), "got {err:?}");
    assert_empty(&*log).await;

    must_append(&*log, single(&s, NoStream, vec![event("A", "1")])).await;
    let c = must_append(&*log, single(&s, Exact(1), vec![event("A", "2")])).await;
    assert_eq!(c.versions, vec![2]);
    for wrong in [1, 3, 99] {
        let err = log
            .append(single(&s, Exact(wrong), vec![event("A", "x")]))
            .await
            .expect_err("a stale or future version must conflict");
        assert!(
            is_wrong_version(&err, &s, Some(2)),
            "Exact({wrong}) got {err:?}"
        );
    }
    assert_eq!(log.head(), 2);
    assert_eq!(log.stream_version(&s).await.expect("version"), Some(2));
}

/// Malformed transactions fail with `Invalid` and write nothing.
pub async fn invalid_transactions_are_refused(log: Arc<dyn EventLog>) {
    let s = stream("acme", "s");
    let empty_append = StreamAppend {
        stream: s.clone(),
        expected: Any,
        events: vec![],
    };
    let twice = Transaction {
        appends: vec![
            single(&s, Any, vec![event("A", "1")]).appends.remove(0),
            single(&s, Any, vec![event("A", "2")]).appends.remove(0),
        ],
        reservations: vec![],
    };
    let cases = [
        ("no appends", Transaction::default()),
        (
            "only reservations",
            Transaction {
                appends: vec![],
                reservations: vec![claim("k", "o")],
            },
        ),
        (
            "an empty stream append",
            Transaction {
                appends: vec![empty_append],
                reservations: vec![],
            },
        ),
        ("one stream twice", twice),
        (
            "an org with '/'",
            single(&stream("ac/me", "s"), Any, vec![event("A", "1")]),
        ),
    ];
    for (what, tx) in cases {
        match log.append(tx).await {
            Err(AppendError::Invalid(_)) => {}
            other => panic!("{what}: expected Invalid, got {other:?}"),
        }
    }
    assert_empty(&*log).await;
    assert_eq!(log.reservation("k").await.expect("reservation"), None);
}

/// One conflicting stream (or reservation) fails the whole transaction: no stream of it is
/// written and no reservation taken. A successful one writes contiguous positions in order.
pub async fn multi_stream_transactions_are_atomic(log: Arc<dyn EventLog>) {
    let a = stream("acme", "a");
    let b = stream("acme", "b");
    let c = stream("acme", "c");
    must_append(&*log, single(&b, Any, vec![event("B", "0")])).await;
    let head = log.head();

    let tx = |expected_b| Transaction {
        appends: vec![
            StreamAppend {
                stream: a.clone(),
                expected: NoStream,
                events: vec![event("A", "1"), event("A", "2")],
            },
            StreamAppend {
                stream: b.clone(),
                expected: expected_b,
                events: vec![event("B", "1")],
            },
            StreamAppend {
                stream: c.clone(),
                expected: Any,
                events: vec![event("C", "1")],
            },
        ],
        reservations: vec![claim("unique-a", "a")],
    };
    let err = log.append(tx(NoStream)).await.expect_err("b exists");
    assert!(is_wrong_version(&err, &b, Some(1)), "got {err:?}");
    assert_eq!(log.head(), head);
    assert_eq!(log.stream_version(&a).await.expect("v"), None);
    assert_eq!(log.stream_version(&c).await.expect("v"), None);
    assert_eq!(log.reservation("unique-a").await.expect("r"), None);

    // A held reservation also fails every stream of the transaction.
    must_append(
        &*log,
        with_reservations(&c, Any, vec![claim("unique-a", "someone")]),
    )
    .await;
    let head = log.head();
    let err = log
        .append(tx(Exact(1)))
        .await
        .expect_err("reservation held");
    assert!(
        matches!(err, AppendError::ReservationHeld { .. }),
        "got {err:?}"
    );
    assert_eq!(log.head(), head);
    assert_eq!(log.stream_version(&a).await.expect("v"), None);
    assert_eq!(log.stream_version(&b).await.expect("v"), Some(1));
    must_append(
        &*log,
        with_reservations(&c, Any, vec![release("unique-a", "someone")]),
    )
    .await;

    let done = must_append(&*log, tx(Exact(1))).await;
    assert_eq!(
        done.last_position - done.first_position,
        3,
        "four contiguous events"
    );
    assert_eq!(done.versions, vec![2, 2, 3]);
    let events = log
        .read_all(done.first_position - 1, 10)
        .await
        .expect("read");
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.stream.name.as_str(), e.version))
        .collect();
    assert_eq!(got, vec![("a", 1), ("a", 2), ("b", 2), ("c", 3)]);
    let r = log
        .reservation("unique-a")
        .await
        .expect("r")
        .expect("claimed");
    assert_eq!((r.owner.as_str(), r.position), ("a", done.first_position));
}

/// Positions are 1.., gap-free and contiguous per transaction; versions count per stream;
/// times never decrease and are shared by a transaction's events.
pub async fn positions_versions_and_times(log: Arc<dyn EventLog>) {
    let streams: Vec<_> = (0..5).map(|i| stream("acme", &format!("s{i}"))).collect();
    let mut expected_position = 1;
    let mut last_time = i64::MIN;
    for round in 0..6 {
        for (i, s) in streams.iter().enumerate() {
            let n = 1 + (round + i) % 3;
            let events = (0..n)
                .map(|k| event("E", &format!("{round}-{k}")))
                .collect();
            let c = must_append(&*log, single(s, Any, events)).await;
            assert_eq!(c.first_position, expected_position, "gap-free");
            assert_eq!(
                c.last_position,
                expected_position + n as u64 - 1,
                "contiguous"
            );
            assert!(c.time >= last_time, "times never decrease");
            last_time = c.time;
            expected_position += n as u64;
        }
    }
    let all = read_everything(&*log).await;
    assert_eq!(all.len() as u64, expected_position - 1);
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1);
        let v = versions.entry(e.stream.clone()).or_default();
        *v += 1;
        assert_eq!(e.version, *v, "versions count per stream");
        if i > 0 {
            assert!(e.time >= all[i - 1].time);
        }
    }
    for s in &streams {
        let events = log.read_stream(s, 1, usize::MAX).await.expect("read");
        assert_eq!(
            log.stream_version(s).await.expect("v"),
            Some(events.len() as u64)
        );
    }
}

/// The same stream name in two organizations is two streams.
pub async fn streams_are_scoped_by_org(log: Arc<dyn EventLog>) {
    let a = stream("org-a", "user-1");
    let b = stream("org-b", "user-1");
    must_append(
        &*log,
        single(&a, NoStream, vec![event("A", "1"), event("A", "2")]),
    )
    .await;
    must_append(&*log, single(&b, NoStream, vec![event("B", "1")])).await;
    assert_eq!(log.stream_version(&a).await.expect("v"), Some(2));
    assert_eq!(log.stream_version(&b).await.expect("v"), Some(1));
    let events = log.read_stream(&b, 1, 10).await.expect("read");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stream, b);
    assert_eq!(events[0].version, 1);
    // Names that would collide if org and name were simply concatenated.
    let x = stream("org", "a-b");
    let y = stream("org-a", "b");
    must_append(&*log, single(&x, NoStream, vec![event("X", "1")])).await;
    must_append(&*log, single(&y, NoStream, vec![event("Y", "1")])).await;
    assert_eq!(log.read_stream(&x, 1, 10).await.expect("read").len(), 1);
}

/// `read_stream` honours `from_version` and `limit`; `read_all` honours `after` and `limit`.
pub async fn read_paging(log: Arc<dyn EventLog>) {
    let s = stream("acme", "paged");
    let other = stream("acme", "other");
    for i in 0..10 {
        must_append(&*log, single(&s, Any, vec![event("E", &i.to_string())])).await;
        must_append(&*log, single(&other, Any, vec![event("O", &i.to_string())])).await;
    }
    // A multi-event transaction, so a page can start or end inside a record.
    let batch = (0..5).map(|i| event("B", &i.to_string())).collect();
    must_append(&*log, single(&s, Any, batch)).await;

    let versions =
        |events: Vec<RecordedEvent>| events.iter().map(|e| e.version).collect::<Vec<_>>();
    let read = |from, limit| {
        let log = log.clone();
        let s = s.clone();
        async move { versions(log.read_stream(&s, from, limit).await.expect("read")) }
    };
    assert_eq!(read(1, 3).await, vec![1, 2, 3]);
    assert_eq!(
        read(0, 2).await,
        vec![1, 2],
        "from_version 0 reads from the start"
    );
    assert_eq!(read(9, 4).await, vec![9, 10, 11, 12]);
    assert_eq!(read(13, 100).await, vec![13, 14, 15]);
    assert_eq!(read(16, 10).await, Vec::<u64>::new());
    assert_eq!(read(1, 0).await, Vec::<u64>::new());
    assert!(
        log.read_stream(&stream("acme", "none"), 1, 10)
            .await
            .expect("read")
            .is_empty()
    );

    let positions = |events: Vec<RecordedEvent>| -> Vec<Position> {
        events.iter().map(|e| e.position).collect()
    };
    let head = log.head();
    assert_eq!(head, 25);
    assert_eq!(
        positions(log.read_all(0, 3).await.expect("r")),
        vec![1, 2, 3]
    );
    assert_eq!(
        positions(log.read_all(21, 2).await.expect("r")),
        vec![22, 23]
    );
    assert_eq!(
        positions(log.read_all(23, 10).await.expect("r")),
        vec![24, 25]
    );
    assert!(log.read_all(head, 10).await.expect("r").is_empty());
    assert!(log.read_all(head + 100, 10).await.expect("r").is_empty());
    assert!(log.read_all(0, 0).await.expect("r").is_empty());
    let mut paged = Vec::new();
    loop {
        let page = log.read_all(paged.len() as u64, 4).await.expect("r");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        paged.extend(positions(page));
    }
    assert_eq!(paged, (1..=head).collect::<Vec<_>>());
}

/// `head` is 0 on an empty log and the last durable position after appends; `watch_head`
/// sees it move.
pub async fn head_and_watch_head(log: Arc<dyn EventLog>) {
    assert_eq!(log.head(), 0);
    let mut watch = log.watch_head();
    assert_eq!(*watch.borrow_and_update(), 0);
    let s = stream("acme", "h");
    let appender = {
        let log = log.clone();
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            must_append(
                &*log,
                single(&s, Any, vec![event("E", "1"), event("E", "2")]),
            )
            .await
        })
    };
    tokio::time::timeout(PATIENCE, async {
        while *watch.borrow_and_update() < 2 {
            watch.changed().await.expect("log still open");
        }
    })
    .await
    .expect("watch_head sees the append");
    let c = appender.await.expect("append task");
    assert_eq!(log.head(), c.last_position);
    assert_eq!(c.last_position, 2);
    // A refused append moves nothing.
    let _ = log
        .append(single(&s, NoStream, vec![event("E", "x")]))
        .await;
    assert_eq!(log.head(), 2);
}
