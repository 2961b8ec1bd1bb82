//! The contract every [`EventLog`] backend must meet, written once and run against each.
//!
//! Each public `async fn` takes a fresh, empty log and panics on a violation; [`run_all`] runs
//! every one against its own log from a factory. Backends' integration tests call them (one
//! `#[tokio::test(flavor = "multi_thread")]` per function reads best), so this module is not
//! `#[cfg(test)]` and depends only on tokio and futures.

mod basics;
mod concurrency;
mod reservations;
mod subscriptions;

pub use basics::*;
pub use concurrency::*;
pub use reservations::*;
pub use subscriptions::*;

use crate::{
    AppendError, Committed, EventLog, ExpectedVersion, NewEvent, RecordedEvent, Reservation,
    StreamAppend, StreamId, Transaction,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use ulid::Ulid;

/// A contract test: takes a fresh, empty log, panics on failure.
pub type ContractTest = fn(Arc<dyn EventLog>) -> BoxFuture<'static, ()>;

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        /// Every contract test, by name.
        pub fn all() -> Vec<(&'static str, ContractTest)> {
            vec![$((stringify!($name), |log| Box::pin($name(log)) as BoxFuture<'static, ()>)),*]
        }
    };
}

contract_tests!(
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
    submissions_keep_their_order,
    read_all_is_ordered_under_concurrency,
    subscribe_catches_up_then_goes_live,
    subscribe_during_concurrent_appends,
    closing_ends_subscriptions_and_refuses_appends,
);

/// Runs every contract test, each against a fresh log from `make`, closing it afterwards.
/// Panics (naming the test) on the first failure.
pub async fn run_all<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    for (name, test) in all() {
        let log = make().await;
        let outcome = tokio::spawn(test(log.clone())).await;
        if let Err(e) = outcome {
            panic!("contract test {name} failed: {e}");
        }
        let _ = log.close().await;
    }
}

/// How long a contract test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A stream id.
pub fn stream(org: &str, name: &str) -> StreamId {
    StreamId::new(org, name)
}

/// A new event with a fresh id, JSON-ish data and metadata.
pub fn event(event_type: &str, data: &str) -> NewEvent {
    NewEvent {
        id: Ulid::new(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        data: Bytes::from(format!("{{\"v\":\"{data}\"}}")),
        metadata: Bytes::from_static(b"{\"source\":\"contract\"}"),
    }
}

/// A transaction appending `events` to one stream.
pub fn single(stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Transaction {
    Transaction {
        appends: vec![StreamAppend {
            stream: stream.clone(),
            expected,
            events,
        }],
        reservations: Vec::new(),
    }
}

/// A one-event transaction with reservations.
pub fn with_reservations(
    stream: &StreamId,
    expected: ExpectedVersion,
    reservations: Vec<Reservation>,
) -> Transaction {
    let mut tx = single(stream, expected, vec![event("Reserved", "r")]);
    tx.reservations = reservations;
    tx
}

/// A `Claim` that never expires.
pub fn claim(key: &str, owner: &str) -> Reservation {
    Reservation::Claim {
        key: key.to_owned(),
        owner: owner.to_owned(),
        expires_at: None,
    }
}

/// A `Release`.
pub fn release(key: &str, owner: &str) -> Reservation {
    Reservation::Release {
        key: key.to_owned(),
        owner: owner.to_owned(),
    }
}

/// Appends and panics if it fails.
pub async fn must_append(log: &dyn EventLog, tx: Transaction) -> Committed {
    match log.append(tx).await {
        Ok(c) => c,
        Err(e) => panic!("append failed: {e}"),
    }
}

/// Every event in the log, read in pages of 100.
pub async fn read_everything(log: &dyn EventLog) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |e: &RecordedEvent| e.position);
        let page = log.read_all(after, 100).await.expect("read_all");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Asserts the log holds no events at all and head is 0.
pub async fn assert_empty(log: &dyn EventLog) {
    assert_eq!(log.head(), 0, "head of an unchanged log");
    assert!(read_everything(log).await.is_empty(), "nothing was written");
}

/// Whether `e` is a `WrongExpectedVersion` for `stream` reporting `actual`.
pub fn is_wrong_version(
    e: &AppendError,
    stream: &StreamId,
    actual: Option<crate::Version>,
) -> bool {
    matches!(e, AppendError::WrongExpectedVersion { stream: s, actual: a, .. }
        if s == stream && *a == actual)
}
