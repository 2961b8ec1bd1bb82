//! Shared state of the API: the log, the keys, the read models and the caches.

use std::sync::Arc;

use roster_domain::User;
use roster_eventlog::{EventLog, Position, Version};
use roster_projections::{Codec, ReadModels};
use roster_vault::{BlindIndex, KeyStore};
use sha2::{Digest, Sha256};

use crate::password::PasswordHasher;

/// A user's state as loaded from its stream.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The user (`None` if never created or hard-deleted).
    pub user: Option<User>,
    /// The stream's version (0 = no stream).
    pub version: Version,
    /// Position of the stream's last event (0 = none).
    pub last_position: Position,
}

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub log: Arc<dyn EventLog>,
    pub codec: Codec,
    pub models: Arc<ReadModels>,
    pub blind: BlindIndex,
    pub api_keys: Vec<[u8; 32]>,
    /// Aggregates at a known version, so a command reads only the events since then.
    pub aggregates: quick_cache::sync::Cache<String, Arc<Loaded>>,
    /// Striped locks serializing commands per user within this process; across processes
    /// the log's optimistic concurrency still decides.
    pub user_locks: Vec<tokio::sync::Mutex<()>>,
    pub hasher: PasswordHasher,
    /// Where exports and other files live.
    pub data_dir: std::path::PathBuf,
    /// Wakes the task worker when a task is created or canceled.
    pub worker_wake: tokio::sync::Notify,
}

/// Number of lock stripes.
pub(crate) const LOCK_STRIPES: usize = 4096;

impl AppState {
    /// Builds the state.
    pub fn new(
        log: Arc<dyn EventLog>,
        keys: Arc<dyn KeyStore>,
        models: Arc<ReadModels>,
        blind: BlindIndex,
        api_keys: &[String],
        data_dir: std::path::PathBuf,
    ) -> Self {
        Self(Arc::new(Inner {
            log,
            codec: Codec::new(keys),
            models,
            blind,
            api_keys: api_keys
                .iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
            aggregates: quick_cache::sync::Cache::new(100_000),
            user_locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: PasswordHasher::new(),
            data_dir,
            worker_wake: tokio::sync::Notify::new(),
        }))
    }

    /// SHA-256 digests of the accepted API keys.
    pub fn api_key_digests(&self) -> &[[u8; 32]] {
        &self.0.api_keys
    }

    /// The event log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.0.log
    }

    /// The read models.
    pub fn models(&self) -> &Arc<ReadModels> {
        &self.0.models
    }
}
