//! Building read models from position 0, beside the live ones: the projector's own batches,
//! only bigger, with the next chunk read from the log while the current one is applied.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_eventlog::{EventLog, Position};
use roster_vault::BlindIndex;

use crate::codec::Codec;
use crate::store::{DEFAULT_CACHE_BYTES, ReadModels, StoreError};

/// Events a rebuild applies at a time (one atomic write each).
pub const CHUNK: usize = 8192;

/// What a rebuild did.
#[derive(Clone, Copy, Debug)]
pub struct RebuildStats {
    /// Events applied.
    pub events: u64,
    /// Time taken.
    pub elapsed: Duration,
}

impl RebuildStats {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// How a rebuild runs.
#[derive(Clone, Copy, Debug)]
pub struct RebuildOptions {
    /// sled's cache for the new models, in bytes (they keep it if they go live).
    pub cache_bytes: u64,
    /// Events per chunk.
    pub chunk: usize,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            chunk: CHUNK,
        }
    }
}

/// Opens read models in `dir` and applies the log to them from their checkpoint (0 for fresh
/// ones) up to `until` (or the head at the start when `None`), calling `progress` with each
/// position reached. When it returns they hold the checkpoint `until` and are flushed, so the
/// projector ([`ReadModels::run`]) can carry on from there.
pub async fn rebuild(
    dir: &Path,
    codec: Codec,
    blind: BlindIndex,
    log: &Arc<dyn EventLog>,
    until: Option<Position>,
    progress: impl FnMut(Position),
) -> Result<(Arc<ReadModels>, RebuildStats), StoreError> {
    rebuild_with(
        dir,
        codec,
        blind,
        log,
        until,
        RebuildOptions::default(),
        progress,
    )
    .await
}

/// [`rebuild`] with options.
pub async fn rebuild_with(
    dir: &Path,
    codec: Codec,
    blind: BlindIndex,
    log: &Arc<dyn EventLog>,
    until: Option<Position>,
    options: RebuildOptions,
    mut progress: impl FnMut(Position),
) -> Result<(Arc<ReadModels>, RebuildStats), StoreError> {
    let models = ReadModels::open_with_cache(dir, codec, blind, options.cache_bytes).await?;
    let stats = apply_log(&models, log, until, options.chunk, &mut progress).await?;
    Ok((models, stats))
}

/// A rebuild for models that are closed as soon as it ends (`roster replay`).
pub async fn rebuild_offline(
    dir: &Path,
    codec: Codec,
    blind: BlindIndex,
    log: &Arc<dyn EventLog>,
    until: Option<Position>,
    options: RebuildOptions,
    mut progress: impl FnMut(Position),
) -> Result<RebuildStats, StoreError> {
    let models = ReadModels::open_with_cache(dir, codec, blind, options.cache_bytes).await?;
    // Closed as soon as this ends: the catalog is built by whoever opens them next.
    models
        .catalog_kept
        .store(false, std::sync::atomic::Ordering::Relaxed);
    apply_log(&models, log, until, options.chunk, &mut progress).await
}

async fn apply_log(
    models: &ReadModels,
    log: &Arc<dyn EventLog>,
    until: Option<Position>,
    chunk: usize,
    progress: &mut impl FnMut(Position),
) -> Result<RebuildStats, StoreError> {
    let until = until.unwrap_or_else(|| log.head());
    let started = Instant::now();
    let mut events = 0;
    // The next chunk is read and decoded (on the other core) while this one is applied.
    let read = |after: Position| {
        let (log, codec) = (log.clone(), models.codec.clone());
        let want = chunk.min(until.saturating_sub(after) as usize);
        tokio::spawn(async move {
            let batch = log.read_all(after, want).await?;
            let decoded = crate::projector::decode_all(&codec, &batch, after).await?;
            Ok::<_, StoreError>((batch, decoded))
        })
    };
    let mut next = (models.checkpoint() < until).then(|| read(models.checkpoint()));
    while let Some(pending) = next.take() {
        let (batch, decoded) = pending.await.map_err(|_| StoreError::Interrupted)??;
        let Some(last) = batch.last().map(|e| e.position) else {
            break;
        };
        if last < until {
            next = Some(read(last));
        }
        events += batch.len() as u64;
        models.apply_decoded(&batch, decoded).await?;
        progress(models.checkpoint());
    }
    models.flush().await?;
    Ok(RebuildStats {
        events,
        elapsed: started.elapsed(),
    })
}
