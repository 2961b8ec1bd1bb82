//! The event log for analysts (API.md §6): pages, NDJSON to the end of the log, and a live
//! tail over Server-Sent Events that resumes from `Last-Event-ID`.

use std::convert::Infallible;
use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use roster_eventlog::{Position, RecordedEvent};
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::events::{EventResource, render};
use crate::extract::{Ctx, QueryParams, query_params};
use crate::routes::common::OperationDoc;
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// Most events in one JSON page.
const MAX_PAGE: u64 = 10_000;
/// Events read from the log per step while filtering.
const SCAN: usize = 1_000;
/// Most events scanned for one JSON page before answering with what was found.
const SCAN_BUDGET: u64 = 200_000;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/events",
            get_with(page, |op| {
                op.doc("listEvents", "events", "Read the event log")
                    .describe(
                        "Events of the caller's organization, in log order. With `Accept: \
                         application/x-ndjson`, every matching event up to the log's head at the \
                         time of the request, one per line. A filtered page may hold fewer than \
                         `limit` events: continue from `next_after`.",
                    )
                    .query::<EventsQuery>()
                    .json::<EventPage>(200, "A page of events.")
                    .content(
                        200,
                        "application/x-ndjson",
                        "",
                        Some(schemars::json_schema!({"type": "string"})),
                    )
            }),
        )
        .api_route(
            "/v1/events/stream",
            get_with(stream, |op| {
                op.doc("streamEvents", "events", "Follow the event log live")
                    .describe(
                        "Server-Sent Events: `id` is the position, `event` the type, `data` the \
                         event as JSON. Reconnect with `Last-Event-ID` to continue with no gap \
                         and no duplicate. Keep-alive comments every 15 s.",
                    )
                    .query::<StreamQuery>()
                    .content(
                        200,
                        "text/event-stream",
                        "The live tail of the log.",
                        Some(schemars::json_schema!({"type": "string"})),
                    )
            }),
        )
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<EventResource>();
    out.add::<EventPage>();
}

query_params! {
    /// Query of `GET /v1/events`.
    pub(crate) struct EventsQuery {
        /// A log position: events after it (default 0, from the start).
        after: Option<u64>,
        /// Page size, 1 to 10 000 (default 100).
        #[schemars(range(min = 1, max = 10000))]
        limit: Option<u32>,
        /// Only these event types (repeatable).
        types: Option<Vec<String>>,
        /// Only this user's events.
        user_id: Option<String>,
    }
}

query_params! {
    /// Query of `GET /v1/events/stream` (`Last-Event-ID` wins over `after`).
    pub(crate) struct StreamQuery {
        /// A log position: events after it (default 0).
        after: Option<u64>,
        /// Only these event types (repeatable).
        types: Option<Vec<String>>,
        /// Only this user's events.
        user_id: Option<String>,
    }
}

/// Which events a reader wants.
#[derive(Clone)]
struct Filter {
    org: String,
    types: Vec<String>,
    stream: Option<String>,
}

impl Filter {
    fn from(ctx: &Ctx, query: &QueryParams) -> ApiResult<Self> {
        let stream = match query.get("user_id") {
            Some(id) => Some(
                roster_domain::UserId::parse(id)
                    .map_err(|m| ApiError::invalid_field("user_id", m))?
                    .stream_name(),
            ),
            None => None,
        };
        Ok(Filter {
            org: ctx.org.as_str().to_owned(),
            types: query.all("types"),
            stream,
        })
    }

    /// Events of the caller's organization only: nothing is visible across organizations.
    fn accepts(&self, e: &RecordedEvent) -> bool {
        e.stream.org == self.org
            && (self.types.is_empty() || self.types.contains(&e.event_type))
            && self.stream.as_ref().is_none_or(|s| *s == e.stream.name)
    }
}

/// A page of the event log.
#[derive(Serialize, JsonSchema)]
pub(crate) struct EventPage {
    /// The events, in log order.
    events: Vec<EventResource>,
    /// Pass as `after` for the next page (the last position looked at).
    next_after: Position,
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"))
}

async fn page(
    State(app): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(EventsQuery::NAMES)?;
    let after = query.number("after", 0, u64::MAX)?.unwrap_or(0);
    let filter = Filter::from(&ctx, &query)?;
    if wants_ndjson(&headers) {
        return Ok(ndjson(app, filter, after));
    }
    let limit = query.number("limit", 1, MAX_PAGE)?.unwrap_or(100) as usize;
    let mut events = Vec::new();
    let mut cursor = after;
    let start = after;
    'scan: loop {
        let records = app.log().read_all(cursor, SCAN).await?;
        if records.is_empty() {
            break;
        }
        for record in &records {
            cursor = record.position;
            if filter.accepts(record) {
                events.push(render(app.codec(), record).await?);
                if events.len() == limit {
                    break 'scan;
                }
            }
        }
        if cursor - start >= SCAN_BUDGET {
            break;
        }
    }
    Ok(axum::Json(EventPage {
        events,
        next_after: cursor,
    })
    .into_response())
}

/// Every matching event from `after` to the log's head at the time of the request, one JSON
/// object per line, read and written a page at a time (memory stays flat).
fn ndjson(app: AppState, filter: Filter, after: Position) -> Response {
    let head = app.log().head();
    let stream = futures::stream::unfold(Some(after), move |cursor| {
        let (app, filter) = (app.clone(), filter.clone());
        async move {
            let cursor = cursor?;
            if cursor >= head {
                return None;
            }
            let records = match app.log().read_all(cursor, SCAN).await {
                Ok(r) if !r.is_empty() => r,
                Ok(_) => return None,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
            };
            let mut out = Vec::with_capacity(records.len() * 256);
            let mut next = cursor;
            for record in records.iter().take_while(|r| r.position <= head) {
                next = record.position;
                if filter.accepts(record) {
                    match render(app.codec(), record).await {
                        Ok(e) => {
                            serde_json::to_writer(&mut out, &e).expect("events serialize");
                            out.push(b'\n');
                        }
                        Err(e) => return Some((Err(std::io::Error::other(e.detail)), None)),
                    }
                }
            }
            Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), Some(next)))
        }
    });
    let mut response = axum::body::Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// `GET /v1/events/stream`: the log live, as Server-Sent Events whose ids are positions, so a
/// client that reconnects with `Last-Event-ID` continues with no gap and no duplicate.
async fn stream(
    State(app): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(StreamQuery::NAMES)?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let after = match last_event_id {
        Some(id) => id
            .parse::<u64>()
            .map_err(|_| ApiError::malformed("Last-Event-ID must be a log position"))?,
        None => query.number("after", 0, u64::MAX)?.unwrap_or(0),
    };
    let filter = Filter::from(&ctx, &query)?;
    let codec = app.codec().clone();
    let events = app
        .log()
        .subscribe(after)
        .filter(move |r| std::future::ready(r.as_ref().map_or(true, |e| filter.accepts(e))))
        .then(move |record| {
            let codec = codec.clone();
            async move {
                let record = record.map_err(|e| e.to_string())?;
                let event = render(&codec, &record).await.map_err(|e| e.detail)?;
                let data = serde_json::to_string(&event).expect("events serialize");
                Ok::<_, String>(
                    SseEvent::default()
                        .id(record.position.to_string())
                        .event(&record.event_type)
                        .data(data),
                )
            }
        })
        // A failure ends the stream; the client reconnects with its Last-Event-ID.
        .take_while(|r| std::future::ready(r.is_ok()))
        .map(|r| Ok::<_, Infallible>(r.expect("errors end the stream above")));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
