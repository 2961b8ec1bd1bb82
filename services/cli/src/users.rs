//! `roster users import FILE` and `roster users export`: moving users in and out of a running
//! server (docs/import.md), with progress bars.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::client::{Client, ServerArgs};

/// `roster users …`.
#[derive(clap::Args)]
pub struct UsersArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Import users from an NDJSON file (one user a line; docs/import.md), streamed to the
    /// server; waits for the task and prints its failures.
    Import {
        /// The NDJSON file.
        file: PathBuf,
        /// What a line whose id exists does: fail, skip or replace.
        #[arg(long, default_value = "fail")]
        on_conflict: String,
    },
    /// Export every user to an NDJSON file (sealed by the server until downloaded).
    Export {
        /// Where to write the file.
        #[arg(long, short, default_value = "users.ndjson")]
        output: PathBuf,
        /// Include each user's password hash, so the file imports back with working passwords.
        #[arg(long)]
        include_password_hashes: bool,
    },
}

/// Runs a `users` subcommand.
pub async fn run(args: UsersArgs) -> anyhow::Result<()> {
    let client = Client::new(args.server)?;
    match args.command {
        UsersCommand::Import { file, on_conflict } => import(&client, &file, &on_conflict).await,
        UsersCommand::Export {
            output,
            include_password_hashes,
        } => export(&client, &output, include_password_hashes).await,
    }
}

fn bytes_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

async fn import(client: &Client, file: &PathBuf, on_conflict: &str) -> anyhow::Result<()> {
    let opened = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let len = opened.metadata().await?.len();
    let bar = bytes_bar(len, "upload");
    let counted = bar.clone();
    let stream = tokio_util_frames(opened).inspect_ok(move |chunk| counted.inc(chunk.len() as u64));
    let accepted = client
        .post_body(
            &format!("/v1/users/import?on_conflict={on_conflict}"),
            "application/x-ndjson",
            reqwest::Body::wrap_stream(stream),
        )
        .await?;
    bar.finish();
    let id = accepted["task_id"]
        .as_str()
        .context("the server answered no task")?
        .to_owned();
    println!("import task {id}");
    let task = crate::tasks::wait(client, &id).await?;
    let result = &task["result"];
    println!(
        "created {}, replaced {}, skipped {}, weak hashes {}",
        result["created"], result["replaced"], result["skipped"], result["weak_hashes"]
    );
    let failures = result["failures"].as_array().cloned().unwrap_or_default();
    for f in failures.iter().take(20) {
        println!(
            "line {}: {} {} — {}",
            f["line"],
            f["user_id"].as_str().unwrap_or("-"),
            f["code"].as_str().unwrap_or("-"),
            f["detail"].as_str().unwrap_or("-")
        );
    }
    if failures.len() > 20 {
        println!(
            "… and {} more failed lines (roster tasks show {id})",
            failures.len() - 20
        );
    }
    Ok(())
}

/// The file as a stream of 64 KiB pieces.
fn tokio_util_frames(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 1 << 16];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), file)))
    })
}

async fn export(client: &Client, output: &PathBuf, hashes: bool) -> anyhow::Result<()> {
    let accepted = client
        .post_json(
            "/v1/users/export",
            &json!({"include_password_hashes": hashes}),
        )
        .await?;
    let id = accepted["task_id"]
        .as_str()
        .context("the server answered no task")?
        .to_owned();
    println!("export task {id}");
    let task = crate::tasks::wait(client, &id).await?;
    let size = task["result"]["bytes"].as_u64().unwrap_or(0);
    let response = client
        .get_stream(
            &format!("/v1/tasks/{id}/result"),
            "application/x-ndjson",
            &[],
        )
        .await?;
    let mut out = tokio::fs::File::create(output)
        .await
        .with_context(|| format!("cannot create {}", output.display()))?;
    let bar = bytes_bar(size, "download");
    let mut body = response.bytes_stream();
    let mut lines = 0u64;
    while let Some(piece) = body.try_next().await? {
        lines += piece.iter().filter(|b| **b == b'\n').count() as u64;
        bar.inc(piece.len() as u64);
        out.write_all(&piece).await?;
    }
    out.sync_all().await?;
    bar.finish();
    if task["status"] != "completed" {
        bail!("the export did not complete");
    }
    println!("{lines} users written to {}", output.display());
    Ok(())
}
