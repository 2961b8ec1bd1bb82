//! The read models this server answers from, and the projector that feeds them — swappable
//! while the server runs. A rebuild (the worker's `rebuild` task) builds fresh read models in a
//! new directory beside these, while these keep serving; once the new ones have caught up,
//! [`LiveReadModels::switch`] freezes the old projector, lets the new models reach the old
//! ones' position, switches the pointer file (`<data>/readmodels.current`), then every request
//! and the projector move to the new models at once. The old directory is removed once no
//! request holds the old models any more (or at the next start, by `location::remove_stale`).
//!
//! Requests take the models with [`LiveReadModels::get`] (an `Arc`, so one request keeps the
//! copy it started with); reads never go backwards across a switch, because the new models
//! are at least where the frozen old ones stopped. Waiting for a position
//! ([`LiveReadModels::wait_for`]) follows a switch instead of waiting on the old copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use roster_eventlog::{EventLog, Position};
use roster_projections::ReadModels;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The name of the one projection there is: every read model (users, the username and email
/// indexes, settings, wallet ledgers, tasks, sessions) shares one checkpoint, so they are
/// rebuilt together (the same name as `roster replay --projection`).
pub const PROJECTION: &str = "read_models";

/// The read models the projection holds (sled trees), as `GET /v1/projections` lists them.
pub const MODELS: &[&str] = &[
    "users",
    "username_index",
    "email_index",
    "settings",
    "wallet_ledger",
    "tasks",
    "task_failures",
    "sessions",
];

/// How long a switch waits for the new models to reach the frozen old ones.
const SWITCH_CATCH_UP: Duration = Duration::from_secs(30);
/// How long the old models may stay held by requests before their directory is left for
/// the next start to remove.
const OLD_MODELS_PATIENCE: Duration = Duration::from_secs(300);

/// The live read models of a server.
pub struct LiveReadModels {
    current: RwLock<Arc<ReadModels>>,
    /// The directory of [`LiveReadModels::current`].
    dir: Mutex<PathBuf>,
    /// Where the pointer file and the read-model directories live.
    data_dir: PathBuf,
    projector: Mutex<Option<JoinHandle<()>>>,
    /// Moves on every switch (wakes [`LiveReadModels::wait_for`]).
    generation: watch::Sender<u64>,
    /// The rebuild running on this server, if any.
    rebuild: Mutex<Option<Arc<RebuildProgress>>>,
    /// Held by a switch and by shutdown, so neither sees the other half-done.
    switching: tokio::sync::Mutex<bool>,
    /// One rebuild at a time: held by the rebuild task for its whole run.
    pub rebuild_slot: tokio::sync::Mutex<()>,
    /// Serializes rebuild requests (look for a running rebuild, then record one).
    pub requests: tokio::sync::Mutex<()>,
    /// Largest number of events per second a rebuild replays (`None`: as fast as it can).
    pub rebuild_rate: Option<u32>,
}

impl LiveReadModels {
    /// The read models in `dir` (the pointer file's directory under `data_dir`).
    pub fn new(models: Arc<ReadModels>, dir: PathBuf, data_dir: PathBuf) -> Self {
        Self {
            current: RwLock::new(models),
            dir: Mutex::new(dir),
            data_dir,
            projector: Mutex::new(None),
            generation: watch::channel(0).0,
            rebuild: Mutex::new(None),
            switching: tokio::sync::Mutex::new(false),
            rebuild_slot: tokio::sync::Mutex::new(()),
            requests: tokio::sync::Mutex::new(()),
            rebuild_rate: None,
        }
    }

    /// The read models in use now.
    pub fn get(&self) -> Arc<ReadModels> {
        self.current.read().clone()
    }

    /// The directory of the read models in use.
    pub fn dir(&self) -> PathBuf {
        self.dir.lock().clone()
    }

    /// Where the read-model directories live.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Starts the projector on the current models (once, at start-up).
    pub fn start_projector(&self, log: Arc<dyn EventLog>) {
        let handle = tokio::spawn(self.get().run(log));
        if let Some(old) = self.projector.lock().replace(handle) {
            old.abort();
        }
    }

    /// Waits until the read models in use have applied `position`, following a switch;
    /// false on timeout.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribed before the models are taken: a switch after this is seen.
        let mut generation = self.generation.subscribe();
        loop {
            let models = self.get();
            if models.checkpoint() >= position {
                return true;
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return false;
            }
            tokio::select! {
                reached = models.wait_for(position, remaining) => return reached,
                changed = generation.changed() => {
                    if changed.is_err() {
                        return models.wait_for(position, remaining).await;
                    }
                }
            }
        }
    }

    /// The rebuild running on this server, if any.
    pub fn rebuild(&self) -> Option<Arc<RebuildProgress>> {
        self.rebuild.lock().clone()
    }

    /// Shows `progress` as this server's running rebuild until the guard is dropped.
    pub fn show_rebuild(self: &Arc<Self>, progress: Arc<RebuildProgress>) -> ShownRebuild {
        *self.rebuild.lock() = Some(progress.clone());
        ShownRebuild {
            live: self.clone(),
            progress,
        }
    }

    /// Makes `new` (in `new_dir`, followed by `projector`) the read models in use: freezes
    /// the old projector, waits for `new` to reach the old models' position, flushes it,
    /// switches the pointer file, then swaps. On an error the old models stay in use (their
    /// projector restarted) and `projector` is stopped. Run it to its end (spawn it): a switch
    /// stopped half-way would leave the old models without a projector.
    pub async fn switch(
        &self,
        new: Arc<ReadModels>,
        new_dir: PathBuf,
        projector: JoinHandle<()>,
        log: Arc<dyn EventLog>,
    ) -> Result<Position, String> {
        let stopped = self.switching.lock().await;
        if *stopped {
            projector.abort();
            return Err("the server is stopping".into());
        }
        let old = self.get();
        let old_projector = self.projector.lock().take();
        if let Some(handle) = old_projector {
            handle.abort();
            let _ = handle.await;
        }
        let target = old.checkpoint();
        let ready = async {
            if !new.wait_for(target, SWITCH_CATCH_UP).await {
                return Err(format!(
                    "the new read models did not reach position {target} within {} s",
                    SWITCH_CATCH_UP.as_secs()
                ));
            }
            new.flush()
                .await
                .map_err(|e| format!("flushing the new read models: {e}"))?;
            let (data_dir, dir) = (self.data_dir.clone(), new_dir.clone());
            tokio::task::spawn_blocking(move || {
                roster_projections::location::switch_to(&data_dir, &dir)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("switching the read-model pointer: {e}"))
        };
        if let Err(e) = ready.await {
            projector.abort();
            *self.projector.lock() = Some(tokio::spawn(old.clone().run(log)));
            return Err(e);
        }
        let position = new.checkpoint();
        let old_dir = std::mem::replace(&mut *self.dir.lock(), new_dir);
        *self.current.write() = new;
        *self.projector.lock() = Some(projector);
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(position, old = %old_dir.display(), new = %self.dir().display(), "switched to the rebuilt read models");
        tokio::spawn(remove_when_released(old, old_dir));
        Ok(position)
    }

    /// Stops the projector (the log must be closed first, so it has returned) once no switch
    /// is under way, and flushes the read models in use. No switch starts after this.
    pub async fn shutdown(&self) -> Result<(), roster_projections::StoreError> {
        let mut stopped = self.switching.lock().await;
        *stopped = true;
        let projector = self.projector.lock().take();
        if let Some(handle) = projector {
            let _ = handle.await;
        }
        self.get().flush().await
    }
}

/// Drops the old models once no request holds them, then removes their directory. If they
/// stay held too long, the directory is left for the next start (`location::remove_stale`).
async fn remove_when_released(old: Arc<ReadModels>, dir: PathBuf) {
    let deadline = tokio::time::Instant::now() + OLD_MODELS_PATIENCE;
    while Arc::strong_count(&old) > 1 {
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(dir = %dir.display(), "old read models still in use; their directory goes at the next start");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let removed = tokio::task::spawn_blocking(move || {
        drop(old); // closes sled before its files go
        std::fs::remove_dir_all(&dir).map(|()| dir)
    })
    .await;
    match removed {
        Ok(Ok(dir)) => tracing::info!(dir = %dir.display(), "removed the old read models"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not remove the old read models"),
        Err(e) => tracing::warn!(error = %e, "could not remove the old read models"),
    }
}

/// Where a rebuild is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Applying the log from position 0 to the head it had when the rebuild started.
    Replaying = 0,
    /// Following the log live until the new models have caught up.
    CatchingUp = 1,
    /// Switching the server to the new models.
    Switching = 2,
}

impl Phase {
    /// As `GET /v1/projections` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Replaying => "replaying",
            Phase::CatchingUp => "catching_up",
            Phase::Switching => "switching",
        }
    }
}

/// A running rebuild, as it goes.
#[derive(Debug)]
pub struct RebuildProgress {
    /// Its task.
    pub task_id: String,
    /// The organization the task was recorded in.
    pub organization_id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Events to replay: the log's head when it started.
    pub total: u64,
    phase: AtomicU8,
    position: Arc<AtomicU64>,
}

impl RebuildProgress {
    /// A rebuild of `total` events starting now.
    pub fn new(task_id: &str, organization_id: &str, total: u64) -> Self {
        Self {
            task_id: task_id.to_owned(),
            organization_id: organization_id.to_owned(),
            started_at: Utc::now(),
            total,
            phase: AtomicU8::new(Phase::Replaying as u8),
            position: Arc::default(),
        }
    }

    /// Where it is.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Replaying,
            1 => Phase::CatchingUp,
            _ => Phase::Switching,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// The position the new models have applied.
    pub fn position(&self) -> Position {
        self.position.load(Ordering::Relaxed)
    }

    /// A handle the replay's progress callback updates.
    pub fn position_handle(&self) -> Arc<AtomicU64> {
        self.position.clone()
    }

    /// Events of the replay applied (`position`, at most `total`).
    pub fn done(&self) -> u64 {
        self.position().min(self.total)
    }
}

/// Clears the shown rebuild when the rebuild ends, however it ends.
pub struct ShownRebuild {
    live: Arc<LiveReadModels>,
    progress: Arc<RebuildProgress>,
}

impl Drop for ShownRebuild {
    fn drop(&mut self) {
        let mut shown = self.live.rebuild.lock();
        if shown
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &self.progress))
        {
            *shown = None;
        }
    }
}
