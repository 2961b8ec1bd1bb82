//! Applies log events to the read models, in log order, a batch at a time. Each batch's
//! changes and the new checkpoint are one sled transaction; the in-memory catalog follows
//! after the commit. Applying is idempotent per position: events at or below the checkpoint
//! are skipped, so replaying a batch after a crash changes nothing.
//!
//! Erasure is a consequence of the events: when a batch holds a pruning or hard deletion, the
//! user's data key is destroyed *before* the batch's checkpoint is committed, so a crash at any
//! point leaves either the key destroyed or the deletion still to be applied (and the key
//! destroyed then). The command handler destroys the key right after its append too; doing it
//! twice is harmless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use roster_domain::event::Event;
use roster_domain::session::SESSION_STREAM_PREFIX;
use roster_domain::settings::{SETTINGS_CHANGED, SETTINGS_STREAM, SettingsChanged};
use roster_domain::task::{TASK_STREAM_PREFIX, Task, TaskEvent};
use roster_domain::values::{normalize_email, normalize_username};
use roster_domain::{DeleteMode, User, apply};
use roster_eventlog::{EventLog, Position, RecordedEvent};
use roster_vault::KeyId;
use serde_json::{Map, Value};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::keys::{email_hash, username_hash};
use crate::ledger::{LedgerItem, ledger_key, ledger_prefix};
use crate::rows::{Indexed, Row, user_key};
use crate::store::{ReadModels, StoreError, index_prefix};
use crate::tasks::{failure_key, task_key};

/// Largest number of events applied in one transaction.
pub const MAX_BATCH: usize = 1024;

/// A user touched by a batch: its row before the batch and after each event so far.
struct Touched {
    org: String,
    id: String,
    before: Option<Row>,
    after: Option<Row>,
    /// Ledger items written by this batch, with the key id to seal them under.
    ledger: Vec<(Position, LedgerItem, Option<String>)>,
    /// The user was hard-deleted in this batch: its ledger entries from before go.
    purge_ledger: bool,
}

/// The time of a recorded event.
pub fn event_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// The user id of a user stream name (`user-<id>`).
pub fn user_of_stream(name: &str) -> Option<&str> {
    name.strip_prefix("user-")
}

/// Everything one batch changes.
#[derive(Default)]
struct Changes {
    touched: Vec<Touched>,
    slot: HashMap<Vec<u8>, usize>,
    settings: Vec<(String, Vec<u8>)>,
    /// Data keys to destroy (pruning and hard deletion).
    erase: Vec<KeyId>,
    /// Tasks touched: key → state after the batch.
    tasks: Vec<(Vec<u8>, Task)>,
    /// Task failures to record.
    task_failures: Vec<(Vec<u8>, Vec<u8>)>,
    /// Session rows.
    sessions: crate::sessions::SessionChanges,
}

impl ReadModels {
    /// Applies a batch of events (in position order) and advances the checkpoint past them.
    pub async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), StoreError> {
        let checkpoint = self.stored_checkpoint()?;
        let events: Vec<&RecordedEvent> =
            events.iter().filter(|e| e.position > checkpoint).collect();
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(());
        };
        let mut changes = Changes::default();
        for event in events {
            let org = &event.stream.org;
            if let Some(id) = user_of_stream(&event.stream.name) {
                self.apply_user_event(&mut changes, org, id, event).await?;
            } else if let Some(id) = event.stream.name.strip_prefix(TASK_STREAM_PREFIX) {
                self.apply_task_event(&mut changes, org, id, event)?;
            } else if let Some(id) = event.stream.name.strip_prefix(SESSION_STREAM_PREFIX) {
                self.apply_session_event(&mut changes.sessions, org, id, event)
                    .await?;
            } else if event.stream.name == SETTINGS_STREAM
                && event.event_type == SETTINGS_CHANGED
                && let Ok(change) = serde_json::from_slice::<SettingsChanged>(&event.data)
            {
                let bytes = serde_json::to_vec(&change.settings).expect("settings serialize");
                changes.settings.push((org.clone(), bytes));
            }
        }
        self.commit(&changes, last).await?;
        self.note_revoked(&changes.sessions);
        {
            let mut catalog = self.catalog.write();
            for t in &changes.touched {
                let org = catalog.org_mut(&t.org);
                match &t.after {
                    Some(row) => org.upsert(row.seq, &row.user),
                    None => org.remove(&t.id),
                }
            }
        }
        self.applied.send_replace(last);
        Ok(())
    }

    fn apply_task_event(
        &self,
        changes: &mut Changes,
        org: &str,
        id: &str,
        event: &RecordedEvent,
    ) -> Result<(), StoreError> {
        let Ok(task_event) = TaskEvent::from_data(&event.event_type, &event.data) else {
            tracing::warn!(event_type = %event.event_type, position = event.position, "skipping an unreadable task event");
            return Ok(());
        };
        let key = task_key(org, id);
        let current = match changes.tasks.iter().position(|(k, _)| *k == key) {
            Some(i) => Some(changes.tasks.remove(i).1),
            None => self.task(org, id)?,
        };
        if let TaskEvent::TaskProgressed(p) = &task_event {
            let first = p.failed - p.failures.len() as u64;
            for (i, failure) in p.failures.iter().enumerate() {
                let bytes = serde_json::to_vec(failure).expect("failures serialize");
                changes
                    .task_failures
                    .push((failure_key(org, id, first + i as u64), bytes));
            }
        }
        if let Some(task) = Task::apply(
            current,
            &task_event,
            (org, id),
            event_time(event.time),
            event.version,
        ) {
            changes.tasks.push((key, task));
        }
        Ok(())
    }

    async fn apply_user_event(
        &self,
        changes: &mut Changes,
        org: &str,
        id: &str,
        event: &RecordedEvent,
    ) -> Result<(), StoreError> {
        let key = user_key(org, id);
        let index = match changes.slot.get(&key) {
            Some(i) => *i,
            None => {
                let before = self.get(org, id).await?;
                changes.touched.push(Touched {
                    org: org.to_owned(),
                    id: id.to_owned(),
                    after: before.clone(),
                    before,
                    ledger: Vec::new(),
                    purge_ledger: false,
                });
                changes.slot.insert(key, changes.touched.len() - 1);
                changes.touched.len() - 1
            }
        };
        let decoded = self.codec.decode(event).await?;
        let entry = &mut changes.touched[index];
        let current = entry.after.take();
        let seq = match (&current, &decoded.event) {
            (_, Event::UserCreated(_)) => event.position,
            (Some(row), _) => row.seq,
            (None, _) => 0,
        };
        let key_before = current.as_ref().and_then(|r| r.user.key_id.clone());
        match &decoded.event {
            Event::UserDeleted(d) if matches!(d.mode, DeleteMode::Pruning | DeleteMode::Hard) => {
                changes
                    .erase
                    .extend(key_before.as_deref().and_then(|k| k.parse::<KeyId>().ok()));
                if d.mode == DeleteMode::Hard {
                    entry.ledger.clear();
                    entry.purge_ledger = true;
                    changes.sessions.purge_user(org, id);
                }
            }
            Event::WalletAdjusted(w) if w.update_ledger => {
                let item = LedgerItem {
                    id: event.id.to_string(),
                    changeset: w.changeset.clone(),
                    metadata: w.metadata.clone(),
                    create_time: event_time(event.time),
                };
                entry.ledger.push((event.position, item, key_before));
            }
            _ => {}
        }
        let user = apply(
            current.map(|r| r.user),
            &decoded.event,
            event_time(event.time),
            event.version,
        );
        entry.after = user.map(|user| {
            let indexed = self.indexed(org, &user);
            Row { seq, user, indexed }
        });
        Ok(())
    }

    async fn commit(&self, changes: &Changes, last: u64) -> Result<(), StoreError> {
        let mut rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(changes.touched.len());
        let mut username_ops: Vec<(Vec<u8>, bool)> = Vec::new();
        let mut email_ops: Vec<(Vec<u8>, bool)> = Vec::new();
        let mut ledger_ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for t in &changes.touched {
            let sealed = match &t.after {
                Some(row) => Some(row.seal(&self.codec).await?),
                None => None,
            };
            rows.push((user_key(&t.org, &t.id), sealed));
            // Old entries come from the stored hashes: the old values may be unreadable now.
            let before = t
                .before
                .as_ref()
                .map(|r| r.indexed.clone())
                .unwrap_or_default();
            let after = t
                .after
                .as_ref()
                .map(|r| r.indexed.clone())
                .unwrap_or_default();
            index_diff(
                &mut username_ops,
                &t.org,
                &t.id,
                before.username,
                after.username,
            );
            index_diff(&mut email_ops, &t.org, &t.id, before.email, after.email);
            if t.purge_ledger {
                for item in self.wallet_ledger.scan_prefix(ledger_prefix(&t.org, &t.id)) {
                    ledger_ops.push((item?.0.to_vec(), None));
                }
            }
            for (position, item, kid) in &t.ledger {
                let bytes = item
                    .seal(&self.codec, &t.org, &t.id, *position, kid.as_deref())
                    .await?;
                ledger_ops.push((ledger_key(&t.org, &t.id, *position), Some(bytes)));
            }
        }
        // Keys go before the checkpoint moves past their deletion (see the module docs).
        self.codec
            .keys()
            .destroy(&changes.erase)
            .await
            .map_err(crate::CodecError::from)?;
        let session_ops = self.session_ops(&changes.sessions).await?;
        let checkpoint = Self::checkpoint_bytes(last);
        let tasks: Vec<(Vec<u8>, Option<Vec<u8>>)> = changes
            .tasks
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    Some(serde_json::to_vec(t).expect("tasks serialize")),
                )
            })
            .collect();
        let failures: Vec<(Vec<u8>, Option<Vec<u8>>)> = changes
            .task_failures
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        (
            &self.users,
            &self.usernames,
            &self.emails,
            &self.settings,
            &self.wallet_ledger,
            &self.tasks,
            &self.task_failures,
            &self.session_rows,
            &self.meta,
        )
            .transaction(
                |(
                    users,
                    usernames,
                    emails,
                    settings_tree,
                    ledger,
                    tasks_tree,
                    failures_tree,
                    sessions_tree,
                    meta,
                )| {
                    for (tree, ops) in [
                        (users, &rows),
                        (ledger, &ledger_ops),
                        (tasks_tree, &tasks),
                        (failures_tree, &failures),
                        (sessions_tree, &session_ops),
                    ] {
                        for (key, value) in ops {
                            match value {
                                Some(bytes) => tree.insert(key.as_slice(), bytes.as_slice())?,
                                None => tree.remove(key.as_slice())?,
                            };
                        }
                    }
                    for (tree, ops) in [(usernames, &username_ops), (emails, &email_ops)] {
                        for (key, insert) in ops {
                            if *insert {
                                tree.insert(key.as_slice(), &[][..])?;
                            } else {
                                tree.remove(key.as_slice())?;
                            }
                        }
                    }
                    for (org, bytes) in &changes.settings {
                        settings_tree.insert(org.as_bytes(), bytes.as_slice())?;
                    }
                    meta.insert(Self::CHECKPOINT_KEY, &checkpoint[..])?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                },
            )
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::Unsupported("aborted".into()))
                }
            })?;
        Ok(())
    }

    /// Follows the log from the checkpoint until the log closes, applying events in batches.
    /// A failed batch is retried after a pause (nothing of it was committed).
    pub async fn run(self: Arc<Self>, log: Arc<dyn EventLog>) {
        loop {
            let from = self.checkpoint();
            let mut events = log.subscribe(from).ready_chunks(MAX_BATCH);
            let mut failed = false;
            while let Some(chunk) = events.next().await {
                let batch: Result<Vec<RecordedEvent>, _> = chunk.into_iter().collect();
                let result = match batch {
                    Ok(batch) => self.apply_batch(&batch).await,
                    Err(e) => Err(StoreError::Log(e)),
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "projection failed; retrying");
                    *self.failure.lock() = Some(e.to_string());
                    failed = true;
                    break;
                }
                self.failure.lock().take();
            }
            if !failed {
                return; // the log closed
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The index entries a user should have.
    fn indexed(&self, org: &str, user: &User) -> Indexed {
        let p = &user.profile;
        Indexed {
            username: p
                .username
                .as_deref()
                .map(|n| username_hash(&self.blind, org, &normalize_username(n))),
            email: p
                .email
                .as_deref()
                .map(|e| email_hash(&self.blind, org, &normalize_email(e))),
        }
    }
}

/// Adds the index operations that take a user from the `before` hash to the `after` hash.
fn index_diff(
    ops: &mut Vec<(Vec<u8>, bool)>,
    org: &str,
    id: &str,
    before: Option<String>,
    after: Option<String>,
) {
    if before == after {
        return;
    }
    let entry = |hash: &str| {
        let mut key = index_prefix(org, hash);
        key.extend_from_slice(id.as_bytes());
        key
    };
    if let Some(old) = before {
        ops.push((entry(&old), false));
    }
    if let Some(new) = after {
        ops.push((entry(&new), true));
    }
}

/// JSON object of a serializable value.
pub(crate) fn to_object<T: serde::Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}
