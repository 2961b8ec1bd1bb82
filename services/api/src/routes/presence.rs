//! Presence (docs/presence.md): heartbeats with `POST /v1/account/presence`, changes followed
//! with `GET /v1/presence/stream` (SSE). Kept in [`crate::presence`], not in the event log.

use std::collections::HashMap;
use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AnyCtx, ClientCtx, MaybeJson, QueryParams, query_params};
use crate::presence::{MAX_MESSAGE_CHARS, Presence};
use crate::routes::common::OperationDoc;
use crate::schemas::SchemaSet;
use crate::state::AppState;
use crate::streams::Streams;

/// Most users one stream follows.
pub const MAX_STREAM_USERS: usize = 100;
/// How often a stream looks for users whose last heartbeat has lapsed.
const LAPSE_CHECK: Duration = Duration::from_secs(5);

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/account/presence",
            post_with(heartbeat, |op| {
                op.doc("heartbeat", "presence", "Say the signed-in user is here")
                    .describe(
                        "A heartbeat: the user is online for 60 s after the last one. \
                         `appear_online: false` shows it offline to everyone (no message, no \
                         last seen) until it sets `true` again; the setting and the message \
                         last until changed (`\"message\": null` clears it).",
                    )
                    .json::<OwnPresence>(200, "The user's presence as it is now.")
            }),
        )
        .api_route(
            "/v1/presence/stream",
            get_with(stream, |op| {
                op.doc("streamPresence", "presence", "Follow users' presence")
                    .describe(
                        "Server-Sent Events: first the current presence of each user asked \
                         for, then an event on every change (a heartbeat after silence, \
                         going quiet for 60 s, a new setting or message), from every server. \
                         Clients, anonymous tokens and servers may call it.",
                    )
                    .query::<PresenceStreamQuery>()
                    .response_with::<200, String, _>(|r| {
                        r.description(
                            "`event: presence`, `data: {\"user_id\", \"online\", \"message\"}`",
                        )
                    })
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<Heartbeat>();
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<OwnPresence>();
    out.add::<PresenceEvent>();
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `POST /v1/account/presence`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Heartbeat {
    /// `false`: shown offline to everyone until `true` again (absent: unchanged).
    appear_online: Option<bool>,
    /// A custom status of at most 128 characters; `null` clears it (absent: unchanged).
    #[serde(default, deserialize_with = "present")]
    #[schemars(length(max = 128))]
    message: Option<Option<String>>,
}

/// A user's own presence.
#[derive(Serialize, JsonSchema)]
pub(crate) struct OwnPresence {
    /// Whether others see the user online.
    online: bool,
    /// The custom status.
    message: Option<String>,
    /// The last heartbeat, to the minute.
    last_seen_at: Option<DateTime<Utc>>,
    /// The user's `appear_online` setting.
    appear_online: bool,
}

/// One event of the presence stream.
#[derive(Serialize, JsonSchema, Clone, PartialEq)]
pub(crate) struct PresenceEvent {
    /// The user.
    user_id: String,
    /// Online as others see it.
    online: bool,
    /// The custom status (`null` when hidden).
    message: Option<String>,
}

query_params! {
    /// Query of `GET /v1/presence/stream`.
    pub(crate) struct PresenceStreamQuery {
        /// The users to follow (repeatable, 1 to 100).
        user_ids: Option<Vec<String>>,
    }
}

async fn heartbeat(
    State(app): State<AppState>,
    client: ClientCtx,
    body: MaybeJson<Heartbeat>,
) -> ApiResult<Response> {
    let body = body.value;
    if let Some(Some(m)) = &body.message
        && (m.chars().count() > MAX_MESSAGE_CHARS || m.chars().any(char::is_control))
    {
        return Err(ApiError::invalid_field(
            "message",
            format!("must be at most {MAX_MESSAGE_CHARS} characters, without control characters"),
        ));
    }
    let org = client.ctx.org.as_str();
    let user = client.user_id.as_str();
    let row = app
        .models()
        .get(org, user)
        .await?
        .ok_or_else(|| ApiError::not_found("No user with this id."))?;
    let key = app.codec().key(row.key_id()).await?;
    let record = app
        .presence()
        .heartbeat(org, user, key, body.appear_online, body.message)
        .await
        .map_err(ApiError::internal)?;
    Ok(axum::Json(OwnPresence {
        online: record.shown(Utc::now()).online,
        message: record.message.clone(),
        last_seen_at: record.last_seen_minute(),
        appear_online: !record.hidden,
    })
    .into_response())
}

fn event_of(presence: &Presence, org: &str, user: &str, now: DateTime<Utc>) -> PresenceEvent {
    let shown = presence
        .get(org, user)
        .map(|r| r.shown(now))
        .unwrap_or_default();
    PresenceEvent {
        user_id: user.to_owned(),
        online: shown.online,
        message: shown.message,
    }
}

fn sse(event: &PresenceEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: presence\ndata: ");
    serde_json::to_writer(&mut *out, event).expect("an event serializes");
    out.extend_from_slice(b"\n\n");
}

async fn stream(
    State(app): State<AppState>,
    AnyCtx(ctx): AnyCtx,
    query: QueryParams,
    streams: Streams,
) -> ApiResult<Response> {
    query.only(PresenceStreamQuery::NAMES)?;
    let mut users = query.all("user_ids");
    users.sort();
    users.dedup();
    if users.is_empty() || users.len() > MAX_STREAM_USERS {
        return Err(ApiError::invalid_field(
            "user_ids",
            format!("give 1 to {MAX_STREAM_USERS} user ids"),
        ));
    }
    let follow = Follow {
        _permit: streams.gate.admit(&ctx.caller)?,
        shutdown: streams.shutdown,
        changes: app.presence().subscribe(),
        presence: app.presence().clone(),
        sent: HashMap::new(),
        users,
        org: ctx.org.to_string(),
        first: true,
    };
    let body = futures::stream::unfold(follow, |mut follow| async move {
        let chunk = follow.next_chunk().await?;
        Some((Ok::<_, std::io::Error>(chunk), follow))
    });
    Ok(crate::streams::sse_response(axum::body::Body::from_stream(
        body,
    )))
}

/// One presence stream: what it follows and what it last said of each user.
struct Follow {
    _permit: crate::streams::StreamPermit,
    shutdown: Option<crate::serve::ShuttingDown>,
    changes: tokio::sync::broadcast::Receiver<(String, String)>,
    presence: std::sync::Arc<Presence>,
    sent: HashMap<String, PresenceEvent>,
    users: Vec<String>,
    org: String,
    first: bool,
}

impl Follow {
    /// The next events to send (the first call: every user's current state); a comment when
    /// nothing changed for a while; `None` once the server shuts down.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            // Wake on a change in this organization, or every few seconds (a heartbeat lapses
            // without any change being sent).
            let mut lapsed = false;
            if !std::mem::take(&mut self.first) {
                let down = async {
                    match &self.shutdown {
                        Some(s) => s.clone().wait().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = down => return None,
                    changed = self.changes.recv() => match changed {
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        Ok((org, _)) if org != self.org => continue,
                        _ => {}
                    },
                    _ = tokio::time::sleep(LAPSE_CHECK) => lapsed = true,
                }
            }
            let now = Utc::now();
            let mut out = Vec::new();
            for user in &self.users {
                let event = event_of(&self.presence, &self.org, user, now);
                if self.sent.get(user) != Some(&event) {
                    sse(&event, &mut out);
                    self.sent.insert(user.clone(), event);
                }
            }
            if out.is_empty() && lapsed {
                // Nothing new: a comment keeps proxies from closing the stream.
                out.extend_from_slice(b":\n\n");
            }
            if !out.is_empty() {
                return Some(Bytes::from(out));
            }
        }
    }
}
