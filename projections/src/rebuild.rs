//! Building read models from position 0, beside the live ones.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_eventlog::{EventLog, Position};
use roster_vault::BlindIndex;

use crate::codec::Codec;
use crate::store::{ReadModels, StoreError};

/// Events per batch while rebuilding (one sled transaction each).
const BATCH: usize = 4096;

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

/// Opens fresh read models in `dir` (which must not hold older ones) and applies the log to
/// them from position 0 up to `until` (or the head at the start when `None`), calling
/// `progress` with each position reached.
pub async fn rebuild(
    dir: &Path,
    codec: Codec,
    blind: BlindIndex,
    log: &Arc<dyn EventLog>,
    until: Option<Position>,
    mut progress: impl FnMut(Position),
) -> Result<(Arc<ReadModels>, RebuildStats), StoreError> {
    let models = ReadModels::open(dir, codec, blind).await?;
    let until = until.unwrap_or_else(|| log.head());
    let started = Instant::now();
    let mut events = 0;
    while models.checkpoint() < until {
        let batch = log.read_all(models.checkpoint(), BATCH).await?;
        if batch.is_empty() {
            break;
        }
        events += batch.len() as u64;
        models.apply_batch(&batch).await?;
        progress(models.checkpoint());
    }
    models.flush().await?;
    Ok((
        models,
        RebuildStats {
            events,
            elapsed: started.elapsed(),
        },
    ))
}
