//! Bulk operations and their tasks (docs/contract.md §4).

use std::collections::HashSet;
use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use aide::transform::TransformOperation;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use roster_core::repository::{CommitError, stream_of};
pub(crate) use roster_core::tasks::TaskAccepted;
use roster_domain::task::{
    Progress, Task, TaskCommand, TaskCreated, TaskFailure, TaskKind, TaskStatus,
};
use roster_domain::{DeleteMode, OrgId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, Json, NoQuery, QueryParams, query_params};
use crate::resource::write_response;
use crate::routes::common::OperationDoc;
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// Most ids in one bulk request.
pub const MAX_BULK_IDS: usize = 100_000;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/users/deactivate",
            post_with(deactivate, |op| {
                bulk_doc(op, "deactivateUsers", "Deactivate users in bulk")
            }),
        )
        .api_route(
            "/v1/users/reactivate",
            post_with(reactivate, |op| {
                bulk_doc(op, "reactivateUsers", "Reactivate users in bulk")
            }),
        )
        .api_route(
            "/v1/users/delete",
            post_with(delete, |op| {
                bulk_doc(op, "deleteUsers", "Delete users in bulk")
            }),
        )
        .api_route(
            "/v1/users/export",
            post_with(export, |op| {
                bulk_doc(op, "exportUsers", "Export users to NDJSON").describe(
                    "Without ids, every user. The file is fetched with \
                         `GET /v1/tasks/{id}/result` once the task completed, for 24 h.",
                )
            }),
        )
        .api_route(
            "/v1/tasks",
            get_with(list, |op| {
                op.doc("listTasks", "tasks", "List tasks")
                    .describe("Newest first.")
                    .query::<ListTasksQuery>()
                    .json::<TaskPage>(200, "A page of tasks.")
            }),
        )
        .api_route(
            "/v1/tasks/{id}",
            get_with(show, |op| {
                op.doc("getTask", "tasks", "Get a task")
                    .query::<NoQuery>()
                    .json::<TaskResource>(200, "The task.")
                    .errors(&[404])
            }),
        )
        .api_route(
            "/v1/tasks/{id}/cancel",
            post_with(cancel, |op| {
                op.doc("cancelTask", "tasks", "Cancel a task")
                    .describe(
                        "The task stops before its next chunk; items done stay done. An ended \
                         task is returned unchanged.",
                    )
                    .written::<TaskResource>(200, "The task.")
                    .errors(&[404, 409])
            }),
        )
        .api_route(
            "/v1/tasks/{id}/result",
            get_with(result, |op| {
                op.doc("getTaskResult", "tasks", "Download an export")
                    .describe(
                        "One user per line; a user erased after the export reads as \
                         `{\"id\", \"erased\": true}`. 409 while the export runs, 410 after \
                         the 24 h retention.",
                    )
                    .content(
                        200,
                        "application/x-ndjson",
                        "The export file, streamed: one user object per line.",
                        Some(schemars::json_schema!({"type": "string"})),
                    )
                    .errors(&[404, 409, 410])
            }),
        )
}

/// A bulk request: 202 with the task, once it is recorded.
fn bulk_doc<'t>(op: TransformOperation<'t>, id: &str, summary: &str) -> TransformOperation<'t> {
    op.doc(id, "tasks", summary)
        .describe(
            "Answers 202 at once with the task; poll `GET /v1/tasks/{id}`. Unknown ids are \
             failures of the task, not of the request.",
        )
        .written::<TaskAccepted>(202, "The task is recorded and will run.")
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<DeactivateUsers>();
    out.add::<ReactivateUsers>();
    out.add::<DeleteUsers>();
    out.add::<ExportUsers>();
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<TaskResource>();
    out.add::<TaskPage>();
    out.add::<TaskAccepted>();
}

query_params! {
    /// Query of `GET /v1/tasks`.
    pub(crate) struct ListTasksQuery {
        /// Only tasks of this status.
        status: Option<TaskStatus>,
        /// Only tasks of this kind.
        kind: Option<TaskKind>,
        /// Page size, 1 to 100 (default 25).
        #[schemars(range(min = 1, max = 100))]
        limit: Option<u32>,
        /// `next_cursor` of the previous page.
        #[schemars(pattern(crate::extract::CURSOR_PATTERN))]
        cursor: Option<String>,
    }
}

/// `POST /v1/users/deactivate`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeactivateUsers {
    /// 1 to 100 000 user ids (repeats are dropped).
    #[schemars(length(min = 1, max = 100000))]
    user_ids: Vec<String>,
    /// Who asks for it, recorded with each user's event.
    created_by_id: Option<String>,
}

/// `POST /v1/users/reactivate`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReactivateUsers {
    /// 1 to 100 000 user ids (repeats are dropped).
    #[schemars(length(min = 1, max = 100000))]
    user_ids: Vec<String>,
}

/// `POST /v1/users/delete`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteUsers {
    /// 1 to 100 000 user ids (repeats are dropped).
    #[schemars(length(min = 1, max = 100000))]
    user_ids: Vec<String>,
    /// The deletion mode: `soft` (default), `pruning` or `hard`.
    #[serde(default)]
    user: Option<DeleteMode>,
}

/// `POST /v1/users/export`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportUsers {
    /// Up to 100 000 user ids; none (or omitted) exports every user.
    #[serde(default)]
    #[schemars(length(max = 100000))]
    user_ids: Option<Vec<String>>,
    /// Only `ndjson` (the default).
    #[serde(default)]
    format: Option<String>,
    /// Each line carries the user's `password_hash` (as an import line takes it), so the file
    /// imports back into another organization or server with working passwords. The lines
    /// are sealed per user like the rest of the file.
    #[serde(default)]
    include_password_hashes: Option<bool>,
}

/// Checks the id list (1 to 100 000 ids, or none for exports) and drops repeats.
fn ids(user_ids: Vec<String>, may_be_empty: bool) -> ApiResult<Vec<String>> {
    if (!may_be_empty && user_ids.is_empty()) || user_ids.len() > MAX_BULK_IDS {
        let min = if may_be_empty { 0 } else { 1 };
        return Err(ApiError::invalid_field(
            "user_ids",
            format!(
                "must hold {min} to {MAX_BULK_IDS} ids, not {}",
                user_ids.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(user_ids.len());
    Ok(user_ids
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect())
}

/// Records a task and answers 202 once it is durable.
async fn create(
    app: &AppState,
    ctx: &Ctx,
    digest: &[u8; 32],
    created: TaskCreated,
) -> ApiResult<Response> {
    let request = app.request(ctx, Some(digest));
    let accepted = roster_core::tasks::record(app.core(), &request, created).await?;
    Ok(super::common::accepted(accepted))
}

fn bulk(kind: TaskKind, user_ids: Vec<String>) -> TaskCreated {
    TaskCreated {
        kind,
        total: user_ids.len() as u64,
        user_ids,
        mode: None,
        created_by_id: None,
        projection: None,
        server: None,
        on_conflict: None,
        include_password_hashes: false,
    }
}

async fn deactivate(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<DeactivateUsers>,
) -> ApiResult<Response> {
    let mut created = bulk(TaskKind::DeactivateUsers, ids(body.value.user_ids, false)?);
    created.created_by_id = body.value.created_by_id;
    create(&app, &ctx, &body.digest, created).await
}

async fn reactivate(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<ReactivateUsers>,
) -> ApiResult<Response> {
    let created = bulk(TaskKind::ReactivateUsers, ids(body.value.user_ids, false)?);
    create(&app, &ctx, &body.digest, created).await
}

async fn delete(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<DeleteUsers>,
) -> ApiResult<Response> {
    let mut created = bulk(TaskKind::DeleteUsers, ids(body.value.user_ids, false)?);
    created.mode = Some(body.value.user.unwrap_or(DeleteMode::Soft));
    create(&app, &ctx, &body.digest, created).await
}

async fn export(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<ExportUsers>,
) -> ApiResult<Response> {
    if body.value.format.as_deref().is_some_and(|f| f != "ndjson") {
        return Err(ApiError::invalid_field("format", "must be ndjson"));
    }
    let mut created = bulk(
        TaskKind::ExportUsers,
        ids(body.value.user_ids.unwrap_or_default(), true)?,
    );
    created.include_password_hashes = body.value.include_password_hashes.unwrap_or(false);
    create(&app, &ctx, &body.digest, created).await
}

/// A task as the API shows it (docs/contract.md §4).
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Task")]
pub struct TaskResource {
    /// Task id (a ULID).
    id: String,
    /// What it does.
    kind: TaskKind,
    /// Where it is in its life.
    status: TaskStatus,
    /// `done + failed = total` once it ends.
    progress: Progress,
    /// When it was requested.
    created_at: DateTime<Utc>,
    /// When a worker first took it.
    started_at: Option<DateTime<Utc>>,
    /// When it ended.
    finished_at: Option<DateTime<Utc>>,
    /// Kind-specific result; always `failures` (`[{"user_id", "code", "detail"}]`), and for
    /// exports `format`, `lines`, `bytes`, `expires_at`.
    result: Value,
    /// Why it failed.
    error: Option<String>,
}

fn resource(app: &AppState, org: &str, task: Task) -> ApiResult<TaskResource> {
    let failures: Vec<TaskFailure> = app
        .models()
        .task_failures(org, &task.id)
        .collect::<Result<_, _>>()?;
    let mut result = match task.result {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    result.insert(
        "failures".into(),
        serde_json::to_value(failures).unwrap_or_default(),
    );
    Ok(TaskResource {
        id: task.id,
        kind: task.kind,
        status: task.status,
        progress: task.progress,
        created_at: task.created_at,
        started_at: task.started_at,
        finished_at: task.finished_at,
        result: Value::Object(result),
        error: task.error,
    })
}

/// The task from the read model; a task that exists in the log but is not projected yet is
/// waited for (briefly), so a poll right after the 202 never sees 404.
async fn find(app: &AppState, org: &str, id: &str) -> ApiResult<Task> {
    if let Some(task) = app.models().task(org, id)? {
        return Ok(task);
    }
    if let (Ok(org_id), Ok(_)) = (OrgId::parse(org), roster_domain::UserId::parse(id))
        && app
            .log()
            .stream_version(&stream_of::<Task>(&org_id, id))
            .await?
            .is_some()
    {
        app.wait_for(app.log().head(), Duration::from_secs(5)).await;
        if let Some(task) = app.models().task(org, id)? {
            return Ok(task);
        }
    }
    Err(ApiError::not_found("No task with this id."))
}

async fn show(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(NoQuery::NAMES)?;
    let task = find(&app, ctx.org.as_str(), &id).await?;
    Ok(axum::Json(resource(&app, ctx.org.as_str(), task)?).into_response())
}

/// A page of tasks, newest first.
#[derive(Serialize, JsonSchema)]
pub(crate) struct TaskPage {
    /// The tasks.
    tasks: Vec<TaskResource>,
    /// Pass as `cursor` for the next (older) page.
    next_cursor: Option<String>,
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    field: &str,
    value: &str,
    allowed: &str,
) -> ApiResult<T> {
    serde_json::from_value(Value::String(value.to_owned()))
        .map_err(|_| ApiError::invalid_field(field, format!("must be one of {allowed}")))
}

async fn list(State(app): State<AppState>, ctx: Ctx, query: QueryParams) -> ApiResult<Response> {
    query.only(ListTasksQuery::NAMES)?;
    let status = query
        .get("status")
        .map(|s| parse_enum("status", s, "pending, running, completed, failed, canceled"))
        .transpose()?;
    let kind = query
        .get("kind")
        .map(|k| parse_enum("kind", k, "deactivate_users, reactivate_users, delete_users, export_users, import_users, rebuild_projection"))
        .transpose()?;
    let limit = query.number("limit", 1, 100)?.unwrap_or(25) as usize;
    let page = app
        .models()
        .tasks(ctx.org.as_str(), status, kind, limit, query.get("cursor"))?;
    let tasks = page
        .tasks
        .into_iter()
        .map(|t| resource(&app, ctx.org.as_str(), t))
        .collect::<ApiResult<_>>()?;
    Ok(axum::Json(TaskPage {
        tasks,
        next_cursor: page.next_cursor,
    })
    .into_response())
}

async fn cancel(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let org = ctx.org.as_str();
    find(&app, org, &id).await?;
    for _ in 0..20 {
        let task = roster_core::tasks::load(app.core(), &ctx.org, &id).await?;
        let Some(state) = task.loaded.state.clone() else {
            break;
        };
        if state.status.is_final() {
            return Ok(axum::Json(resource(&app, org, state)?).into_response());
        }
        if let Some(rebuild) = app.live().rebuild()
            && rebuild.task_id == id
            && rebuild.organization_id == org
            && rebuild.phase() == crate::live::Phase::Switching
        {
            return Err(ApiError::new(
                Code::Conflict,
                "The rebuild is switching this server to its new read models; it can no longer \
                 be canceled.",
            ));
        }
        let appended = roster_core::tasks::append(
            app.core(),
            &ctx.org,
            &id,
            &task.loaded,
            &TaskCommand::Cancel,
            ctx.meta.clone(),
        )
        .await;
        match appended {
            Ok((committed, _)) => {
                app.wake_worker();
                app.wait_for(committed.last_position, Duration::from_secs(5))
                    .await;
                let task = find(&app, org, &id).await?;
                return Ok(write_response(
                    StatusCode::OK,
                    resource(&app, org, task)?,
                    committed.last_position,
                ));
            }
            // The worker recorded a chunk meanwhile: look again.
            Err(CommitError::Conflict { .. }) => continue,
            Err(CommitError::Failed(e)) => return Err(e),
            Err(e) => return Err(ApiError::internal(format!("{e:?}"))),
        }
    }
    Err(ApiError::new(
        Code::Conflict,
        "The task is changing too fast to cancel; retry.",
    ))
}

async fn result(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    streams: crate::streams::Streams,
) -> ApiResult<Response> {
    let org = ctx.org.as_str();
    let task = find(&app, org, &id).await?;
    if task.kind != TaskKind::ExportUsers {
        return Err(ApiError::not_found("Only export tasks have a result file."));
    }
    if task.status != TaskStatus::Completed {
        return Err(ApiError::new(
            Code::Conflict,
            format!("The export is {:?}; its file is not ready.", task.status).to_lowercase(),
        ));
    }
    let expired = task
        .finished_at
        .is_some_and(|f| Utc::now() - f > roster_worker::export::RETENTION);
    let body = if expired {
        None
    } else {
        roster_worker::export::stream_result(app.core(), app.exports(), org, &id)
            .await
            .map(axum::body::Body::from_stream)
    };
    let Some(body) = body else {
        return Err(ApiError::new(
            Code::Gone,
            "The export file was kept 24 hours after the task ended and is gone.",
        ));
    };
    // A download is a stream: it counts against the caller's streams while it lasts.
    let permit = streams.gate.admit(&ctx.caller)?;
    let body = crate::streams::holding(body, permit);
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
