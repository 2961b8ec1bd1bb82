//! `/v1/webhooks`: subscriptions to the organization's events, delivered by the worker
//! (`roster_worker::webhooks`, docs/webhooks.md). Each command is one append to the webhook's
//! stream; the answer comes once the read models have applied it, so the deliverer and a
//! following `GET` see it.

use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use roster_core::Loaded;
use roster_domain::EventSet;
use roster_domain::webhook::WebhookEvent;
use roster_domain::webhook::{
    Webhook, WebhookChanged, WebhookCommand, WebhookCreated, WebhookCreatedPublic, WebhookReplayed,
    WebhookSecret, WebhookStatus,
};
use roster_worker::webhooks::address;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, Json};
use crate::resource::write_response;
use crate::routes::common::OperationDoc;
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// Most webhooks of one organization.
pub const MAX_WEBHOOKS: usize = 100;
/// Shortest caller-chosen secret.
const MIN_SECRET_CHARS: usize = 32;
/// Longest secret.
const MAX_SECRET_CHARS: usize = 256;
/// How long a command waits for the read models before answering.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/webhooks",
            post_with(create, |op| {
                op.doc("createWebhook", "webhooks", "Create a webhook")
                    .describe(
                        "Deliveries start after the log's head at creation (`position`). The \
                         secret is generated if omitted (a caller-chosen one has at least 32 \
                         characters) and shown only in this answer. A url that resolves to a \
                         loopback, private, link-local or other reserved address is refused \
                         unless the server runs with `--allow-private-webhooks`.",
                    )
                    .written::<WebhookResource>(201, "The webhook, with its secret.")
                    .errors(&[409])
            })
            .get_with(list, |op| {
                op.doc("listWebhooks", "webhooks", "List the webhooks")
                    .json::<WebhookList>(200, "Every webhook of the organization, oldest first.")
            }),
        )
        .api_route(
            "/v1/webhooks/{id}",
            get_with(show, |op| {
                op.doc("getWebhook", "webhooks", "Get a webhook")
                    .json::<WebhookResource>(200, "The webhook (no secret).")
                    .errors(&[404])
            })
            .patch_with(update, |op| {
                op.doc(
                    "updateWebhook",
                    "webhooks",
                    "Change, pause or resume a webhook",
                )
                .describe(
                    "Fields left out stay. A paused webhook delivers nothing; its events \
                         wait and are delivered when it is resumed.",
                )
                .written::<WebhookResource>(200, "The webhook after the change.")
                .errors(&[404])
            })
            .delete_with(delete, |op| {
                op.doc("deleteWebhook", "webhooks", "Delete a webhook")
                    .describe("Deliveries stop; the secret's key is destroyed.")
                    .written::<DeletedWebhook>(200, "Deleted.")
                    .errors(&[404])
            }),
        )
        .api_route(
            "/v1/webhooks/{id}/replay",
            post_with(replay, |op| {
                op.doc("replayWebhook", "webhooks", "Deliver again from a position")
                    .describe(
                        "Deliveries start again after `after` (back or forward; at most the \
                         log's head); a batch waiting for a retry is dropped.",
                    )
                    .written::<WebhookResource>(200, "The webhook.")
                    .errors(&[404])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<CreateWebhook>();
    out.add::<UpdateWebhook>();
    out.add::<ReplayWebhook>();
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<WebhookResource>();
}

/// `POST /v1/webhooks`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWebhook {
    /// `http://` or `https://` URL deliveries are posted to (≤ 2 048 bytes).
    url: String,
    /// Event types to deliver (empty or absent: every type but webhooks' own).
    #[serde(default)]
    types: Option<Vec<String>>,
    /// The signing secret, 32 to 256 characters (generated if absent).
    #[schemars(length(min = 32, max = 256))]
    secret: Option<String>,
}

/// `PATCH /v1/webhooks/{id}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateWebhook {
    /// A new url.
    url: Option<String>,
    /// New event types (empty: every type).
    types: Option<Vec<String>>,
    /// `active` or `paused`.
    status: Option<WebhookStatus>,
}

/// `POST /v1/webhooks/{id}/replay`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayWebhook {
    /// Deliveries start after this log position (0: from the beginning).
    after: u64,
}

/// A webhook as the API shows it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Webhook")]
pub(crate) struct WebhookResource {
    /// Its id (ULID).
    id: String,
    /// Where deliveries go.
    url: String,
    /// Event types delivered (empty: every type).
    types: Vec<String>,
    /// The signing secret: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// `active`, `paused`, or `failing` (active, its last attempt failed; later events wait).
    #[schemars(regex(pattern = "^(active|paused|failing)$"))]
    status: &'static str,
    /// Every event up to this log position is delivered and acknowledged (recorded about
    /// once a second while deliveries flow).
    position: u64,
    /// Log positions between the head and `position` (events of other organizations and
    /// types count too).
    lag: u64,
    /// The last attempt's failure: the receiver's status (`HTTP 500`) or the network error,
    /// never the receiver's body.
    last_error: Option<String>,
    /// Failed attempts of the waiting delivery.
    attempts: u32,
    /// When it was created.
    created_at: DateTime<Utc>,
    /// When its url, types or status last changed.
    updated_at: DateTime<Utc>,
}

/// `GET /v1/webhooks`.
#[derive(Serialize, JsonSchema)]
pub(crate) struct WebhookList {
    /// Oldest first.
    webhooks: Vec<WebhookResource>,
}

/// The answer to a deletion.
#[derive(Serialize, JsonSchema)]
pub(crate) struct DeletedWebhook {
    /// The webhook's id.
    id: String,
    /// Always true.
    deleted: bool,
}

fn resource(app: &AppState, hook: &Webhook, secret: bool) -> WebhookResource {
    WebhookResource {
        id: hook.id.clone(),
        url: hook.url.clone(),
        types: hook.types.clone(),
        secret: secret.then(|| hook.secret.clone()),
        status: hook.status_name(),
        position: hook.position,
        lag: app.log().head().saturating_sub(hook.position),
        last_error: hook.last_error.clone(),
        attempts: hook.attempts,
        created_at: hook.created_at,
        updated_at: hook.updated_at,
    }
}

/// Parses and checks a url: the address rule applies to what it resolves to now (and again
/// at each delivery, to the address connected to).
async fn checked_url(app: &AppState, url: &str) -> ApiResult<String> {
    let target = address::parse(url).map_err(|e| ApiError::invalid_field("url", e))?;
    address::resolve(&target, app.allow_private_webhooks())
        .await
        .map_err(|e| ApiError::invalid_field("url", e))?;
    Ok(url.to_owned())
}

/// Every event type a webhook can ask for: all but webhooks' own (never delivered).
fn deliverable_types() -> impl Iterator<Item = &'static str> {
    roster_domain::event_types().filter(|t| !WebhookEvent::TYPES.contains(t))
}

/// Known, deduplicated, in the order given.
fn checked_types(types: Vec<String>) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        if !deliverable_types().any(|k| k == t) {
            return Err(ApiError::invalid_field(
                "types",
                format!("{t:?} is not an event type webhooks deliver"),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn not_found() -> ApiError {
    ApiError::not_found("No webhook with this id.")
}

async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<CreateWebhook>,
) -> ApiResult<Response> {
    let body = body.value;
    let url = checked_url(&app, &body.url).await?;
    let types = checked_types(body.types.unwrap_or_default())?;
    let secret = match body.secret {
        Some(s) if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&s.chars().count()) => {
            return Err(ApiError::invalid_field(
                "secret",
                format!("must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"),
            ));
        }
        Some(s) => s,
        None => new_secret(),
    };
    if app.models().webhooks(Some(ctx.org.as_str()))?.len() >= MAX_WEBHOOKS {
        return Err(ApiError::new(
            Code::Conflict,
            format!("An organization has at most {MAX_WEBHOOKS} webhooks."),
        ));
    }
    let id = ulid::Ulid::new().to_string();
    let command = WebhookCommand::Create(WebhookCreated {
        public: WebhookCreatedPublic {
            url,
            types,
            position: app.log().head(),
            key_id: None,
        },
        personal: WebhookSecret { secret },
    });
    let (position, after) = append(&app, &ctx, &id, &Loaded::default(), &command).await?;
    let hook = after.state.as_ref().ok_or_else(not_found)?;
    Ok(write_response(
        StatusCode::CREATED,
        resource(&app, hook, true),
        position,
    ))
}

async fn list(State(app): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    let webhooks = app
        .models()
        .webhooks(Some(ctx.org.as_str()))?
        .iter()
        .map(|h| resource(&app, h, false))
        .collect();
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        WebhookList { webhooks },
    )))
}

async fn show(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let hook = app
        .models()
        .webhook(ctx.org.as_str(), &id)?
        .ok_or_else(not_found)?;
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        resource(&app, &hook, false),
    )))
}

async fn update(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<UpdateWebhook>,
) -> ApiResult<Response> {
    let body = body.value;
    let url = match &body.url {
        Some(url) => Some(checked_url(&app, url).await?),
        None => None,
    };
    let change = WebhookChanged {
        url,
        types: body.types.map(checked_types).transpose()?,
        status: body.status,
    };
    command(&app, &ctx, &id, WebhookCommand::Change(change)).await
}

async fn replay(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<ReplayWebhook>,
) -> ApiResult<Response> {
    let after = body.value.after;
    let head = app.log().head();
    if after > head {
        return Err(ApiError::invalid_field(
            "after",
            format!("must be at most the log's head ({head})"),
        ));
    }
    command(
        &app,
        &ctx,
        &id,
        WebhookCommand::Replay(WebhookReplayed { after }),
    )
    .await
}

async fn delete(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (position, _) = load_and_append(&app, &ctx, &id, &WebhookCommand::Delete).await?;
    Ok(write_response(
        StatusCode::OK,
        DeletedWebhook { id, deleted: true },
        position,
    ))
}

/// Runs a command on an existing webhook and answers with the webhook after it.
async fn command(
    app: &AppState,
    ctx: &Ctx,
    id: &str,
    command: WebhookCommand,
) -> ApiResult<Response> {
    let (position, after) = load_and_append(app, ctx, id, &command).await?;
    let hook = after.state.as_ref().ok_or_else(not_found)?;
    Ok(write_response(
        StatusCode::OK,
        resource(app, hook, false),
        position,
    ))
}

/// Loads the webhook and appends what `command` decides, retrying when a deliverer's
/// progress moved the stream meanwhile.
async fn load_and_append(
    app: &AppState,
    ctx: &Ctx,
    id: &str,
    command: &WebhookCommand,
) -> ApiResult<(u64, Loaded<Webhook>)> {
    let repo = app.core().repo();
    let outcome = roster_core::retrying(|| async {
        let loaded = repo.load::<Webhook>(&ctx.org, id).await?;
        if loaded.state.is_none() {
            return Err(not_found().into());
        }
        appended(
            app,
            repo.append(&ctx.org, id, &loaded, command, ctx.meta.clone())
                .await?,
            loaded,
        )
        .await
        .map_err(Into::into)
    })
    .await;
    outcome.map_err(crate::sessions::commit_error)
}

/// Appends a creation.
async fn append(
    app: &AppState,
    ctx: &Ctx,
    id: &str,
    loaded: &Loaded<Webhook>,
    command: &WebhookCommand,
) -> ApiResult<(u64, Loaded<Webhook>)> {
    let repo = app.core().repo();
    let outcome = repo
        .append(&ctx.org, id, loaded, command, ctx.meta.clone())
        .await
        .map_err(crate::sessions::commit_error)?;
    appended(app, outcome, loaded.clone()).await
}

/// Where an append landed (or, if it recorded nothing, where the webhook last changed) and
/// the state after it, once the read models have it.
async fn appended(
    app: &AppState,
    outcome: Option<(roster_eventlog::Committed, Loaded<Webhook>)>,
    before: Loaded<Webhook>,
) -> ApiResult<(u64, Loaded<Webhook>)> {
    Ok(match outcome {
        Some((committed, after)) => {
            app.wait_for(committed.last_position, APPLY_WAIT).await;
            (committed.last_position, after)
        }
        None => (before.last_position, before),
    })
}
