//! The event log for analysts (docs/contract.md §6): pages, NDJSON to the end of the log, and a
//! live tail over Server-Sent Events that resumes from `Last-Event-ID`.

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use roster_eventlog::Position;
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::events::EventResource;
use crate::extract::{Ctx, QueryParams, query_params};
use crate::routes::openapi::OperationDoc;
use crate::schemas::SchemaSet;
use crate::state::AppState;
use crate::streams::{self, Filter, LogCursor, Step, StreamPermit, Streams};

/// Most events in one JSON page.
const MAX_PAGE: u64 = 10_000;
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
                    .header("LastEventId")
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
        #[schemars(pattern(crate::extract::ID_PATTERN))]
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
        #[schemars(pattern(crate::extract::ID_PATTERN))]
        user_id: Option<String>,
    }
}

fn filter(ctx: &Ctx, query: &QueryParams) -> ApiResult<Filter> {
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
    streams: Streams,
) -> ApiResult<Response> {
    query.only(EventsQuery::NAMES)?;
    let after = query.number("after", 0, u64::MAX)?.unwrap_or(0);
    let filter = filter(&ctx, &query)?;
    let limit = query.number("limit", 1, MAX_PAGE)?.unwrap_or(100);
    if wants_ndjson(&headers) {
        let permit = streams.gate.admit(&ctx.caller)?;
        let head = app.log().head();
        let cursor = LogCursor::new(app, filter, after, streams::ndjson_line).until(head);
        return Ok(stream_body(cursor, permit, "application/x-ndjson"));
    }
    // The page is written as it is read, a chunk at a time: `next_after` comes last.
    let cursor =
        LogCursor::new(app, filter, after, streams::json_element).bounded(limit, SCAN_BUDGET);
    let body = futures::stream::unfold(Some((cursor, true)), |state| async move {
        let (mut cursor, first) = state?;
        match cursor.step().await {
            Ok(Step::Chunk(chunk)) => {
                let chunk = if first {
                    // `{"events":[` and the first event without its leading comma.
                    let mut out = br#"{"events":["#.to_vec();
                    out.extend_from_slice(&chunk[1..]);
                    Bytes::from(out)
                } else {
                    chunk
                };
                Some((Ok(chunk), Some((cursor, false))))
            }
            Ok(Step::CaughtUp) => {
                let open = if first { r#"{"events":["# } else { "" };
                let end = format!(r#"{open}],"next_after":{}}}"#, cursor.after);
                Some((Ok(Bytes::from(end)), None))
            }
            Err(e) => Some((Err(std::io::Error::other(e.detail)), None)),
        }
    });
    let mut response = axum::body::Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A body that reads `cursor` to its end, a chunk each time the client has taken the last.
fn stream_body(cursor: LogCursor, permit: StreamPermit, content_type: &'static str) -> Response {
    let body = futures::stream::unfold(Some((cursor, permit)), |state| async move {
        let (mut cursor, permit) = state?;
        match cursor.step().await {
            Ok(Step::Chunk(chunk)) => Some((Ok(chunk), Some((cursor, permit)))),
            Ok(Step::CaughtUp) => None,
            Err(e) => Some((Err(std::io::Error::other(e.detail)), None)),
        }
    });
    let mut response = axum::body::Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `GET /v1/events/stream`: the log live, as Server-Sent Events whose ids are positions, so a
/// client that reconnects with `Last-Event-ID` continues with no gap and no duplicate.
async fn stream(
    State(app): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    query: QueryParams,
    streams: Streams,
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
    let filter = filter(&ctx, &query)?;
    let permit = streams.gate.admit(&ctx.caller)?;
    let shutdown = streams.shutdown;
    let cursor = LogCursor::new(app, filter, after, streams::sse_event);
    let body = futures::stream::unfold(Some((cursor, permit)), move |state| {
        let shutdown = shutdown.clone();
        async move {
            let (mut cursor, permit) = state?;
            loop {
                match cursor.step().await {
                    Ok(Step::Chunk(chunk)) => return Some((Ok(chunk), Some((cursor, permit)))),
                    Ok(Step::CaughtUp) => {}
                    // A failure ends the stream; the client reconnects with its Last-Event-ID.
                    Err(e) => return Some((Err(std::io::Error::other(e.detail)), None)),
                }
                if shutdown.as_ref().is_some_and(|s| *s.0.borrow()) {
                    return None;
                }
                if !cursor
                    .wait_for_more(streams::KEEP_ALIVE, shutdown.as_ref())
                    .await
                {
                    if shutdown.as_ref().is_some_and(|s| *s.0.borrow()) {
                        return None;
                    }
                    // Nothing new for a while: a comment keeps proxies from closing the stream.
                    return Some((Ok(Bytes::from_static(b":\n\n")), Some((cursor, permit))));
                }
            }
        }
    });
    Ok(streams::sse_response(axum::body::Body::from_stream(body)))
}
