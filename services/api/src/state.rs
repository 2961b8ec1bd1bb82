//! Shared state of the API: the log, the keys, the read models and the caches.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use roster_domain::User;
use roster_domain::event::Event;
use roster_eventlog::{EventLog, Position, RecordedEvent, Version};
use roster_projections::codec::CodecError;
use roster_projections::{Codec, ReadModels};
use roster_vault::{BlindIndex, KeyStore};
use sha2::{Digest, Sha256};

use crate::password::PasswordHasher;

/// A user's state as loaded from its stream.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The user (`None` if never created or hard-deleted).
    pub user: Option<User>,
    /// The stream's version (0 = no stream).
    pub version: Version,
    /// Position of the stream's last event (0 = none).
    pub last_position: Position,
    /// Version of the event that began the user's latest incarnation: its `UserCreated`, or
    /// after a hard deletion the one that took the id again (0 = never created). A user's
    /// history starts there: the events of an earlier holder of the id are not its own.
    pub since: Version,
}

impl Loaded {
    /// Moves on by one event, which found the user existing or not (`existed`) and left it
    /// as `user`.
    fn advance(&mut self, existed: bool, user: Option<User>, version: Version, position: Position) {
        if !existed && user.is_some() {
            self.since = version;
        }
        self.user = user;
        self.version = version;
        self.last_position = position;
    }

    /// Moves on by one recorded event of the user's stream.
    pub async fn fold(&mut self, codec: &Codec, record: &RecordedEvent) -> Result<(), CodecError> {
        let existed = self.user.is_some();
        let user = codec.fold_user(self.user.take(), record).await?;
        self.advance(existed, user, record.version, record.position);
        Ok(())
    }

    /// Moves on by `events` just committed at `time`: the first at stream version `first`,
    /// the last at log position `position`.
    pub fn apply_committed(
        &mut self,
        events: &[Event],
        time: DateTime<Utc>,
        first: Version,
        position: Position,
    ) {
        for (k, e) in events.iter().enumerate() {
            let version = first + k as u64;
            let existed = self.user.is_some();
            let user = roster_domain::apply(self.user.take(), e, time, version);
            self.advance(existed, user, version, position);
        }
    }
}

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub log: Arc<dyn EventLog>,
    pub codec: Codec,
    /// The read models in use, swappable by a rebuild (see [`AppState::models`]).
    pub live: Arc<crate::live::LiveReadModels>,
    /// This server's identity, kept in `<data_dir>/server_id`: rebuild tasks name the server
    /// whose read models they rebuild.
    pub server_id: String,
    pub blind: BlindIndex,
    pub api_keys: Vec<[u8; 32]>,
    /// Aggregates at a known version, so a command reads only the events since then.
    pub aggregates: quick_cache::sync::Cache<String, Arc<Loaded>>,
    /// Striped locks serializing commands per user within this process; across processes
    /// the log's optimistic concurrency still decides.
    pub user_locks: Vec<tokio::sync::Mutex<()>>,
    pub hasher: PasswordHasher,
    /// Signs and verifies access and custom tokens (see [`AppState::with_token_secret`]).
    pub tokens: crate::tokens::TokenKeys,
    /// Sign-in rate limits per account and per address.
    pub login_limiter: crate::ratelimit::LoginLimiter,
    /// Where exports and other files live.
    pub data_dir: std::path::PathBuf,
    /// Where finished export files are kept (see [`AppState::with_exports`]).
    pub exports: crate::tasks::export::ExportStore,
    /// Wakes the task worker when a task is created or canceled.
    pub worker_wake: tokio::sync::Notify,
    /// This server's metrics (`GET /metrics`); [`Inner::log`] counts its appends here.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Number of lock stripes.
pub(crate) const LOCK_STRIPES: usize = 4096;

impl AppState {
    /// Builds the state. Every append through [`AppState::log`] is counted in its metrics.
    pub fn new(
        log: Arc<dyn EventLog>,
        keys: Arc<dyn KeyStore>,
        models: Arc<ReadModels>,
        blind: BlindIndex,
        api_keys: &[String],
        data_dir: std::path::PathBuf,
    ) -> Self {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let log: Arc<dyn EventLog> =
            Arc::new(crate::metrics::MeteredLog::new(log, metrics.clone()));
        Self(Arc::new(Inner {
            log,
            metrics,
            codec: Codec::new(keys),
            live: Arc::new(crate::live::LiveReadModels::new(
                models,
                roster_projections::location::current_dir(&data_dir),
                data_dir.clone(),
            )),
            server_id: load_or_create_server_id(&data_dir),
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
            tokens: crate::tokens::TokenKeys::new(&default_token_secret(&data_dir)),
            login_limiter: crate::ratelimit::LoginLimiter::default(),
            exports: crate::tasks::export::ExportStore::Local(data_dir.join("exports")),
            data_dir,
            worker_wake: tokio::sync::Notify::new(),
        }))
    }

    /// Keeps finished export files in `exports` instead of `<data_dir>/exports`. Call it right
    /// after [`AppState::new`], before the state is cloned.
    pub fn with_exports(mut self, exports: crate::tasks::export::ExportStore) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("with_exports is called before the state is shared")
            .exports = exports;
        self
    }

    /// Replays at most `rate` events per second when rebuilding the read models (`None`, the
    /// default: as fast as it can). Call it right after [`AppState::new`], before the state
    /// is cloned.
    pub fn with_rebuild_rate(mut self, rate: Option<u32>) -> Self {
        let inner = Arc::get_mut(&mut self.0)
            .expect("with_rebuild_rate is called before the state is shared");
        Arc::get_mut(&mut inner.live)
            .expect("the read models are not shared yet")
            .rebuild_rate = rate.filter(|r| *r > 0);
        self
    }

    /// Signs tokens with `secret` instead of `<data_dir>/secrets/token.key` (a store shared by
    /// several servers hands them all the same secret). Call it right after [`AppState::new`],
    /// before the state is cloned.
    pub fn with_token_secret(mut self, secret: [u8; 32]) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("with_token_secret is called before the state is shared")
            .tokens = crate::tokens::TokenKeys::new(&secret);
        self
    }

    /// SHA-256 digests of the accepted API keys.
    pub fn api_key_digests(&self) -> &[[u8; 32]] {
        &self.0.api_keys
    }

    /// The event log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.0.log
    }

    /// The read models in use now. A rebuild may switch them at any time: a request that
    /// takes them once keeps a consistent copy; taking them again may give newer ones (never
    /// older: see [`crate::live`]).
    pub fn models(&self) -> Arc<ReadModels> {
        self.0.live.get()
    }

    /// The live read models: the swappable handle, the projector, the running rebuild.
    pub fn live(&self) -> &Arc<crate::live::LiveReadModels> {
        &self.0.live
    }

    /// Waits until the read models in use have applied `position` (following a switch to
    /// rebuilt models); false on timeout.
    pub async fn wait_for(&self, position: Position, timeout: std::time::Duration) -> bool {
        self.0.live.wait_for(position, timeout).await
    }

    /// This server's identity (`<data_dir>/server_id`).
    pub fn server_id(&self) -> &str {
        &self.0.server_id
    }

    /// This server's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.0.metrics
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

/// The token key in `<data_dir>/secrets/token.key`, created on first start. If it cannot be
/// read or written, tokens are signed with a key of this process only (they stop working on
/// restart), which is said loudly.
fn default_token_secret(data_dir: &std::path::Path) -> [u8; 32] {
    let path = data_dir.join("secrets").join("token.key");
    match roster_vault::load_or_create_secret(&path) {
        Ok(secret) => secret,
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "cannot keep the token key; tokens will not survive a restart");
            let mut secret = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
            secret
        }
    }
}
