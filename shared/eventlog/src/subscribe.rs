//! Catch-up-then-live subscriptions built from [`EventLog::read_all`] and
//! [`EventLog::watch_head`], usable by any backend.

use crate::{EventLog, LogError, Position, RecordedEvent};
use futures::stream::{self, BoxStream, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;

/// Events fetched per `read_all` call.
const PAGE: usize = 512;

struct Cursor {
    log: Arc<dyn EventLog>,
    head: watch::Receiver<Position>,
    /// Position of the last event handed out (or the subscription's start).
    after: Position,
    buffered: VecDeque<RecordedEvent>,
    /// The head channel closed: deliver what is left, then end.
    closing: bool,
    done: bool,
}

/// Every event with `position > after`: first those already in the log, read in pages, then
/// each new one as [`EventLog::watch_head`] reports it. No busy loop: when caught up it waits
/// for the head to move. No gaps and no duplicates: each page must continue exactly after the
/// last event delivered, or the stream yields [`LogError::Corrupt`] and ends. The stream ends
/// when the log closes (its head channel closes, or reads return [`LogError::Closed`]) and
/// after yielding any other error.
pub fn subscribe_by_polling(
    log: Arc<dyn EventLog>,
    after: Position,
) -> BoxStream<'static, Result<RecordedEvent, LogError>> {
    // Subscribe to head changes before the first read, so no commit falls between the two.
    let head = log.watch_head();
    let cursor = Cursor {
        log,
        head,
        after,
        buffered: VecDeque::new(),
        closing: false,
        done: false,
    };
    stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(event) = c.buffered.pop_front() {
                return Some((Ok(event), c));
            }
            if c.done {
                return None;
            }
            // Mark the current head as seen *before* reading: a commit after this point
            // will wake `changed()` below, even if this read already returned it.
            let head = *c.head.borrow_and_update();
            if c.after < head || c.closing {
                match c.log.read_all(c.after, PAGE).await {
                    Ok(page) if page.is_empty() => {
                        if c.closing {
                            return None;
                        }
                        // The head moved but the events are not readable yet (a backend
                        // whose head runs ahead of its reads): wait for the next change.
                    }
                    Ok(page) => {
                        if let Err(e) = check_page(c.after, &page) {
                            c.done = true;
                            return Some((Err(e), c));
                        }
                        c.after = page.last().map_or(c.after, |e| e.position);
                        c.buffered.extend(page);
                        continue;
                    }
                    Err(LogError::Closed) => return None,
                    Err(e) => {
                        c.done = true;
                        return Some((Err(e), c));
                    }
                }
            }
            if c.closing {
                return None;
            }
            if c.head.changed().await.is_err() {
                // The log is closing: drain what is still readable, then end.
                c.closing = true;
            }
        }
    })
    .boxed()
}

/// A page must start right after `after` and run without gaps.
fn check_page(after: Position, page: &[RecordedEvent]) -> Result<(), LogError> {
    for (expected, event) in (after + 1..).zip(page) {
        if event.position != expected {
            return Err(LogError::Corrupt(format!(
                "subscription expected position {expected}, the log returned {}",
                event.position
            )));
        }
    }
    Ok(())
}
