//! Applies log events to the read models, in log order, a batch at a time. Each batch's
//! changes and the checkpoint past it are one atomic sled batch on the one tree
//! ([`crate::layout`]); the in-memory catalog follows after the commit. Applying is
//! idempotent per position: events at or below the checkpoint are skipped, so replaying a
//! batch after a crash changes nothing. The live projector and rebuilds share every line of
//! this: a rebuild only takes bigger batches.
//!
//! Erasure is a consequence of the events: when a batch holds a pruning or hard deletion, the
//! user's data key is destroyed *before* the batch is committed, so a crash at any point leaves
//! either the key destroyed or the deletion still to be applied (and the key destroyed then).
//! The command that deleted destroys the key right after its append too; twice is harmless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use roster_domain::session::{SESSION_STREAM_PREFIX, SessionEvent};
use roster_domain::settings::{OrgSettings, SETTINGS_STREAM, SettingsEvent};
use roster_domain::task::{TASK_STREAM_PREFIX, Task, TaskEvent, TaskFailure};
use roster_domain::team::{TEAM_STREAM_PREFIX, TeamEvent};
use roster_domain::time::from_micros;
use roster_domain::user::{DeleteMode, UserDeleted, UserEvent};
use roster_domain::values::{normalize_email, normalize_username};
use roster_domain::webhook::{WEBHOOK_STREAM_PREFIX, Webhook, WebhookEvent};
use roster_domain::{Aggregate, EventSet, KeyId, Recorded, User};
use roster_eventlog::{EventLog, Position, RecordedEvent};

use crate::codec::{CodecError, DecodedEvent};
use crate::keys::{email_hash, username_hash};
use crate::layout::{
    Table, failure_key, ledger_key, settings_key, task_key, token_key, user_key, webhook_key,
};
use crate::ledger::LedgerItem;
use crate::rows::{Indexed, Row};
use crate::sessions::SessionChanges;
use crate::store::{ReadModels, StoreError};

/// Largest number of events the live projector applies in one batch.
pub const MAX_BATCH: usize = 1024;

/// The time of a recorded event.
pub fn event_time(micros: i64) -> chrono::DateTime<chrono::Utc> {
    from_micros(micros)
}

/// The user id of a user stream name (`user-<id>`).
pub fn user_of_stream(name: &str) -> Option<&str> {
    name.strip_prefix(User::STREAM_PREFIX)
}

/// An event decoded as the aggregate its stream belongs to.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // decoded one at a time: boxing would only add a copy
pub enum AnyEvent {
    /// A user's.
    User(DecodedEvent<UserEvent>),
    /// A session's.
    Session(DecodedEvent<SessionEvent>),
    /// A task's.
    Task(DecodedEvent<TaskEvent>),
    /// An organization's settings'.
    Settings(DecodedEvent<SettingsEvent>),
    /// A webhook's.
    Webhook(DecodedEvent<WebhookEvent>),
    /// A team's.
    Team(DecodedEvent<TeamEvent>),
}

impl AnyEvent {
    /// Decodes a record by its stream's kind (`None` for streams of no known aggregate).
    pub async fn decode(
        codec: &crate::Codec,
        record: &RecordedEvent,
    ) -> Result<Option<AnyEvent>, CodecError> {
        let name = record.stream.name.as_str();
        Ok(Some(if name.starts_with(User::STREAM_PREFIX) {
            AnyEvent::User(codec.decode(record).await?)
        } else if name.starts_with(SESSION_STREAM_PREFIX) {
            AnyEvent::Session(codec.decode(record).await?)
        } else if name.starts_with(TASK_STREAM_PREFIX) {
            AnyEvent::Task(codec.decode(record).await?)
        } else if name == SETTINGS_STREAM {
            AnyEvent::Settings(codec.decode(record).await?)
        } else if name.starts_with(WEBHOOK_STREAM_PREFIX) {
            AnyEvent::Webhook(codec.decode(record).await?)
        } else if name.starts_with(TEAM_STREAM_PREFIX) {
            AnyEvent::Team(codec.decode(record).await?)
        } else {
            return Ok(None);
        }))
    }

    /// The event as analysts see it.
    pub fn view(&self) -> crate::codec::EventView {
        match self {
            AnyEvent::User(e) => e.view(),
            AnyEvent::Session(e) => e.view(),
            AnyEvent::Task(e) => e.view(),
            AnyEvent::Settings(e) => e.view(),
            AnyEvent::Webhook(e) => e.view(),
            AnyEvent::Team(e) => e.view(),
        }
    }

    /// Its metadata.
    pub fn meta(&self) -> &crate::codec::EventMeta {
        match self {
            AnyEvent::User(e) => &e.meta,
            AnyEvent::Session(e) => &e.meta,
            AnyEvent::Task(e) => &e.meta,
            AnyEvent::Settings(e) => &e.meta,
            AnyEvent::Webhook(e) => &e.meta,
            AnyEvent::Team(e) => &e.meta,
        }
    }
}

/// A user touched by a batch.
pub(crate) struct Touched {
    org: String,
    id: String,
    /// Its row after the events so far (`None`: no row).
    pub(crate) after: Option<Row>,
    /// Ledger items written by this batch.
    ledger: Vec<(Position, LedgerItem)>,
    /// The user was hard-deleted in this batch: its ledger entries from before go.
    purge_ledger: bool,
}

/// Everything one batch changes.
#[derive(Default)]
pub(crate) struct Changes {
    pub(crate) touched: Vec<Touched>,
    slot: HashMap<Vec<u8>, usize>,
    settings: Vec<(String, OrgSettings)>,
    /// Data keys to destroy (pruning and hard deletion).
    erase: Vec<KeyId>,
    /// Tasks touched: key → state after the batch.
    tasks: Vec<(Vec<u8>, Task)>,
    /// Task failures to record.
    task_failures: Vec<(Vec<u8>, TaskFailure)>,
    /// Session rows.
    pub(crate) sessions: SessionChanges,
    /// Keys of issued purpose tokens, by expiry.
    token_keys: Vec<Vec<u8>>,
    /// Webhooks touched: key → state after the batch (`None`: deleted).
    webhooks: Vec<(Vec<u8>, Option<Webhook>)>,
    /// Teams and memberships touched.
    teams: crate::teams::TeamChanges,
}

impl ReadModels {
    /// Applies a batch of events (in position order) and advances the checkpoint past them,
    /// in one atomic write.
    pub async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), StoreError> {
        let decoded = decode_all(&self.codec, events, self.checkpoint()).await?;
        self.apply_decoded(events, decoded).await
    }

    /// Applies events already decoded (`decoded[i]` of `events[i]`; `None` for streams of no
    /// aggregate), skipping those at or below the checkpoint.
    pub async fn apply_decoded(
        &self,
        events: &[RecordedEvent],
        decoded: Vec<Option<AnyEvent>>,
    ) -> Result<(), StoreError> {
        let checkpoint = self.checkpoint();
        let Some(last) = events
            .last()
            .map(|e| e.position)
            .filter(|l| *l > checkpoint)
        else {
            return Ok(());
        };
        let mut changes = Changes::default();
        for (record, decoded) in events.iter().zip(decoded) {
            if record.position <= checkpoint {
                continue;
            }
            if let Some(decoded) = decoded {
                self.collect(&mut changes, record, decoded).await?;
            }
        }
        // Keys go before the checkpoint moves past their deletion (see the module docs).
        self.codec
            .keys()
            .destroy(&changes.erase)
            .await
            .map_err(CodecError::from)?;
        let mut batch = self.writes(&changes).await?;
        batch.insert(Self::CHECKPOINT_KEY.to_vec(), &last.to_be_bytes()[..]);
        self.tree.apply_batch(batch)?;
        self.after_commit(changes, last);
        Ok(())
    }

    /// Folds one decoded event into the batch's changes.
    async fn collect(
        &self,
        changes: &mut Changes,
        record: &RecordedEvent,
        decoded: AnyEvent,
    ) -> Result<(), StoreError> {
        let org = record.stream.org.as_str();
        let name = record.stream.name.as_str();
        match decoded {
            AnyEvent::User(e) => {
                let id = &name[User::STREAM_PREFIX.len()..];
                self.apply_user_event(changes, org, id, record, e).await
            }
            AnyEvent::Session(e) => {
                let id = &name[SESSION_STREAM_PREFIX.len()..];
                self.apply_session_event(&mut changes.sessions, org, id, record, e)
                    .await
            }
            AnyEvent::Task(e) => {
                let id = &name[TASK_STREAM_PREFIX.len()..];
                self.apply_task_event(changes, org, id, record, &e.event)
            }
            AnyEvent::Settings(e) => {
                let SettingsEvent::SettingsChanged(change) = e.event;
                changes.settings.retain(|(o, _)| o != org);
                changes.settings.push((org.to_owned(), change.settings));
                Ok(())
            }
            AnyEvent::Webhook(e) => {
                let id = &name[WEBHOOK_STREAM_PREFIX.len()..];
                self.apply_webhook_event(changes, org, id, record, &e.event)
            }
            AnyEvent::Team(e) => {
                let id = &name[TEAM_STREAM_PREFIX.len()..];
                self.apply_team_event(&mut changes.teams, org, id, record, &e.event)
            }
        }
    }

    fn apply_webhook_event(
        &self,
        changes: &mut Changes,
        org: &str,
        id: &str,
        record: &RecordedEvent,
        event: &WebhookEvent,
    ) -> Result<(), StoreError> {
        let key = webhook_key(org, id);
        let current = match changes.webhooks.iter().position(|(k, _)| *k == key) {
            Some(i) => changes.webhooks.remove(i).1,
            None => self.webhook(org, id)?,
        };
        changes.erase.extend(
            current
                .as_ref()
                .and_then(|w| w.key_id)
                .filter(|_| event.erases_key()),
        );
        let after = Webhook::apply(current, event, recorded(org, id, record));
        changes.webhooks.push((key, after));
        Ok(())
    }

    fn apply_task_event(
        &self,
        changes: &mut Changes,
        org: &str,
        id: &str,
        record: &RecordedEvent,
        event: &TaskEvent,
    ) -> Result<(), StoreError> {
        let key = task_key(org, id);
        let current = match changes.tasks.iter().position(|(k, _)| *k == key) {
            Some(i) => Some(changes.tasks.remove(i).1),
            None => self.task(org, id)?,
        };
        if let TaskEvent::TaskProgressed(p) = event {
            let first = p.failed - p.failures.len() as u64;
            for (i, failure) in p.failures.iter().enumerate() {
                changes
                    .task_failures
                    .push((failure_key(org, id, first + i as u64), failure.clone()));
            }
        }
        let at = recorded(org, id, record);
        if let Some(task) = Task::apply(current, event, at) {
            changes.tasks.push((key, task));
        }
        Ok(())
    }

    async fn apply_user_event(
        &self,
        changes: &mut Changes,
        org: &str,
        id: &str,
        record: &RecordedEvent,
        decoded: DecodedEvent<UserEvent>,
    ) -> Result<(), StoreError> {
        let key = user_key(org, id);
        let index = match changes.slot.get(&key) {
            Some(i) => *i,
            None => {
                // A creation never has a row before it: `decide` creates only users that do
                // not exist, and a hard deletion removes the row.
                let before = match &decoded.event {
                    UserEvent::UserCreated(_) => None,
                    _ => self.row(&key).await?,
                };
                changes.touched.push(Touched {
                    org: org.to_owned(),
                    id: id.to_owned(),
                    after: before,
                    ledger: Vec::new(),
                    purge_ledger: false,
                });
                changes.slot.insert(key, changes.touched.len() - 1);
                changes.touched.len() - 1
            }
        };
        let event = &decoded.event;
        let entry = &mut changes.touched[index];
        let current = entry.after.take();
        let seq = match (&current, event) {
            (_, UserEvent::UserCreated(_)) | (None, UserEvent::UserImported(_)) => record.position,
            (Some(row), _) => row.seq,
            (None, _) => 0,
        };
        let key_before = current.as_ref().and_then(Row::key_id);
        if event.erases_key() {
            changes.erase.extend(key_before);
        }
        // A used or superseded purpose token's key goes with the same guarantee; an issued
        // one's is remembered until it expires (`ReadModels::sweep_expired_token_keys`).
        changes.erase.extend(event.ended_key());
        if let UserEvent::TokenIssued(e) | UserEvent::PasswordResetRequested(e) = event
            && let Some(kid) = e.public.key_id
        {
            changes
                .token_keys
                .push(token_key(e.public.expires_at.timestamp_micros(), kid));
        }
        match event {
            UserEvent::UserDeleted(UserDeleted {
                mode: DeleteMode::Hard,
            }) => {
                entry.ledger.clear();
                entry.purge_ledger = true;
                changes.sessions.purge_user(org, id);
            }
            UserEvent::WalletAdjusted(w) if w.public.update_ledger => {
                entry.ledger.push((
                    record.position,
                    LedgerItem {
                        id: record.id.to_string(),
                        changeset: w.public.changeset.clone(),
                        metadata: w.personal.metadata.clone(),
                        create_time: event_time(record.time),
                    },
                ));
            }
            _ => {}
        }
        let reindex = changes_identity(event);
        let (indexed, user) = match current {
            Some(row) => (row.indexed, Some(row.user)),
            None => (Indexed::default(), None),
        };
        let user = User::apply(user, event, recorded(org, id, record));
        entry.after = user.map(|user| {
            let indexed = match reindex {
                true => self.indexed(org, &user),
                false => indexed,
            };
            Row { seq, user, indexed }
        });
        Ok(())
    }

    /// What a batch writes: sealed rows, the index entries that change, ledger items and
    /// purges, sessions, tasks and settings.
    async fn writes(&self, changes: &Changes) -> Result<sled::Batch, StoreError> {
        let mut batch = sled::Batch::default();
        for t in &changes.touched {
            let key = user_key(&t.org, &t.id);
            let data_key = self
                .codec
                .key(t.after.as_ref().and_then(Row::key_id))
                .await?;
            match &t.after {
                Some(row) => batch.insert(key, row.seal(data_key.as_ref().map(|(_, k)| k))),
                None => batch.remove(key),
            }
            if t.purge_ledger {
                let prefix = Table::Ledger.prefix(&[t.org.as_bytes(), t.id.as_bytes()]);
                for item in self.tree.scan_prefix(&prefix).keys() {
                    batch.remove(item?);
                }
            }
            for (position, item) in &t.ledger {
                let key = ledger_key(&t.org, &t.id, *position);
                let sealed = item.seal(&key, data_key.as_ref().map(|(id, k)| (*id, k)));
                batch.insert(key, sealed);
            }
        }
        self.session_writes(&changes.sessions, &mut batch).await?;
        for (key, task) in &changes.tasks {
            batch.insert(key.clone(), crate::tasks::encode_task(task));
        }
        for (key, failure) in &changes.task_failures {
            batch.insert(key.clone(), crate::tasks::encode_failure(failure));
        }
        for (key, hook) in &changes.webhooks {
            match hook {
                Some(hook) => batch.insert(key.clone(), crate::tasks::encode_webhook(hook)),
                None => batch.remove(key.clone()),
            }
        }
        changes.teams.write(&mut batch);
        for (org, settings) in &changes.settings {
            batch.insert(settings_key(org), crate::tasks::encode_settings(settings));
        }
        for key in &changes.token_keys {
            batch.insert(key.clone(), &[][..]);
        }
        Ok(batch)
    }

    /// After a batch's commit: the in-memory state follows (revoked sessions, the catalog,
    /// the row cache), then waiters see the new checkpoint.
    fn after_commit(&self, changes: Changes, last: Position) {
        self.note_revoked(&changes.sessions);
        if self.keeps_catalog() {
            let mut catalog = self.catalog.write();
            for t in &changes.touched {
                let org = catalog.org_mut(&t.org);
                match &t.after {
                    Some(row) => org.upsert(row.seq, &row.user, &row.indexed),
                    None => org.remove(&t.id),
                }
            }
        }
        for t in changes.touched {
            self.rows.remember(user_key(&t.org, &t.id), t.after);
        }
        self.applied.send_replace(last);
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
    pub(crate) fn indexed(&self, org: &str, user: &User) -> Indexed {
        Indexed {
            username: user
                .username()
                .map(|n| username_hash(&self.blind, org, &normalize_username(n))),
            email: user
                .email()
                .map(|e| email_hash(&self.blind, org, &normalize_email(e))),
        }
    }
}

/// Decodes the records of a batch past position `after`, each as the aggregate its stream
/// belongs to (`None` for the others).
pub async fn decode_all(
    codec: &crate::Codec,
    events: &[RecordedEvent],
    after: Position,
) -> Result<Vec<Option<AnyEvent>>, CodecError> {
    let mut decoded = Vec::with_capacity(events.len());
    for record in events {
        decoded.push(match record.position > after {
            true => AnyEvent::decode(codec, record).await?,
            false => None,
        });
    }
    Ok(decoded)
}

/// Whether an event may change the username or email a user is indexed under.
fn changes_identity(event: &UserEvent) -> bool {
    matches!(
        event,
        UserEvent::UserCreated(_)
            | UserEvent::UserImported(_)
            | UserEvent::UserReplaced(_)
            | UserEvent::UserPartiallyUpdated(_)
            | UserEvent::EmailChanged(_)
            | UserEvent::UserDeleted(_)
            | UserEvent::UserRestored(_)
            | UserEvent::GuestUpgraded(_)
    )
}

/// Where a record sits, as `apply` sees it.
pub(crate) fn recorded<'a>(org: &'a str, id: &'a str, record: &RecordedEvent) -> Recorded<'a> {
    Recorded {
        id,
        org,
        at: event_time(record.time),
        version: record.version,
    }
}
