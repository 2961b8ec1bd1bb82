//! `roster`: the server and the operator's commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

mod client;
mod events;
mod replay;
mod tasks;

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
    /// Where the log lives: a directory for the embedded store (nats:// and esdb:// are the
    /// distributed stores).
    #[arg(long, env = "ROSTER_STORE", default_value = "./data")]
    store: String,
    /// Server API keys, comma-separated. Without one, a key is created in the data directory
    /// on first start and printed once.
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
    if args.store.contains("://") {
        anyhow::bail!(
            "store {} is not available in this build: only the embedded store (a directory path) is implemented so far",
            args.store
        );
    }
    let mut config = roster_api::Config::new(PathBuf::from(&args.store));
    config.listen = args.listen;
    config.api_keys = args.api_key.into_iter().filter(|k| !k.is_empty()).collect();
    config.body_limit = args.body_limit;
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Commands::Serve(args) => runtime.block_on(serve(args)),
        Commands::Tasks(args) => runtime.block_on(tasks::run(args)),
        Commands::Events(args) => runtime.block_on(events::run(args)),
        Commands::Replay(args) => runtime.block_on(replay::run(args)),
    }
}
