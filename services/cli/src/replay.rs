//! `roster replay`: rebuild the read models offline from the log (the server must be stopped;
//! the embedded log's directory lock makes sure of it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use roster_eventlog::EventLog;
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_projections::{Codec, location, rebuild};
use roster_vault::{BlindIndex, FileKeyStore, KeyStore};

/// `roster replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The data directory of a stopped server.
    #[arg(long, env = "ROSTER_STORE", default_value = "./data")]
    store: PathBuf,
    /// The projection to rebuild. Every read model shares one checkpoint, so `read_models`
    /// (all of them) is the one there is.
    #[arg(long, default_value = "read_models")]
    projection: String,
    /// sled's cache while rebuilding, in MiB (the server is stopped: memory is there to use).
    #[arg(long, default_value_t = 1024)]
    cache_mb: u64,
    /// Events applied per batch (one atomic write each).
    #[arg(long, default_value_t = rebuild::CHUNK)]
    chunk: usize,
}

/// Rebuilds the read models beside the current ones, then switches to them.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    if args.projection != "read_models" {
        bail!(
            "unknown projection {:?}: the projections are [\"read_models\"]",
            args.projection
        );
    }
    let store = &args.store;
    if !store.join("log").exists() {
        bail!("{} holds no event log", store.display());
    }
    let log = EmbeddedLog::open(&store.join("log"), EmbeddedOptions::default())
        .await
        .context("opening the event log (is the server still running? stop it first)")?;
    let log: Arc<dyn EventLog> = Arc::new(log);
    let head = log.head();

    // A raw scan of the same log first: the ceiling a replay could reach.
    let started = Instant::now();
    let (mut after, mut scanned) = (0, 0u64);
    loop {
        let batch = log.read_all(after, 4096).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        scanned += batch.len() as u64;
    }
    let scan_rate = scanned as f64 / started.elapsed().as_secs_f64().max(1e-9);

    let keys =
        Arc::new(FileKeyStore::open(&store.join("keys.dat")).context("opening the key store")?);
    let secret = roster_vault::load_or_create_secret(&store.join("secrets").join("index.key"))?;
    let codec = Codec::new(keys.clone() as Arc<dyn KeyStore>);
    let dir = location::new_dir(store);
    let bar = ProgressBar::new(head);
    bar.set_style(
        ProgressStyle::with_template(
            "replaying [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let options = rebuild::RebuildOptions {
        cache_bytes: args.cache_mb << 20,
        chunk: args.chunk.max(1),
    };
    let stats = rebuild::rebuild_offline(
        &dir,
        codec,
        BlindIndex::new(secret),
        &log,
        Some(head),
        options,
        |p| bar.set_position(p),
    )
    .await?;
    bar.finish();
    location::switch_to(store, &dir).context("switching to the rebuilt read models")?;
    location::remove_stale(store);
    log.close().await?;
    keys.close();
    println!(
        "replayed {} events in {:.2} s: {:.0} events/s (raw scan of the same log: {:.0} events/s, replay = {:.2} × scan)",
        stats.events,
        stats.elapsed.as_secs_f64(),
        stats.rate(),
        scan_rate,
        stats.rate() / scan_rate.max(1e-9)
    );
    Ok(())
}
