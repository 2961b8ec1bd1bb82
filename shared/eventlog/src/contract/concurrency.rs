//! Races: concurrent claims, concurrent optimistic appends, ordering under load.

use super::*;
use crate::{AppendError, ExpectedVersion::*};
use std::collections::{HashMap, HashSet};

const TASKS: usize = 50;

/// 50 tasks, each appending to its own stream while claiming the same key: exactly one
/// succeeds, the others are refused naming it, and the reservation names it.
pub async fn reservation_race_has_one_winner(log: Arc<dyn EventLog>) {
    let key = "acme/email/same@example.org";
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let s = stream("acme", &format!("racer-{i}"));
                let owner = s.name.clone();
                let result = log
                    .append(with_reservations(&s, NoStream, vec![claim(key, &owner)]))
                    .await;
                (owner, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        let (owner, result) = task.await.expect("task");
        match result {
            Ok(c) => winners.push((owner, c)),
            Err(AppendError::ReservationHeld { owner: holder, .. }) => refused.push(holder),
            Err(e) => panic!("{owner}: unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins");
    let (winner, committed) = &winners[0];
    assert!(
        refused.iter().all(|h| h == winner),
        "losers are told who holds it"
    );
    let held = log.reservation(key).await.expect("r").expect("held");
    assert_eq!(&held.owner, winner);
    assert_eq!(held.position, committed.first_position);
    assert_eq!(log.head(), committed.last_position, "losers wrote nothing");
    for i in 0..TASKS {
        let s = stream("acme", &format!("racer-{i}"));
        let expected = (s.name == *winner).then_some(1);
        assert_eq!(log.stream_version(&s).await.expect("v"), expected);
    }
}

/// 50 tasks appending to one stream with `Exact`: each version is won by exactly one, and
/// retrying after a conflict loses no update.
pub async fn concurrent_conflicts_have_one_winner_per_version(log: Arc<dyn EventLog>) {
    let s = stream("acme", "contended");
    // Round 1: everyone tries to create the stream at once.
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let log = log.clone();
            let s = s.clone();
            tokio::spawn(async move {
                log.append(single(&s, NoStream, vec![event("Create", &i.to_string())]))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => created += 1,
            Err(e) => assert!(is_wrong_version(&e, &s, Some(1)), "got {e:?}"),
        }
    }
    assert_eq!(created, 1, "exactly one NoStream append wins");

    // Round 2: read-modify-write with retries; every task gets its event in exactly once.
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let log = log.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let e = event("Update", &i.to_string());
                let mut conflicts = 0;
                loop {
                    let v = log.stream_version(&s).await.expect("v").expect("exists");
                    match log.append(single(&s, Exact(v), vec![e.clone()])).await {
                        Ok(c) => {
                            assert_eq!(c.versions, vec![v + 1]);
                            return (e.id, v + 1, conflicts);
                        }
                        Err(AppendError::WrongExpectedVersion { actual, .. }) => {
                            assert!(actual.is_some_and(|a| a > v), "a conflict means progress");
                            conflicts += 1;
                        }
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
            })
        })
        .collect();
    let mut won_versions = HashSet::new();
    let mut ids = HashMap::new();
    for task in tasks {
        let (id, version, _) = task.await.expect("task");
        assert!(won_versions.insert(version), "version {version} won twice");
        ids.insert(id, version);
    }
    let events = log.read_stream(&s, 2, usize::MAX).await.expect("read");
    assert_eq!(events.len(), TASKS, "no lost update");
    for e in &events {
        assert_eq!(
            ids.get(&e.id),
            Some(&e.version),
            "each event at the version it won"
        );
    }
    assert_eq!(
        log.stream_version(&s).await.expect("v"),
        Some(TASKS as u64 + 1)
    );
}

/// Under concurrent appends, `read_all` returns strictly increasing, gap-free positions, and
/// each acknowledged append is where its `Committed` says.
pub async fn read_all_is_ordered_under_concurrency(log: Arc<dyn EventLog>) {
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let s = stream("acme", &format!("writer-{t}"));
                let mut acked = Vec::new();
                for i in 0..10 {
                    let events: Vec<_> = (0..1 + i % 2)
                        .map(|k| event("E", &format!("{t}-{i}-{k}")))
                        .collect();
                    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
                    let c = must_append(&*log, single(&s, Any, events)).await;
                    acked.push((c, ids));
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("task"));
    }
    let all = read_everything(&*log).await;
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "strictly increasing and gap-free");
    }
    let total: usize = acked.iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(all.len(), total);
    for (c, ids) in acked {
        for (k, id) in ids.iter().enumerate() {
            let e = &all[(c.first_position - 1) as usize + k];
            assert_eq!(e.id, *id);
            assert_eq!(e.time, c.time);
        }
    }
}

/// Transactions submitted one after another, each expecting the version the one before makes,
/// commit in that order without waiting for each other, at the times `submit` said; one that
/// follows a refused transaction is refused too.
pub async fn submissions_keep_their_order(log: Arc<dyn EventLog>) {
    let s = stream("acme", "pipelined");
    let mut submitted = Vec::new();
    for version in 0..20u64 {
        let expected = match version {
            0 => NoStream,
            v => Exact(v),
        };
        let tx = single(&s, expected, vec![event("A", &version.to_string())]);
        submitted.push(log.submit(tx).await.expect("submit"));
    }
    let mut last = 0;
    for (i, submission) in submitted.into_iter().enumerate() {
        let time = submission.time;
        let committed = submission.outcome.await.expect("committed");
        assert_eq!(committed.versions, vec![i as u64 + 1]);
        assert_eq!(committed.time, time, "the time submit said");
        assert!(committed.first_position > last, "in submission order");
        last = committed.first_position;
    }
    let events = log.read_stream(&s, 1, 100).await.expect("read");
    let data: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect();
    let expected: Vec<String> = (0..20).map(|v| format!("{{\"v\":\"{v}\"}}")).collect();
    assert_eq!(data, expected);

    // A wrong expectation, then one built on it: both refused, nothing written.
    let head = log.head();
    let wrong = log
        .submit(single(&s, Exact(25), vec![event("A", "x")]))
        .await;
    let after_wrong = log
        .submit(single(&s, Exact(26), vec![event("A", "y")]))
        .await;
    for result in [wrong, after_wrong] {
        let refused = match result {
            Ok(submission) => submission.outcome.await.expect_err("refused"),
            Err(e) => e,
        };
        assert!(is_wrong_version(&refused, &s, Some(20)), "got {refused:?}");
    }
    assert_eq!(log.head(), head, "nothing written");
}
