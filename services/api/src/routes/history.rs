//! A user's history: activity log, raw events, and everything held on the user
//! (docs/contract.md §3). Read straight from the log, so they are exact at any moment and cover
//! erased fields.

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use roster_core::Loaded;
use roster_core::repository::stream_of;
use roster_domain::{User, UserId};
use roster_eventlog::RecordedEvent;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::events::{EventResource, render};
use crate::extract::{Ctx, NoQuery, QueryParams, query_params};
use crate::resource::UserResource;
use crate::routes::common::{OperationDoc, PageQuery, decode_cursor, encode_cursor, parse_user_id};
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/users/{id}/logs",
            get_with(logs, |op| {
                op.doc("getUserLogs", "history", "A user's activity log")
                    .describe("One entry per event, newest first, read from the log itself.")
                    .query::<PageQuery>()
                    .json::<LogPage>(200, "A page of the activity log.")
                    .errors(&[404])
            }),
        )
        .api_route(
            "/v1/users/{id}/events",
            get_with(events, |op| {
                op.doc("getUserEvents", "history", "A user's raw events")
                    .describe(
                        "In stream order; older schema versions are upcast, and erased personal \
                         data reads as `null` with `\"erased\": true`.",
                    )
                    .query::<UserEventsQuery>()
                    .json::<UserEventPage>(200, "A page of the user's events.")
                    .errors(&[404])
            }),
        )
        .api_route(
            "/v1/users/{id}/export",
            get_with(export, |op| {
                op.doc("exportUser", "history", "Everything held on a user")
                    .describe("Profile, wallet ledger, activity log, events and sessions.")
                    .query::<NoQuery>()
                    .json::<UserExport>(200, "Everything held on the user.")
                    .errors(&[404])
            }),
        )
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<LogItem>();
    out.add::<LogPage>();
    out.add::<UserEventPage>();
    out.add::<UserExport>();
}

query_params! {
    /// Query of `GET /v1/users/{id}/events`.
    pub(crate) struct UserEventsQuery {
        /// A stream version: events after it (default 0, from the start).
        after: Option<u64>,
        /// Page size, 1 to 1000 (default 100).
        #[schemars(range(min = 1, max = 1000))]
        limit: Option<u32>,
    }
}

/// One entry of the activity log.
#[derive(Serialize, JsonSchema)]
pub(crate) struct LogItem {
    /// The event type.
    event: String,
    /// Its log position.
    position: u64,
    /// Its version in the user's stream.
    version: u64,
    /// When it was recorded.
    time: chrono::DateTime<chrono::Utc>,
    /// Who caused it (`server:…`, `user:…`, `task:…`).
    actor: Value,
    /// The caller's address (`null` once erased).
    ip: Value,
    /// The caller's user agent (`null` once erased).
    user_agent: Value,
}

impl From<EventResource> for LogItem {
    fn from(e: EventResource) -> Self {
        let field = |k: &str| e.metadata.get(k).cloned().unwrap_or(Value::Null);
        LogItem {
            actor: field("actor"),
            ip: field("ip"),
            user_agent: field("user_agent"),
            event: e.event_type,
            position: e.position,
            version: e.version,
            time: e.time,
        }
    }
}

/// A page of the activity log, newest first.
#[derive(Serialize, JsonSchema)]
pub(crate) struct LogPage {
    /// The entries.
    items: Vec<LogItem>,
    /// Pass as `cursor` for the next (older) page.
    next_cursor: Option<String>,
}

/// The user as loaded, whose history runs from `since` (the event that began its latest
/// incarnation: an earlier holder of a hard-deleted id is not part of it) to `version`. 404 if
/// the user never existed.
async fn load_history(app: &AppState, ctx: &Ctx, id: &UserId) -> ApiResult<Loaded<User>> {
    let loaded = app
        .core()
        .repo()
        .load::<User>(&ctx.org, id.as_str())
        .await?;
    if loaded.since == 0 {
        return Err(ApiError::not_found("No user with this id."));
    }
    Ok(loaded)
}

async fn logs(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(PageQuery::NAMES)?;
    let user_id = parse_user_id(&id)?;
    let limit = query.number("limit", 1, 100)?.unwrap_or(25);
    let Loaded { since, version, .. } = load_history(&app, &ctx, &user_id).await?;
    // Newest first: the cursor is the version to continue below.
    let below = match query.get("cursor") {
        Some(c) => decode_cursor::<u64>('v', c)?,
        None => version + 1,
    };
    let from = below.saturating_sub(limit).max(since);
    let count = below.saturating_sub(from) as usize;
    let records = app
        .log()
        .read_stream(&stream_of::<User>(&ctx.org, user_id.as_str()), from, count)
        .await?;
    let mut items = Vec::with_capacity(records.len());
    for record in records.iter().rev() {
        items.push(LogItem::from(render(app.codec(), record).await?));
    }
    let next_cursor = (from > since).then(|| encode_cursor('v', from));
    Ok(axum::Json(LogPage { items, next_cursor }).into_response())
}

/// A page of a user's events.
#[derive(Serialize, JsonSchema)]
pub(crate) struct UserEventPage {
    /// The events, in stream order.
    events: Vec<EventResource>,
    /// Pass as `after` to continue (the version of the last event returned); `null` at the end.
    next_after: Option<u64>,
}

async fn render_all(app: &AppState, records: &[RecordedEvent]) -> ApiResult<Vec<EventResource>> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        out.push(render(app.codec(), record).await?);
    }
    Ok(out)
}

/// `GET /v1/users/{id}/events?after=<version>&limit=<n>`: the user's raw events in order.
async fn events(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(UserEventsQuery::NAMES)?;
    let user_id = parse_user_id(&id)?;
    let after = query.number("after", 0, u64::MAX)?.unwrap_or(0);
    let limit = query.number("limit", 1, 1000)?.unwrap_or(100);
    let since = load_history(&app, &ctx, &user_id).await?.since;
    // Written as it is read, a chunk at a time (a slow client holds one chunk, not the page).
    let page = UserEvents {
        app,
        stream: stream_of::<User>(&ctx.org, user_id.as_str()),
        next: (after + 1).max(since),
        left: limit,
        last: None,
        first: true,
    };
    let body = futures::stream::unfold(Some(page), |page| async move {
        let mut page = page?;
        match page.step().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(page))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.detail)), None)),
        }
    });
    let mut response = axum::body::Body::from_stream(body).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The events of `GET /v1/users/{id}/events`, read a few at a time.
struct UserEvents {
    app: AppState,
    stream: roster_eventlog::StreamId,
    /// The next version to read.
    next: u64,
    /// Events still to write.
    left: u64,
    /// The version of the last event written.
    last: Option<u64>,
    first: bool,
}

impl UserEvents {
    /// The next chunk of the JSON page; `None` once it is all written.
    async fn step(&mut self) -> ApiResult<Option<bytes::Bytes>> {
        if self.next == 0 {
            return Ok(None);
        }
        let mut out = Vec::new();
        if self.first {
            out.extend_from_slice(br#"{"events":["#);
        }
        while self.left > 0 && out.len() < crate::streams::CHUNK_BYTES {
            let want = self.left.min(64) as usize;
            let records = self
                .app
                .log()
                .read_stream(&self.stream, self.next, want)
                .await?;
            for record in &records {
                if !std::mem::take(&mut self.first) {
                    out.push(b',');
                }
                let event = render(self.app.codec(), record).await?;
                serde_json::to_writer(&mut out, &event).expect("events serialize");
                self.next = record.version + 1;
                self.last = Some(record.version);
                self.left -= 1;
                if out.len() >= crate::streams::CHUNK_BYTES {
                    break;
                }
            }
            if records.len() < want && self.left > 0 {
                // The stream ends here.
                self.left = 0;
                self.last = None;
                break;
            }
        }
        self.first = false;
        if self.left == 0 {
            // Limit reached: is there more after it?
            let more = match self.last {
                Some(_) => !self
                    .app
                    .log()
                    .read_stream(&self.stream, self.next, 1)
                    .await?
                    .is_empty(),
                None => false,
            };
            let next_after = if more { self.last } else { None };
            out.extend_from_slice(b"],\"next_after\":");
            serde_json::to_writer(&mut out, &next_after).expect("numbers serialize");
            out.push(b'}');
            self.next = 0;
        }
        Ok(Some(bytes::Bytes::from(out)))
    }
}

/// Everything held on a user (`GET /v1/users/{id}/export`).
#[derive(Serialize, JsonSchema)]
pub(crate) struct UserExport {
    /// The user as the log has it now (`null` if hard-deleted).
    user: Option<UserResource>,
    /// Every ledger item, newest first.
    wallet_ledger: Vec<roster_projections::ledger::LedgerItem>,
    /// The activity log, newest first.
    logs: Vec<LogItem>,
    /// Every event, in stream order.
    events: Vec<EventResource>,
    /// Every session, newest first.
    sessions: Vec<crate::sessions::SessionView>,
}

/// Everything held on a user: profile (as the log has it now), ledger, activity, events.
async fn export(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(NoQuery::NAMES)?;
    let user_id = parse_user_id(&id)?;
    let loaded = load_history(&app, &ctx, &user_id).await?;
    let records = app
        .log()
        .read_stream(
            &stream_of::<User>(&ctx.org, user_id.as_str()),
            loaded.since,
            usize::MAX,
        )
        .await?;
    let events = render_all(&app, &records).await?;
    let logs = events.iter().rev().cloned().map(LogItem::from).collect();
    let mut wallet_ledger = Vec::new();
    let mut cursor = None;
    loop {
        let page = app
            .models()
            .ledger(ctx.org.as_str(), user_id.as_str(), 100, cursor)
            .await?;
        wallet_ledger.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let valid_from = loaded
        .state
        .as_ref()
        .map_or(0, |u| u.public.sessions_valid_from);
    let sessions = crate::sessions::all_sessions(&app, &ctx.org, &user_id, valid_from).await?;
    let export = UserExport {
        user: loaded
            .state
            .map(|u| crate::resource::user_resource(&app, u, None)),
        wallet_ledger,
        logs,
        events,
        sessions,
    };
    Ok(axum::Json(export).into_response())
}
