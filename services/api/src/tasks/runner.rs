//! The task worker: takes unfinished tasks and runs them, several at a time, chunk by chunk.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;
use roster_domain::task::{
    Task, TaskCompleted, TaskCreated, TaskEvent, TaskFailed, TaskFailure, TaskKind, TaskProgressed,
    TaskStarted, TaskStatus,
};
use roster_domain::{Command, DeleteMode, DomainError, OrgId, UserId, apply, decide};
use roster_eventlog::{AppendError, ExpectedVersion, StreamAppend, Transaction};
use roster_projections::EventMeta;
use roster_projections::projector::event_time;

use super::{task_record, task_stream};
use crate::commands::user_stream;
use crate::error::ApiError;
use crate::state::AppState;

/// Users per chunk: one atomic append, and the longest a task holds any user's lock.
pub const CHUNK: usize = 500;
/// Tasks run at the same time by one worker.
const MAX_RUNNING: usize = 4;
/// A running task whose worker has shown no progress for this long may be taken over by
/// another worker (scaled-out deployments; a single embedded server takes over at once).
/// Default of [`Worker::with_lease`].
pub const LEASE: Duration = Duration::from_secs(30);

/// Runs tasks for an [`AppState`].
#[derive(Clone)]
pub struct Worker {
    pub(super) app: AppState,
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
pub(super) enum Stop {
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

impl Worker {
    /// A worker for `app`.
    pub fn new(app: AppState, exclusive: bool) -> Self {
        Self {
            app,
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
                super::export::remove_expired(&self.app).await;
            }
            tokio::select! {
                _ = self.app.0.worker_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn take_tasks(
        &self,
        set: &mut tokio::task::JoinSet<()>,
    ) -> Result<(), roster_projections::StoreError> {
        for task in self.app.models().unfinished_tasks()? {
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
                worker.app.wake_worker();
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

    async fn run_task(&self, org: &str, id: &str) {
        let loaded = match self.app.load_task(org, id).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(task = id, error = %e.detail, "could not load task");
                return;
            }
        };
        let (Some(task), Some(created)) = (loaded.task.clone(), loaded.created.clone()) else {
            return;
        };
        if task.status.is_final() {
            return;
        }
        let rebuild = created.kind == TaskKind::RebuildProjection;
        if rebuild && !self.exclusive && created.server.as_deref() != Some(self.app.server_id()) {
            // Another server's read models: that server runs it.
            self.foreign.lock().insert(id.to_owned());
            return;
        }
        // One rebuild at a time: a second one waits here, before it starts.
        let _rebuild_slot = match rebuild {
            true => Some(self.app.live().rebuild_slot.lock().await),
            false => None,
        };
        let meta = EventMeta {
            actor: format!("task:{id}"),
            causation_id: Some(id.to_owned()),
            correlation_id: loaded.correlation_id.clone(),
            ..Default::default()
        };
        let total = match created.kind {
            TaskKind::ExportUsers if created.user_ids.is_empty() => {
                Some(self.app.models().count(org) as u64)
            }
            // Events to replay: the log as it is now.
            TaskKind::RebuildProjection => Some(self.app.log().head()),
            _ => None,
        };
        let started = TaskEvent::TaskStarted(TaskStarted {
            worker: self.id.clone(),
            total,
        });
        let mut version = match self
            .app
            .append_task_event(
                org,
                id,
                ExpectedVersion::Exact(loaded.version),
                &started,
                &meta,
            )
            .await
        {
            Ok(_) => loaded.version + 1,
            Err(_) => return, // another worker took it, or it changed: look again later
        };
        tracing::info!(task = id, kind = ?created.kind, resume_at = task.next_index, "task started");
        let outcome = match created.kind {
            TaskKind::ExportUsers => {
                super::export::run(self, org, id, &created, &loaded, &mut version, &meta).await
            }
            TaskKind::RebuildProjection => {
                let total = total.unwrap_or_default();
                super::rebuild::run(self, org, id, &created, total, &mut version, &meta).await
            }
            _ => {
                self.run_bulk(org, id, &created, &task, &mut version, &meta)
                    .await
            }
        };
        let end = match outcome {
            Ok(result) => TaskEvent::TaskCompleted(TaskCompleted { result }),
            Err(Stop::Yielded) => return,
            Err(Stop::Failed(error)) => {
                tracing::warn!(task = id, %error, "task failed");
                TaskEvent::TaskFailed(TaskFailed { error })
            }
        };
        if let Err(e) = self
            .app
            .append_task_event(org, id, ExpectedVersion::Exact(version), &end, &meta)
            .await
        {
            tracing::info!(task = id, error = %e, "task end not recorded (canceled or taken over)");
        }
    }

    /// Walks the ids of a deactivate/reactivate/delete task from where it stopped.
    async fn run_bulk(
        &self,
        org: &str,
        id: &str,
        created: &TaskCreated,
        task: &Task,
        version: &mut u64,
        meta: &EventMeta,
    ) -> Result<serde_json::Value, Stop> {
        let org_id = OrgId::parse(org).map_err(Stop::Failed)?;
        let mut next = task.next_index as usize;
        let (mut done, mut failed) = (task.progress.done, task.progress.failed);
        while next < created.user_ids.len() {
            let end = (next + CHUNK).min(created.user_ids.len());
            let chunk = &created.user_ids[next..end];
            let (chunk_done, failures) = self
                .bulk_chunk(
                    &org_id,
                    id,
                    created,
                    chunk,
                    end as u64,
                    (done, failed),
                    version,
                    meta,
                )
                .await?;
            done += chunk_done;
            failed += failures;
            next = end;
            // Let ordinary commands and other tasks in between chunks.
            tokio::task::yield_now().await;
        }
        Ok(serde_json::json!({}))
    }

    fn command(created: &TaskCreated) -> Command {
        match created.kind {
            TaskKind::DeactivateUsers => Command::Deactivate {
                created_by_id: created.created_by_id.clone(),
            },
            TaskKind::ReactivateUsers => Command::Reactivate,
            _ => Command::Delete(created.mode.unwrap_or(DeleteMode::Soft)),
        }
    }

    /// Acts on one chunk: its user events and the task's progress in one atomic append.
    /// Returns how many items were done and how many failed.
    #[allow(clippy::too_many_arguments)]
    async fn bulk_chunk(
        &self,
        org: &OrgId,
        task_id: &str,
        created: &TaskCreated,
        chunk: &[String],
        next_index: u64,
        (done_before, failed_before): (u64, u64),
        version: &mut u64,
        meta: &EventMeta,
    ) -> Result<(u64, u64), Stop> {
        let app = &self.app;
        let command = Self::command(created);
        let mut failures = Vec::new();
        let mut ids = Vec::with_capacity(chunk.len());
        for raw in chunk {
            match UserId::parse(raw) {
                Ok(id) => ids.push(id),
                Err(m) => failures.push(failure(raw, "not_found", &format!("not a user id: {m}"))),
            }
        }
        let settings = app
            .models()
            .settings(org.as_str())
            .map_err(ApiError::from)?;
        let _guards = app.lock_users(org, ids.iter()).await;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let states =
                futures::future::try_join_all(ids.iter().map(|id| app.load(org, id))).await?;
            let mut chunk_failures = failures.clone();
            let mut tx = Transaction::default();
            let mut written: Vec<(usize, Vec<roster_domain::Event>)> = Vec::new();
            for (i, (id, state)) in ids.iter().zip(&states).enumerate() {
                match decide(state.user.as_ref(), &command) {
                    Ok(events) if events.is_empty() => {}
                    Ok(events) => {
                        let now = Utc::now();
                        let after = events.iter().fold(state.user.clone(), |u, e| {
                            apply(u, e, now, state.version + 1)
                        });
                        for (r, _) in app.reservation_changes(
                            org,
                            id.as_str(),
                            state.user.as_ref(),
                            after.as_ref(),
                            settings.enforce_unique_usernames,
                        ) {
                            tx.reservations.push(r);
                        }
                        let key = match state.user.as_ref() {
                            Some(u) => app.data_key(u, &[]).await?,
                            None => None,
                        };
                        tx.appends.push(StreamAppend {
                            stream: user_stream(org, id),
                            expected: ExpectedVersion::Exact(state.version),
                            events: events
                                .iter()
                                .map(|e| {
                                    app.0
                                        .codec
                                        .encode(e, meta, key.as_ref().map(|(k, d)| (*k, d)))
                                })
                                .collect(),
                        });
                        written.push((i, events));
                    }
                    Err(e) => chunk_failures.push(domain_failure(id.as_str(), e)),
                }
            }
            let failed_now = chunk_failures.len() as u64;
            let done_now = chunk.len() as u64 - failed_now;
            let progress = TaskEvent::TaskProgressed(TaskProgressed {
                next_index,
                done: done_before + done_now,
                failed: failed_before + failed_now,
                failures: chunk_failures,
            });
            let task_stream = task_stream(org.as_str(), task_id);
            tx.appends.push(StreamAppend {
                stream: task_stream.clone(),
                expected: ExpectedVersion::Exact(*version),
                events: vec![task_record(&progress, meta)],
            });
            match app.log().append(tx).await {
                Ok(committed) => {
                    *version += 1;
                    let time = event_time(committed.time);
                    for ((i, events), new_version) in written.into_iter().zip(&committed.versions) {
                        let first = new_version + 1 - events.len() as u64;
                        let mut loaded = states[i].clone();
                        loaded.apply_committed(&events, time, first, committed.last_position);
                        app.remember(org, &ids[i], loaded);
                    }
                    return Ok((done_now, failed_now));
                }
                Err(AppendError::WrongExpectedVersion { stream, .. }) if stream == task_stream => {
                    // Canceled, or another worker took the task: stop without acting.
                    return Err(Stop::Yielded);
                }
                Err(AppendError::WrongExpectedVersion { .. }) if attempts < 50 => {
                    // A user changed meanwhile (another server's command): decide again.
                    tokio::time::sleep(Duration::from_millis(attempts.min(20) as u64)).await;
                }
                Err(AppendError::Log(e)) if attempts < 50 => {
                    tracing::warn!(task = task_id, error = %e, "log unavailable; retrying the chunk");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(Stop::Failed(format!("could not record a chunk: {e}"))),
            }
        }
    }
}

fn failure(user_id: &str, code: &str, detail: &str) -> TaskFailure {
    TaskFailure {
        user_id: user_id.to_owned(),
        code: code.to_owned(),
        detail: detail.to_owned(),
    }
}

fn domain_failure(user_id: &str, e: DomainError) -> TaskFailure {
    let code = match e {
        DomainError::NotFound => "not_found",
        DomainError::Invalid(_) => "invalid_request",
        _ => "conflict",
    };
    failure(user_id, code, &e.to_string())
}
