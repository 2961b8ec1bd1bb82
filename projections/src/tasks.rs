//! The tasks read model: each task's state (`tasks`) and its failures (`task_failures`, one
//! entry per failed item, so a task over 100 000 users never rewrites a growing list).

use roster_domain::task::{Task, TaskFailure, TaskKind, TaskStatus};

use crate::rows::user_key;
use crate::store::{ReadModels, StoreError};

/// Key of a task: organization, NUL, task id (a ULID, so keys sort by creation).
pub fn task_key(org: &str, id: &str) -> Vec<u8> {
    user_key(org, id)
}

/// Key of a task's failure number `index`.
pub fn failure_key(org: &str, id: &str, index: u64) -> Vec<u8> {
    let mut key = task_key(org, id);
    key.push(0);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// A page of tasks, newest first.
#[derive(Clone, Debug)]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<Task>,
    /// The id to continue after, if there are more.
    pub next_cursor: Option<String>,
}

impl ReadModels {
    /// One task.
    pub fn task(&self, org: &str, id: &str) -> Result<Option<Task>, StoreError> {
        Ok(match self.tasks.get(task_key(org, id))? {
            Some(bytes) => serde_json::from_slice(&bytes).ok(),
            None => None,
        })
    }

    /// A task's failures, in the order they happened.
    pub fn task_failures(
        &self,
        org: &str,
        id: &str,
    ) -> impl Iterator<Item = Result<TaskFailure, StoreError>> + '_ {
        let mut prefix = task_key(org, id);
        prefix.push(0);
        self.task_failures.scan_prefix(prefix).map(|item| {
            let (_, bytes) = item?;
            serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Codec(crate::CodecError::Json(e.to_string())))
        })
    }

    /// Tasks of an organization, newest first, optionally filtered, after the cursor (a task id).
    pub fn tasks(
        &self,
        org: &str,
        status: Option<TaskStatus>,
        kind: Option<TaskKind>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<TaskPage, StoreError> {
        let mut prefix = org.as_bytes().to_vec();
        prefix.push(0);
        let end = match cursor {
            Some(c) => task_key(org, c),
            None => {
                let mut end = prefix.clone();
                end.push(0xff);
                end
            }
        };
        let mut tasks = Vec::new();
        let mut more = false;
        for item in self.tasks.range(prefix.clone()..end).rev() {
            let (_, bytes) = item?;
            let Ok(task) = serde_json::from_slice::<Task>(&bytes) else {
                continue;
            };
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

    /// How many tasks there are of each status and kind, across organizations (for metrics).
    pub fn task_counts(&self) -> Result<Vec<(TaskStatus, TaskKind, u64)>, StoreError> {
        let mut counts: Vec<(TaskStatus, TaskKind, u64)> = Vec::new();
        for item in self.tasks.iter() {
            let (_, bytes) = item?;
            let Ok(task) = serde_json::from_slice::<Task>(&bytes) else {
                continue;
            };
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

    /// Tasks that have not ended (for the worker to take or resume), oldest first.
    pub fn unfinished_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let mut out = Vec::new();
        for item in self.tasks.iter() {
            let (_, bytes) = item?;
            if let Ok(task) = serde_json::from_slice::<Task>(&bytes)
                && !task.status.is_final()
            {
                out.push(task);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
