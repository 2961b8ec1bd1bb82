//! Building read models from position 0, beside the live ones.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_eventlog::{EventLog, Position};
use roster_vault::BlindIndex;

use crate::bulk::BulkOptions;
use crate::codec::Codec;
use crate::store::{DEFAULT_CACHE_BYTES, ReadModels, StoreError};

/// Events per batch when the models were not fresh (one sled transaction each).
const BATCH: usize = 4096;

/// Rows of recently touched users a bulk rebuild keeps in memory (about 1 KB each), so the
/// users a chunk updates are mostly found there rather than read back from sled and opened.
pub const ROW_CACHE: usize = 65_536;

/// Events a bulk rebuild folds, seals and writes at a time.
pub const CHUNK: usize = 16_384;

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
    /// Rows of recently touched users kept in memory while bulk loading.
    pub row_cache: usize,
    /// Events per chunk while bulk loading.
    pub chunk: usize,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            row_cache: ROW_CACHE,
            chunk: CHUNK,
        }
    }
}

/// Opens fresh read models in `dir` (which must not hold older ones) and applies the log to
/// them from position 0 up to `until` (or the head at the start when `None`), calling
/// `progress` with each position reached.
///
/// Fresh models are filled by the bulk path (`crate::bulk`: no per-batch transaction, decoding
/// and sealing on every core); when it returns they hold the checkpoint `until` and are
/// flushed, so the live path (`ReadModels::apply_batch`, `ReadModels::run`) can carry on
/// from there. Models that already hold something are brought up to `until` by the live path.
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
    let bulk = BulkOptions {
        catalog: true,
        row_cache: options.row_cache,
        chunk: options.chunk,
    };
    let stats = apply_log(&models, log, until, bulk, &mut progress).await?;
    Ok((models, stats))
}

/// A rebuild for models that are closed as soon as it ends (`roster replay`): the same
/// trees as [`rebuild`], without keeping the in-memory catalog (the next open builds it).
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
    let bulk = BulkOptions {
        catalog: false,
        row_cache: options.row_cache,
        chunk: options.chunk,
    };
    // Models without their catalog must not be used: they are closed here.
    apply_log(&models, log, until, bulk, &mut progress).await
}

async fn apply_log(
    models: &ReadModels,
    log: &Arc<dyn EventLog>,
    until: Option<Position>,
    bulk: BulkOptions,
    progress: &mut impl FnMut(Position),
) -> Result<RebuildStats, StoreError> {
    let until = until.unwrap_or_else(|| log.head());
    let started = Instant::now();
    let mut events = 0;
    if models.is_fresh()? {
        events = models.bulk_load(log, until, bulk, progress).await?;
    }
    while models.checkpoint() < until {
        let want = BATCH.min((until - models.checkpoint()) as usize);
        let batch = log.read_all(models.checkpoint(), want).await?;
        if batch.is_empty() {
            break;
        }
        events += batch.len() as u64;
        models.apply_batch(&batch).await?;
        progress(models.checkpoint());
    }
    models.flush().await?;
    Ok(RebuildStats {
        events,
        elapsed: started.elapsed(),
    })
}
