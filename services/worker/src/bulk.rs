//! Deactivate, reactivate and delete tasks: the ids walked in chunks from where the task
//! stopped; each chunk's user events and the task's progress are one atomic append, so after
//! a crash the task resumes at its last recorded index and no user is acted on twice.

use std::time::Duration;

use roster_core::repository::Refusal;
use roster_core::{ApiError, CommitError};
use roster_domain::task::{Task, TaskCommand, TaskCreated, TaskFailure, TaskKind, TaskProgressed};
use roster_domain::user::UserCommand;
use roster_domain::{DeleteMode, DomainError, User, UserId};

use crate::{Running, Stop, Worker, stop};

/// Users per chunk: one atomic append, and the longest a task holds any user's lock.
pub const CHUNK: usize = 500;

/// Walks the ids of a deactivate/reactivate/delete task from where it stopped.
pub(crate) async fn run(
    worker: &Worker,
    created: &TaskCreated,
    task: &Task,
    running: &mut Running,
) -> Result<serde_json::Value, Stop> {
    let mut next = task.next_index as usize;
    let (mut done, mut failed) = (task.progress.done, task.progress.failed);
    while next < created.user_ids.len() {
        let end = (next + CHUNK).min(created.user_ids.len());
        let (chunk_done, chunk_failed) = chunk(
            worker,
            created,
            &created.user_ids[next..end],
            end as u64,
            (done, failed),
            running,
        )
        .await?;
        done += chunk_done;
        failed += chunk_failed;
        next = end;
        // Let ordinary commands and other tasks in between chunks.
        tokio::task::yield_now().await;
    }
    Ok(serde_json::json!({}))
}

fn command(created: &TaskCreated) -> UserCommand {
    match created.kind {
        TaskKind::DeactivateUsers => UserCommand::Deactivate {
            created_by_id: created.created_by_id.clone(),
        },
        TaskKind::ReactivateUsers => UserCommand::Reactivate,
        _ => UserCommand::Delete(created.mode.unwrap_or(DeleteMode::Soft)),
    }
}

/// Acts on one chunk: its user events and the task's progress in one atomic append.
/// Returns how many items were done and how many failed.
async fn chunk(
    worker: &Worker,
    created: &TaskCreated,
    chunk: &[String],
    next_index: u64,
    (done_before, failed_before): (u64, u64),
    running: &mut Running,
) -> Result<(u64, u64), Stop> {
    let core = &worker.core;
    let org = running.org.clone();
    let command = command(created);
    let mut failures = Vec::new();
    let mut ids = Vec::with_capacity(chunk.len());
    for raw in chunk {
        match UserId::parse(raw) {
            Ok(id) => ids.push(id),
            Err(m) => failures.push(failure(
                raw,
                &ApiError::not_found(format!("not a user id: {m}")),
            )),
        }
    }
    let _guards = core.lock_users(&org, ids.iter()).await;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let states = futures::future::try_join_all(
            ids.iter()
                .map(|id| core.repo().load::<User>(&org, id.as_str())),
        )
        .await?;
        let mut chunk_failures = failures.clone();
        let mut work = core.repo().work(&org, running.meta.clone());
        let mut staged_users = Vec::with_capacity(ids.len());
        for (id, state) in ids.iter().zip(&states) {
            match work.decide(id.as_str(), state, &command).await {
                Ok(staged) => staged_users.push(staged),
                Err(Refusal::Domain(e)) => chunk_failures.push(domain_failure(id.as_str(), e)),
                Err(Refusal::Failed(e)) => return Err(e.into()),
            }
        }
        roster_core::teams::stage_ended_memberships(&mut work, core.repo(), &staged_users)
            .await
            .map_err(stop)?;
        let failed_now = chunk_failures.len() as u64;
        let done_now = chunk.len() as u64 - failed_now;
        let progress = TaskCommand::Progress(TaskProgressed {
            next_index,
            done: done_before + done_now,
            failed: failed_before + failed_now,
            failures: chunk_failures,
            counters: Default::default(),
        });
        let staged = work
            .decide(&running.id, &running.loaded, &progress)
            .await
            .map_err(|e| Stop::from(ApiError::from(e)))?;
        match work.commit().await {
            Ok(committed) => {
                running.loaded = staged.after(&org, committed.as_ref());
                return Ok((done_now, failed_now));
            }
            // Canceled, or another worker took the task: stop without acting.
            Err(CommitError::Conflict { stream, .. })
                if stream == roster_core::repository::stream_of::<Task>(&org, &running.id) =>
            {
                return Err(Stop::Yielded);
            }
            // A user changed meanwhile (another server's command): decide again.
            Err(CommitError::Conflict { .. }) if attempts < 50 => {
                tokio::time::sleep(Duration::from_millis(attempts.min(20) as u64)).await;
            }
            Err(CommitError::Failed(e))
                if e.code == roster_core::Code::Unavailable && attempts < 50 =>
            {
                tracing::warn!(task = %running.id, error = %e.detail, "log unavailable; retrying the chunk");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(stop(e)),
        }
    }
}

/// A failure as tasks list it: the code of the one error table, and its detail.
fn failure(user_id: &str, e: &ApiError) -> TaskFailure {
    TaskFailure {
        user_id: user_id.to_owned(),
        code: e.code.as_str().to_owned(),
        detail: e.detail.clone(),
        line: None,
    }
}

fn domain_failure(user_id: &str, e: DomainError) -> TaskFailure {
    let detail = e.to_string();
    let mut error = ApiError::from(e);
    // A task lists what went wrong with the item in the domain's words.
    error.detail = detail;
    failure(user_id, &error)
}
