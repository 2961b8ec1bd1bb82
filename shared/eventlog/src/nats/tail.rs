//! The consumer task: follows the JetStream stream in sequence order with an ordered
//! consumer (ephemeral, no acks, recreated by the client on gaps) and applies each message
//! to the state, so this process knows what every process wrote. Disconnects and leader
//! changes end the consumer; it is recreated after the last applied sequence, with backoff,
//! and also when the writer finds it lagging (`tail_kick`).

use super::Shared;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

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
        let messages = match shared.stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match messages {
            Ok(mut messages) => {
                loop {
                    let next = tokio::select! {
                        next = messages.next() => next,
                        () = shared.tail_kick.notified() => break,
                    };
                    let message = match next {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "event log consumer failed; recreating");
                            break;
                        }
                        None => break,
                    };
                    let seq = match message.info() {
                        Ok(info) => info.stream_sequence,
                        Err(e) => {
                            tracing::warn!(error = %e, "event log message without metadata");
                            break;
                        }
                    };
                    if shared.apply(seq, message.payload.clone()).is_err() {
                        // The log is marked failed; every call now reports why.
                        return;
                    }
                    backoff = MIN_BACKOFF;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, start, "cannot create the event log consumer; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
