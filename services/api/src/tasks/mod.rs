//! Bulk operations as pollable tasks (API.md §4, DESIGN.md §Tasks).
//!
//! A task is an aggregate of its own, on the stream `task-<id>`: `TaskCreated` is appended (and
//! durable) before the 202 goes out; the worker ([`runner`]) claims it with `TaskStarted`
//! (optimistic on the task stream, so only one worker wins), then walks the ids in chunks. Each
//! chunk's user events and its `TaskProgressed` are **one atomic append**: after a crash the
//! task resumes at the last recorded index and no user is acted on twice. Every user event
//! carries the task id as its causation id. Cancellation appends `TaskCanceled`, which moves the
//! task stream's version, so the worker's next chunk fails its check and it stops.

pub mod export;
pub mod rebuild;
pub mod runner;

use roster_domain::task::{TASK_STREAM_PREFIX, Task, TaskCreated, TaskEvent};
use roster_eventlog::{
    AppendError, Committed, ExpectedVersion, NewEvent, Position, StreamAppend, StreamId,
    Transaction,
};
use roster_projections::EventMeta;
use roster_projections::projector::event_time;

use crate::error::ApiResult;
use crate::state::AppState;

/// The stream of a task.
pub fn task_stream(org: &str, id: &str) -> StreamId {
    StreamId::new(org, format!("{TASK_STREAM_PREFIX}{id}"))
}

/// A task's state read from its stream.
#[derive(Clone, Debug)]
pub struct LoadedTask {
    /// The state (`None` if no such task).
    pub task: Option<Task>,
    /// What was asked for.
    pub created: Option<TaskCreated>,
    /// The stream's version.
    pub version: u64,
    /// Position of `TaskCreated`.
    pub created_position: Position,
    /// The request the task came from.
    pub correlation_id: Option<String>,
}

/// A log record for a task event. Task events hold no personal data; their metadata keeps only
/// the public fields (no ip or user agent).
pub fn task_record(event: &TaskEvent, meta: &EventMeta) -> NewEvent {
    let public = EventMeta {
        ip: None,
        user_agent: None,
        ..meta.clone()
    };
    NewEvent {
        id: ulid::Ulid::new(),
        event_type: event.event_type().to_owned(),
        schema_version: 1,
        data: event.to_data().into(),
        metadata: serde_json::to_vec(&public)
            .expect("metadata serializes")
            .into(),
    }
}

impl AppState {
    /// Reads a task from the log (never from the read model: the worker must see its own writes).
    pub async fn load_task(&self, org: &str, id: &str) -> ApiResult<LoadedTask> {
        let records = self
            .log()
            .read_stream(&task_stream(org, id), 1, usize::MAX)
            .await?;
        let mut loaded = LoadedTask {
            task: None,
            created: None,
            version: 0,
            created_position: 0,
            correlation_id: None,
        };
        for record in &records {
            let Ok(event) = TaskEvent::from_data(&record.event_type, &record.data) else {
                continue;
            };
            if let TaskEvent::TaskCreated(c) = &event {
                loaded.created = Some(c.clone());
                loaded.created_position = record.position;
                let meta: EventMeta = serde_json::from_slice(&record.metadata).unwrap_or_default();
                loaded.correlation_id = meta.correlation_id;
            }
            loaded.task = Task::apply(
                loaded.task.take(),
                &event,
                (org, id),
                event_time(record.time),
                record.version,
            );
            loaded.version = record.version;
        }
        Ok(loaded)
    }

    /// Appends one event to a task's stream.
    pub async fn append_task_event(
        &self,
        org: &str,
        id: &str,
        expected: ExpectedVersion,
        event: &TaskEvent,
        meta: &EventMeta,
    ) -> Result<Committed, AppendError> {
        let tx = Transaction {
            appends: vec![StreamAppend {
                stream: task_stream(org, id),
                expected,
                events: vec![task_record(event, meta)],
            }],
            reservations: vec![],
        };
        self.log().append(tx).await
    }

    /// Wakes the worker (a task was created or canceled).
    pub fn wake_worker(&self) {
        self.0.worker_wake.notify_one();
    }
}
