//! Applies log events to the read models, in log order, a batch at a time. Each batch's
//! changes and the new checkpoint are one sled transaction; the in-memory catalog follows
//! after the commit. Applying is idempotent per position: events at or below the checkpoint
//! are skipped, so replaying a batch after a crash changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use roster_domain::settings::{SETTINGS_CHANGED, SETTINGS_STREAM, SettingsChanged};
use roster_domain::values::{normalize_email, normalize_username};
use roster_domain::{User, apply};
use roster_eventlog::{EventLog, RecordedEvent};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::keys::{email_hash, username_hash};
use crate::rows::{Indexed, Row, user_key};
use crate::store::{ReadModels, StoreError, index_prefix};

/// Largest number of events applied in one transaction.
pub const MAX_BATCH: usize = 1024;

/// A user touched by a batch: its row before the batch and after each event so far.
struct Touched {
    org: String,
    id: String,
    before: Option<Row>,
    after: Option<Row>,
}

/// The time of a recorded event.
pub fn event_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// The user id of a user stream name (`user-<id>`).
pub fn user_of_stream(name: &str) -> Option<&str> {
    name.strip_prefix("user-")
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
        let mut touched: Vec<Touched> = Vec::new();
        let mut slot: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut settings: Vec<(String, Vec<u8>)> = Vec::new();
        for event in events {
            let org = &event.stream.org;
            if let Some(id) = user_of_stream(&event.stream.name) {
                let key = user_key(org, id);
                let index = match slot.get(&key) {
                    Some(i) => *i,
                    None => {
                        let before = self.get(org, id).await?;
                        touched.push(Touched {
                            org: org.clone(),
                            id: id.to_owned(),
                            after: before.clone(),
                            before,
                        });
                        slot.insert(key, touched.len() - 1);
                        touched.len() - 1
                    }
                };
                let decoded = self.codec.decode(event).await?;
                let entry = &mut touched[index];
                let current = entry.after.take();
                let seq = match (&current, &decoded.event) {
                    (_, roster_domain::Event::UserCreated(_)) => event.position,
                    (Some(row), _) => row.seq,
                    (None, _) => 0,
                };
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
            } else if event.stream.name == SETTINGS_STREAM && event.event_type == SETTINGS_CHANGED {
                if let Ok(change) = serde_json::from_slice::<SettingsChanged>(&event.data) {
                    let bytes = serde_json::to_vec(&change.settings).expect("settings serialize");
                    settings.push((org.clone(), bytes));
                }
            }
        }
        self.commit(&touched, &settings, last).await?;
        {
            let mut catalog = self.catalog.write();
            for t in &touched {
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

    async fn commit(
        &self,
        touched: &[Touched],
        settings: &[(String, Vec<u8>)],
        last: u64,
    ) -> Result<(), StoreError> {
        let mut rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(touched.len());
        let mut username_ops: Vec<(Vec<u8>, bool)> = Vec::new();
        let mut email_ops: Vec<(Vec<u8>, bool)> = Vec::new();
        for t in touched {
            let sealed = match &t.after {
                Some(row) => Some(row.seal(&self.codec).await?),
                None => None,
            };
            rows.push((user_key(&t.org, &t.id), sealed));
            // Old entries come from the stored hashes: the old values may be unreadable now.
            let before = t.before.as_ref().map(|r| r.indexed.clone()).unwrap_or_default();
            let after = t.after.as_ref().map(|r| r.indexed.clone()).unwrap_or_default();
            index_diff(&mut username_ops, &t.org, &t.id, before.username, after.username);
            index_diff(&mut email_ops, &t.org, &t.id, before.email, after.email);
        }
        let checkpoint = Self::checkpoint_bytes(last);
        (
            &self.users,
            &self.usernames,
            &self.emails,
            &self.settings,
            &self.meta,
        )
            .transaction(|(users, usernames, emails, settings_tree, meta)| {
                for (key, row) in &rows {
                    match row {
                        Some(bytes) => users.insert(key.as_slice(), bytes.as_slice())?,
                        None => users.remove(key.as_slice())?,
                    };
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
                for (org, bytes) in settings {
                    settings_tree.insert(org.as_bytes(), bytes.as_slice())?;
                }
                meta.insert(Self::CHECKPOINT_KEY, &checkpoint[..])?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
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
                let mut batch = Vec::with_capacity(chunk.len());
                let mut error = None;
                for item in chunk {
                    match item {
                        Ok(e) => batch.push(e),
                        Err(e) => {
                            error = Some(StoreError::Log(e));
                            break;
                        }
                    }
                }
                let result = match error {
                    Some(e) => Err(e),
                    None => self.apply_batch(&batch).await,
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "projection failed; retrying");
                    failed = true;
                    break;
                }
            }
            if !failed {
                return; // the log closed
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl ReadModels {
    /// The index entries a user should have.
    fn indexed(&self, org: &str, user: &User) -> Indexed {
        Indexed {
            username: user.profile.username.as_deref().map(|n| username_hash(&self.blind, org, &normalize_username(n))),
            email: user.profile.email.as_deref().map(|e| email_hash(&self.blind, org, &normalize_email(e))),
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
