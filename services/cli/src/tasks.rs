//! `roster tasks list|show|wait`.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::client::{Client, ServerArgs};

/// `roster tasks …`.
#[derive(clap::Args)]
pub struct TasksArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: TasksCommand,
}

#[derive(Subcommand)]
enum TasksCommand {
    /// List tasks, newest first.
    List {
        /// Only tasks with this status.
        #[arg(long)]
        status: Option<String>,
        /// Only tasks of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 25)]
        limit: u32,
    },
    /// Show one task as JSON.
    Show {
        /// Task id.
        id: String,
    },
    /// Wait for a task to end, with a progress bar; exits non-zero unless it completed.
    Wait {
        /// Task id.
        id: String,
    },
}

/// Runs a `tasks` subcommand.
pub async fn run(args: TasksArgs) -> anyhow::Result<()> {
    let client = Client::new(args.server)?;
    match args.command {
        TasksCommand::List {
            status,
            kind,
            limit,
        } => {
            let mut path = format!("/v1/tasks?limit={limit}");
            for (name, value) in [("status", status), ("kind", kind)] {
                if let Some(v) = value {
                    path.push_str(&format!("&{name}={v}"));
                }
            }
            let page = client.get(&path).await?;
            println!(
                "{:<26}  {:<18}  {:<9}  {:>8}  {:>8}  {:>8}",
                "ID", "KIND", "STATUS", "DONE", "FAILED", "TOTAL"
            );
            for task in page["tasks"].as_array().into_iter().flatten() {
                let p = &task["progress"];
                println!(
                    "{:<26}  {:<18}  {:<9}  {:>8}  {:>8}  {:>8}",
                    text(&task["id"]),
                    text(&task["kind"]),
                    text(&task["status"]),
                    p["done"],
                    p["failed"],
                    p["total"]
                );
            }
        }
        TasksCommand::Show { id } => {
            let task = client.get(&format!("/v1/tasks/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&task)?);
        }
        TasksCommand::Wait { id } => {
            wait(&client, &id).await?;
        }
    }
    Ok(())
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// Waits for task `id` to end, with a progress bar; the ended task, or an error unless it
/// completed.
pub(crate) async fn wait(client: &Client, id: &str) -> anyhow::Result<Value> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:>9} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    loop {
        let task = client.get(&format!("/v1/tasks/{id}")).await?;
        let p = &task["progress"];
        let (done, failed, total) = (
            p["done"].as_u64().unwrap_or(0),
            p["failed"].as_u64().unwrap_or(0),
            p["total"].as_u64().unwrap_or(0),
        );
        bar.set_length(total);
        bar.set_position(done + failed);
        let status = text(&task["status"]).to_owned();
        bar.set_message(status.clone());
        match status.as_str() {
            "completed" => {
                bar.finish();
                println!("completed: {done} done, {failed} failed of {total}");
                return Ok(task);
            }
            "failed" | "canceled" => {
                bar.abandon();
                bail!("task {status}: {}", task["error"].as_str().unwrap_or("-"));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
