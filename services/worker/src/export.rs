//! Export tasks: every user (or the listed ones) streamed to an NDJSON file with flat memory,
//! and streamed back by `GET /v1/tasks/{id}/result`.
//!
//! The file never holds personal data in clear: each line is the user sealed under **that
//! user's** data key (`{"id", "kid", "ct"}`), so erasing a user after the export also erases
//! it from the export. Lines are opened as they are streamed back; an erased user comes back as
//! `{"id": …, "erased": true}`. Files are deleted 24 h after the task ends (410 after that).
//!
//! Where finished files live is the [`ExportStore`]: the data directory for the embedded
//! store; a JetStream object store bucket on NATS, so a result written by one server can be
//! fetched from any other. Either way the file is first written to `<data>/exports/` and only
//! published (renamed, or uploaded and removed) once complete.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::object_store::{self, ObjectStore};
use base64::Engine;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use roster_core::Core;
use roster_core::imported_hash::ImportedHash;
use roster_core::resource::UserResource;
use roster_core::tasks::LoadedTask;
use roster_domain::KeyId;
use roster_domain::task::{TaskCommand, TaskCreated, TaskFailure, TaskProgressed};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, Lines};

use crate::{Running, Stop, Worker};

/// How long an export file is kept after its task ends.
pub const RETENTION: chrono::Duration = chrono::Duration::hours(24);
/// Lines between progress records.
const PROGRESS_EVERY: u64 = 1000;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// Where finished export files are kept.
#[derive(Clone)]
pub enum ExportStore {
    /// Files `<dir>/<org>/<task>.ndjson` (the embedded store's data directory).
    Local(PathBuf),
    /// Objects `<org>/<task>.ndjson` in a JetStream object store bucket every server shares.
    Nats(Box<ObjectStore>),
}

impl std::fmt::Debug for ExportStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(dir) => f.debug_tuple("Local").field(dir).finish(),
            Self::Nats(_) => f.write_str("Nats"),
        }
    }
}

/// How long an upload keeps being retried while JetStream is unavailable.
const UPLOAD_PATIENCE: Duration = Duration::from_secs(30);

impl ExportStore {
    /// Opens (or creates) the bucket `name` through `context`: file storage, `replicas`,
    /// retrying for `timeout` while JetStream is not ready.
    pub async fn open_nats(
        context: &async_nats::jetstream::Context,
        name: &str,
        replicas: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = match context.get_object_store(name).await {
                Ok(store) => Ok(store),
                Err(_) => context
                    .create_object_store(object_store::Config {
                        bucket: name.to_owned(),
                        description: Some("Roster export files (sealed per user)".into()),
                        storage: async_nats::jetstream::stream::StorageType::File,
                        num_replicas: replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(anyhow::Error::from),
            };
            match attempt {
                Ok(store) => return Ok(Self::Nats(Box::new(store))),
                Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(error = %e, "cannot open the export bucket; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e.context(format!("opening the export bucket {name}"))),
            }
        }
    }

    /// Publishes the complete file at `part` as the export of task `task_id`.
    pub(crate) async fn publish(
        &self,
        part: &Path,
        org: &str,
        task_id: &str,
    ) -> std::io::Result<()> {
        match self {
            Self::Local(dir) => {
                let path = local_path(dir, org, task_id);
                let parent = path.parent().map(PathBuf::from).unwrap_or_default();
                tokio::fs::create_dir_all(&parent).await?;
                tokio::fs::rename(part, &path).await?;
                if let Ok(d) = tokio::fs::File::open(&parent).await {
                    let _ = d.sync_all().await;
                }
                Ok(())
            }
            Self::Nats(store) => {
                let name = object_name(org, task_id);
                let deadline = tokio::time::Instant::now() + UPLOAD_PATIENCE;
                let mut backoff = Duration::from_millis(100);
                loop {
                    let mut file = tokio::fs::File::open(part).await?;
                    match store.put(name.as_str(), &mut file).await {
                        Ok(_) => break,
                        Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                            tracing::warn!(task = task_id, error = %e, "export upload failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                        Err(e) => return Err(std::io::Error::other(format!("upload: {e}"))),
                    }
                }
                tokio::fs::remove_file(part).await
            }
        }
    }

    /// The lines of a task's export file; `None` if there is none (never written, or deleted).
    pub(crate) async fn open(
        &self,
        org: &str,
        task_id: &str,
    ) -> Option<Lines<BufReader<Box<dyn AsyncRead + Send + Unpin>>>> {
        let reader: Box<dyn AsyncRead + Send + Unpin> = match self {
            Self::Local(dir) => Box::new(
                tokio::fs::File::open(local_path(dir, org, task_id))
                    .await
                    .ok()?,
            ),
            Self::Nats(store) => match store.get(object_name(org, task_id)).await {
                Ok(object) => Box::new(object),
                Err(e) => {
                    if e.kind() != object_store::GetErrorKind::NotFound {
                        tracing::warn!(task = task_id, error = %e, "cannot read an export file");
                    }
                    return None;
                }
            },
        };
        Some(BufReader::with_capacity(1 << 16, reader).lines())
    }

    /// Every stored export as `(org, task_id)`.
    async fn list(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match self {
            Self::Local(root) => {
                let Ok(mut orgs) = tokio::fs::read_dir(root).await else {
                    return out;
                };
                while let Ok(Some(org)) = orgs.next_entry().await {
                    let Ok(mut files) = tokio::fs::read_dir(org.path()).await else {
                        continue;
                    };
                    let org_name = org.file_name().to_string_lossy().into_owned();
                    while let Ok(Some(file)) = files.next_entry().await {
                        let name = file.file_name().to_string_lossy().into_owned();
                        if let Some(task_id) = name.strip_suffix(".ndjson") {
                            out.push((org_name.clone(), task_id.to_owned()));
                        }
                    }
                }
            }
            Self::Nats(store) => {
                let Ok(mut objects) = store.list().await else {
                    return out;
                };
                while let Some(Ok(info)) = objects.next().await {
                    if info.deleted {
                        continue;
                    }
                    if let Some((org, file)) = info.name.split_once('/')
                        && let Some(task_id) = file.strip_suffix(".ndjson")
                    {
                        out.push((org.to_owned(), task_id.to_owned()));
                    }
                }
            }
        }
        out
    }

    /// Deletes a task's export file. Returns whether this call removed it.
    pub(crate) async fn remove(&self, org: &str, task_id: &str) -> bool {
        match self {
            Self::Local(dir) => tokio::fs::remove_file(local_path(dir, org, task_id))
                .await
                .is_ok(),
            // Another server's janitor may have deleted it first.
            Self::Nats(store) => store.delete(object_name(org, task_id)).await.is_ok(),
        }
    }
}

fn local_path(dir: &Path, org: &str, task_id: &str) -> PathBuf {
    dir.join(org).join(format!("{task_id}.ndjson"))
}

fn object_name(org: &str, task_id: &str) -> String {
    format!("{org}/{task_id}.ndjson")
}

/// Where a task's export file is written before it is published (the local data directory).
pub(crate) fn part_path(core: &Core, org: &str, task_id: &str) -> PathBuf {
    core.data_dir()
        .join("exports")
        .join(org)
        .join(format!("{task_id}.ndjson.part"))
}

fn aad(task_id: &str, user_id: &str) -> Vec<u8> {
    format!("export/{task_id}/{user_id}").into_bytes()
}

/// Runs an export task from the start (an interrupted export is simply redone).
pub(crate) async fn run(
    worker: &Worker,
    task: &LoadedTask,
    created: &TaskCreated,
    running: &mut Running,
) -> Result<Value, Stop> {
    let core = &worker.core;
    let (org, task_id) = (running.org.to_string(), running.id.clone());
    // The export reads the read models: let them catch up with the request first.
    if !core
        .wait_for(task.created_position, Duration::from_secs(60))
        .await
    {
        return Err(Stop::Failed(
            "read models did not catch up within 60 s".into(),
        ));
    }
    let part = part_path(core, &org, &task_id);
    let dir = part.parent().map(PathBuf::from).unwrap_or_default();
    let io = |e: std::io::Error| Stop::Failed(format!("export file: {e}"));
    tokio::fs::create_dir_all(&dir).await.map_err(io)?;
    let file = tokio::fs::File::create(&part).await.map_err(io)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let (mut lines, mut failed, mut bytes) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    if created.user_ids.is_empty() {
        // Rows are read and opened on one task while this one seals and writes them: the
        // two halves of the work each take about one core.
        let mut users = read_users(core, &org);
        while let Some(user) = users.recv().await {
            let user = user.map_err(Stop::Failed)?;
            bytes += write_user(
                core,
                &task_id,
                user,
                created.include_password_hashes,
                &mut out,
            )
            .await
            .map_err(io)?;
            lines += 1;
            if lines % PROGRESS_EVERY == 0 {
                progress(
                    core,
                    running,
                    (lines, failed),
                    std::mem::take(&mut failures),
                )
                .await?;
            }
        }
    } else {
        for user_id in &created.user_ids {
            let row = core
                .models()
                .get(&org, user_id)
                .await
                .map_err(|e| Stop::Failed(e.to_string()))?;
            match row {
                Some(row) => {
                    let user = row.user.clone();
                    bytes += write_user(
                        core,
                        &task_id,
                        user,
                        created.include_password_hashes,
                        &mut out,
                    )
                    .await
                    .map_err(io)?;
                    lines += 1;
                }
                None => {
                    failed += 1;
                    failures.push(TaskFailure {
                        user_id: user_id.clone(),
                        code: roster_core::Code::NotFound.as_str().into(),
                        detail: "no user with this id".into(),
                        line: None,
                    });
                }
            }
            if (lines + failed) % PROGRESS_EVERY == 0 {
                progress(
                    core,
                    running,
                    (lines, failed),
                    std::mem::take(&mut failures),
                )
                .await?;
            }
        }
    }
    out.flush().await.map_err(io)?;
    out.get_ref().sync_all().await.map_err(io)?;
    drop(out);
    worker
        .exports
        .publish(&part, &org, &task_id)
        .await
        .map_err(io)?;
    progress(core, running, (lines, failed), failures).await?;
    Ok(json!({
        "format": "ndjson",
        "lines": lines,
        "bytes": bytes,
        "expires_at": Utc::now() + RETENTION,
    }))
}

/// Every user of `org`, opened, from a task of its own (a bounded queue ahead of the writer;
/// the task ends when the receiver is dropped). One copy of the read models for the whole
/// export, even if a rebuild switches them meanwhile.
fn read_users(
    core: &Core,
    org: &str,
) -> tokio::sync::mpsc::Receiver<Result<roster_domain::User, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let models = core.models();
    let org = org.to_owned();
    tokio::spawn(async move {
        let mut rows = models.users_of(&org);
        loop {
            let next = match rows.next().await {
                Ok(Some(row)) => Ok(row.user),
                Ok(None) => return,
                Err(e) => Err(e.to_string()),
            };
            let failed = next.is_err();
            if tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Writes one user's line, sealed under the user's key. Returns the bytes written.
/// With `hashes` the line carries the user's `password_hash` as an import line gives it
/// (docs/import.md), so the file imports back with working passwords.
async fn write_user(
    core: &Core,
    task_id: &str,
    user: roster_domain::User,
    hashes: bool,
    out: &mut tokio::io::BufWriter<tokio::fs::File>,
) -> std::io::Result<u64> {
    let user_id = user.public.id.to_string();
    let key = core.codec().key(user.public.key_id).await.ok().flatten();
    let line = match key {
        Some((kid, key)) => {
            let hash = match hashes {
                true => user
                    .personal
                    .password_hash
                    .as_ref()
                    .and_then(ImportedHash::from_stored),
                false => None,
            };
            let resource = UserResource::new(user, None);
            let resource = match hash {
                Some(hash) => {
                    let mut object = serde_json::to_value(&resource).expect("users serialize");
                    object["password_hash"] =
                        serde_json::to_value(&hash).expect("hashes serialize");
                    serde_json::to_vec(&object)
                }
                None => serde_json::to_vec(&resource),
            }
            .expect("users serialize");
            let ct = roster_vault::seal(&key, &aad(task_id, &user_id), &resource);
            Line {
                id: user_id.as_str().into(),
                kid: Some(kid.to_string().into()),
                ct: Some(B64.encode(ct).into()),
                erased: None,
            }
        }
        // No key left: the user's personal data is erased; there is nothing to export but that.
        None => Line::erased(&user_id),
    };
    let mut bytes = serde_json::to_vec(&line).expect("JSON serializes");
    bytes.push(b'\n');
    out.write_all(&bytes).await?;
    Ok(bytes.len() as u64)
}

/// Records the export's progress; a moved task stream means it was canceled or taken over.
async fn progress(
    core: &Core,
    running: &mut Running,
    (lines, failed): (u64, u64),
    failures: Vec<TaskFailure>,
) -> Result<(), Stop> {
    let command = TaskCommand::Progress(TaskProgressed {
        next_index: lines + failed,
        done: lines,
        failed,
        failures,
        counters: Default::default(),
    });
    running.record(core, command).await.map(|_| ())
}

/// One line of an export file: a user sealed under its own key, or the mark of an erased one.
#[derive(serde::Serialize, serde::Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    ct: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    erased: Option<bool>,
}

impl<'a> Line<'a> {
    fn erased(id: &'a str) -> Self {
        Self {
            id: id.into(),
            kid: None,
            ct: None,
            erased: Some(true),
        }
    }
}

/// Bytes of opened lines sent as one piece of the result's body.
const RESULT_PIECE_BYTES: usize = 64 * 1024;

/// The export file of a task, streamed back with each line opened (in pieces of about
/// [`RESULT_PIECE_BYTES`]); `None` if it is gone.
pub async fn stream_result(
    core: &Core,
    exports: &ExportStore,
    org: &str,
    task_id: &str,
) -> Option<impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static> {
    let lines = exports.open(org, task_id).await?;
    let app = core.clone();
    let task_id = task_id.to_owned();
    // The error that ended the file's reading, kept until the piece before it is sent.
    let failed: Option<std::io::Error> = None;
    let stream = futures::stream::unfold(
        (lines, app, task_id, failed),
        |(mut lines, app, task_id, failed)| async move {
            if let Some(e) = failed {
                return Some((Err(e), (lines, app, task_id, None)));
            }
            let mut piece = Vec::with_capacity(RESULT_PIECE_BYTES + 4096);
            let mut failed = None;
            while piece.len() < RESULT_PIECE_BYTES {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        open_line(&app, &task_id, &line, &mut piece).await;
                        piece.push(b'\n');
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match (piece.is_empty(), failed) {
                (true, None) => None,
                (true, Some(e)) => Some((Err(e), (lines, app, task_id, None))),
                (false, failed) => Some((Ok(Bytes::from(piece)), (lines, app, task_id, failed))),
            }
        },
    );
    Some(stream)
}

/// Appends the opened user of one line to `out` (`{"id", "erased": true}` once its key is gone).
async fn open_line(core: &Core, task_id: &str, line: &str, out: &mut Vec<u8>) {
    let sealed: Option<Line<'_>> = serde_json::from_str(line).ok();
    let id = sealed.as_ref().map_or("", |l| &l.id);
    if let Some(Line {
        kid: Some(kid),
        ct: Some(ct),
        ..
    }) = &sealed
        && let Ok(kid) = kid.parse::<KeyId>()
        && let Ok(ct) = B64.decode(ct.as_bytes())
        && let Ok(Some(key)) = core.codec().keys().get(kid).await
        && let Ok(plain) = roster_vault::open(&key, &aad(task_id, id), &ct)
    {
        out.extend_from_slice(&plain);
        return;
    }
    serde_json::to_writer(&mut *out, &Line::erased(id)).expect("JSON serializes");
}

/// Deletes export files of tasks that ended more than [`RETENTION`] ago.
pub async fn remove_expired(core: &Core, exports: &ExportStore) {
    for (org, task_id) in exports.list().await {
        let expired = match core.models().task(&org, &task_id) {
            Ok(Some(task)) => task.finished_at.is_some_and(|f| Utc::now() - f > RETENTION),
            _ => false,
        };
        if expired && exports.remove(&org, &task_id).await {
            tracing::info!(task = %task_id, "export file expired and was deleted");
        }
    }
}
