//! Bulk tasks (docs/contract.md §4, docs/architecture.md) through the repository: recording one
//! (durable before the 202), loading one from its stream (never from the read model: the worker
//! must see its own writes), and appending to it. The worker crate runs them.
//!
//! A task is an aggregate of its own, on the stream `task-<id>`: `TaskCreated` is appended
//! before the answer; the worker claims it with `TaskStarted` (optimistic on the task stream,
//! so only one worker wins), then walks the ids in chunks. Each chunk's user events and its
//! `TaskProgressed` are one atomic append: after a crash the task resumes at the last
//! recorded index and no user is acted on twice. Every user event carries the task id as its
//! causation id. Cancellation appends `TaskCanceled`, which moves the task stream's version, so
//! the worker's next chunk fails its check and it stops.

use chrono::Utc;
use roster_domain::task::{Task, TaskCommand, TaskCreated, TaskEvent};
use roster_domain::{Aggregate, OrgId};
use roster_eventlog::{Committed, Position};
use roster_projections::EventMeta;
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::{ApiError, ApiResult, Code};
use crate::repository::{CommitError, Loaded, stream_of};
use crate::{Core, Request};

/// A task's state read from its stream.
#[derive(Clone, Debug, Default)]
pub struct LoadedTask {
    /// The state.
    pub loaded: Loaded<Task>,
    /// What was asked for.
    pub created: Option<TaskCreated>,
    /// Position of `TaskCreated`.
    pub created_position: Position,
    /// The request the task came from.
    pub correlation_id: Option<String>,
}

/// What a bulk request answers (202).
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TaskAccepted {
    /// The task; poll `GET /v1/tasks/{task_id}`.
    pub task_id: String,
    /// Log position of the task's creation.
    pub position: u64,
}

/// Reads a task from its stream.
pub async fn load(core: &Core, org: &OrgId, id: &str) -> ApiResult<LoadedTask> {
    let records = core
        .log()
        .read_stream(&stream_of::<Task>(org, id), 1, usize::MAX)
        .await?;
    let mut task = LoadedTask::default();
    for record in &records {
        let decoded = core.codec().decode::<TaskEvent>(record).await?;
        if let TaskEvent::TaskCreated(c) = &decoded.event {
            task.created = Some(c.clone());
            task.created_position = record.position;
            task.correlation_id = decoded.meta.correlation_id.clone();
        }
        let at = roster_domain::Recorded {
            id,
            org: org.as_str(),
            at: roster_domain::time::from_micros(record.time),
            version: record.version,
        };
        task.loaded.fold(&decoded.event, at, record.position);
    }
    Ok(task)
}

/// Appends what `command` decides for a task at the state `loaded`; returns where it landed
/// and the task after it. A conflict means the task moved (a chunk recorded, canceled, taken
/// over).
pub async fn append(
    core: &Core,
    org: &OrgId,
    id: &str,
    loaded: &Loaded<Task>,
    command: &TaskCommand,
    meta: EventMeta,
) -> Result<(Committed, Loaded<Task>), CommitError> {
    core.repo()
        .append(org, id, loaded, command, meta)
        .await?
        .ok_or_else(|| ApiError::internal("a task command recorded nothing").into())
}

/// Records a task (once per `Idempotency-Key`: a repeat gets the first task back) and wakes
/// the worker.
pub async fn record(core: &Core, req: &Request, created: TaskCreated) -> ApiResult<TaskAccepted> {
    record_with_id(core, req, &ulid::Ulid::new().to_string(), created).await
}

/// [`record`] with the task's id chosen by the caller (an import stores its lines under it
/// first). A repeated request answers the first one's task, whose id differs.
pub async fn record_with_id(
    core: &Core,
    req: &Request,
    task_id: &str,
    created: TaskCreated,
) -> ApiResult<TaskAccepted> {
    let task_id = task_id.to_owned();
    let mut work = core.repo().work(&req.org, req.meta.clone());
    work.decide::<Task>(&task_id, &Loaded::default(), &TaskCommand::Create(created))
        .await?;
    if let Some(claim) = &req.idempotency {
        work.claim_first(claim.reservation(Utc::now().timestamp_micros()));
    }
    match work.commit().await {
        Ok(committed) => {
            core.wake_worker();
            Ok(TaskAccepted {
                task_id,
                position: committed.map_or(0, |c| c.last_position),
            })
        }
        Err(CommitError::Taken {
            owner, position, ..
        }) if req.idempotency.is_some() => {
            let seen = crate::IdempotencyClaim::holder(&owner, position);
            if !req.idempotency.as_ref().is_some_and(|c| seen.same_as(c)) {
                return Err(ApiError::new(
                    Code::IdempotencyMismatch,
                    "This Idempotency-Key was used with a different request.",
                ));
            }
            let first = core.log().read_all(position.saturating_sub(1), 1).await?;
            let task_id = first
                .first()
                .and_then(|e| e.stream.name.strip_prefix(Task::STREAM_PREFIX))
                .map(str::to_owned)
                .ok_or_else(|| ApiError::internal("idempotent task request without its task"))?;
            Ok(TaskAccepted { task_id, position })
        }
        Err(CommitError::Failed(e)) => Err(e),
        Err(e) => Err(ApiError::internal(format!("{e:?}"))),
    }
}
