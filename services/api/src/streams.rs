//! Responses that follow the log (NDJSON to the head, SSE live, event pages, export
//! downloads) are read lazily: a page of the log is read and rendered only when the client has
//! taken the previous chunk, so a client that stops reading costs the server one chunk
//! ([`CHUNK_BYTES`]) plus hyper's buffer, however long the log. Such a client is cut off after
//! the send timeout ([`crate::serve::ConnectionLimits::send_timeout`]), and each credential
//! may hold at most [`StreamLimits::per_key`] streams at once (429 beyond).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use roster_eventlog::{Position, RecordedEvent};

use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::events::{EventResource, render};
use crate::serve::ShuttingDown;
use crate::state::AppState;

/// A chunk is cut once it holds this many bytes (plus at most one event).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Pages of the log read per step: from this many events ...
const MIN_PAGE: usize = 8;
/// ... to this many, following how many fit a chunk.
const MAX_PAGE: usize = 1024;
/// SSE keep-alive comment interval.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Caps on concurrent streams.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Streams one credential (a server API key, a client's user) may hold open at once.
    pub per_key: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self { per_key: 16 }
    }
}

/// A Server-Sent Events response of `body`.
pub fn sse_response(body: axum::body::Body) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut response = axum::response::IntoResponse::into_response(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Counts open streams per credential; in every request's extensions.
#[derive(Clone)]
pub struct StreamGate {
    limits: StreamLimits,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamGate {
    /// A gate with these limits.
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            open: Arc::default(),
        }
    }

    /// A permit for one more stream of `caller`, held for as long as the response body lives;
    /// 429 `rate_limited` when the caller already holds the most allowed.
    pub fn admit(&self, caller: &Caller) -> Result<StreamPermit, ApiError> {
        let key = caller.actor();
        let mut open = self.open.lock();
        let count = open.entry(key.clone()).or_default();
        if *count >= self.limits.per_key {
            let mut e = ApiError::new(
                Code::RateLimited,
                format!(
                    "This credential already holds {} open streams, the most allowed; close one \
                     first.",
                    self.limits.per_key
                ),
            );
            e.retry_after = Some(1);
            return Err(e);
        }
        *count += 1;
        Ok(StreamPermit {
            gate: self.clone(),
            key,
        })
    }
}

/// One open stream; released when dropped (the body ended, or the client went away).
pub struct StreamPermit {
    gate: StreamGate,
    key: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Which events a reader wants: its organization's, optionally of some types or one stream.
#[derive(Clone)]
pub struct Filter {
    /// The caller's organization: nothing is visible across organizations.
    pub org: String,
    /// Event types wanted (empty: all).
    pub types: Vec<String>,
    /// One stream name (`user-<id>`), if asked for.
    pub stream: Option<String>,
}

impl Filter {
    /// Whether the reader wants this event.
    pub fn accepts(&self, e: &RecordedEvent) -> bool {
        e.stream.org == self.org
            && (self.types.is_empty() || self.types.contains(&e.event_type))
            && self.stream.as_ref().is_none_or(|s| *s == e.stream.name)
    }
}

/// How a rendered event is written into a chunk.
pub type Writer = fn(&RecordedEvent, &EventResource, &mut Vec<u8>);

/// A lazy reader of the log for one response.
pub struct LogCursor {
    app: AppState,
    filter: Filter,
    /// Last position looked at.
    pub after: Position,
    /// Do not read past this position (`None`: follow the log).
    until: Option<Position>,
    /// Events written so far, and the most this response writes.
    pub written: u64,
    limit: u64,
    /// Positions looked at so far, and the most this response looks at.
    scanned: u64,
    scan_budget: u64,
    page: usize,
    write: Writer,
}

/// What one step of a [`LogCursor`] gave.
pub enum Step {
    /// Rendered events.
    Chunk(Bytes),
    /// Nothing more now: the end (`until`, the limit or the scan budget) or, when following,
    /// the head.
    CaughtUp,
}

impl LogCursor {
    /// A cursor after `after`; `write` renders each wanted event into the chunk.
    pub fn new(app: AppState, filter: Filter, after: Position, write: Writer) -> Self {
        Self {
            app,
            filter,
            after,
            until: None,
            written: 0,
            limit: u64::MAX,
            scanned: 0,
            scan_budget: u64::MAX,
            page: MIN_PAGE * 8,
            write,
        }
    }

    /// Stops at `until` (the head when the request came, for NDJSON).
    pub fn until(mut self, until: Position) -> Self {
        self.until = Some(until);
        self
    }

    /// Writes at most `limit` events and looks at most at `budget` positions (JSON pages).
    pub fn bounded(mut self, limit: u64, budget: u64) -> Self {
        self.limit = limit;
        self.scan_budget = budget;
        self
    }

    /// Whether the cursor has reached its end (`until`, limit or budget).
    pub fn finished(&self) -> bool {
        self.written >= self.limit
            || self.scanned >= self.scan_budget
            || self.until.is_some_and(|u| self.after >= u)
    }

    /// Reads and renders the next chunk: at least one wanted event unless the log (or the
    /// cursor's end) is reached.
    pub async fn step(&mut self) -> Result<Step, ApiError> {
        let mut out = Vec::new();
        loop {
            if self.finished() {
                break;
            }
            let room = self.until.map_or(u64::MAX, |u| u - self.after);
            let want = (self.page as u64)
                .min(room)
                .min(self.scan_budget - self.scanned) as usize;
            let records = self.app.log().read_all(self.after, want).await?;
            if records.is_empty() {
                break;
            }
            let mut cut = false;
            for record in &records {
                if self.finished() {
                    cut = true;
                    break;
                }
                self.after = record.position;
                self.scanned += 1;
                if self.filter.accepts(record) {
                    let event = render(self.app.codec(), record).await?;
                    (self.write)(record, &event, &mut out);
                    self.written += 1;
                    if out.len() >= CHUNK_BYTES {
                        cut = true;
                        break;
                    }
                }
            }
            // The rest of a cut page is read again next time; fewer next time, more if the
            // page fitted.
            self.page = if cut {
                (self.page / 2).max(MIN_PAGE)
            } else {
                (self.page * 2).min(MAX_PAGE)
            };
            if !out.is_empty() && (cut || out.len() >= CHUNK_BYTES / 2) {
                break;
            }
        }
        Ok(if out.is_empty() {
            Step::CaughtUp
        } else {
            Step::Chunk(Bytes::from(out))
        })
    }

    /// Waits until the log has events after the cursor, for at most `wait`; false when the
    /// time ran out or shutdown began.
    pub async fn wait_for_more(&self, wait: Duration, shutdown: Option<&ShuttingDown>) -> bool {
        let mut head = self.app.log().watch_head();
        let more = async {
            loop {
                if *head.borrow_and_update() > self.after {
                    return true;
                }
                if head.changed().await.is_err() {
                    // The log is closing.
                    return false;
                }
            }
        };
        let down = async {
            match shutdown {
                Some(s) => s.clone().wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            more = more => more,
            () = down => false,
            () = tokio::time::sleep(wait) => false,
        }
    }
}

/// An event as one NDJSON line.
pub fn ndjson_line(_: &RecordedEvent, event: &EventResource, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, event).expect("events serialize");
    out.push(b'\n');
}

/// An event as one Server-Sent Event: `id` the position, `event` the type.
pub fn sse_event(record: &RecordedEvent, event: &EventResource, out: &mut Vec<u8>) {
    use std::io::Write;
    // Event types are identifiers (no line breaks); JSON has none either.
    let _ = write!(
        out,
        "id: {}\nevent: {}\ndata: ",
        record.position, record.event_type
    );
    serde_json::to_writer(&mut *out, event).expect("events serialize");
    out.extend_from_slice(b"\n\n");
}

/// An event as an element of a JSON array (comma-separated).
pub fn json_element(_: &RecordedEvent, event: &EventResource, out: &mut Vec<u8>) {
    out.push(b',');
    serde_json::to_writer(&mut *out, event).expect("events serialize");
}

/// `body`, holding `guard` (a stream permit, a request's in-flight count) until the body is
/// dropped: sent to its end, or abandoned by the client.
pub fn holding<G: Send + Unpin + 'static>(body: axum::body::Body, guard: G) -> axum::body::Body {
    axum::body::Body::new(Holding {
        body,
        _guard: guard,
    })
}

struct Holding<G> {
    body: axum::body::Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> http_body::Body for Holding<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The stream gate every request carries (see [`crate::middleware`]).
pub fn gate(extensions: &axum::http::Extensions) -> Result<&StreamGate, ApiError> {
    extensions
        .get::<StreamGate>()
        .ok_or_else(|| ApiError::internal("the stream gate is missing"))
}

/// What a streaming handler needs: the gate for its permit, and the shutdown signal (absent
/// when the router is served by something else than [`crate::serve::serve`]).
pub struct Streams {
    /// The server's stream gate.
    pub gate: StreamGate,
    /// Completes when the server begins shutting down.
    pub shutdown: Option<ShuttingDown>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Streams {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Streams {
            gate: gate(&parts.extensions)?.clone(),
            shutdown: parts.extensions.get::<ShuttingDown>().cloned(),
        })
    }
}
