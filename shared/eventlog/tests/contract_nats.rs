//! The backend-independent contract suite, run against the JetStream backend: one
//! `nats-server` for this test binary, a fresh stream (and subject prefix) per test.

use roster_eventlog::nats::{NatsLog, NatsOptions};
use roster_eventlog::{EventLog, contract};
use roster_testsupport::NatsServer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Options for a stream nobody else in this process uses.
fn fresh_options(test: &str) -> NatsOptions {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    NatsOptions {
        stream: format!("CONTRACT_{pid}_{n}_{test}"),
        subject_prefix: format!("contract{pid}n{n}"),
        ..NatsOptions::default()
    }
}

async fn fresh(test: &str) -> Arc<dyn EventLog> {
    let server = NatsServer::shared();
    let log = NatsLog::connect(&server.url(), fresh_options(test))
        .await
        .expect("connect");
    Arc::new(log)
}

macro_rules! contract_test {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let log = fresh(stringify!($name)).await;
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
