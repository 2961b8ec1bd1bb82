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

use crate::codec::{Codec, CodecError, DecodedEvent};
use crate::keys::{email_hash, username_hash};
use crate::ledger::{LedgerItem, ledger_key, ledger_prefix};
use crate::rows::{Indexed, Row, user_key};
use crate::store::{ReadModels, StoreError, index_prefix};
use crate::tasks::{failure_key, task_key};

/// Largest number of events applied in one transaction.
pub const MAX_BATCH: usize = 1024;

/// A user touched by a batch: its row before the batch and after each event so far.
pub(crate) struct Touched {
    pub(crate) org: String,
    pub(crate) id: String,
    pub(crate) before: Option<Row>,
    pub(crate) after: Option<Row>,
    /// Ledger items written by this batch, with the key id to seal them under.
    ledger: Vec<(Position, LedgerItem, Option<String>)>,
    /// The user was hard-deleted in this batch: its ledger entries from before go.
    purge_ledger: bool,
}

/// A touched user's sealed row (`None`: the row goes) and its new ledger items.
pub(crate) struct SealedUser {
    row: Option<Vec<u8>>,
    ledger: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Seals what a batch changed of one user: its row and its new ledger items.
pub(crate) async fn seal_user(codec: &Codec, t: &Touched) -> Result<SealedUser, CodecError> {
    let row = match &t.after {
        Some(row) => Some(row.seal(codec).await?),
        None => None,
    };
    let mut ledger = Vec::with_capacity(t.ledger.len());
    for (position, item, kid) in &t.ledger {
        let bytes = item
            .seal(codec, &t.org, &t.id, *position, kid.as_deref())
            .await?;
        ledger.push((ledger_key(&t.org, &t.id, *position), bytes));
    }
    Ok(SealedUser { row, ledger })
}

/// Tree operations: key and value, or key to remove.
pub(crate) type Ops = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// What a batch writes, tree by tree (index entries: key and insert-or-remove).
#[derive(Default)]
pub(crate) struct Writes {
    pub(crate) rows: Ops,
    pub(crate) usernames: Vec<(Vec<u8>, bool)>,
    pub(crate) emails: Vec<(Vec<u8>, bool)>,
    pub(crate) ledger: Ops,
    pub(crate) sessions: Ops,
    pub(crate) tasks: Ops,
    pub(crate) failures: Ops,
    pub(crate) settings: Ops,
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
pub(crate) struct Changes {
    pub(crate) touched: Vec<Touched>,
    slot: HashMap<Vec<u8>, usize>,
    /// Rows of users not touched yet that the caller already knows (`None`: no row), by user
    /// key; the others are read from the `users` tree. Only the bulk path fills it.
    pub(crate) known: HashMap<Vec<u8>, Option<Row>>,
    settings: Vec<(String, Vec<u8>)>,
    /// Data keys to destroy (pruning and hard deletion).
    erase: Vec<KeyId>,
    /// Tasks touched: key → state after the batch.
    tasks: Vec<(Vec<u8>, Task)>,
    /// Task failures to record.
    task_failures: Vec<(Vec<u8>, Vec<u8>)>,
    /// Session rows.
    pub(crate) sessions: crate::sessions::SessionChanges,
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
        self.collect(&mut changes, &events, Vec::new()).await?;
        let mut sealed = Vec::with_capacity(changes.touched.len());
        for t in &changes.touched {
            sealed.push(seal_user(&self.codec, t).await?);
        }
        let writes = self.writes(&changes, sealed).await?;
        self.commit(&writes, last)?;
        self.after_commit(&changes);
        self.applied.send_replace(last);
        Ok(())
    }

    /// Folds `events` into `changes`. `decoded[i]`, where present, is user event `i` already
    /// decoded (the bulk path decodes ahead, in parallel); the others are decoded here.
    pub(crate) async fn collect(
        &self,
        changes: &mut Changes,
        events: &[&RecordedEvent],
        decoded: Vec<Option<DecodedEvent>>,
    ) -> Result<(), StoreError> {
        let mut decoded = decoded.into_iter();
        for event in events {
            let ahead = decoded.next().flatten();
            let org = &event.stream.org;
            if let Some(id) = user_of_stream(&event.stream.name) {
                self.apply_user_event(changes, org, id, event, ahead)
                    .await?;
            } else if let Some(id) = event.stream.name.strip_prefix(TASK_STREAM_PREFIX) {
                self.apply_task_event(changes, org, id, event)?;
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
        Ok(())
    }

    /// After a batch's writes: the in-memory state follows (revoked sessions, the catalog).
    pub(crate) fn after_commit(&self, changes: &Changes) {
        self.note_revoked(&changes.sessions);
        let mut catalog = self.catalog.write();
        for t in &changes.touched {
            let org = catalog.org_mut(&t.org);
            match &t.after {
                Some(row) => org.upsert(row.seq, &row.user),
                None => org.remove(&t.id),
            }
        }
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
        decoded: Option<DecodedEvent>,
    ) -> Result<(), StoreError> {
        let key = user_key(org, id);
        let index = match changes.slot.get(&key) {
            Some(i) => *i,
            None => {
                let before = match changes.known.remove(&key) {
                    Some(row) => row,
                    None => self.get(org, id).await?,
                };
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
        let decoded = match decoded {
            Some(d) => d,
            None => self.codec.decode(event).await?,
        };
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

    /// What a batch writes: its sealed users (one per touched user, in order), the index
    /// entries that change, ledger purges, sessions, tasks and settings. Destroys the data keys
    /// the batch erases (after the rows and ledger items are sealed, before the session rows).
    pub(crate) async fn writes(
        &self,
        changes: &Changes,
        sealed: Vec<SealedUser>,
    ) -> Result<Writes, StoreError> {
        let mut w = Writes {
            rows: Vec::with_capacity(changes.touched.len()),
            ..Writes::default()
        };
        for (t, sealed) in changes.touched.iter().zip(sealed) {
            w.rows.push((user_key(&t.org, &t.id), sealed.row));
            // Old entries come from the stored hashes: the old values may be unreadable now.
            let before = t.before.as_ref().map(|r| &r.indexed);
            let after = t.after.as_ref().map(|r| &r.indexed);
            index_diff(
                &mut w.usernames,
                &t.org,
                &t.id,
                before.and_then(|i| i.username.as_deref()),
                after.and_then(|i| i.username.as_deref()),
            );
            index_diff(
                &mut w.emails,
                &t.org,
                &t.id,
                before.and_then(|i| i.email.as_deref()),
                after.and_then(|i| i.email.as_deref()),
            );
            if t.purge_ledger {
                for item in self.wallet_ledger.scan_prefix(ledger_prefix(&t.org, &t.id)) {
                    w.ledger.push((item?.0.to_vec(), None));
                }
            }
            w.ledger
                .extend(sealed.ledger.into_iter().map(|(k, v)| (k, Some(v))));
        }
        // Keys go before the checkpoint moves past their deletion (see the module docs).
        self.codec
            .keys()
            .destroy(&changes.erase)
            .await
            .map_err(crate::CodecError::from)?;
        w.sessions = self.session_ops(&changes.sessions).await?;
        w.tasks = changes
            .tasks
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    Some(serde_json::to_vec(t).expect("tasks serialize")),
                )
            })
            .collect();
        w.failures = changes
            .task_failures
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        w.settings = changes
            .settings
            .iter()
            .map(|(org, bytes)| (org.as_bytes().to_vec(), Some(bytes.clone())))
            .collect();
        Ok(w)
    }

    /// Writes a batch and the checkpoint `last` in one sled transaction (the live path).
    fn commit(&self, w: &Writes, last: u64) -> Result<(), StoreError> {
        let checkpoint = Self::checkpoint_bytes(last);
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
                        (users, &w.rows),
                        (ledger, &w.ledger),
                        (tasks_tree, &w.tasks),
                        (failures_tree, &w.failures),
                        (sessions_tree, &w.sessions),
                        (settings_tree, &w.settings),
                    ] {
                        for (key, value) in ops {
                            match value {
                                Some(bytes) => tree.insert(key.as_slice(), bytes.as_slice())?,
                                None => tree.remove(key.as_slice())?,
                            };
                        }
                    }
                    for (tree, ops) in [(usernames, &w.usernames), (emails, &w.emails)] {
                        for (key, insert) in ops {
                            if *insert {
                                tree.insert(key.as_slice(), &[][..])?;
                            } else {
                                tree.remove(key.as_slice())?;
                            }
                        }
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
    before: Option<&str>,
    after: Option<&str>,
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
        ops.push((entry(old), false));
    }
    if let Some(new) = after {
        ops.push((entry(new), true));
    }
}

/// JSON object of a serializable value.
pub(crate) fn to_object<T: serde::Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}
