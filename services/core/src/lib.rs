//! Roster's services core: what the HTTP API and the background worker share.
//!
//! - [`repository`]: the one repository every aggregate goes through — load (cache + tail),
//!   decide, seal, append with the expected version and the decision's reservations in one
//!   atomic transaction, retry; a [`repository::Work`] spans several streams.
//! - [`users`]: the user commands both front ends call (one user or a batch, idempotent).
//! - [`teams`]: team and membership commands (two aggregates per membership change).
//! - [`idempotency`]: the typed claim of an `Idempotency-Key`.
//! - [`error`]: the one error table (status and stable code of every error, task failures
//!   included).
//! - [`live`]: the read models in use, swappable by a rebuild.
//! - [`password`]: argon2id hashing on a pool of its own.

pub mod error;
pub mod events;
pub mod idempotency;
pub mod imported_hash;
pub mod live;
pub mod password;
pub mod repository;
pub mod resource;
pub mod tasks;
pub mod teams;
pub mod users;

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use roster_domain::{OrgId, UserId};
use roster_eventlog::{EventLog, Position};
use roster_projections::{Codec, EventMeta, ReadModels};
use roster_vault::BlindIndex;

pub use error::{ApiError, ApiResult, Code};
pub use idempotency::IdempotencyClaim;
pub use repository::{AsOf, CommitError, Loaded, Repository, Work, retrying};

/// Number of in-process lock stripes for users.
const LOCK_STRIPES: usize = 4096;

/// Everything the API and the worker share. Cheap to clone.
#[derive(Clone)]
pub struct Core(Arc<Inner>);

struct Inner {
    log: Arc<dyn EventLog>,
    repo: Repository,
    live: Arc<live::LiveReadModels>,
    blind: BlindIndex,
    hasher: password::PasswordHasher,
    server_id: String,
    data_dir: PathBuf,
    /// Striped locks serializing commands per user within this process; across processes
    /// the log's optimistic concurrency still decides.
    user_locks: Vec<tokio::sync::Mutex<()>>,
    /// Wakes the task worker when a task is created or canceled.
    worker_wake: tokio::sync::Notify,
}

/// What a command needs to know of its request.
#[derive(Clone, Debug)]
pub struct Request {
    /// The organization.
    pub org: OrgId,
    /// The metadata recorded on the events it causes.
    pub meta: EventMeta,
    /// Its `Idempotency-Key` claim, if it sent one.
    pub idempotency: Option<IdempotencyClaim>,
    /// `If-Match` as a stream version, if sent.
    pub if_match: Option<u64>,
}

impl Core {
    /// The core over a log (counted by the caller, if it wants), sealing with `codec`, reading
    /// `models` (in `models_dir`, under `data_dir`).
    pub fn new(
        log: Arc<dyn EventLog>,
        codec: Codec,
        models: Arc<ReadModels>,
        models_dir: PathBuf,
        blind: BlindIndex,
        data_dir: PathBuf,
        rebuild_rate: Option<u32>,
    ) -> Self {
        let mut live = live::LiveReadModels::new(models, models_dir, data_dir.clone());
        live.rebuild_rate = rebuild_rate.filter(|r| *r > 0);
        codec.key_pool().refill_if_low();
        Self(Arc::new(Inner {
            repo: Repository::new(
                log.clone(),
                codec,
                blind.clone(),
                repository::DEFAULT_CACHE_BYTES,
            ),
            log,
            live: Arc::new(live),
            blind,
            hasher: password::PasswordHasher::new(),
            server_id: load_or_create_server_id(&data_dir),
            data_dir,
            user_locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            worker_wake: tokio::sync::Notify::new(),
        }))
    }

    /// The event log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.0.log
    }

    /// The repository.
    pub fn repo(&self) -> &Repository {
        &self.0.repo
    }

    /// The codec.
    pub fn codec(&self) -> &Codec {
        self.0.repo.codec()
    }

    /// The read models in use now. A rebuild may switch them at any time: a request that
    /// takes them once keeps a consistent copy; taking them again may give newer ones (never
    /// older: see [`live`]).
    pub fn models(&self) -> Arc<ReadModels> {
        self.0.live.get()
    }

    /// The live read models: the swappable handle, the projector, the running rebuild.
    pub fn live(&self) -> &Arc<live::LiveReadModels> {
        &self.0.live
    }

    /// Waits until the read models in use have applied `position`; false on timeout.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        self.0.live.wait_for(position, timeout).await
    }

    /// The blind index (keyed hashes of unique values).
    pub fn blind(&self) -> &BlindIndex {
        &self.0.blind
    }

    /// The password hasher.
    pub fn hasher(&self) -> &password::PasswordHasher {
        &self.0.hasher
    }

    /// This server's identity (`<data_dir>/server_id`).
    pub fn server_id(&self) -> &str {
        &self.0.server_id
    }

    /// This server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.0.data_dir
    }

    /// Wakes the task worker (a task was created or canceled).
    pub fn wake_worker(&self) {
        self.0.worker_wake.notify_one();
    }

    /// Resolves when [`Core::wake_worker`] is called.
    pub async fn worker_woken(&self) {
        self.0.worker_wake.notified().await
    }

    /// Takes the in-process locks of these users' stripes, in a fixed order.
    pub async fn lock_users<'a>(
        &self,
        org: &OrgId,
        ids: impl Iterator<Item = &'a UserId>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = ids
            .map(|id| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (org.as_str(), id.as_str()).hash(&mut h);
                (h.finish() as usize) % LOCK_STRIPES
            })
            .collect();
        // Sorted, deduplicated order: two batches never wait on each other in a cycle.
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.0.user_locks[s].lock().await);
        }
        guards
    }
}

/// The server id in `<data_dir>/server_id` (a ULID), created on first start. If it cannot be
/// kept, this process gets one of its own (a rebuild it was asked for is then not resumed
/// after a restart), which is said loudly.
fn load_or_create_server_id(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("server_id");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let id = existing.trim();
        if !id.is_empty() {
            return id.to_owned();
        }
    }
    let id = ulid::Ulid::new().to_string();
    let written = (|| {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(id.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        tracing::error!(error = %e, path = %path.display(), "cannot keep the server id; it changes on restart");
    }
    id
}
