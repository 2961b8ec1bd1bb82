//! `roster events export|tail`: the event log of a running server, as NDJSON.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{Client, ServerArgs};

/// `roster events …`.
#[derive(clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Write every event after a position to a file, one JSON object per line.
    Export {
        /// Start after this log position.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// The file to write (`-` for standard output).
        #[arg(long)]
        out: String,
        /// Only these event types (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
    },
    /// Follow the log live (Server-Sent Events), printing one event per line; reconnects and
    /// resumes after the last event seen.
    Tail {
        /// Start after this log position (default: the current end of the log).
        #[arg(long)]
        after: Option<u64>,
        /// Only these event types (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
    },
}

fn type_params(types: &[String]) -> String {
    types.iter().map(|t| format!("&types={t}")).collect()
}

/// Runs an `events` subcommand.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let client = Client::new(args.server)?;
    match args.command {
        EventsCommand::Export { after, out, types } => export(&client, after, &out, &types).await,
        EventsCommand::Tail { after, types } => tail(&client, after, &types).await,
    }
}

async fn export(client: &Client, after: u64, out: &str, types: &[String]) -> anyhow::Result<()> {
    let head = client.get("/readyz").await?["log_position"]
        .as_u64()
        .unwrap_or(0);
    let bar = ProgressBar::new(head.saturating_sub(after));
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {pos}/{len} positions ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut sink: Box<dyn Write> = if out == "-" {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {out}"))?,
        ))
    };
    let path = format!("/v1/events?after={after}{}", type_params(types));
    let mut body = client
        .get_stream(&path, "application/x-ndjson", &[])
        .await?
        .bytes_stream();
    let (mut lines, mut tail) = (0u64, Vec::new());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("reading the export")?;
        sink.write_all(&chunk)?;
        tail.extend_from_slice(&chunk);
        // Track the last complete line's position for the progress bar.
        if let Some(end) = tail.iter().rposition(|b| *b == b'\n') {
            let complete = &tail[..end];
            lines += complete.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            let last_line = complete.rsplit(|b| *b == b'\n').next().unwrap_or_default();
            if let Ok(event) = serde_json::from_slice::<serde_json::Value>(last_line)
                && let Some(p) = event["position"].as_u64()
            {
                bar.set_position(p.saturating_sub(after));
            }
            tail.drain(..=end);
        }
    }
    sink.flush()?;
    bar.finish();
    eprintln!("exported {lines} events after position {after}");
    Ok(())
}

async fn tail(client: &Client, after: Option<u64>, types: &[String]) -> anyhow::Result<()> {
    let mut last = match after {
        Some(p) => p,
        None => client.get("/readyz").await?["log_position"]
            .as_u64()
            .unwrap_or(0),
    };
    loop {
        let path = format!("/v1/events/stream?after={last}{}", type_params(types));
        let response = match client
            .get_stream(
                &path,
                "text/event-stream",
                &[("last-event-id", last.to_string())],
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e:#}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))
                    .and_then(|v| v.parse::<u64>().ok());
                if let (Some(id), Some(data)) =
                    (id, block.lines().find_map(|l| l.strip_prefix("data: ")))
                {
                    println!("{data}");
                    last = id;
                }
            }
        }
        eprintln!("stream ended; resuming after {last}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
