//! Reads: plan under a short read lock (which messages, which positions of each) from the
//! in-memory index, then take each message from the cache of recent payloads or fetch it by
//! sequence (direct get, served by any replica; the leader's message get if a replica does
//! not have it yet), and decode only the events asked for.

use super::state::State;
use super::{Shared, message};
use crate::record;
use crate::{LogError, Position, RecordedEvent, Version};
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

/// Messages fetched from the server at once.
const FETCH_CONCURRENCY: usize = 16;

/// One message to read, and the positions wanted from it.
pub(crate) struct ReadItem {
    seq: u64,
    lo: Position,
    hi: Position,
    cached: Option<Bytes>,
}

/// Messages holding positions `after+1 ..= after+limit` (capped at the head).
pub(crate) fn plan_all(state: &State, after: Position, limit: usize) -> Vec<ReadItem> {
    if after >= state.head || limit == 0 {
        return Vec::new();
    }
    let last = state.head.min(after.saturating_add(limit as u64));
    let mut items = Vec::new();
    let mut i = state.message_index(after + 1);
    while let Some(m) = state.messages.get(i).filter(|m| m.first_position <= last) {
        items.push(item(state, i, (after + 1).max(m.first_position), last));
        i += 1;
    }
    items
}

/// Messages holding the stream's events from `from_version`, at most `limit` of them.
pub(crate) fn plan_stream(
    state: &State,
    key: &crate::validate::Key,
    from_version: Version,
    limit: usize,
) -> Vec<ReadItem> {
    let Some(entry) = state.streams.get(key) else {
        return Vec::new();
    };
    let skip = from_version.max(1) - 1;
    let Some(positions) = usize::try_from(skip)
        .ok()
        .and_then(|skip| entry.positions.get(skip..))
    else {
        return Vec::new();
    };
    let mut items: Vec<ReadItem> = Vec::new();
    let mut message_end = 0; // first position after the current item's message
    for &p in positions.iter().take(limit) {
        match items.last_mut() {
            // A stream's events within one message have consecutive positions.
            Some(last) if p < message_end => last.hi = p,
            _ => {
                let i = state.message_index(p);
                message_end = state
                    .messages
                    .get(i + 1)
                    .map_or(Position::MAX, |m| m.first_position);
                items.push(item(state, i, p, p));
            }
        }
    }
    items
}

fn item(state: &State, index: usize, lo: Position, hi: Position) -> ReadItem {
    let seq = state.messages[index].seq;
    ReadItem {
        seq,
        lo,
        hi,
        cached: state.cache.get(seq),
    }
}

/// Fetches and decodes the planned messages.
pub(crate) async fn execute(
    shared: &Shared,
    items: Vec<ReadItem>,
) -> Result<Vec<RecordedEvent>, LogError> {
    let payloads: Vec<(ReadItem, Bytes)> = futures::stream::iter(items)
        .map(|mut it| async move {
            let payload = match it.cached.take() {
                Some(p) => p,
                None => fetch(shared, it.seq).await?,
            };
            Ok::<_, LogError>((it, payload))
        })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for (it, payload) in payloads {
        let corrupt = |what: &str| LogError::Corrupt(format!("message {}: {what}", it.seq));
        for rec in message::records(&payload).map_err(corrupt)? {
            match record::first_position(&rec) {
                Some(first) if first > it.hi => break,
                Some(_) => {}
                None => return Err(corrupt("record without a header")),
            }
            record::decode_events(&rec, it.lo, it.hi, &mut out).map_err(|e| corrupt(e.0))?;
        }
    }
    Ok(out)
}

/// The payload of message `seq`.
pub(crate) async fn fetch(shared: &Shared, seq: u64) -> Result<Bytes, LogError> {
    match shared.stream.direct_get(seq).await {
        Ok(m) if m.sequence == seq => return Ok(m.payload),
        Ok(m) => {
            return Err(LogError::Corrupt(format!(
                "asked for message {seq}, JetStream returned {}",
                m.sequence
            )));
        }
        // A replica that has not applied it yet, or a stream without direct gets: ask the
        // leader.
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => {}
        Err(e) => tracing::debug!(error = %e, seq, "direct get failed; asking the leader"),
    }
    match shared.stream.get_raw_message(seq).await {
        Ok(m) if m.sequence == seq => Ok(m.payload),
        Ok(m) => Err(LogError::Corrupt(format!(
            "asked for message {seq}, JetStream returned {}",
            m.sequence
        ))),
        Err(e) => Err(LogError::Unavailable(format!(
            "reading message {seq} from JetStream: {e}"
        ))),
    }
}
