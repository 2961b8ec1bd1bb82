//! Following the stream. A consumer task follows the JetStream stream in sequence order with
//! an ordered consumer (ephemeral, no acks, recreated by the client on gaps) and applies each
//! message to the state, so this process knows what every process wrote. Disconnects and
//! leader changes end the consumer; it is recreated after the last applied sequence, with
//! backoff, and also when the writer finds it silent (`tail_kick`).
//!
//! The consumer is the fast path, not the only one: after a quorum loss an ordered consumer
//! can stay silent while the stream holds messages it has not delivered (its pull requests
//! went to a node that no longer leads). Whoever needs a sequence that the consumer has not
//! applied in time — the writer that lost a race, `connect` catching up — reads the missing
//! messages by sequence ([`fetch_missing`]) and applies them itself; applying is idempotent
//! and in order, so the consumer and such readers never conflict. And a consumer that has
//! delivered nothing for [`IDLE_CHECK`] asks the stream for its last sequence: if the stream
//! moved on, the missing messages are read directly and the consumer recreated, so a process
//! that only reads catches up as well.

use super::{Shared, read};
use crate::LogError;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A consumer that delivers a message this far behind what is applied has started over
/// (the client recreates an ordered consumer from the stream's start if it loses it before
/// its first delivery): recreate it where it should be rather than re-read the whole log.
const REWIND_LIMIT: u64 = 4096;

/// A consumer that has delivered nothing for this long is checked against the stream.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// Messages read by sequence at once, and per round, by [`fetch_missing`].
const FETCH_CONCURRENCY: usize = 16;
const FETCH_ROUND: u64 = 1024;

/// Runs until aborted (on close) or until the stream holds something the log cannot follow.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let start = shared.state.read().last_seq + 1;
        let config = pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            // Pull requests of 2 s, so heartbeats come every second and a consumer lost with
            // its node is noticed (and recreated) within a few seconds.
            max_expires: Duration::from_secs(2),
            ..Default::default()
        };
        // Creating a consumer is two requests; neither may hold the task past a kick or a
        // few request timeouts (a node failure can leave one unanswered).
        let create = async {
            let consumer = shared
                .stream
                .create_consumer(config)
                .await
                .map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        };
        let limit = shared.options.request_timeout * 3;
        let messages = tokio::select! {
            created = tokio::time::timeout(limit, create) => {
                created.unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
            }
            () = shared.tail_kick.notified() => Err("restart asked while creating".into()),
        };
        match messages {
            Ok(mut messages) => loop {
                let next = tokio::select! {
                    next = messages.next() => next,
                    () = shared.tail_kick.notified() => break,
                    () = tokio::time::sleep(IDLE_CHECK) => {
                        // Nothing delivered for a while: is the stream really idle?
                        if behind(&shared).await {
                            break;
                        }
                        continue;
                    }
                };
                let message = match next {
                    Some(Ok(_)) if shared.silenced.load(Ordering::Relaxed) => continue,
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "event log consumer failed; recreating");
                        break;
                    }
                    None => break,
                };
                shared.deliveries.fetch_add(1, Ordering::Relaxed);
                let seq = match message.info() {
                    Ok(info) => info.stream_sequence,
                    Err(e) => {
                        tracing::warn!(error = %e, "event log message without metadata");
                        break;
                    }
                };
                if seq + REWIND_LIMIT < shared.state.read().last_seq {
                    tracing::info!(seq, "event log consumer started over; recreating it");
                    break;
                }
                if shared.apply(seq, message.payload.clone()).is_err() {
                    // The log is marked failed; every call now reports why.
                    return;
                }
                backoff = MIN_BACKOFF;
            },
            Err(e) => {
                tracing::warn!(error = %e, start, "cannot create the event log consumer; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether the stream holds messages this process has not applied: if so they are read
/// directly (so a process that only reads catches up too) and the consumer, silent while they
/// were there, is to be recreated.
async fn behind(shared: &Shared) -> bool {
    let deadline = Instant::now() + shared.options.request_timeout;
    // Unreachable or no leader: the consumer has nothing to deliver either.
    let Some(latest) = shared.last_stream_seq(deadline).await else {
        return false;
    };
    if latest <= shared.state.read().last_seq {
        return false;
    }
    tracing::info!(
        latest,
        "event log consumer is silent while the stream moved on; catching up"
    );
    let limit = shared.options.unavailable_timeout;
    if let Ok(Err(e)) = tokio::time::timeout(limit, fetch_missing(shared, latest)).await {
        tracing::warn!(error = %e, "cannot read the missing messages");
    }
    true
}

/// Reads the messages after the last applied one up to `target` by sequence and applies
/// them in order, in rounds of bounded size. Messages the consumer applies meanwhile are
/// skipped by `apply`.
pub(crate) async fn fetch_missing(shared: &Shared, target: u64) -> Result<(), LogError> {
    loop {
        let from = shared.state.read().last_seq + 1;
        if from > target {
            return Ok(());
        }
        let to = target.min(from + FETCH_ROUND - 1);
        tracing::debug!(from, to, "reading messages the consumer has not delivered");
        let payloads: Vec<(u64, Bytes)> = futures::stream::iter(from..=to)
            .map(|seq| async move { read::fetch(shared, seq).await.map(|p| (seq, p)) })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        for (seq, payload) in payloads {
            shared.apply(seq, payload).map_err(LogError::Corrupt)?;
        }
    }
}
