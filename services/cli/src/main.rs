//! `roster`: the server and the operator's commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// jemalloc instead of glibc malloc: a replay spent ~45 % of its CPU in glibc's allocator, and
/// preloading jemalloc took it from 9.7k to 16k events/s (docs/bench.md, "W6"). Off with
/// `--no-default-features` (glibc malloc, which heaptrack can follow).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod client;
mod events;
mod replay;
mod tasks;
mod users;

#[derive(Parser)]
#[command(
    name = "roster",
    version,
    about = "Roster: an event-sourced user-account backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Bulk tasks on a running server: list, show, wait.
    Tasks(tasks::TasksArgs),
    /// Users of a running server: import from an NDJSON file, export to one.
    Users(users::UsersArgs),
    /// The event log of a running server: export to a file, or follow live.
    Events(events::EventsArgs),
    /// Rebuild the read models offline from the log (stop the server first).
    Replay(replay::ReplayArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ROSTER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the log, the data keys and the server secrets live: a directory for the
    /// embedded store, or `nats://host:port[,host:port…]` for NATS JetStream shared by
    /// several servers.
    #[arg(long, env = "ROSTER_STORE", default_value = "./data")]
    store: String,
    /// This server's own directory (read models, export files being written). Default: the
    /// store's directory for the embedded store, `./data` with NATS.
    #[arg(long, env = "ROSTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// NATS: prefix of the stream, subjects and buckets this deployment uses.
    #[arg(long, env = "ROSTER_NATS_NAMESPACE", default_value = "roster")]
    nats_namespace: String,
    /// NATS: replicas of the stream and buckets when they are created (3 on a 3-node cluster).
    #[arg(long, env = "ROSTER_NATS_REPLICAS", default_value_t = 1)]
    nats_replicas: usize,
    /// NATS: seconds a write keeps retrying while JetStream is unreachable or without quorum
    /// before the request gets 503.
    #[arg(long, env = "ROSTER_NATS_TIMEOUT", default_value_t = 10.0)]
    nats_timeout: f64,
    /// Seconds a running task of a vanished server waits before another server takes it over
    /// (NATS only).
    #[arg(long, env = "ROSTER_TASK_LEASE", default_value_t = 30.0)]
    task_lease: f64,
    /// Server API keys, comma-separated. Without one, the embedded store creates a key in its
    /// directory on first start and prints it once; with NATS a key is required.
    #[arg(
        long,
        env = "ROSTER_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_key: Vec<String>,
    /// Log format.
    #[arg(long, env = "ROSTER_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Largest request body, in bytes.
    #[arg(long, env = "ROSTER_BODY_LIMIT", default_value_t = 16 * 1024 * 1024)]
    body_limit: usize,
    /// Most events per second a read-model rebuild (`POST /v1/projections/read_models/rebuild`)
    /// replays, to leave CPU and disk to requests meanwhile. Default: as fast as it can.
    #[arg(long, env = "ROSTER_REBUILD_RATE")]
    rebuild_rate: Option<u32>,
    /// Seconds a request head may take to arrive once the server waits for it (then 408).
    #[arg(long, env = "ROSTER_HEADER_TIMEOUT", default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a handler waits for the next bytes of a request body (then 408).
    #[arg(long, env = "ROSTER_BODY_TIMEOUT", default_value_t = 30.0)]
    body_timeout: f64,
    /// Seconds a connection with no request in flight may stay silent before it is closed.
    #[arg(long, env = "ROSTER_IDLE_TIMEOUT", default_value_t = 60.0)]
    idle_timeout: f64,
    /// Seconds a client may take no response bytes (a stalled stream reader) before it is
    /// cut off.
    #[arg(long, env = "ROSTER_SEND_TIMEOUT", default_value_t = 60.0)]
    send_timeout: f64,
    /// Streams (SSE, NDJSON, export downloads) one API key or client may hold open at once;
    /// more get 429.
    #[arg(long, env = "ROSTER_MAX_STREAMS_PER_KEY", default_value_t = 16)]
    max_streams_per_key: usize,
    /// Let webhooks point at loopback, private, link-local and other reserved addresses
    /// (refused by default, at creation and at every delivery).
    #[arg(long, env = "ROSTER_ALLOW_PRIVATE_WEBHOOKS")]
    allow_private_webhooks: bool,
    /// Guests and anonymous sessions one client address may create a minute.
    #[arg(long, env = "ROSTER_GUESTS_PER_ADDRESS", default_value_t = 30)]
    guests_per_address: u32,
    /// Guests and anonymous sessions one organization may create an hour.
    #[arg(long, env = "ROSTER_GUESTS_PER_ORGANIZATION", default_value_t = 1000)]
    guests_per_organization: u32,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining requests");
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let store = roster_api::Store::parse(&args.store)?;
    let data_dir = match (&args.data_dir, &store) {
        (Some(dir), _) => dir.clone(),
        (None, roster_api::Store::Embedded(dir)) => dir.clone(),
        (None, roster_api::Store::Nats(_)) => PathBuf::from("./data"),
    };
    let mut config = roster_api::Config::with_store(store, data_dir);
    config.listen = args.listen;
    config.api_keys = args.api_key.into_iter().filter(|k| !k.is_empty()).collect();
    config.body_limit = args.body_limit;
    config.nats = roster_api::NatsSettings {
        namespace: args.nats_namespace,
        replicas: args.nats_replicas,
        unavailable_timeout: seconds("--nats-timeout", args.nats_timeout)?,
    };
    config.task_lease = seconds("--task-lease", args.task_lease)?;
    config.rebuild_rate = args.rebuild_rate;
    config.allow_private_webhooks = args.allow_private_webhooks;
    config.guest_limits = roster_api::GuestLimits {
        per_address_per_minute: args.guests_per_address,
        per_organization_per_hour: args.guests_per_organization,
    };
    config.connection = roster_api::ConnectionLimits {
        header_timeout: seconds("--header-timeout", args.header_timeout)?,
        body_timeout: seconds("--body-timeout", args.body_timeout)?,
        idle_timeout: seconds("--idle-timeout", args.idle_timeout)?,
        send_timeout: seconds("--send-timeout", args.send_timeout)?,
    };
    anyhow::ensure!(
        args.max_streams_per_key > 0,
        "--max-streams-per-key must be at least 1"
    );
    config.streams = roster_api::StreamLimits {
        per_key: args.max_streams_per_key,
    };
    let app = roster_api::Application::build(config)
        .await
        .context("starting the server")?;
    if let Some(key) = &app.generated_api_key {
        // Printed once, on the start that created it; it is also in <store>/api_key.
        println!(
            "Created a server API key (stored in {}/api_key): {key}",
            args.store
        );
    }
    tracing::info!(port = app.port(), store = %args.store, "roster is listening");
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} {value}: give a positive number of seconds"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Every file any command writes (logs, read models, keys, exports) is the server user's
    // alone.
    roster_api::private_files();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Commands::Serve(args) => runtime.block_on(serve(args)),
        Commands::Tasks(args) => runtime.block_on(tasks::run(args)),
        Commands::Users(args) => runtime.block_on(users::run(args)),
        Commands::Events(args) => runtime.block_on(events::run(args)),
        Commands::Replay(args) => runtime.block_on(replay::run(args)),
    }
}
