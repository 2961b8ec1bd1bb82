//! Everything that runs in the background of `roster serve`: the task worker takes unfinished
//! tasks and runs them, several at a time, chunk by chunk, through the same repository as
//! the API's commands ([`roster_core::tasks`] describes the task aggregate).
//!
//! - [`bulk`]: deactivate, reactivate and delete tasks — each chunk's user events and the
//!   task's progress in one atomic append.
//! - [`export`]: export tasks, their files (sealed per user) and their download.
//! - [`rebuild`]: read-model rebuilds beside the live ones, then the switch.
//! - [`webhooks`]: webhook delivery, one holder per webhook.

pub mod bulk;
pub mod export;
pub mod import;
pub mod rebuild;
pub mod webhooks;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;
use roster_core::{ApiError, CommitError, Core, Loaded};
use roster_domain::OrgId;
use roster_domain::task::{
    Task, TaskCommand, TaskCompleted, TaskFailed, TaskKind, TaskStarted, TaskStatus,
};
use roster_eventlog::Committed;
use roster_projections::EventMeta;

pub use export::ExportStore;

/// Tasks run at the same time by one worker.
const MAX_RUNNING: usize = 4;
/// A running task whose worker has shown no progress for this long may be taken over by
/// another worker (scaled-out deployments; a single embedded server takes over at once).
/// Default of [`Worker::with_lease`].
pub const LEASE: Duration = Duration::from_secs(30);

/// Runs tasks.
#[derive(Clone)]
pub struct Worker {
    core: Core,
    exports: ExportStore,
    /// This worker's identity, recorded in `TaskStarted`.
    id: String,
    /// Whether this is the only worker of its store (the embedded store's directory lock makes
    /// it so): tasks left running by a previous process are resumed at once.
    exclusive: bool,
    /// How long a running task of another worker must show no progress before this one
    /// takes it over (when not `exclusive`).
    lease: Duration,
    running: Arc<Mutex<HashSet<String>>>,
    /// Rebuild tasks of other servers' read models (NATS): never run here.
    foreign: Arc<Mutex<HashSet<String>>>,
}

/// Why a task stopped before its end.
pub enum Stop {
    /// Canceled, or taken by another worker: leave it.
    Yielded,
    /// An error: record it as the task's failure.
    Failed(String),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Stop::Failed(e.detail)
    }
}

/// A running task: where its stream is, so each record is optimistic on it.
pub struct Running {
    /// Its organization.
    pub org: OrgId,
    /// Its id.
    pub id: String,
    /// Its state as this worker last recorded it.
    pub loaded: Loaded<Task>,
    /// The metadata its events carry (the task as actor and cause).
    pub meta: EventMeta,
}

impl Running {
    /// Records `command` on the task; a moved stream means it was canceled or taken over.
    pub async fn record(&mut self, core: &Core, command: TaskCommand) -> Result<Committed, Stop> {
        let appended = roster_core::tasks::append(
            core,
            &self.org,
            &self.id,
            &self.loaded,
            &command,
            self.meta.clone(),
        )
        .await;
        match appended {
            Ok((committed, after)) => {
                self.loaded = after;
                Ok(committed)
            }
            Err(e) => Err(stop(e)),
        }
    }
}

/// A refused task append: a moved task stream means canceled or taken over.
pub(crate) fn stop(e: CommitError) -> Stop {
    match e {
        CommitError::Conflict { .. } => Stop::Yielded,
        CommitError::Failed(e) => Stop::Failed(format!("recording the task: {}", e.detail)),
        e => Stop::Failed(format!("recording the task: {e:?}")),
    }
}

impl Worker {
    /// A worker for `core`, keeping export files in `exports`.
    pub fn new(core: Core, exports: ExportStore, exclusive: bool) -> Self {
        Self {
            core,
            exports,
            id: ulid::Ulid::new().to_string(),
            exclusive,
            lease: LEASE,
            running: Arc::default(),
            foreign: Arc::default(),
        }
    }

    /// Sets the takeover lease (default [`LEASE`]). Taking over too early is safe — the
    /// slower worker's next chunk fails its version check and it stops — only wasteful.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// This worker's id (recorded by the tasks and webhooks it holds).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The core it runs on.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Where export files live.
    pub fn exports(&self) -> &ExportStore {
        &self.exports
    }

    /// Runs until the returned task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }

    async fn run(self) {
        // Tasks run in this set: when the worker is aborted (shutdown), dropping the set aborts
        // them too. A task's chunk is one atomic append, so nothing half-done is left behind.
        let mut running = tokio::task::JoinSet::new();
        let mut last_janitor = std::time::Instant::now() - Duration::from_secs(3600);
        loop {
            while running.try_join_next().is_some() {}
            if let Err(e) = self.take_tasks(&mut running) {
                tracing::warn!(error = %e, "could not list tasks");
            }
            if last_janitor.elapsed() > Duration::from_secs(60) {
                last_janitor = std::time::Instant::now();
                export::remove_expired(&self.core, &self.exports).await;
            }
            tokio::select! {
                _ = self.core.worker_woken() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn take_tasks(
        &self,
        set: &mut tokio::task::JoinSet<()>,
    ) -> Result<(), roster_projections::StoreError> {
        for task in self.core.models().unfinished_tasks()? {
            if self.running.lock().len() >= MAX_RUNNING {
                break;
            }
            if !self.claimable(&task) || !self.running.lock().insert(task.id.clone()) {
                continue;
            }
            let worker = self.clone();
            set.spawn(async move {
                let (org, id) = (task.organization_id.clone(), task.id.clone());
                worker.run_task(&org, &id).await;
                worker.running.lock().remove(&id);
                worker.core.wake_worker();
            });
        }
        Ok(())
    }

    fn claimable(&self, task: &Task) -> bool {
        if self.foreign.lock().contains(&task.id) {
            return false;
        }
        match task.status {
            TaskStatus::Pending => true,
            TaskStatus::Running => {
                task.worker.as_deref() != Some(&self.id)
                    && (self.exclusive
                        // A rebuild runs only on its own server (checked in `run_task`), so a
                        // running one another worker holds is of this server's previous
                        // process, which is gone (its read models were locked by it).
                        || task.kind == TaskKind::RebuildProjection
                        || Utc::now() - task.heartbeat_at
                            > chrono::Duration::from_std(self.lease).unwrap_or_default())
            }
            _ => false,
        }
    }

    async fn run_task(&self, org: &OrgId, id: &str) {
        let task = match roster_core::tasks::load(&self.core, org, id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(task = id, error = %e.detail, "could not load task");
                return;
            }
        };
        let (Some(state), Some(created)) = (task.loaded.state.clone(), task.created.clone()) else {
            return;
        };
        if state.status.is_final() {
            return;
        }
        let rebuild = created.kind == TaskKind::RebuildProjection;
        if rebuild && !self.exclusive && created.server.as_deref() != Some(self.core.server_id()) {
            // Another server's read models: that server runs it.
            self.foreign.lock().insert(id.to_owned());
            return;
        }
        // One rebuild at a time: a second one waits here, before it starts.
        let _rebuild_slot = match rebuild {
            true => Some(self.core.live().rebuild_slot.lock().await),
            false => None,
        };
        let mut running = Running {
            org: org.clone(),
            id: id.to_owned(),
            loaded: task.loaded.clone(),
            meta: EventMeta {
                actor: format!("task:{id}"),
                causation_id: Some(id.to_owned()),
                correlation_id: task.correlation_id.clone(),
                ..Default::default()
            },
        };
        let total = match created.kind {
            TaskKind::ExportUsers if created.user_ids.is_empty() => {
                Some(self.core.models().count(org.as_str()) as u64)
            }
            // Events to replay: the log as it is now.
            TaskKind::RebuildProjection => Some(self.core.log().head()),
            _ => None,
        };
        let started = TaskCommand::Start(TaskStarted {
            worker: self.id.clone(),
            total,
        });
        if running.record(&self.core, started).await.is_err() {
            return; // another worker took it, or it changed: look again later
        }
        tracing::info!(task = id, kind = ?created.kind, resume_at = state.next_index, "task started");
        let outcome = match created.kind {
            TaskKind::ExportUsers => export::run(self, &task, &created, &mut running).await,
            TaskKind::ImportUsers => import::run(self, &created, &state, &mut running).await,
            TaskKind::RebuildProjection => {
                let total = total.unwrap_or_default();
                rebuild::run(self, &created, total, &mut running).await
            }
            _ => bulk::run(self, &created, &state, &mut running).await,
        };
        let end = match outcome {
            Ok(result) => TaskCommand::Complete(TaskCompleted { result }),
            Err(Stop::Yielded) => return,
            Err(Stop::Failed(error)) => {
                tracing::warn!(task = id, %error, "task failed");
                TaskCommand::Fail(TaskFailed { error })
            }
        };
        if running.record(&self.core, end).await.is_err() {
            tracing::info!(task = id, "task end not recorded (canceled or taken over)");
        }
    }
}
