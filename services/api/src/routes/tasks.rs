//! Bulk operations and their tasks (API.md §4).

use std::collections::HashSet;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use roster_domain::DeleteMode;
use roster_domain::task::{
    Progress, Task, TaskCanceled, TaskCreated, TaskEvent, TaskFailure, TaskKind, TaskStatus,
};
use roster_eventlog::{AppendError, ExpectedVersion, Reservation, StreamAppend, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, Json, QueryParams};
use crate::resource::write_response;
use crate::state::AppState;
use crate::tasks::{task_record, task_stream};

/// Most ids in one bulk request.
pub const MAX_BULK_IDS: usize = 100_000;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/deactivate", post(deactivate))
        .route("/v1/users/reactivate", post(reactivate))
        .route("/v1/users/delete", post(delete))
        .route("/v1/users/export", post(export))
        .route("/v1/tasks", get(list))
        .route("/v1/tasks/{id}", get(show))
        .route("/v1/tasks/{id}/cancel", post(cancel))
        .route("/v1/tasks/{id}/result", get(result))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeactivateBody {
    user_ids: Vec<String>,
    created_by_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsBody {
    user_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    user_ids: Vec<String>,
    #[serde(default)]
    user: Option<DeleteMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    #[serde(default)]
    user_ids: Option<Vec<String>>,
    #[serde(default)]
    format: Option<String>,
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

#[derive(Serialize)]
struct Accepted {
    task_id: String,
    position: u64,
}

/// Records a task and answers 202 once it is durable.
async fn create(
    app: &AppState,
    ctx: &Ctx,
    digest: &[u8; 32],
    created: TaskCreated,
) -> ApiResult<Response> {
    let digest = ctx.digest_with(Some(digest));
    let task_id = ulid::Ulid::new().to_string();
    let mut tx = Transaction {
        appends: vec![StreamAppend {
            stream: task_stream(ctx.org.as_str(), &task_id),
            expected: ExpectedVersion::NoStream,
            events: vec![task_record(&TaskEvent::TaskCreated(created), &ctx.meta)],
        }],
        reservations: vec![],
    };
    let idempotency = ctx
        .idempotency_key
        .as_ref()
        .map(|key| crate::commands::idempotency_reservation(&ctx.org, key));
    if let Some(key) = &idempotency {
        tx.reservations.push(Reservation::Claim {
            key: key.clone(),
            owner: format!(
                "{digest}:{}",
                ctx.meta.correlation_id.as_deref().unwrap_or_default()
            ),
            expires_at: Some(
                Utc::now().timestamp_micros() + crate::commands::IDEMPOTENCY_TTL_MICROS,
            ),
        });
    }
    match app.log().append(tx).await {
        Ok(committed) => {
            app.wake_worker();
            let body = Accepted {
                task_id,
                position: committed.last_position,
            };
            Ok(write_response(
                StatusCode::ACCEPTED,
                body,
                committed.last_position,
            ))
        }
        Err(AppendError::ReservationHeld {
            owner, position, ..
        }) if idempotency.is_some() => {
            let first_digest = owner.split_once(':').map_or(owner.as_str(), |(d, _)| d);
            if first_digest != digest {
                return Err(ApiError::new(
                    Code::IdempotencyMismatch,
                    "This Idempotency-Key was used with a different request.",
                ));
            }
            let first = app.log().read_all(position.saturating_sub(1), 1).await?;
            let task_id = first
                .first()
                .and_then(|e| e.stream.name.strip_prefix("task-"))
                .map(str::to_owned)
                .ok_or_else(|| ApiError::internal("idempotent task request without its task"))?;
            Ok(write_response(
                StatusCode::ACCEPTED,
                Accepted { task_id, position },
                position,
            ))
        }
        Err(AppendError::Log(e)) => Err(e.into()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

fn bulk(kind: TaskKind, user_ids: Vec<String>) -> TaskCreated {
    TaskCreated {
        kind,
        total: user_ids.len() as u64,
        user_ids,
        mode: None,
        created_by_id: None,
        projection: None,
    }
}

async fn deactivate(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<DeactivateBody>,
) -> ApiResult<Response> {
    let mut created = bulk(TaskKind::DeactivateUsers, ids(body.value.user_ids, false)?);
    created.created_by_id = body.value.created_by_id;
    create(&app, &ctx, &body.digest, created).await
}

async fn reactivate(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<IdsBody>,
) -> ApiResult<Response> {
    let created = bulk(TaskKind::ReactivateUsers, ids(body.value.user_ids, false)?);
    create(&app, &ctx, &body.digest, created).await
}

async fn delete(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<DeleteBody>,
) -> ApiResult<Response> {
    let mut created = bulk(TaskKind::DeleteUsers, ids(body.value.user_ids, false)?);
    created.mode = Some(body.value.user.unwrap_or(DeleteMode::Soft));
    create(&app, &ctx, &body.digest, created).await
}

async fn export(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<ExportBody>,
) -> ApiResult<Response> {
    if body.value.format.as_deref().is_some_and(|f| f != "ndjson") {
        return Err(ApiError::invalid_field("format", "must be ndjson"));
    }
    let created = bulk(
        TaskKind::ExportUsers,
        ids(body.value.user_ids.unwrap_or_default(), true)?,
    );
    create(&app, &ctx, &body.digest, created).await
}

/// A task as the API shows it (API.md §4).
#[derive(Serialize, schemars::JsonSchema)]
pub struct TaskResource {
    id: String,
    kind: TaskKind,
    status: TaskStatus,
    progress: Progress,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    result: Value,
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
    if roster_domain::UserId::parse(id).is_ok()
        && app
            .log()
            .stream_version(&task_stream(org, id))
            .await?
            .is_some()
    {
        app.models()
            .wait_for(app.log().head(), Duration::from_secs(5))
            .await;
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
    query.only(&[])?;
    let task = find(&app, ctx.org.as_str(), &id).await?;
    Ok(axum::Json(resource(&app, ctx.org.as_str(), task)?).into_response())
}

#[derive(Serialize)]
struct TaskPage {
    tasks: Vec<TaskResource>,
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
    query.only(&["status", "kind", "limit", "cursor"])?;
    let status = query
        .get("status")
        .map(|s| parse_enum("status", s, "pending, running, completed, failed, canceled"))
        .transpose()?;
    let kind = query
        .get("kind")
        .map(|k| parse_enum("kind", k, "deactivate_users, reactivate_users, delete_users, export_users, rebuild_projection"))
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
        let loaded = app.load_task(org, &id).await?;
        let Some(task) = loaded.task else { break };
        if task.status.is_final() {
            return Ok(axum::Json(resource(&app, org, task)?).into_response());
        }
        let event = TaskEvent::TaskCanceled(TaskCanceled {});
        match app
            .append_task_event(
                org,
                &id,
                ExpectedVersion::Exact(loaded.version),
                &event,
                &ctx.meta,
            )
            .await
        {
            Ok(committed) => {
                app.wake_worker();
                app.models()
                    .wait_for(committed.last_position, Duration::from_secs(5))
                    .await;
                let task = find(&app, org, &id).await?;
                return Ok(write_response(
                    StatusCode::OK,
                    resource(&app, org, task)?,
                    committed.last_position,
                ));
            }
            // The worker recorded a chunk meanwhile: look again.
            Err(AppendError::WrongExpectedVersion { .. }) => continue,
            Err(AppendError::Log(e)) => return Err(e.into()),
            Err(e) => return Err(ApiError::internal(e)),
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
        .is_some_and(|f| Utc::now() - f > crate::tasks::export::RETENTION);
    let body = if expired {
        None
    } else {
        crate::tasks::export::stream_result(&app, org, &id).await
    };
    let Some(body) = body else {
        return Err(ApiError::new(
            Code::Gone,
            "The export file was kept 24 hours after the task ended and is gone.",
        ));
    };
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
