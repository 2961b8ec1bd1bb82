//! The backend-independent contract suite, run against the embedded log.

use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::{EventLog, contract};
use std::sync::Arc;

/// A fresh log in its own temporary directory (kept alive for the test's duration).
async fn fresh() -> (Arc<dyn EventLog>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default())
        .await
        .expect("open");
    (Arc::new(log), dir)
}

macro_rules! contract_test {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (log, _dir) = fresh().await;
            contract::$name(log.clone()).await;
            log.close().await.expect("close");
        }
    )*};
}

contract_test!(
    round_trip_keeps_every_field,
    expected_version_any,
    expected_version_no_stream,
    expected_version_exact,
    invalid_transactions_are_refused,
    multi_stream_transactions_are_atomic,
    positions_versions_and_times,
    streams_are_scoped_by_org,
    read_paging,
    head_and_watch_head,
    reservations_claim_and_release,
    reservations_share,
    reservations_expire,
    reservations_apply_in_order,
    reservation_race_has_one_winner,
    concurrent_conflicts_have_one_winner_per_version,
    read_all_is_ordered_under_concurrency,
    subscribe_catches_up_then_goes_live,
    subscribe_during_concurrent_appends,
    closing_ends_subscriptions_and_refuses_appends,
);

/// `run_all` itself, with small segments and checkpoints so the suite also crosses segment
/// boundaries and checkpoint writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_with_small_segments() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut n = 0;
    contract::run_all(|| {
        n += 1;
        let dir = root.path().join(format!("log-{n}"));
        async move {
            let options = EmbeddedOptions {
                segment_size: 512,
                checkpoint_interval: 1024,
                ..EmbeddedOptions::default()
            };
            let log = EmbeddedLog::open(&dir, options).await.expect("open");
            Arc::new(log) as Arc<dyn EventLog>
        }
    })
    .await;
}

/// Every contract function has a test above.
#[test]
fn every_contract_test_is_listed() {
    let listed = [
        "round_trip_keeps_every_field",
        "expected_version_any",
        "expected_version_no_stream",
        "expected_version_exact",
        "invalid_transactions_are_refused",
        "multi_stream_transactions_are_atomic",
        "positions_versions_and_times",
        "streams_are_scoped_by_org",
        "read_paging",
        "head_and_watch_head",
        "reservations_claim_and_release",
        "reservations_share",
        "reservations_expire",
        "reservations_apply_in_order",
        "reservation_race_has_one_winner",
        "concurrent_conflicts_have_one_winner_per_version",
        "submissions_keep_their_order",
        "read_all_is_ordered_under_concurrency",
        "subscribe_catches_up_then_goes_live",
        "subscribe_during_concurrent_appends",
        "closing_ends_subscriptions_and_refuses_appends",
    ];
    let all: Vec<_> = contract::all().into_iter().map(|(name, _)| name).collect();
    assert_eq!(all, listed);
}
