//! Subscriptions: catch up, then live; in order, exactly once, no gaps; end on close.

use super::*;
use crate::{ExpectedVersion::*, LogError, Position};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::HashMap;

type Subscription = BoxStream<'static, Result<RecordedEvent, LogError>>;

/// Takes `n` events from `sub`, failing on an error, an early end or a stall.
async fn take(sub: &mut Subscription, n: usize) -> Vec<RecordedEvent> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(PATIENCE, sub.next()).await {
            Ok(Some(Ok(e))) => got.push(e),
            Ok(Some(Err(e))) => panic!("subscription failed after {} events: {e}", got.len()),
            Ok(None) => panic!("subscription ended after {} of {n} events", got.len()),
            Err(_) => panic!("subscription stalled after {} of {n} events", got.len()),
        }
    }
    got
}

/// Asserts nothing more arrives for a moment (no duplicates, no phantom events).
async fn assert_quiet(sub: &mut Subscription) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
        panic!("unexpected extra item {item:?}");
    }
}

fn assert_positions(events: &[RecordedEvent], from: Position) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.position,
            from + i as u64,
            "in order, no gaps, no duplicates"
        );
    }
}

/// Events before `subscribe` arrive first, then those appended after, in order and once;
/// `subscribe(after)` starts right after `after`.
pub async fn subscribe_catches_up_then_goes_live(log: Arc<dyn EventLog>) {
    let s = stream("acme", "sub");
    for i in 0..5 {
        let events = (0..2)
            .map(|k| event("Before", &format!("{i}-{k}")))
            .collect();
        must_append(&*log, single(&s, Any, events)).await;
    }
    let mut sub = log.subscribe(0);
    let caught_up = take(&mut sub, 10).await;
    assert_positions(&caught_up, 1);
    assert_eq!(
        caught_up,
        read_everything(&*log).await,
        "same events as read_all"
    );

    let mut ids = Vec::new();
    for i in 0..10 {
        let e = event("After", &i.to_string());
        ids.push(e.id);
        must_append(&*log, single(&s, Any, vec![e])).await;
    }
    let live = take(&mut sub, 10).await;
    assert_positions(&live, 11);
    assert_eq!(live.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_quiet(&mut sub).await;

    let mut from_middle = log.subscribe(5);
    let rest = take(&mut from_middle, 15).await;
    assert_positions(&rest, 6);
    assert_quiet(&mut from_middle).await;
    let mut at_head = log.subscribe(log.head());
    assert_quiet(&mut at_head).await;
}

/// A subscription started while many tasks append sees every event exactly once, in order.
pub async fn subscribe_during_concurrent_appends(log: Arc<dyn EventLog>) {
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                let s = stream("acme", &format!("w{w}"));
                for i in 0..EACH {
                    must_append(&*log, single(&s, Any, vec![event("E", &i.to_string())])).await;
                }
            })
        })
        .collect();
    // Join in the middle of the writing.
    let mut watch = log.watch_head();
    tokio::time::timeout(PATIENCE, async {
        while *watch.borrow_and_update() < 20 {
            watch.changed().await.expect("open");
        }
    })
    .await
    .expect("appends progress");
    let mut sub = log.subscribe(0);
    let got = take(&mut sub, WRITERS * EACH).await;
    for w in writers {
        w.await.expect("writer");
    }
    assert_positions(&got, 1);
    assert_eq!(got, read_everything(&*log).await);
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for e in &got {
        let v = versions.entry(e.stream.name.as_str()).or_default();
        *v += 1;
        assert_eq!(e.version, *v);
    }
    assert_quiet(&mut sub).await;
}

/// After `close`, appends fail with `Closed` and subscriptions end (having delivered every
/// event they could).
pub async fn closing_ends_subscriptions_and_refuses_appends(log: Arc<dyn EventLog>) {
    let s = stream("acme", "c");
    must_append(
        &*log,
        single(&s, Any, vec![event("E", "1"), event("E", "2")]),
    )
    .await;
    let mut sub = log.subscribe(0);
    take(&mut sub, 2).await;
    log.close().await.expect("close");
    let ended = tokio::time::timeout(PATIENCE, async {
        match sub.next().await {
            None => {}
            // Ending with an error is allowed; nothing may follow it.
            Some(Err(_)) => assert!(sub.next().await.is_none()),
            Some(Ok(e)) => panic!("no event was appended after the first two: {e:?}"),
        }
    })
    .await;
    assert!(ended.is_ok(), "the subscription ends when the log closes");
    match log.append(single(&s, Any, vec![event("E", "3")])).await {
        Err(crate::AppendError::Log(LogError::Closed)) => {}
        other => panic!("append after close: expected Closed, got {other:?}"),
    }
}
