//! The read models' state and their rebuild (docs/contract.md §6): `GET /v1/projections`,
//! `POST /v1/projections/{name}/rebuild`.
//!
//! Every read model shares one checkpoint, so there is one projection, `read_models`
//! ([`PROJECTION`]). Each server keeps its own read models (on NATS, in its own data
//! directory): both endpoints are about the server that answers.

use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use roster_domain::task::{TaskCreated, TaskKind};
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, NoQuery, QueryParams};
use crate::live::{MODELS, PROJECTION};
use crate::routes::common::OperationDoc;
use crate::routes::common::accepted as accepted_response;
use crate::schemas::SchemaSet;
use crate::state::AppState;
use roster_core::tasks::TaskAccepted;

/// How long a rebuild request waits for its task to reach the read models (so the next
/// request sees it running).
const RECORDED_WAIT: Duration = Duration::from_secs(5);

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/projections",
            get_with(list, |op| {
                op.doc("listProjections", "projections", "The read models' state")
                    .describe(
                        "For this server's read models: the log position they have applied, \
                         how far behind the log's head they are, and whether they are `live`, \
                         `rebuilding` (with the rebuild's progress) or `failing` (with the \
                         projector's error; it retries).",
                    )
                    .query::<NoQuery>()
                    .json::<ProjectionList>(200, "Every projection of this server.")
            }),
        )
        .api_route(
            "/v1/projections/{name}/rebuild",
            post_with(rebuild, |op| {
                op.doc("rebuildProjection", "projections", "Rebuild a projection")
                    .describe(
                        "Starts a `rebuild_projection` task on this server: fresh read models are \
                         built from the log beside the live ones, which keep answering every \
                         query; once the new ones have caught up with the log, the server \
                         switches to them at once. Poll `GET /v1/tasks/{task_id}`. 409 while \
                         a rebuild runs on this server.",
                    )
                    .query::<NoQuery>()
                    .written::<TaskAccepted>(202, "The rebuild is recorded and will run.")
                    .errors(&[404, 409])
            }),
        )
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<ProjectionList>();
}

/// `GET /v1/projections`.
#[derive(Serialize, JsonSchema)]
pub(crate) struct ProjectionList {
    /// The server that answered (each server keeps its own read models).
    server_id: String,
    /// Its projections (today one, `read_models`).
    projections: Vec<ProjectionState>,
}

/// Where a projection is.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ProjectionStatus {
    /// Following the log.
    Live,
    /// Following the log while a rebuild builds its replacement (see `rebuild`).
    Rebuilding,
    /// Its projector's last batch failed; it retries (see `error`).
    Failing,
}

/// One projection.
#[derive(Serialize, JsonSchema)]
pub(crate) struct ProjectionState {
    /// Its name, for `POST /v1/projections/{name}/rebuild`.
    name: &'static str,
    /// The read models it keeps, all at the same position.
    models: &'static [&'static str],
    /// The log position it has applied.
    position: u64,
    /// The log's head (its last durable position) when asked.
    head: u64,
    /// `head - position`: events not applied yet.
    lag: u64,
    /// `live`, `rebuilding` or `failing`.
    status: ProjectionStatus,
    /// Why the projector is failing (`null` unless `failing`).
    error: Option<String>,
    /// The rebuild running on this server (`null` if none).
    rebuild: Option<RebuildState>,
}

/// A running rebuild.
#[derive(Serialize, JsonSchema)]
pub(crate) struct RebuildState {
    /// Its task (`GET /v1/tasks/{task_id}` in `organization_id`).
    task_id: String,
    /// The organization the task was recorded in.
    organization_id: String,
    /// `replaying` (the log from the start into new read models), `catching_up` (following
    /// the writes made meanwhile) or `switching`.
    phase: &'static str,
    /// Events replayed.
    done: u64,
    /// Events to replay: the log's head when the rebuild started.
    total: u64,
    /// The position the new read models have applied.
    position: u64,
    /// When it started.
    started_at: DateTime<Utc>,
}

async fn list(State(app): State<AppState>, _ctx: Ctx, query: QueryParams) -> ApiResult<Response> {
    query.only(NoQuery::NAMES)?;
    let models = app.models();
    // Position first: the head only grows, so the lag is never negative.
    let position = models.checkpoint();
    let head = app.log().head().max(position);
    let error = models.failure();
    let rebuild = app.live().rebuild().map(|r| RebuildState {
        task_id: r.task_id.clone(),
        organization_id: r.organization_id.clone(),
        phase: r.phase().as_str(),
        done: r.done(),
        total: r.total,
        position: r.position(),
        started_at: r.started_at,
    });
    let status = match (&error, &rebuild) {
        (Some(_), _) => ProjectionStatus::Failing,
        (None, Some(_)) => ProjectionStatus::Rebuilding,
        (None, None) => ProjectionStatus::Live,
    };
    Ok(axum::Json(ProjectionList {
        server_id: app.server_id().to_owned(),
        projections: vec![ProjectionState {
            name: PROJECTION,
            models: MODELS,
            position,
            head,
            lag: head - position,
            status,
            error,
            rebuild,
        }],
    })
    .into_response())
}

async fn rebuild(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(NoQuery::NAMES)?;
    if name != PROJECTION {
        return Err(ApiError::not_found(format!(
            "No projection named {name:?}; the projections are [\"{PROJECTION}\"]."
        )));
    }
    let _one_request_at_a_time = app.live().requests.lock().await;
    // A repeat of the request that started the running rebuild gets its first answer.
    let request = app.request(&ctx, None);
    let repeat = match &request.idempotency {
        Some(claim) => claim.seen(app.log().as_ref()).await?.is_some(),
        None => false,
    };
    if !repeat && let Some((org, task_id)) = running_rebuild(&app).await? {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "A rebuild of {PROJECTION} is already running on this server: task {task_id} \
                 (organization {org})."
            ),
        ));
    }
    let created = TaskCreated {
        kind: TaskKind::RebuildProjection,
        user_ids: Vec::new(),
        mode: None,
        created_by_id: None,
        projection: Some(name),
        server: Some(app.server_id().to_owned()),
        on_conflict: None,
        include_password_hashes: false,
        total: 0,
    };
    let accepted = roster_core::tasks::record(app.core(), &request, created).await?;
    // Once the read models show the task, the next request finds it running.
    app.wait_for(accepted.position, RECORDED_WAIT).await;
    Ok(accepted_response(accepted))
}

/// The unfinished rebuild task of this server, as `(organization, task id)`.
async fn running_rebuild(app: &AppState) -> ApiResult<Option<(String, String)>> {
    if let Some(running) = app.live().rebuild() {
        return Ok(Some((
            running.organization_id.clone(),
            running.task_id.clone(),
        )));
    }
    let unfinished = app.models().unfinished_tasks()?;
    for task in unfinished {
        if task.kind != TaskKind::RebuildProjection {
            continue;
        }
        let loaded = roster_core::tasks::load(app.core(), &task.organization_id, &task.id).await?;
        let mine = loaded
            .created
            .as_ref()
            .is_some_and(|c| c.server.as_deref() == Some(app.server_id()));
        let unfinished = loaded.loaded.state.is_some_and(|t| !t.status.is_final());
        if mine && unfinished {
            return Ok(Some((task.organization_id.to_string(), task.id)));
        }
    }
    Ok(None)
}
