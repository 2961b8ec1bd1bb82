//! Roster's HTTP API (axum). [`Application::build`] opens the stores ([`Store`]: an embedded
//! directory or NATS JetStream), starts the projector and binds the listener;
//! [`Application::run_until_stopped`] serves until the shutdown signal, then drains requests
//! and closes the stores cleanly.

pub mod auth;
pub mod backend;
pub mod extract;
pub mod metrics;
pub(crate) mod middleware;
pub mod params;
pub mod presence;
pub mod ratelimit;
pub mod resource;
pub mod routes;
pub mod schemas;
pub mod serve;
pub mod sessions;
pub mod state;
pub mod streams;
pub mod strict;
pub mod tokens;

pub use roster_core::{error, events, live, password};

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use base64::Engine;
use rand::RngCore;
use roster_core::Core;
use roster_eventlog::EventLog;
use roster_projections::{Codec, ReadModels};
use roster_vault::{BlindIndex, KeyStore};

pub use backend::{NatsSettings, Store};
pub use serve::ConnectionLimits;
pub use state::AppState;
pub use streams::StreamLimits;

/// How `roster serve` is configured (docs/architecture.md, configuration).
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Where the log, the data keys and the server secrets live.
    pub store: Store,
    /// This server's own directory: read models (sled) and export files being written. For
    /// the embedded store it is usually the store's directory; on NATS each server has its
    /// own.
    pub data_dir: PathBuf,
    /// Accepted server API keys; empty = use (or create) the key stored in the embedded
    /// store's directory. Required on NATS.
    pub api_keys: Vec<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Names, replicas and timeouts of the NATS store.
    pub nats: NatsSettings,
    /// How long a task of a vanished worker waits before another server's worker takes it
    /// over (NATS only; the embedded store's single worker resumes at once).
    pub task_lease: Duration,
    /// Largest number of events per second a read-model rebuild
    /// (`POST /v1/projections/read_models/rebuild`) replays, to leave CPU and disk to the
    /// requests meanwhile; `None` (the default): as fast as it can.
    pub rebuild_rate: Option<u32>,
    /// Header, body, idle and send timeouts of every connection.
    pub connection: ConnectionLimits,
    /// Concurrent streams (SSE, NDJSON, export downloads) per credential.
    pub streams: StreamLimits,
    /// Whether webhooks may point at loopback, private and other reserved addresses
    /// (`--allow-private-webhooks`; off by default).
    pub allow_private_webhooks: bool,
    /// How many guests and anonymous sessions may be created (docs/guests.md).
    pub guest_limits: GuestLimits,
}

/// Rate limits on `POST /v1/guests` and `POST /v1/sessions/anonymous`, together.
#[derive(Clone, Copy, Debug)]
pub struct GuestLimits {
    /// Per client address, a minute (`--guests-per-address`, default 30).
    pub per_address_per_minute: u32,
    /// Per organization, an hour (`--guests-per-organization`, default 1 000).
    pub per_organization_per_hour: u32,
}

impl Default for GuestLimits {
    fn default() -> Self {
        Self {
            per_address_per_minute: 30,
            per_organization_per_hour: 1000,
        }
    }
}

impl Config {
    /// Defaults for the embedded store in `data_dir` (which is also the data directory).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self::with_store(Store::Embedded(data_dir.clone()), data_dir)
    }

    /// Defaults for a store and a separate data directory.
    pub fn with_store(store: Store, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store,
            data_dir: data_dir.into(),
            api_keys: Vec::new(),
            body_limit: 16 * 1024 * 1024,
            nats: NatsSettings::default(),
            task_lease: roster_worker::LEASE,
            rebuild_rate: None,
            connection: ConnectionLimits::default(),
            streams: StreamLimits::default(),
            allow_private_webhooks: false,
            guest_limits: GuestLimits::default(),
        }
    }
}

/// A built server, bound to its port, ready to run.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    log: Arc<dyn EventLog>,
    keys: Arc<dyn KeyStore>,
    state: AppState,
    codec: Codec,
    worker: tokio::task::JoinHandle<()>,
    /// Delivers webhooks.
    webhooks: tokio::task::JoinHandle<()>,
    /// Destroys the keys of expired purpose tokens.
    sweeper: tokio::task::JoinHandle<()>,
    /// Prunes expired guests.
    guest_sweeper: tokio::task::JoinHandle<()>,
    /// The API key created on this start, if none existed (to print once).
    pub generated_api_key: Option<String>,
    /// The API keys the server accepts.
    pub api_keys: Vec<String>,
    connection: ConnectionLimits,
}

impl Application {
    /// Opens the stores, starts the projector and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        if matches!(config.store, Store::Nats(_)) && config.api_keys.is_empty() {
            anyhow::bail!(
                "an API key is required with a NATS store (--api-key or ROSTER_API_KEY): \
                 every server of the deployment must accept the same key, so give each the \
                 same one"
            );
        }
        let dir = &config.data_dir;
        // Everything the server writes is for its own user only: keys, personal data (sealed,
        // but with its keys beside it), secrets. The umask also covers files created by
        // libraries (sled), and the walk tightens stores left by releases that made them 0644.
        private_files();
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        restrict_data_dir(dir)
            .with_context(|| format!("making {} private to this user", dir.display()))?;
        let backend = backend::Backend::open(&config.store, dir, &config.nats).await?;
        let secret = backend
            .secrets
            .load_or_create("index")
            .await
            .context("loading the index secret")?;
        let blind = BlindIndex::new(secret);
        // Tokens signed by one server are checked by the others: the key comes from the store.
        let token_secret = backend
            .secrets
            .load_or_create("token")
            .await
            .context("loading the token secret")?;
        let metrics = Arc::new(metrics::Metrics::new());
        // Every append, the API's and the worker's, is counted.
        let log: Arc<dyn EventLog> = Arc::new(metrics::MeteredLog::new(
            backend.log.clone(),
            metrics.clone(),
        ));
        // One codec, so one pool of fresh data keys.
        let codec = Codec::new(backend.keys.clone());
        // A rebuild (`roster replay`, `POST /v1/projections/read_models/rebuild`) may have
        // switched the read models to a new directory, or left a half-built one behind (a
        // crash before its switch): only the pointer file's directory is kept.
        roster_projections::location::remove_stale(dir);
        let models_dir = roster_projections::location::current_dir(dir);
        let models = open_read_models(&models_dir, &backend, &codec, &blind).await?;
        let presence = backend
            .presence
            .open(codec.clone())
            .await
            .context("opening the presence store")?;
        let (api_keys, generated_api_key) =
            match (&backend.api_key_file, config.api_keys.is_empty()) {
                (Some(path), true) => {
                    let (key, created) = load_or_create_api_key(path)?;
                    (vec![key.clone()], created.then_some(key))
                }
                _ => (config.api_keys.clone(), None),
            };
        let core = Core::new(
            log.clone(),
            codec.clone(),
            models,
            models_dir,
            blind,
            dir.clone(),
            config.rebuild_rate,
        );
        core.live().start_projector(log.clone());
        let state = AppState::new(
            core.clone(),
            &api_keys,
            token_secret,
            state::Services {
                exports: backend.exports.clone(),
                metrics,
                allow_private_webhooks: config.allow_private_webhooks,
                guest_limits: config.guest_limits,
                presence,
            },
        );
        let sweeper = tokio::spawn(routes::sweep_token_keys(state.clone()));
        let guest_sweeper = tokio::spawn(routes::sweep_expired_guests(state.clone()));
        let worker = roster_worker::Worker::new(core, backend.exports.clone(), backend.exclusive)
            .with_lease(config.task_lease);
        let webhooks = roster_worker::webhooks::Webhooks::new(
            worker.core().clone(),
            worker.id().to_owned(),
            backend.exclusive,
            config.task_lease,
            config.allow_private_webhooks,
        )
        .spawn();
        let worker = worker.spawn();
        let (routes, document) = routes::build();
        let router = middleware::wrap(
            routes,
            &document,
            state.clone(),
            middleware::Limits {
                body: config.body_limit,
                body_timeout: config.connection.body_timeout,
                streams: config.streams,
            },
        );
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Ok(Self {
            listener,
            router,
            log,
            keys: backend.keys,
            state,
            codec,
            worker,
            webhooks,
            sweeper,
            guest_sweeper,
            generated_api_key,
            api_keys,
            connection: config.connection,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` completes, then drains in-flight requests, stops the projector
    /// and closes the log (writing its checkpoint), the key store and the read models.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        serve::serve(self.listener, self.router, self.connection, shutdown).await?;
        // A task's chunk is one atomic append: stopping the worker mid-chunk loses nothing,
        // and the task resumes at its last recorded index on the next start.
        self.worker.abort();
        let _ = self.worker.await;
        // An unacknowledged webhook batch is sent again by the next holder (at least once).
        self.webhooks.abort();
        let _ = self.webhooks.await;
        self.sweeper.abort();
        let _ = self.sweeper.await;
        self.guest_sweeper.abort();
        let _ = self.guest_sweeper.await;
        self.log.close().await.context("closing the event log")?;
        self.state
            .core()
            .live()
            .shutdown()
            .await
            .context("flushing the read models")?;
        // Keys made ahead of need and never used are destroyed, not left behind.
        if let Err(e) = self.codec.key_pool().close().await {
            tracing::warn!(error = %e, "could not destroy the unused data keys");
        }
        self.keys.close();
        Ok(())
    }
}

/// What the server keeps in its data directory (`docs/architecture.md`): only these are
/// tightened, so a data directory that holds other things too keeps theirs.
fn is_ours(name: &str) -> bool {
    matches!(
        name,
        "log"
            | "keys.dat"
            | "secrets"
            | "exports"
            | "api_key"
            | "server_id"
            | "readmodels.current"
            | "presence"
    ) || name.starts_with("readmodels")
        || name.ends_with(".tmp")
}

/// Makes the data directory and what the server keeps in it private to this user.
fn restrict_data_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(is_ours) {
            roster_eventlog::embedded::restrict_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// Files and directories the process creates are private to its user (umask 077).
pub fn private_files() {
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Opens the read models. Ahead of the log means they were built from another log (a NATS
/// stream that was recreated, a data directory moved between stores): they are derived data,
/// so they are dropped and rebuilt from the log.
async fn open_read_models(
    path: &Path,
    backend: &backend::Backend,
    codec: &Codec,
    blind: &BlindIndex,
) -> anyhow::Result<Arc<ReadModels>> {
    let open = || async {
        ReadModels::open(path, codec.clone(), blind.clone())
            .await
            .context("opening the read models")
    };
    let models = open().await?;
    let head = backend.log.head();
    if models.checkpoint() <= head {
        return Ok(models);
    }
    tracing::warn!(
        read_models = models.checkpoint(),
        log = head,
        "the read models are ahead of the event log: they belong to another log; rebuilding them"
    );
    drop(models);
    std::fs::remove_dir_all(path)
        .with_context(|| format!("removing stale read models {}", path.display()))?;
    open().await
}

/// Reads the API key stored in the data dir, or creates one (returns whether it was created).
fn load_or_create_api_key(path: &Path) -> anyhow::Result<(String, bool)> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let key = existing.trim().to_owned();
        if !key.is_empty() {
            return Ok((key, false));
        }
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = format!(
        "rst_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(key.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok((key, true))
}
