//! Bulk tasks (docs/contract.md §4) as an aggregate of their own: a task's events live on its
//! stream `task-<id>`, and its state is folded from them like a user's.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aggregate::{Aggregate, Decision, Recorded};
use crate::error::DomainError;
use crate::user::DeleteMode;
use crate::values::OrgId;
use crate::{event_set, json_as_is, one_part};

/// Prefix of task stream names.
pub const TASK_STREAM_PREFIX: &str = "task-";

/// What a task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Deactivate users.
    DeactivateUsers,
    /// Reactivate users.
    ReactivateUsers,
    /// Delete users in a mode.
    DeleteUsers,
    /// Export users to an NDJSON file.
    ExportUsers,
    /// Import users from an NDJSON file (`POST /v1/users/import`).
    ImportUsers,
    /// Rebuild a read model beside the live one.
    RebuildProjection,
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Recorded, not started.
    Pending,
    /// A worker is on it.
    Running,
    /// Every item was handled.
    Completed,
    /// Stopped by an error (items done stay done).
    Failed,
    /// Stopped on request (items done stay done).
    Canceled,
}

impl TaskStatus {
    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Canceled
        )
    }
}

/// An item a task could not act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskFailure {
    /// The user (for an import line that names none and could not be read: empty).
    pub user_id: String,
    /// Stable error code (`not_found`, `conflict`, `invalid_request`, `id_taken`, …).
    pub code: String,
    /// What went wrong.
    pub detail: String,
    /// The import line (numbered from 1); only import tasks say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

/// What an import does with a line whose `id` exists (`on_conflict`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// The line fails (`id_taken`).
    #[default]
    Fail,
    /// The existing user stays; the line counts as done.
    Skip,
    /// The existing user is replaced whole by the line.
    Replace,
}

/// A task was requested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskCreated {
    /// What to do.
    pub kind: TaskKind,
    /// The users to act on; for exports, empty means every user.
    #[serde(default)]
    pub user_ids: Vec<String>,
    /// Deletion mode (delete tasks).
    #[serde(default)]
    pub mode: Option<DeleteMode>,
    /// Who asked (deactivation's `created_by_id`).
    #[serde(default)]
    pub created_by_id: Option<String>,
    /// Projection name (rebuild tasks).
    #[serde(default)]
    pub projection: Option<String>,
    /// The server whose read models a rebuild task rebuilds (each server of a NATS
    /// deployment keeps its own): only that server runs it. Absent for other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Number of items (for exports of every user, counted when the task starts).
    pub total: u64,
    /// Import tasks: what to do with a line whose user exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<OnConflict>,
    /// Export tasks: whether lines carry `password_hash`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_password_hashes: bool,
}

/// A worker took the task (again, after a crash or a lost lease).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskStarted {
    /// The worker's id.
    pub worker: String,
    /// The total, if it was only known at start.
    #[serde(default)]
    pub total: Option<u64>,
}

/// A chunk of items was handled (recorded in the same atomic append as the chunk's user events).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskProgressed {
    /// Items handled so far (done or failed) — the index to resume from.
    pub next_index: u64,
    /// Items acted on, or already in the requested state, so far.
    pub done: u64,
    /// Items that could not be acted on, so far.
    pub failed: u64,
    /// The failures of this chunk.
    #[serde(default)]
    pub failures: Vec<TaskFailure>,
    /// Kind-specific counts so far (imports: `created`, `replaced`, `skipped`,
    /// `weak_hashes`), so a resumed task reports the whole run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
}

/// The task ended normally.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskCompleted {
    /// Kind-specific result (for exports: the file's size and line count).
    #[serde(default)]
    pub result: Value,
}

/// The task stopped on an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskFailed {
    /// What went wrong.
    pub error: String,
}

/// The task was canceled; it stops before its next chunk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskCanceled {}

one_part!(public: TaskCreated, TaskStarted, TaskProgressed, TaskCompleted, TaskFailed, TaskCanceled);
json_as_is!(
    TaskCreated,
    TaskStarted,
    TaskProgressed,
    TaskCompleted,
    TaskFailed,
    TaskCanceled
);

event_set! {
    /// Every event of a task.
    pub enum TaskEvent {
        /// See [`TaskCreated`].
        TaskCreated(TaskCreated) = 1,
        /// See [`TaskStarted`].
        TaskStarted(TaskStarted) = 1,
        /// See [`TaskProgressed`].
        TaskProgressed(TaskProgressed) = 1,
        /// See [`TaskCompleted`].
        TaskCompleted(TaskCompleted) = 1,
        /// See [`TaskFailed`].
        TaskFailed(TaskFailed) = 1,
        /// See [`TaskCanceled`].
        TaskCanceled(TaskCanceled) = 1,
    }
}

impl crate::events::KeyedEvents for TaskEvent {}

/// Commands to a task.
#[derive(Clone, Debug)]
pub enum TaskCommand {
    /// Record a new task.
    Create(TaskCreated),
    /// A worker takes it (again).
    Start(TaskStarted),
    /// A chunk was handled (appended together with the chunk's own events).
    Progress(TaskProgressed),
    /// It ended normally.
    Complete(TaskCompleted),
    /// It stopped on an error.
    Fail(TaskFailed),
    /// Stop it before its next chunk.
    Cancel,
}

impl Aggregate for Task {
    type Event = TaskEvent;
    type Command = TaskCommand;
    const STREAM_PREFIX: &'static str = TASK_STREAM_PREFIX;

    fn apply(state: Option<Self>, event: &TaskEvent, at: Recorded<'_>) -> Option<Self> {
        Task::fold(state, event, at)
    }

    fn decide(
        state: Option<&Self>,
        command: &TaskCommand,
    ) -> Result<Decision<TaskEvent>, DomainError> {
        let event = match (state, command) {
            (None, TaskCommand::Create(c)) => TaskEvent::TaskCreated(c.clone()),
            (Some(_), TaskCommand::Create(_)) => {
                return Err(DomainError::Conflict("a task with this id exists"));
            }
            (None, _) => return Err(DomainError::NotFound),
            (Some(t), _) if t.status.is_final() => {
                return Err(DomainError::Conflict("the task has already ended"));
            }
            (Some(_), TaskCommand::Start(s)) => TaskEvent::TaskStarted(s.clone()),
            (Some(_), TaskCommand::Progress(p)) => TaskEvent::TaskProgressed(p.clone()),
            (Some(_), TaskCommand::Complete(c)) => TaskEvent::TaskCompleted(c.clone()),
            (Some(_), TaskCommand::Fail(f)) => TaskEvent::TaskFailed(f.clone()),
            (Some(_), TaskCommand::Cancel) => TaskEvent::TaskCanceled(TaskCanceled {}),
        };
        Ok(Decision::event(event))
    }
}

/// Progress counters (docs/contract.md §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Progress {
    /// Items acted on, or already in the requested state.
    pub done: u64,
    /// Items total.
    pub total: u64,
    /// Items that could not be acted on.
    pub failed: u64,
}

/// A task as its events made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Task id.
    pub id: String,
    /// Organization.
    pub organization_id: OrgId,
    /// What it does.
    pub kind: TaskKind,
    /// Where it is.
    pub status: TaskStatus,
    /// Counters.
    pub progress: Progress,
    /// Index of the next item to handle.
    pub next_index: u64,
    /// The worker that last took it.
    pub worker: Option<String>,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When a worker first took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it last made progress (or started): a worker holding it must show life.
    pub heartbeat_at: DateTime<Utc>,
    /// Kind-specific result.
    pub result: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// The stream version (for optimistic appends).
    pub version: u64,
    /// Kind-specific counts (see [`TaskProgressed::counters`]).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

impl Task {
    /// Folds one event into the state; `None` before `TaskCreated`.
    fn fold(state: Option<Task>, event: &TaskEvent, recorded: Recorded<'_>) -> Option<Task> {
        let (at, version) = (recorded.at, recorded.version);
        let mut task = match (state, event) {
            (None, TaskEvent::TaskCreated(c)) => Task {
                id: recorded.id.to_owned(),
                organization_id: OrgId::parse(recorded.org).ok()?,
                kind: c.kind,
                status: TaskStatus::Pending,
                progress: Progress {
                    done: 0,
                    total: c.total,
                    failed: 0,
                },
                next_index: 0,
                worker: None,
                created_at: at,
                started_at: None,
                finished_at: None,
                heartbeat_at: at,
                result: None,
                error: None,
                version,
                counters: BTreeMap::new(),
            },
            (None, _) => return None,
            (Some(mut task), event) => {
                match event {
                    TaskEvent::TaskCreated(_) => {}
                    TaskEvent::TaskStarted(s) => {
                        task.status = TaskStatus::Running;
                        task.worker = Some(s.worker.clone());
                        task.started_at.get_or_insert(at);
                        if let Some(total) = s.total {
                            task.progress.total = total;
                        }
                    }
                    TaskEvent::TaskProgressed(p) => {
                        task.next_index = p.next_index;
                        task.progress.done = p.done;
                        task.progress.failed = p.failed;
                        if !p.counters.is_empty() {
                            task.counters = p.counters.clone();
                        }
                    }
                    TaskEvent::TaskCompleted(c) => {
                        task.status = TaskStatus::Completed;
                        task.finished_at = Some(at);
                        task.result = Some(c.result.clone());
                    }
                    TaskEvent::TaskFailed(f) => {
                        task.status = TaskStatus::Failed;
                        task.finished_at = Some(at);
                        task.error = Some(f.error.clone());
                    }
                    TaskEvent::TaskCanceled(_) => {
                        task.status = TaskStatus::Canceled;
                        task.finished_at = Some(at);
                    }
                }
                task
            }
        };
        task.heartbeat_at = at;
        task.version = version;
        Some(task)
    }
}
