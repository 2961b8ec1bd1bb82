//! Import tasks (`POST /v1/users/import`). The request's lines were stored whole as the task's
//! file before the task was recorded (the [`ExportStore`](crate::ExportStore): the data
//! directory, or the JetStream object store every server shares); the task reads them from
//! the line it stopped at. Each chunk of lines is one atomic append of its users' events and
//! the task's progress, so after a crash the task resumes at its last recorded line and no
//! user is created twice.
//!
//! A line is a user object (docs/import.md): the fields of a create, plus what the system it
//! comes from kept (`created_at`, verification flags, `status`, `wallet`) and `password` or
//! `password_hash`. A line that cannot be imported is a failure of the task (`line`,
//! `user_id`, `code`, `detail`); the task goes on.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use roster_core::imported_hash::ImportedHash;
use roster_core::repository::Refusal;
use roster_core::{ApiError, Code, CommitError};
use roster_domain::input::UserInput;
use roster_domain::settings::UniqueUsernames;
use roster_domain::task::{
    OnConflict, Task, TaskCommand, TaskCreated, TaskFailure, TaskProgressed,
};
use roster_domain::user::{CreateUser, ImportUser, UserCommand};
use roster_domain::{DomainError, FieldError, Status, Unique, User, UserId};
use serde_json::{Map, Value};

use crate::{Running, Stop, Worker, stop};

/// Lines per chunk: one atomic append.
pub const CHUNK: usize = 500;
/// Longest line, in bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Fields of a user object that only the server sets: ignored, so an export line imports as
/// it is.
const SERVER_FIELDS: &[&str] = &[
    "organization_id",
    "version",
    "updated_at",
    "deactivated_at",
    "deleted_at",
    "teams",
    "identities",
    "online",
    "presence_message",
    "last_seen_at",
    "expires_at",
    "position",
];

/// Counter names of an import's result.
const CREATED: &str = "created";
const REPLACED: &str = "replaced";
const SKIPPED: &str = "skipped";
const WEAK: &str = "weak_hashes";

/// The id a line without one gets: the same on every run of the task.
pub fn derived_id(task_id: &str, line: u64) -> String {
    format!("{task_id}-{line}")
}

/// Runs an import task from the line it stopped at.
pub(crate) async fn run(
    worker: &Worker,
    created: &TaskCreated,
    task: &Task,
    running: &mut Running,
) -> Result<Value, Stop> {
    let (org, task_id) = (running.org.to_string(), running.id.clone());
    let Some(mut lines) = worker.exports.open(&org, &task_id).await else {
        return Err(Stop::Failed("the import's lines are gone".into()));
    };
    let io = |e: std::io::Error| Stop::Failed(format!("reading the import's lines: {e}"));
    let mut number = 0u64;
    while number < task.next_index {
        if lines.next_line().await.map_err(io)?.is_none() {
            break;
        }
        number += 1;
    }
    let mut state = Counts {
        done: task.progress.done,
        failed: task.progress.failed,
        counters: task.counters.clone(),
    };
    let on_conflict = created.on_conflict.unwrap_or_default();
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        while chunk.len() < CHUNK {
            match lines.next_line().await.map_err(io)? {
                Some(text) => {
                    number += 1;
                    chunk.push((number, text));
                }
                None => break,
            }
        }
        if chunk.is_empty() {
            break;
        }
        import_chunk(
            worker,
            &task_id,
            on_conflict,
            chunk,
            number,
            &mut state,
            running,
        )
        .await?;
        tokio::task::yield_now().await;
    }
    drop(lines);
    // The lines held personal data (and maybe passwords): gone once every line is handled.
    worker.exports.remove(&org, &task_id).await;
    let mut result = Map::new();
    for name in [CREATED, REPLACED, SKIPPED, WEAK] {
        result.insert(
            name.into(),
            state.counters.get(name).copied().unwrap_or(0).into(),
        );
    }
    Ok(Value::Object(result))
}

/// What the task has counted so far.
struct Counts {
    done: u64,
    failed: u64,
    counters: BTreeMap<String, u64>,
}

/// One readable line: the command it makes, and what it counts as once appended.
struct Prepared {
    line: u64,
    user_id: UserId,
    command: UserCommand,
    weak: bool,
}

/// What a line came to before anything was appended.
enum Read {
    Import(Box<Prepared>),
    /// An erased user of an export.
    Skipped,
    Failed(TaskFailure),
}

/// Reads, decides and appends one chunk, with the task's progress, in one append.
async fn import_chunk(
    worker: &Worker,
    task_id: &str,
    on_conflict: OnConflict,
    chunk: Vec<(u64, String)>,
    next_index: u64,
    counts: &mut Counts,
    running: &mut Running,
) -> Result<(), Stop> {
    let core = &worker.core;
    let org = running.org.clone();
    let usernames = core
        .models()
        .settings(org.as_str())
        .map_err(|e| Stop::Failed(e.to_string()))?
        .enforce_unique_usernames;
    let mut failures = Vec::new();
    let mut skipped = 0u64;
    let mut items: Vec<Prepared> = Vec::with_capacity(chunk.len());
    let mut ids = HashSet::new();
    for (line, text) in chunk {
        match read_line(worker, &org, task_id, line, &text, on_conflict, usernames).await {
            Read::Import(p) if !ids.insert(p.user_id.clone()) => failures.push(failure(
                line,
                p.user_id.as_str(),
                Code::InvalidRequest,
                "the same id appears twice in the file".into(),
            )),
            Read::Import(p) => items.push(*p),
            Read::Skipped => skipped += 1,
            Read::Failed(f) => failures.push(f),
        }
    }
    let _guards = core
        .lock_users(&org, items.iter().map(|i| &i.user_id))
        .await;
    for attempt in 1.. {
        let states = futures::future::try_join_all(
            items
                .iter()
                .map(|i| core.repo().load::<User>(&org, i.user_id.as_str())),
        )
        .await?;
        let mut work = core.repo().work(&org, running.meta.clone());
        let mut chunk_failures = failures.clone();
        let mut added = BTreeMap::<&str, u64>::new();
        let mut staged_ids = Vec::new();
        for (item, state) in items.iter().zip(&states) {
            if on_conflict == OnConflict::Skip && state.state.is_some() {
                *added.entry(SKIPPED).or_default() += 1;
                continue;
            }
            let existed = state.state.is_some();
            match work
                .decide(item.user_id.as_str(), state, &item.command)
                .await
            {
                Ok(_) => {
                    *added
                        .entry(if existed { REPLACED } else { CREATED })
                        .or_default() += 1;
                    if item.weak {
                        *added.entry(WEAK).or_default() += 1;
                    }
                    staged_ids.push(item.line);
                }
                Err(Refusal::Domain(e)) => chunk_failures.push(domain_failure(item, e)),
                Err(Refusal::Failed(e)) => return Err(e.into()),
            }
        }
        *added.entry(SKIPPED).or_default() += skipped;
        let lines = next_index - (counts.done + counts.failed);
        let failed_now = chunk_failures.len() as u64;
        let mut counters = counts.counters.clone();
        for (name, n) in &added {
            *counters.entry((*name).to_owned()).or_default() += n;
        }
        let progress = TaskCommand::Progress(TaskProgressed {
            next_index,
            done: counts.done + lines - failed_now,
            failed: counts.failed + failed_now,
            failures: chunk_failures,
            counters: counters.clone(),
        });
        let staged = work
            .decide(&running.id, &running.loaded, &progress)
            .await
            .map_err(|e| Stop::from(ApiError::from(e)))?;
        match work.commit().await {
            Ok(committed) => {
                running.loaded = staged.after(&org, committed.as_ref());
                counts.done += lines - failed_now;
                counts.failed += failed_now;
                counts.counters = counters;
                return Ok(());
            }
            Err(CommitError::Conflict { stream, .. })
                if stream == roster_core::repository::stream_of::<Task>(&org, &running.id) =>
            {
                return Err(Stop::Yielded);
            }
            // A username or email another user holds (or two lines of this chunk claim):
            // those lines fail, the others are appended.
            Err(CommitError::Taken {
                unique,
                claimants,
                owner,
                ..
            }) => {
                let losers: Vec<&String> = match claimants.contains(&owner) {
                    true => claimants.iter().filter(|c| **c != owner).collect(),
                    false => claimants.iter().collect(),
                };
                let (code, what) = match unique {
                    Some(Unique::Email(_)) => (Code::EmailTaken, "email"),
                    _ => (Code::UsernameTaken, "username"),
                };
                let before = items.len();
                items.retain(|item| {
                    let lost = losers.iter().any(|l| **l == item.user_id.as_str());
                    if lost {
                        failures.push(failure(
                            item.line,
                            item.user_id.as_str(),
                            code,
                            format!("this {what} is already taken in the organization"),
                        ));
                    }
                    !lost
                });
                if items.len() == before {
                    return Err(Stop::Failed(format!(
                        "a taken {what} that no line of the chunk claims"
                    )));
                }
            }
            Err(CommitError::Conflict { .. }) if attempt < 50 => {
                tokio::time::sleep(Duration::from_millis(attempt.min(20))).await;
            }
            Err(CommitError::Failed(e)) if e.code == Code::Unavailable && attempt < 50 => {
                tracing::warn!(task = %running.id, error = %e.detail, "log unavailable; retrying the chunk");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(stop(e)),
        }
    }
    unreachable!("the loop returns")
}

/// Reads one line into the command that imports it, or says why it cannot be.
async fn read_line(
    worker: &Worker,
    org: &roster_domain::OrgId,
    task_id: &str,
    line: u64,
    text: &str,
    on_conflict: OnConflict,
    usernames: UniqueUsernames,
) -> Read {
    let fail = |user_id: &str, code: Code, detail: String| {
        Read::Failed(failure(line, user_id, code, detail))
    };
    if text.trim().is_empty() {
        return Read::Skipped;
    }
    if text.len() > MAX_LINE_BYTES {
        return fail(
            "",
            Code::InvalidRequest,
            "the line is longer than 1 MiB".into(),
        );
    }
    let mut object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        Ok(_) => {
            return fail(
                "",
                Code::InvalidRequest,
                "a line must be a JSON object".into(),
            );
        }
        Err(e) => {
            return fail(
                "",
                Code::InvalidRequest,
                format!("not JSON (column {})", e.column()),
            );
        }
    };
    let named = object.get("id").and_then(Value::as_str).map(str::to_owned);
    let shown = named.clone().unwrap_or_default();
    if object.get("erased") == Some(&Value::Bool(true)) {
        return Read::Skipped;
    }
    for field in SERVER_FIELDS.iter().chain(&["erased"]) {
        object.remove(*field);
    }
    let extra = match Extra::take(&mut object) {
        Ok(extra) => extra,
        Err(e) => return fail(&shown, Code::InvalidRequest, e.to_string()),
    };
    let input: UserInput = match serde_json::from_value(Value::Object(object)) {
        Ok(input) => input,
        Err(e) => return fail(&shown, Code::InvalidRequest, e.to_string()),
    };
    let valid = match input.validate() {
        Ok(valid) => valid,
        Err(errors) => return fail(&shown, Code::InvalidRequest, describe(&errors)),
    };
    let id = match valid.id {
        Some(id) => id,
        None => match UserId::parse(&derived_id(task_id, line)) {
            Ok(id) => id,
            Err(m) => return fail("", Code::InvalidRequest, m),
        },
    };
    let (password_hash, weak) = match (valid.password, valid.password_hash) {
        (Some(password), _) => match worker.core.hasher().hash(password).await {
            Ok(hash) => (Some(hash), false),
            Err(e) => return fail(id.as_str(), Code::Unavailable, e.to_string()),
        },
        (None, Some(object)) => match ImportedHash::parse(&Value::Object(object)) {
            Ok(hash) => (Some(hash.to_stored()), hash.is_weak()),
            Err(m) => {
                return fail(
                    id.as_str(),
                    Code::InvalidRequest,
                    format!("password_hash: {m}"),
                );
            }
        },
        (None, None) => (None, false),
    };
    let import = ImportUser {
        create: CreateUser {
            id: id.clone(),
            org: org.clone(),
            profile: valid.profile,
            password_hash,
            usernames,
        },
        created_at: extra.created_at,
        email_verified: extra.email_verified,
        phone_verified: extra.phone_verified,
        status: extra.status,
        wallet: extra.wallet,
        replace: on_conflict == OnConflict::Replace,
    };
    Read::Import(Box::new(Prepared {
        line,
        user_id: id,
        command: UserCommand::Import(Box::new(import)),
        weak,
    }))
}

/// What a line holds beyond the fields of a create.
struct Extra {
    created_at: Option<DateTime<Utc>>,
    email_verified: bool,
    phone_verified: bool,
    status: Status,
    wallet: BTreeMap<String, i64>,
}

impl Extra {
    fn take(object: &mut Map<String, Value>) -> Result<Extra, String> {
        fn field<T: serde::de::DeserializeOwned>(
            object: &mut Map<String, Value>,
            name: &str,
        ) -> Result<Option<T>, String> {
            match object.remove(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => serde_json::from_value(v)
                    .map(Some)
                    .map_err(|e| format!("{name}: {e}")),
            }
        }
        let wallet: BTreeMap<String, i64> = field(object, "wallet")?.unwrap_or_default();
        if wallet.len() > 100 {
            return Err("wallet: at most 100 currencies".into());
        }
        for (currency, balance) in &wallet {
            if currency.is_empty()
                || currency.chars().count() > 64
                || currency
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace())
            {
                return Err("wallet: currency names are 1 to 64 characters without spaces".into());
            }
            if *balance < 0 {
                return Err(format!("wallet.{currency}: balances are never negative"));
            }
        }
        Ok(Extra {
            created_at: field(object, "created_at")?,
            email_verified: field(object, "email_verified")?.unwrap_or(false),
            phone_verified: field(object, "phone_verified")?.unwrap_or(false),
            status: field(object, "status")?.unwrap_or(Status::Active),
            wallet,
        })
    }
}

fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

fn failure(line: u64, user_id: &str, code: Code, detail: String) -> TaskFailure {
    TaskFailure {
        user_id: user_id.to_owned(),
        code: code.as_str().to_owned(),
        detail,
        line: Some(line),
    }
}

fn domain_failure(item: &Prepared, e: DomainError) -> TaskFailure {
    let detail = e.to_string();
    let code = ApiError::from(e).code;
    failure(item.line, item.user_id.as_str(), code, detail)
}

/// Why a request's lines could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreLinesError {
    /// A line is longer than [`MAX_LINE_BYTES`].
    #[error("line {0} is longer than 1 MiB")]
    LineTooLong(u64),
    /// The body could not be read (it stopped arriving, or the connection broke).
    #[error("reading the request body: {0}")]
    Body(String),
    /// The file could not be written or published.
    #[error("storing the import's lines: {0}")]
    Io(#[from] std::io::Error),
}

/// What [`store_lines`] stored.
pub struct StoredLines {
    /// Lines in the file (the last one need not end with a newline).
    pub lines: u64,
    /// SHA-256 of the bytes (what an `Idempotency-Key` is checked against).
    pub digest: [u8; 32],
}

/// Writes `body` — NDJSON, of any length — to the file of import task `task_id`, with flat
/// memory, fsyncs it and publishes it (in the data directory, or uploaded to the shared
/// object store). A line over [`MAX_LINE_BYTES`] refuses the whole request, before any task
/// exists.
pub async fn store_lines<S, E>(
    core: &roster_core::Core,
    exports: &crate::ExportStore,
    org: &str,
    task_id: &str,
    mut body: S,
) -> Result<StoredLines, StoreLinesError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let part = crate::export::part_path(core, org, task_id);
    if let Some(dir) = part.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let written = async {
        let file = tokio::fs::File::create(&part).await?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut digest = sha2::Sha256::new();
        let (mut lines, mut current) = (0u64, 0usize);
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| StoreLinesError::Body(e.to_string()))?;
            digest.update(&piece);
            let mut rest = &piece[..];
            while !rest.is_empty() {
                match memchr_newline(rest) {
                    Some(i) => {
                        current += i;
                        lines += 1;
                        rest = &rest[i + 1..];
                        if current > MAX_LINE_BYTES {
                            return Err(StoreLinesError::LineTooLong(lines));
                        }
                        current = 0;
                    }
                    None => {
                        current += rest.len();
                        if current > MAX_LINE_BYTES {
                            return Err(StoreLinesError::LineTooLong(lines + 1));
                        }
                        rest = &[];
                    }
                }
            }
            out.write_all(&piece).await?;
        }
        if current > 0 {
            lines += 1;
        }
        out.flush().await?;
        out.into_inner().sync_all().await?;
        Ok(StoredLines {
            lines,
            digest: digest.finalize().into(),
        })
    }
    .await;
    match written {
        Ok(stored) => {
            exports.publish(&part, org, task_id).await?;
            Ok(stored)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(e)
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

/// Removes the stored lines of an import whose task was not recorded (a repeated request
/// answered with the first one's task).
pub async fn discard_lines(exports: &crate::ExportStore, org: &str, task_id: &str) {
    exports.remove(org, task_id).await;
}
