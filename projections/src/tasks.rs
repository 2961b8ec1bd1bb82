//! The tasks read model (docs/contract.md §4): one row per task, its failures beside it, the
//! organizations' settings and their webhooks. Nothing here is personal: stored as MessagePack, format 2.

use roster_domain::settings::OrgSettings;
use roster_domain::task::{Task, TaskFailure, TaskKind, TaskStatus};
use roster_domain::webhook::Webhook;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{CodecError, FORMAT_2, Layout, from_msgpack, to_msgpack};
use crate::layout::{Table, prefix_end, settings_key, task_key, webhook_key};
use crate::store::{ReadModels, StoreError};

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_2];
    to_msgpack(value, Layout::Named, &mut out);
    out
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, CodecError> {
    match bytes.split_first() {
        Some((&FORMAT_2, rest)) => from_msgpack(rest, what),
        _ => Err(CodecError::Malformed(format!("{what}: not format 2"))),
    }
}

/// A task row's bytes.
pub(crate) fn encode_task(task: &Task) -> Vec<u8> {
    encode(task)
}

/// A task failure's bytes.
pub(crate) fn encode_failure(failure: &TaskFailure) -> Vec<u8> {
    encode(failure)
}

/// A webhook row's bytes (the secret is not among them).
pub(crate) fn encode_webhook(hook: &Webhook) -> Vec<u8> {
    encode(hook)
}

/// An organization's settings' bytes.
pub(crate) fn encode_settings(settings: &OrgSettings) -> Vec<u8> {
    encode(settings)
}

/// A page of tasks, newest first.
#[derive(Clone, Debug)]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<Task>,
    /// Id to pass as `cursor` for the next (older) page.
    pub next_cursor: Option<String>,
}

impl ReadModels {
    /// A webhook (its secret empty: only its stream holds it).
    pub fn webhook(&self, org: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
        match self.tree.get(webhook_key(org, id))? {
            Some(bytes) => Ok(Some(decode(&bytes, "webhook")?)),
            None => Ok(None),
        }
    }

    /// An organization's webhooks (`None`: every organization's), oldest first.
    pub fn webhooks(&self, org: Option<&str>) -> Result<Vec<Webhook>, StoreError> {
        let prefix = match org {
            Some(org) => Table::Webhooks.prefix(&[org.as_bytes()]),
            None => vec![Table::Webhooks as u8],
        };
        let mut hooks = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (_, bytes) = item?;
            hooks.push(decode::<Webhook>(&bytes, "webhook")?);
        }
        hooks.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(hooks)
    }

    /// A task.
    pub fn task(&self, org: &str, id: &str) -> Result<Option<Task>, StoreError> {
        match self.tree.get(task_key(org, id))? {
            Some(bytes) => Ok(Some(decode(&bytes, "task")?)),
            None => Ok(None),
        }
    }

    /// A task's failures, in the order they happened.
    pub fn task_failures(
        &self,
        org: &str,
        id: &str,
    ) -> impl Iterator<Item = Result<TaskFailure, StoreError>> + '_ {
        let prefix = Table::TaskFailures.prefix(&[org.as_bytes(), id.as_bytes()]);
        self.tree.scan_prefix(prefix).map(|item| {
            let (_, bytes) = item?;
            Ok(decode(&bytes, "task failure")?)
        })
    }

    /// A page of an organization's tasks, newest first (task ids are ULIDs).
    pub fn tasks(
        &self,
        org: &str,
        status: Option<TaskStatus>,
        kind: Option<TaskKind>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<TaskPage, StoreError> {
        let prefix = Table::Tasks.prefix(&[org.as_bytes()]);
        let end = match cursor {
            Some(c) => task_key(org, c),
            None => prefix_end(&prefix),
        };
        let mut tasks = Vec::new();
        let mut more = false;
        for item in self.tree.range(prefix..end).rev() {
            let (_, bytes) = item?;
            let task: Task = decode(&bytes, "task")?;
            if status.is_some_and(|s| s != task.status) || kind.is_some_and(|k| k != task.kind) {
                continue;
            }
            if tasks.len() == limit {
                more = true;
                break;
            }
            tasks.push(task);
        }
        let next_cursor = if more {
            tasks.last().map(|t| t.id.clone())
        } else {
            None
        };
        Ok(TaskPage { tasks, next_cursor })
    }

    fn all_tasks(&self) -> impl Iterator<Item = Result<Task, StoreError>> + '_ {
        self.tree.scan_prefix([Table::Tasks as u8]).map(|item| {
            let (_, bytes) = item?;
            Ok(decode(&bytes, "task")?)
        })
    }

    /// Number of tasks per status and kind (for `/metrics`).
    pub fn task_counts(&self) -> Result<Vec<(TaskStatus, TaskKind, u64)>, StoreError> {
        let mut counts: Vec<(TaskStatus, TaskKind, u64)> = Vec::new();
        for task in self.all_tasks() {
            let task = task?;
            match counts
                .iter_mut()
                .find(|(s, k, _)| *s == task.status && *k == task.kind)
            {
                Some((_, _, n)) => *n += 1,
                None => counts.push((task.status, task.kind, 1)),
            }
        }
        Ok(counts)
    }

    /// Every task that has not ended, oldest first.
    pub fn unfinished_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let mut out = Vec::new();
        for task in self.all_tasks() {
            let task = task?;
            if !task.status.is_final() {
                out.push(task);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// An organization's settings (defaults if never changed).
    pub fn settings(&self, org: &str) -> Result<OrgSettings, StoreError> {
        match self.tree.get(settings_key(org))? {
            Some(bytes) => Ok(decode(&bytes, "settings")?),
            None => Ok(OrgSettings::default()),
        }
    }
}
