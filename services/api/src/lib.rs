//! Roster's HTTP API (axum). [`Application::build`] opens the stores under a data directory,
//! starts the projector and binds the listener; [`Application::run_until_stopped`] serves
//! until the shutdown signal, then drains requests and closes the stores cleanly.

pub mod auth;
pub mod commands;
pub mod error;
pub mod events;
pub mod extract;
mod middleware;
pub mod password;
pub mod resource;
pub mod routes;
pub mod state;
pub mod tasks;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use base64::Engine;
use rand::RngCore;
use roster_eventlog::EventLog;
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_projections::{Codec, ReadModels};
use roster_vault::{BlindIndex, FileKeyStore, KeyStore};

pub use state::AppState;

/// How `roster serve` is configured (DESIGN.md §Configuration).
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Data directory of the embedded store.
    pub data_dir: PathBuf,
    /// Accepted server API keys; empty = use (or create) the key stored in the data dir.
    pub api_keys: Vec<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
}

impl Config {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: data_dir.into(),
            api_keys: Vec::new(),
            body_limit: 16 * 1024 * 1024,
        }
    }
}

/// A built server, bound to its port, ready to run.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    log: Arc<EmbeddedLog>,
    keys: Arc<FileKeyStore>,
    models: Arc<ReadModels>,
    projector: tokio::task::JoinHandle<()>,
    worker: tokio::task::JoinHandle<()>,
    /// The API key created on this start, if none existed (to print once).
    pub generated_api_key: Option<String>,
    /// The API keys the server accepts.
    pub api_keys: Vec<String>,
}

impl Application {
    /// Opens the stores, starts the projector and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let log = Arc::new(
            EmbeddedLog::open(&dir.join("log"), EmbeddedOptions::default())
                .await
                .context("opening the event log")?,
        );
        let keys =
            Arc::new(FileKeyStore::open(&dir.join("keys.dat")).context("opening the key store")?);
        let secret = roster_vault::load_or_create_secret(&dir.join("secrets").join("index.key"))
            .context("loading the index secret")?;
        let blind = BlindIndex::new(secret);
        let codec = Codec::new(keys.clone() as Arc<dyn KeyStore>);
        // A rebuild (`roster replay`) may have switched the read models to a new directory.
        roster_projections::location::remove_stale(dir);
        let models = ReadModels::open(&roster_projections::location::current_dir(dir), codec, blind.clone())
            .await
            .context("opening the read models")?;
        let dyn_log: Arc<dyn EventLog> = log.clone();
        let projector = tokio::spawn(models.clone().run(dyn_log.clone()));

        let (api_keys, generated_api_key) = if config.api_keys.is_empty() {
            let (key, created) = load_or_create_api_key(&dir.join("api_key"))?;
            (vec![key.clone()], created.then_some(key))
        } else {
            (config.api_keys.clone(), None)
        };
        let state = AppState::new(
            dyn_log,
            keys.clone(),
            models.clone(),
            blind,
            &api_keys,
            dir.clone(),
        );
        // The embedded store's directory lock makes this the only worker of its store.
        let worker = tasks::runner::Worker::new(state.clone(), true).spawn();
        let router = middleware::wrap(routes::router(), state.clone(), config.body_limit);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Ok(Self {
            listener,
            router,
            log,
            keys,
            models,
            projector,
            worker,
            generated_api_key,
            api_keys,
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
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await?;
        // A task's chunk is one atomic append: stopping the worker mid-chunk loses nothing,
        // and the task resumes at its last recorded index on the next start.
        self.worker.abort();
        let _ = self.worker.await;
        self.log.close().await.context("closing the event log")?;
        let _ = self.projector.await;
        self.models
            .flush()
            .await
            .context("flushing the read models")?;
        self.keys.close();
        Ok(())
    }
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
