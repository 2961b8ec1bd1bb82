//! The writer task: takes queued transactions in groups, validates them against the state
//! this process has consumed (exactly as the embedded writer does), and publishes each group
//! as **one** JetStream message with `Nats-Expected-Last-Sequence` (the stream's sequence
//! when validated) and a unique `Nats-Msg-Id`.
//!
//! - The server stores the message only if nothing was written since the state it was
//!   validated against, so the decision (versions, reservations, positions) and the write are
//!   one atomic step, across processes.
//! - Refused because another process wrote first: wait until that write is applied (by the
//!   consumer, or read directly if the consumer does not bring it), re-validate, publish
//!   again.
//! - No answer (timeout, disconnect, no leader): publish the *same* message again, same id and
//!   same expected sequence, with backoff, for at most `unavailable_timeout`. Only one copy
//!   can ever be stored (the id de-duplicates, the expected sequence admits one message at
//!   that place), and sequence `expected + 1` tells whether it was ours.

use super::message::{self, Kind, Origin};
use super::{Shared, now_micros};
use super::{read, subject};
use crate::record;
use crate::validate::BatchOverlay;
use crate::{AppendError, Committed, LogError, Transaction};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// One append waiting for the writer.
pub(crate) struct Request {
    pub tx: Transaction,
    /// Arrival order, so a group re-validated after a lost race keeps its order.
    pub order: u64,
    /// Upper bound of the framed record size.
    pub size: usize,
    pub reply: oneshot::Sender<Result<Committed, AppendError>>,
}

/// A transaction that passed validation for the message being built.
struct Accepted {
    request: Request,
    committed: Committed,
}

/// A validated group.
struct Prepared {
    /// The sequence the message must follow.
    expected: u64,
    accepted: Vec<Accepted>,
    /// Refused transactions and why; answered once the refusal is known to be current.
    refused: Vec<(Request, AppendError)>,
    subject: String,
    payload: Bytes,
}

fn answer_refused(refused: Vec<(Request, AppendError)>) {
    for (request, e) in refused {
        let _ = request.reply.send(Err(e));
    }
}

/// How a publish ended.
enum Outcome {
    /// The message is at this sequence.
    Stored(u64),
    /// Another process wrote at the expected place first; ours can never be stored.
    Lost,
    /// No definite answer in time.
    Unavailable(String),
}

const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub(crate) struct Writer {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    /// A request taken from the queue that did not fit the previous message.
    carry: Option<Request>,
    writer_id: u64,
    batch: u64,
    /// Requests taken from the queue so far (numbers their arrival order).
    received: u64,
}

impl Writer {
    pub fn new(shared: Arc<Shared>, requests: mpsc::Receiver<Request>) -> Self {
        Self {
            shared,
            requests,
            carry: None,
            writer_id: rand_u64(),
            batch: 0,
            received: 0,
        }
    }

    /// Runs until the queue is closed and drained.
    pub async fn run(mut self) {
        loop {
            let first = match self.carry.take() {
                Some(r) => r,
                None => match self.requests.recv().await {
                    Some(r) => self.number(r),
                    None => return,
                },
            };
            let max_bytes = self.shared.max_message_bytes;
            let mut bytes = message::PREFIX_LEN + first.size;
            let mut group = vec![first];
            while group.len() < self.shared.options.max_batch_count {
                match self.requests.try_recv().map(|r| self.number(r)) {
                    Ok(r) if bytes + r.size <= max_bytes => {
                        bytes += r.size;
                        group.push(r);
                    }
                    Ok(r) => {
                        self.carry = Some(r);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(group).await;
        }
    }

    fn number(&mut self, mut request: Request) -> Request {
        request.order = self.received;
        self.received += 1;
        request
    }

    /// Validates, publishes and answers one group, re-validating after lost races.
    async fn commit(&mut self, mut pending: Vec<Request>) {
        let deadline = Instant::now() + self.shared.options.unavailable_timeout;
        while !pending.is_empty() {
            self.batch += 1;
            let origin = Origin {
                writer: self.writer_id,
                batch: self.batch,
            };
            let Some(p) = self.prepare(pending, origin) else {
                return;
            };
            if p.accepted.is_empty() {
                // Every transaction was refused, by a view of the log that may lag behind
                // what other processes wrote: answer only once the view is known to be
                // current, else catch up and judge again.
                if let Some(latest) = self.shared.last_stream_seq(deadline).await
                    && latest > p.expected
                    && super::wait_applied(&self.shared, latest, deadline).await
                {
                    pending = p.refused.into_iter().map(|(r, _)| r).collect();
                    continue;
                }
                answer_refused(p.refused);
                return;
            }
            match self
                .publish(p.expected, origin, &p.subject, &p.payload, deadline)
                .await
            {
                Outcome::Stored(seq) => {
                    // Apply our own message now, so `head` covers it before we answer (the
                    // consumer will see it again and skip it).
                    if let Err(e) = self.shared.apply(seq, p.payload) {
                        for a in p.accepted {
                            let _ = a.request.reply.send(Err(AppendError::Log(LogError::Corrupt(
                                format!("stored, but the log cannot follow its stream: {e}"),
                            ))));
                        }
                        answer_refused(p.refused);
                        return;
                    }
                    for a in p.accepted {
                        // The appender may have given up waiting; the append stands.
                        let _ = a.request.reply.send(Ok(a.committed));
                    }
                    // Refused against the state our stored message followed: the latest.
                    answer_refused(p.refused);
                    return;
                }
                Outcome::Lost => {
                    pending = p.accepted.into_iter().map(|a| a.request).collect();
                    pending.extend(p.refused.into_iter().map(|(r, _)| r));
                    pending.sort_by_key(|r| r.order);
                }
                Outcome::Unavailable(reason) => {
                    for a in p.accepted {
                        let err = LogError::Unavailable(format!(
                            "{reason}; the append may or may not have been written"
                        ));
                        let _ = a.request.reply.send(Err(err.into()));
                    }
                    answer_refused(p.refused);
                    return;
                }
            }
        }
    }

    /// Validates `pending` against the current state and encodes the accepted transactions
    /// into one message that must follow sequence `expected`. `None` (everything answered)
    /// if the log is closed or failed.
    fn prepare(&self, pending: Vec<Request>, origin: Origin) -> Option<Prepared> {
        let state = self.shared.state.read();
        if let Err(e) = state.check() {
            for r in pending {
                let _ = r.reply.send(Err(clone_error(&e).into()));
            }
            return None;
        }
        // One time for the whole message, never below the last one: times never decrease.
        let time = now_micros().max(state.last_time);
        let mut overlay = BatchOverlay::default();
        let mut next_position = state.head + 1;
        let mut accepted = Vec::with_capacity(pending.len());
        let mut refused = Vec::new();
        let mut buf =
            Vec::with_capacity(message::PREFIX_LEN + pending.iter().map(|r| r.size).sum::<usize>());
        message::start(&mut buf, Kind::Transactions, origin);
        for request in pending {
            match overlay.accept(&*state, &request.tx, next_position, time) {
                Ok(summary) => {
                    let first_versions: Vec<_> =
                        summary.appends.iter().map(|a| a.first_version).collect();
                    record::encode(
                        &mut buf,
                        summary.first_position,
                        time,
                        &request.tx.appends,
                        &first_versions,
                        &summary.effects,
                    );
                    let committed = Committed {
                        first_position: summary.first_position,
                        last_position: summary.first_position + summary.event_count - 1,
                        time,
                        versions: summary
                            .appends
                            .iter()
                            .map(|a| a.first_version + a.count - 1)
                            .collect(),
                    };
                    next_position += summary.event_count;
                    accepted.push(Accepted { request, committed });
                }
                // Nothing of a refused transaction is in the overlay.
                Err(e) => refused.push((request, e)),
            }
        }
        let subject = subject::for_streams(
            &self.shared.options.subject_prefix,
            accepted.len() == 1,
            accepted
                .iter()
                .flat_map(|a| a.request.tx.appends.iter().map(|s| &s.stream)),
        );
        Some(Prepared {
            expected: state.last_seq,
            accepted,
            refused,
            subject,
            payload: Bytes::from(buf),
        })
    }

    /// Publishes the message until its fate is known or the deadline passes.
    async fn publish(
        &self,
        expected: u64,
        origin: Origin,
        subject: &str,
        payload: &Bytes,
        deadline: Instant,
    ) -> Outcome {
        let msg_id = origin.msg_id();
        let mut backoff = MIN_BACKOFF;
        let mut last_error = String::from("no attempt");
        loop {
            // Something may be stored at our place already (an earlier attempt of ours whose
            // acknowledgement was lost, or another process's message).
            if self.shared.state.read().last_seq > expected {
                return self.resolve(expected, origin).await;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Outcome::Unavailable(format!(
                    "JetStream did not confirm the append within {:?}: {last_error}",
                    self.shared.options.unavailable_timeout
                ));
            }
            let publish = PublishMessage::build()
                .payload(payload.clone())
                .message_id(&msg_id)
                .expected_last_sequence(expected);
            let attempt = async {
                let ack = self
                    .shared
                    .context
                    .send_publish(subject.to_owned(), publish)
                    .await?;
                ack.await
            };
            match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok(ack)) if ack.sequence == expected + 1 => {
                    return Outcome::Stored(ack.sequence);
                }
                Ok(Ok(ack)) => {
                    // A duplicate of a message stored elsewhere: ids are unique per writer
                    // and batch, so this cannot be ours at the expected place.
                    last_error = format!(
                        "acknowledged at sequence {} instead of {} (duplicate: {})",
                        ack.sequence,
                        expected + 1,
                        ack.duplicate
                    );
                    tracing::error!(error = %last_error, "unexpected JetStream acknowledgement");
                    return self.wait_and_resolve(expected, origin, deadline).await;
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return self.wait_and_resolve(expected, origin, deadline).await;
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    // Batches are bounded by the server's max_payload; it must have shrunk.
                    last_error = e.to_string();
                    tracing::warn!(error = %e, "message larger than the server accepts");
                }
                Ok(Err(e)) => {
                    last_error = e.to_string();
                    tracing::warn!(error = %e, expected, "append publish failed; retrying");
                }
                Err(_) => last_error = "timed out".into(),
            }
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The place after `expected` is taken: wait until the consumer has applied it, then say
    /// whether it is ours.
    async fn wait_and_resolve(&self, expected: u64, origin: Origin, deadline: Instant) -> Outcome {
        if super::wait_applied(&self.shared, expected + 1, deadline).await {
            self.resolve(expected, origin).await
        } else {
            Outcome::Unavailable(format!(
                "another process wrote after sequence {expected}, and its message did not arrive \
                 within {:?}",
                self.shared.options.unavailable_timeout
            ))
        }
    }

    /// Sequence `expected + 1` has been applied: was it our message?
    async fn resolve(&self, expected: u64, origin: Origin) -> Outcome {
        let seq = expected + 1;
        let remembered = self.shared.state.read().origin_of(seq);
        let stored = match remembered {
            Some(o) => o,
            // Too many messages since to be remembered: read it again.
            None => match read::fetch(&self.shared, seq).await {
                Ok(payload) => match message::parse(&payload) {
                    Ok((_, o)) => o,
                    Err(e) => return Outcome::Unavailable(format!("message {seq}: {e}")),
                },
                Err(e) => return Outcome::Unavailable(e.to_string()),
            },
        };
        if stored == origin {
            Outcome::Stored(seq)
        } else {
            Outcome::Lost
        }
    }
}

/// `LogError` is not `Clone` (it holds an `io::Error`); the kinds the state reports are.
pub(crate) fn clone_error(e: &LogError) -> LogError {
    match e {
        LogError::Closed => LogError::Closed,
        LogError::Corrupt(s) => LogError::Corrupt(s.clone()),
        LogError::Unavailable(s) => LogError::Unavailable(s.clone()),
        LogError::Io(io) => LogError::Io(std::io::Error::new(io.kind(), io.to_string())),
    }
}

/// A random writer id, so two processes (or two connections) never share message ids.
fn rand_u64() -> u64 {
    let ulid = ulid::Ulid::new();
    let n: u128 = ulid.into();
    // The ULID's 80 random bits, folded with its time for good measure.
    (n as u64) ^ ((n >> 64) as u64).rotate_left(17)
}
