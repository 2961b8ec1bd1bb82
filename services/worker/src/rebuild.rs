//! Rebuild tasks (`POST /v1/projections/{name}/rebuild`): fresh read models built beside the
//! live ones while those keep answering every query, then switched to
//! ([`roster_core::live`]).
//!
//! 1. **Replaying**: `roster_projections::rebuild::rebuild` applies the log from position 0
//!    to its head at the start (the task's `total`) into a new directory
//!    (`<data>/readmodels-<ulid>`), optionally paced (`roster serve --rebuild-rate`).
//! 2. **Catching up**: a projector follows the log on the new models until they reach the head
//!    as it was when this phase began (writes go on meanwhile).
//! 3. **Switching**: the task's last progress record is the point of no return (a cancel
//!    before it wins); then [`roster_core::live::LiveReadModels::switch`] moves the server over.
//!
//! Progress (`done` = events replayed of `total`) is recorded every second; each record is
//! optimistic on the task's stream, so a cancel is noticed within a second, and the new
//! directory is removed. A stop at any point before the pointer file is switched (a crash, a
//! shutdown) leaves the old read models in use; the half-built directory is removed at the
//! next start, and the task starts over then.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use roster_core::Core;
use roster_core::live::{PROJECTION, Phase, RebuildProgress};
use roster_domain::task::{TaskCommand, TaskCreated, TaskProgressed};
use roster_eventlog::{
    AppendError, Committed, EventLog, LogError, Position, RecordedEvent, ReservationInfo, StreamId,
    Transaction, Version,
};
use roster_projections::{ReadModels, location};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{Running, Stop, Worker};

/// How often progress is recorded (and a cancel looked for).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A catch-up that has not moved for this long while its projector fails is given up.
const STALL: Duration = Duration::from_secs(60);

/// Runs a rebuild task from the start (an interrupted rebuild starts over).
pub(crate) async fn run(
    worker: &Worker,
    created: &TaskCreated,
    total: u64,
    running: &mut Running,
) -> Result<Value, Stop> {
    let app = &worker.core;
    let (org, task_id) = (running.org.to_string(), running.id.clone());
    let (org, task_id) = (org.as_str(), task_id.as_str());
    if created.projection.as_deref() != Some(PROJECTION) {
        return Err(Stop::Failed(format!(
            "unknown projection {:?}",
            created.projection.as_deref().unwrap_or_default()
        )));
    }
    let live = app.live().clone();
    let progress = Arc::new(RebuildProgress::new(task_id, org, total));
    let _shown = live.show_rebuild(progress.clone());
    let started = Instant::now();
    let mut building = Building {
        dir: location::new_dir(live.data_dir()),
        models: None,
        projector: None,
    };
    let mut recorder = Recorder { core: app, running };
    tracing::info!(task = task_id, total, dir = %building.dir.display(), "rebuilding the read models");
    let replayed = match replay(app, &progress, &mut building, total, &mut recorder).await {
        Ok(replayed) => replayed,
        Err(stop) => {
            building.discard().await;
            return Err(stop);
        }
    };
    if let Err(stop) = catch_up(app, &progress, &mut building, &mut recorder).await {
        building.discard().await;
        return Err(stop);
    }
    // The point of no return: a cancel recorded before this record wins; after it, the switch
    // goes on. The phase is shown first, so a cancel on this server that loses the race to
    // this record sees it and is refused (rather than recorded after the fact).
    progress.set_phase(Phase::Switching);
    if let Err(stop) = recorder.record(total, true).await {
        building.discard().await;
        return Err(stop);
    }
    let (Some(models), Some(projector)) = (building.models.take(), building.projector.take())
    else {
        return Err(Stop::Failed("the rebuilt read models went missing".into()));
    };
    let dir = building.dir.clone();
    let log = app.log().clone();
    let switching = live.clone();
    // Spawned: a switch stopped half-way (the worker aborted at shutdown) would leave the
    // old models without their projector.
    let switched =
        tokio::spawn(async move { switching.switch(models, dir, projector, log).await }).await;
    let position = match switched {
        Ok(Ok(position)) => position,
        Ok(Err(e)) => {
            building.discard().await;
            return Err(Stop::Failed(e));
        }
        Err(e) => return Err(Stop::Failed(format!("switching: {e}"))),
    };
    let directory = building
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    building.dir = PathBuf::new(); // in use now: nothing to discard
    tracing::info!(task = task_id, position, replayed, "read models rebuilt");
    Ok(json!({
        "projection": PROJECTION,
        "server_id": app.server_id(),
        "replayed": replayed,
        "position": position,
        "directory": directory,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// Phase 1: the log from 0 to `total` into the new directory. Returns the events applied;
/// the new models are left in `building`.
async fn replay(
    app: &Core,
    progress: &RebuildProgress,
    building: &mut Building,
    total: Position,
    recorder: &mut Recorder<'_>,
) -> Result<u64, Stop> {
    let log: Arc<dyn EventLog> = match app.live().rebuild_rate {
        Some(rate) => Arc::new(PacedLog {
            inner: app.log().clone(),
            rate,
        }),
        None => app.log().clone(),
    };
    let position = progress.position_handle();
    let mut replay = Box::pin(roster_projections::rebuild::rebuild(
        &building.dir,
        app.codec().clone(),
        app.blind().clone(),
        &log,
        Some(total),
        move |p| position.store(p, Ordering::Relaxed),
    ));
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.tick().await;
    let result = loop {
        tokio::select! {
            result = &mut replay => break result,
            _ = ticker.tick() => {
                if let Err(stop) = recorder.record(progress.done(), false).await {
                    drop(replay); // closes the half-built models before they are removed
                    return Err(stop);
                }
            }
        }
    };
    drop(replay);
    let (models, stats) =
        result.map_err(|e| Stop::Failed(format!("replaying the log into new read models: {e}")))?;
    progress
        .position_handle()
        .store(models.checkpoint(), Ordering::Relaxed);
    building.models = Some(models);
    Ok(stats.events)
}

/// Phase 2: a projector on the new models, followed until they reach the log's head as it is
/// when this phase begins.
async fn catch_up(
    app: &Core,
    progress: &RebuildProgress,
    building: &mut Building,
    recorder: &mut Recorder<'_>,
) -> Result<(), Stop> {
    progress.set_phase(Phase::CatchingUp);
    let Some(models) = building.models.clone() else {
        return Err(Stop::Failed("the rebuilt read models went missing".into()));
    };
    building.projector = Some(tokio::spawn(models.clone().run(app.log().clone())));
    let target = app.log().head();
    let mut last_record = Instant::now();
    let (mut seen, mut moved_at) = (models.checkpoint(), Instant::now());
    while !models.wait_for(target, Duration::from_millis(100)).await {
        let now = models.checkpoint();
        progress.position_handle().store(now, Ordering::Relaxed);
        if now != seen {
            (seen, moved_at) = (now, Instant::now());
        } else if moved_at.elapsed() > STALL {
            let why = models.failure().unwrap_or_else(|| "no progress".to_owned());
            return Err(Stop::Failed(format!(
                "the new read models stopped at position {now} catching up: {why}"
            )));
        }
        if last_record.elapsed() >= PROGRESS_EVERY {
            last_record = Instant::now();
            recorder.record(progress.done(), false).await?;
        }
    }
    progress
        .position_handle()
        .store(models.checkpoint(), Ordering::Relaxed);
    Ok(())
}

/// The new read models while they are built.
struct Building {
    /// Their directory (empty once they are in use).
    dir: PathBuf,
    models: Option<Arc<ReadModels>>,
    /// The projector following the log on them (phase 2).
    projector: Option<JoinHandle<()>>,
}

impl Building {
    /// Stops their projector, closes them and removes their directory (a cancel or a failure).
    async fn discard(mut self) {
        if let Some(projector) = self.projector.take() {
            projector.abort();
            let _ = projector.await;
        }
        let models = self.models.take();
        let dir = std::mem::take(&mut self.dir);
        if dir.as_os_str().is_empty() {
            return;
        }
        let removed = tokio::task::spawn_blocking(move || {
            drop(models); // sled closes before its files go
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await;
        if !matches!(removed, Ok(Ok(()))) {
            tracing::warn!("could not remove unfinished read models; they go at the next start");
        }
    }
}

impl Drop for Building {
    /// Stopped mid-way (the worker aborted at shutdown): the projector goes; the directory is
    /// removed at the next start (`location::remove_stale`), as after a crash.
    fn drop(&mut self) {
        if let Some(projector) = self.projector.take() {
            projector.abort();
        }
    }
}

/// Records the task's progress, optimistic on its stream: a cancel (or anything else that
/// moved the stream) stops the rebuild.
struct Recorder<'a> {
    core: &'a Core,
    running: &'a mut Running,
}

impl Recorder<'_> {
    /// `must`: the record is the point of no return, so an unavailable log fails the
    /// rebuild; otherwise progress is best effort.
    async fn record(&mut self, done: u64, must: bool) -> Result<(), Stop> {
        let command = TaskCommand::Progress(TaskProgressed {
            next_index: done,
            done,
            failed: 0,
            failures: Vec::new(),
            counters: Default::default(),
        });
        match self.running.record(self.core, command).await {
            Ok(_) => Ok(()),
            Err(Stop::Yielded) => {
                tracing::info!(
                    task = %self.running.id,
                    "rebuild canceled; the new read models are removed"
                );
                Err(Stop::Yielded)
            }
            Err(Stop::Failed(e)) if !must => {
                tracing::warn!(task = %self.running.id, error = %e, "could not record the rebuild's progress");
                Ok(())
            }
            Err(stop) => Err(stop),
        }
    }
}

/// The log, read at most `rate` events per second (in reads of a tenth of that): a paced
/// rebuild leaves CPU and disk to the requests. Only reads are paced; everything else goes
/// straight to the log (and closing it is not this wrapper's business).
struct PacedLog {
    inner: Arc<dyn EventLog>,
    rate: u32,
}

#[async_trait::async_trait]
impl EventLog for PacedLog {
    async fn append(&self, tx: Transaction) -> Result<Committed, AppendError> {
        self.inner.append(tx).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let limit = limit.min((self.rate as usize / 10).max(1));
        let batch = self.inner.read_all(after, limit).await?;
        let due = Duration::from_secs_f64(batch.len() as f64 / f64::from(self.rate));
        tokio::time::sleep(due).await;
        Ok(batch)
    }

    fn subscribe(&self, after: Position) -> BoxStream<'static, Result<RecordedEvent, LogError>> {
        self.inner.subscribe(after)
    }

    fn head(&self) -> Position {
        self.inner.head()
    }

    async fn sync(&self) -> Result<bool, LogError> {
        self.inner.sync().await
    }

    fn writable(&self) -> Result<(), String> {
        self.inner.writable()
    }

    fn watch_head(&self) -> tokio::sync::watch::Receiver<Position> {
        self.inner.watch_head()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>, LogError> {
        self.inner.stream_version(stream).await
    }

    async fn reservation(&self, key: &str) -> Result<Option<ReservationInfo>, LogError> {
        self.inner.reservation(key).await
    }

    async fn close(&self) -> Result<(), LogError> {
        Ok(())
    }
}
