//! Presence (docs/presence.md): who is online, each user's `appear_online` choice and custom
//! status. Not in the event log — a heartbeat per minute per user would flood it — but in a
//! store of its own, one record per user:
//!
//! - embedded: a sled tree in `data/presence/` (the setting and the message survive restarts);
//! - NATS: a JetStream key-value bucket (`<namespace>_presence`, one value per key), which every
//!   server mirrors in memory by watching it, so presence is the same on every server and a
//!   change made on one reaches the others' streams.
//!
//! A record is `{last_seen, hidden}` in clear and the message sealed under the user's data key
//! (by the one codec helper): pruning destroys the key, and the message with it; the sweep then
//! drops the record ([`Presence::forget`]). Every server keeps the records in memory, so reading
//! presence for a page of profiles costs no IO.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use parking_lot::RwLock;
use roster_domain::KeyId;
use roster_projections::Codec;
use roster_projections::codec::{Layout, open_parts, seal_parts};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// A user is online for this long after its last heartbeat.
pub const ONLINE_FOR: Duration = Duration::from_secs(60);
/// How long a server starting on NATS waits for its mirror of the presence bucket.
const CATCH_UP: Duration = Duration::from_secs(30);
/// Longest custom status, in characters.
pub const MAX_MESSAGE_CHARS: usize = 128;

/// One user's presence, opened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// The last heartbeat (microseconds since the epoch).
    pub last_seen: i64,
    /// `appear_online: false`.
    pub hidden: bool,
    /// The custom status.
    pub message: Option<String>,
}

impl Record {
    /// Whether the user is online at `now` (hidden or not).
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        now.timestamp_micros() - self.last_seen < ONLINE_FOR.as_micros() as i64
    }

    /// What others see: nothing of a hidden user; `last_seen_at` to the minute.
    pub fn shown(&self, now: DateTime<Utc>) -> Shown {
        if self.hidden {
            return Shown::default();
        }
        Shown {
            online: self.active(now),
            message: self.message.clone(),
            last_seen_at: self.last_seen_minute(),
        }
    }

    /// The last heartbeat, to the minute.
    pub fn last_seen_minute(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.last_seen.div_euclid(60_000_000) * 60_000_000)
    }
}

/// Presence as the API shows it to others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shown {
    /// Online (heartbeat within a minute, not hidden).
    pub online: bool,
    /// The custom status (`None` if hidden).
    pub message: Option<String>,
    /// The last heartbeat, to the minute (`None` if hidden or never seen).
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// The stored public part.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Public {
    org: String,
    user: String,
    last_seen: i64,
    hidden: bool,
    key_id: Option<KeyId>,
}

/// The stored personal part.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Personal {
    #[serde(default)]
    message: Option<String>,
}

fn aad(org: &str, user: &str) -> Vec<u8> {
    format!("presence/{org}/{user}").into_bytes()
}

/// A key of the store: the ids hex-encoded (NATS keys allow fewer characters than ids).
fn store_key(org: &str, user: &str) -> String {
    format!("{}.{}", hex::encode(org), hex::encode(user))
}

enum Backend {
    Local(sled::Tree),
    Nats(Box<jetstream::kv::Store>),
}

/// The presence store of one server.
pub struct Presence {
    records: RwLock<HashMap<(String, String), Record>>,
    changes: broadcast::Sender<(String, String)>,
    backend: Backend,
    codec: Codec,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("presence store: {0}")]
pub struct PresenceError(String);

impl Presence {
    /// The embedded store in `dir`.
    pub async fn open_local(
        dir: &std::path::Path,
        codec: Codec,
    ) -> Result<Arc<Self>, PresenceError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(4 * 1024 * 1024)
            .open()
            .map_err(|e| PresenceError(e.to_string()))?;
        let tree = db
            .open_tree("presence")
            .map_err(|e| PresenceError(e.to_string()))?;
        let presence = Arc::new(Self::new(Backend::Local(tree.clone()), codec));
        for item in tree.iter() {
            let (_, bytes) = item.map_err(|e| PresenceError(e.to_string()))?;
            presence.absorb(&bytes).await;
        }
        Ok(presence)
    }

    /// The shared store in a NATS key-value bucket, mirrored here by a watch.
    pub async fn open_nats(
        context: &jetstream::Context,
        bucket: &str,
        replicas: usize,
        codec: Codec,
    ) -> Result<Arc<Self>, PresenceError> {
        let config = jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("Roster presence (shared by every server)".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            allow_rollup: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        context
            .get_or_create_stream(config)
            .await
            .map_err(|e| PresenceError(e.to_string()))?;
        let kv = context
            .get_key_value(bucket)
            .await
            .map_err(|e| PresenceError(e.to_string()))?;
        // How many records there are to read before this mirror is current.
        let stored = kv
            .status()
            .await
            .map_err(|e| PresenceError(e.to_string()))?
            .values();
        let mut watch = kv
            .watch_with_history(">")
            .await
            .map_err(|e| PresenceError(e.to_string()))?;
        let presence = Arc::new(Self::new(Backend::Nats(Box::new(kv)), codec));
        // The bucket's current values first, then every change, from every server.
        let (caught_up, mut ready) = tokio::sync::watch::channel(false);
        let mirror = Arc::downgrade(&presence);
        tokio::spawn(async move {
            while let Some(entry) = watch.next().await {
                let Some(presence) = mirror.upgrade() else {
                    return;
                };
                match entry {
                    Ok(entry) => {
                        match entry.operation {
                            jetstream::kv::Operation::Put => presence.absorb(&entry.value).await,
                            _ => presence.drop_key(&entry.key),
                        }
                        if entry.seen_current || entry.delta == 0 {
                            let _ = caught_up.send(true);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "presence watch failed"),
                }
            }
        });
        // Serve only once the mirror holds what the bucket held (an empty one sends nothing).
        if stored > 0
            && tokio::time::timeout(CATCH_UP, ready.wait_for(|c| *c))
                .await
                .is_err()
        {
            return Err(PresenceError(format!(
                "the presence bucket's {stored} records did not arrive within {CATCH_UP:?}"
            )));
        }
        Ok(presence)
    }

    fn new(backend: Backend, codec: Codec) -> Self {
        Self {
            records: RwLock::new(HashMap::new()),
            changes: broadcast::channel(1024).0,
            backend,
            codec,
        }
    }

    /// A stored record into the mirror (and a change to whoever listens).
    async fn absorb(&self, bytes: &[u8]) {
        // The key store may be briefly out of reach (NATS under load): try a few times.
        let mut opened = Err(None);
        for attempt in 0..5u64 {
            match open_parts::<Public, Personal, _>(
                &self.codec,
                bytes,
                |p: &Public| aad(&p.org, &p.user),
                "presence",
            )
            .await
            {
                Ok(parts) => {
                    opened = Ok(parts);
                    break;
                }
                Err(e) => opened = Err(Some(e)),
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        let (public, personal, _) = match opened {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!(error = ?e, "an unreadable presence record was skipped");
                return;
            }
        };
        let record = Record {
            last_seen: public.last_seen,
            hidden: public.hidden,
            message: personal.message,
        };
        let key = (public.org, public.user);
        let changed = self.records.write().insert(key.clone(), record.clone()) != Some(record);
        if changed {
            let _ = self.changes.send(key);
        }
    }

    fn drop_key(&self, key: &str) {
        let Some((org, user)) = key.split_once('.') else {
            return;
        };
        let decode = |h: &str| hex::decode(h).ok().and_then(|b| String::from_utf8(b).ok());
        if let (Some(org), Some(user)) = (decode(org), decode(user)) {
            let key = (org, user);
            if self.records.write().remove(&key).is_some() {
                let _ = self.changes.send(key);
            }
        }
    }

    /// A user's presence, if it ever sent a heartbeat.
    pub fn get(&self, org: &str, user: &str) -> Option<Record> {
        self.records
            .read()
            .get(&(org.to_owned(), user.to_owned()))
            .cloned()
    }

    /// Every user with a record, by organization (for the sweep).
    pub fn users(&self) -> Vec<(String, String)> {
        self.records.read().keys().cloned().collect()
    }

    /// Changes of any user's record: `(org, user)`.
    pub fn subscribe(&self) -> broadcast::Receiver<(String, String)> {
        self.changes.subscribe()
    }

    /// A heartbeat of `user` now, changing its setting or message if given (`Some(None)`
    /// clears the message); `key` is the user's data key, sealing the message.
    pub async fn heartbeat(
        &self,
        org: &str,
        user: &str,
        key: Option<(KeyId, roster_vault::DataKey)>,
        appear_online: Option<bool>,
        message: Option<Option<String>>,
    ) -> Result<Record, PresenceError> {
        let mut record = self.get(org, user).unwrap_or_default();
        record.last_seen = Utc::now().timestamp_micros();
        if let Some(appear) = appear_online {
            record.hidden = !appear;
        }
        if let Some(message) = message {
            record.message = message;
        }
        // Without a key (a user whose key is gone) the message is not kept.
        if key.is_none() {
            record.message = None;
        }
        let public = Public {
            org: org.to_owned(),
            user: user.to_owned(),
            last_seen: record.last_seen,
            hidden: record.hidden,
            key_id: key.as_ref().map(|(id, _)| *id),
        };
        let personal = Personal {
            message: record.message.clone(),
        };
        let bytes = seal_parts(
            &public,
            &personal,
            personal == Personal::default(),
            key.as_ref().map(|(id, k)| (*id, k)),
            &aad(org, user),
            Layout::Named,
        );
        let store_key = store_key(org, user);
        match &self.backend {
            Backend::Local(tree) => {
                tree.insert(store_key.as_bytes(), bytes.as_slice())
                    .map_err(|e| PresenceError(e.to_string()))?;
            }
            Backend::Nats(kv) => {
                kv.put(&store_key, bytes.clone().into())
                    .await
                    .map_err(|e| PresenceError(e.to_string()))?;
            }
        }
        // Seen here at once; the watch brings the same record back (and to other servers).
        let k = (org.to_owned(), user.to_owned());
        self.records.write().insert(k.clone(), record.clone());
        let _ = self.changes.send(k);
        Ok(record)
    }

    /// Drops a user's record (pruned or hard-deleted: `last_seen_at` is erased with it).
    pub async fn forget(&self, org: &str, user: &str) -> Result<(), PresenceError> {
        let store_key = store_key(org, user);
        match &self.backend {
            Backend::Local(tree) => {
                tree.remove(store_key.as_bytes())
                    .map_err(|e| PresenceError(e.to_string()))?;
            }
            Backend::Nats(kv) => {
                kv.purge(&store_key)
                    .await
                    .map_err(|e| PresenceError(e.to_string()))?;
            }
        }
        let k = (org.to_owned(), user.to_owned());
        if self.records.write().remove(&k).is_some() {
            let _ = self.changes.send(k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hidden_user_shows_nothing_and_last_seen_is_to_the_minute() {
        let now = Utc::now();
        let seen = now.timestamp_micros() - 5_000_000;
        let record = Record {
            last_seen: seen,
            hidden: false,
            message: Some("afk".into()),
        };
        let shown = record.shown(now);
        assert!(shown.online);
        assert_eq!(shown.message.as_deref(), Some("afk"));
        let at = shown.last_seen_at.unwrap();
        assert_eq!(at.timestamp() % 60, 0);
        assert!(at.timestamp_micros() <= seen && seen - at.timestamp_micros() < 60_000_000);
        let later = now + chrono::Duration::seconds(61);
        assert!(!record.shown(later).online);
        let hidden = Record {
            hidden: true,
            ..record
        };
        assert_eq!(hidden.shown(now), Shown::default());
    }
}
