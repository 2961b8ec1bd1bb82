//! The scaled-out key store: data keys in a JetStream KV bucket, shared by every `roster
//! serve` process.
//!
//! - `create` uses the KV's create-only write (`Nats-Expected-Last-Subject-Sequence: 0`), so
//!   a key id is never overwritten; a key is acknowledged once JetStream has stored it.
//!   Writes are retried with backoff for `timeout` while JetStream answers errors (a new
//!   stream leader is being elected), then reported [`VaultError::Unavailable`].
//! - Every process mirrors the bucket in memory (a watcher with history), so `get` and `len`
//!   need no round trip; a key another process created a moment ago and not yet seen is
//!   fetched from the bucket.
//! - `destroy` must leave no readable copy: a KV delete or purge only hides the value (the
//!   message stays in the block file until compaction). So the message holding the key is
//!   erased with JetStream's message-delete API in its erasing form (`no_erase: false`: the
//!   server overwrites the record with random bytes and syncs the block file), and only then
//!   a KV delete marker — which holds no key bytes — is written, so every process's mirror
//!   (and any `get`) forgets the key.
//!
//! The bucket's stream is created here rather than by the KV API because the KV API sets
//! `deny_delete`, which forbids erasing. Durability as for the event log: file storage,
//! replicas 3 in a cluster, and `sync_interval: always` from nats-server 2.10 on. With
//! replicas > 1 the Raft log of the stream also holds each key until it is compacted (after
//! a snapshot); erasure is immediate only in the block files.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::RwLock;
use tokio::task::JoinHandle;

use crate::{DataKey, KeyId, KeyStore, VaultError};

/// Format byte in front of each stored key.
const FORMAT_V1: u8 = 1;
/// Keys created concurrently by one `create` call.
const CREATE_CONCURRENCY: usize = 64;

/// Settings of [`NatsKeyStore`].
#[derive(Clone, Debug)]
pub struct NatsKeyStoreOptions {
    /// KV bucket name (the stream is `KV_<bucket>`). Default `roster_keys`.
    pub bucket: String,
    /// Replicas of the bucket when this call creates it (3 in a 3-node cluster). Default 1.
    pub replicas: usize,
    /// Timeout of one JetStream request, and of connecting and loading at start-up.
    /// Default 10 s.
    pub timeout: Duration,
}

impl Default for NatsKeyStoreOptions {
    fn default() -> Self {
        Self {
            bucket: "roster_keys".into(),
            replicas: 1,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The JetStream [`KeyStore`].
pub struct NatsKeyStore {
    context: jetstream::Context,
    kv: kv::Store,
    stream_name: String,
    /// Live keys: a mirror of the bucket.
    keys: Arc<RwLock<HashMap<KeyId, DataKey>>>,
    watcher: JoinHandle<()>,
    /// How long a write is retried while JetStream answers errors (a stream leader being
    /// elected after a node died takes seconds) before it is reported unavailable.
    patience: Duration,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> VaultError {
    VaultError::Unavailable(format!("{what}: {e}"))
}

impl NatsKeyStore {
    /// Connects to `urls` (comma-separated), creates the bucket if needed and loads every
    /// live key.
    pub async fn connect(urls: &str, options: NatsKeyStoreOptions) -> Result<Self, VaultError> {
        let addrs = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unavailable("invalid NATS URL", e))?;
        let client = async_nats::ConnectOptions::new()
            .name("roster-keystore")
            .connection_timeout(options.timeout)
            .request_timeout(Some(options.timeout))
            .connect(addrs.as_slice())
            .await
            .map_err(|e| unavailable("connecting to NATS", e))?;
        let context = jetstream::ContextBuilder::new()
            .timeout(options.timeout)
            .build(client);
        let stream_name = format!("KV_{}", options.bucket);
        let config = stream::Config {
            name: stream_name.clone(),
            description: Some("Roster data keys".into()),
            subjects: vec![format!("$KV.{}.>", options.bucket)],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            allow_rollup: true,
            // Erasing a destroyed key is a message delete.
            deny_delete: false,
            deny_purge: false,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        let mut stream = context
            .get_or_create_stream(config)
            .await
            .map_err(|e| unavailable("opening the key bucket", e))?;
        if stream.cached_info().config.deny_delete {
            return Err(VaultError::Unavailable(format!(
                "stream {stream_name} denies message deletes, so keys could not be erased"
            )));
        }
        let stored = stream
            .info()
            .await
            .map_err(|e| unavailable("key bucket info", e))?
            .state
            .messages;
        let kv = context
            .get_key_value(&options.bucket)
            .await
            .map_err(|e| unavailable("opening the key bucket", e))?;

        let keys = Arc::new(RwLock::new(HashMap::new()));
        let watch = kv
            .watch_with_history(">")
            .await
            .map_err(|e| unavailable("watching the key bucket", e))?;
        let (loaded_tx, loaded) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(mirror(kv.clone(), watch, keys.clone(), loaded_tx));
        if stored > 0 {
            match tokio::time::timeout(options.timeout, loaded).await {
                Ok(Ok(())) => {}
                _ => {
                    watcher.abort();
                    return Err(VaultError::Unavailable(
                        "loading the key bucket timed out".into(),
                    ));
                }
            }
        }
        Ok(Self {
            context,
            kv,
            stream_name,
            keys,
            watcher,
            patience: options.timeout,
        })
    }

    /// Runs `attempt` until it succeeds or `patience` has passed, with backoff (20 ms → 1 s).
    /// `attempt` is told whether an earlier attempt may have landed.
    async fn retry<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, VaultError>
    where
        F: FnMut(bool) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut backoff = Duration::from_millis(20);
        let mut retried = false;
        loop {
            match attempt(retried).await {
                Ok(value) => return Ok(value),
                Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::debug!(error = %e, "{what}: retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    retried = true;
                }
                Err(e) => return Err(VaultError::Unavailable(format!("{what}: {e}"))),
            }
        }
    }

    /// Stores one new key, create-only. A retry that finds the key already there checks that
    /// the stored value is this one (an earlier attempt landed, its acknowledgement lost).
    async fn create_one(&self, name: String, value: Bytes) -> Result<(), VaultError> {
        let (kv, name, value) = (&self.kv, name.as_str(), &value);
        self.retry("storing a new key", move |retried| async move {
            match kv.create(name, value.clone()).await {
                Ok(_) => Ok(()),
                Err(e) if retried && e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match kv.entry(name).await.map_err(|e| e.to_string())? {
                        Some(entry) if entry.value == *value => Ok(()),
                        _ => Err(format!("key {name} exists with another value")),
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Erases message `seq` of the bucket's stream: the server overwrites it in its file.
    async fn erase_message(&self, seq: u64) -> Result<(), VaultError> {
        let request = serde_json::json!({ "seq": seq, "no_erase": false });
        let response: serde_json::Value = self
            .context
            .request(format!("STREAM.MSG.DELETE.{}", self.stream_name), &request)
            .await
            .map_err(|e| unavailable("erasing a key", e))?;
        if response.get("success").and_then(|s| s.as_bool()) == Some(true) {
            return Ok(());
        }
        let error = response.get("error").cloned().unwrap_or_default();
        // 10037: no message found — already gone (erased by another process).
        if error.get("err_code").and_then(|c| c.as_u64()) == Some(10037) {
            return Ok(());
        }
        Err(VaultError::Unavailable(format!(
            "erasing key message {seq}: {error}"
        )))
    }
}

impl Drop for NatsKeyStore {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Keeps `keys` equal to the bucket: values as they are put, removals as delete markers
/// arrive. Signals `loaded` once the initial history has been read. Reconnects after the
/// last revision seen if the watch ends.
async fn mirror(
    kv: kv::Store,
    mut watch: kv::Watch,
    keys: Arc<RwLock<HashMap<KeyId, DataKey>>>,
    loaded: tokio::sync::oneshot::Sender<()>,
) {
    let mut loaded = Some(loaded);
    let mut last_revision = 0;
    loop {
        while let Some(next) = watch.next().await {
            let entry = match next {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!(error = %e, "key bucket watch failed; restarting it");
                    break;
                }
            };
            last_revision = entry.revision;
            if let Ok(id) = entry.key.parse::<KeyId>() {
                match entry.operation {
                    kv::Operation::Put => {
                        if let Some(key) = decode(&entry.value) {
                            keys.write().insert(id, key);
                        }
                    }
                    kv::Operation::Delete | kv::Operation::Purge => {
                        keys.write().remove(&id);
                    }
                }
            }
            if entry.delta == 0
                && let Some(loaded) = loaded.take()
            {
                let _ = loaded.send(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        match kv.watch_all_from_revision(last_revision + 1).await {
            Ok(w) => watch = w,
            Err(e) => tracing::warn!(error = %e, "cannot restart the key bucket watch"),
        }
    }
}

fn encode(key: &DataKey) -> Bytes {
    let mut value = Vec::with_capacity(33);
    value.push(FORMAT_V1);
    value.extend_from_slice(key.as_bytes());
    Bytes::from(value)
}

fn decode(value: &[u8]) -> Option<DataKey> {
    match value {
        [FORMAT_V1, rest @ ..] => Some(DataKey::from_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

#[async_trait::async_trait]
impl KeyStore for NatsKeyStore {
    async fn create(&self, count: usize) -> Result<Vec<(KeyId, DataKey)>, VaultError> {
        let made: Vec<(KeyId, DataKey)> = (0..count)
            .map(|_| (KeyId::new(), DataKey::generate()))
            .collect();
        let writes: Vec<(String, Bytes)> = made
            .iter()
            .map(|(id, key)| (id.to_string(), encode(key)))
            .collect();
        let results: Vec<Result<(), VaultError>> = futures::stream::iter(writes)
            .map(|(name, value)| self.create_one(name, value))
            .buffered(CREATE_CONCURRENCY)
            .collect()
            .await;
        for result in results {
            result?;
        }
        let mut keys = self.keys.write();
        for (id, key) in &made {
            keys.insert(*id, key.clone());
        }
        Ok(made)
    }

    async fn get(&self, id: KeyId) -> Result<Option<DataKey>, VaultError> {
        if let Some(key) = self.keys.read().get(&id) {
            return Ok(Some(key.clone()));
        }
        // Perhaps created by another process a moment ago.
        let entry = self
            .kv
            .entry(id.to_string())
            .await
            .map_err(|e| unavailable("reading a key", e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| decode(&e.value)))
    }

    async fn destroy(&self, ids: &[KeyId]) -> Result<(), VaultError> {
        for id in ids {
            let name = id.to_string();
            // Each step is idempotent (an erased message is "not found", a second delete
            // marker is harmless), so the whole destruction is retried.
            self.retry("destroying a key", |_| async {
                let entry = self
                    .kv
                    .entry(name.as_str())
                    .await
                    .map_err(|e| format!("reading a key: {e}"))?;
                if let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) {
                    self.erase_message(entry.revision)
                        .await
                        .map_err(|e| e.to_string())?;
                    // A marker without the key, so every process's mirror forgets it.
                    self.kv
                        .delete(name.as_str())
                        .await
                        .map_err(|e| format!("marking a key destroyed: {e}"))?;
                }
                Ok(())
            })
            .await?;
            self.keys.write().remove(id);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.keys.read().len()
    }

    fn close(&self) {
        // Every write was acknowledged before its call returned; only the mirror runs.
        self.watcher.abort();
    }
}
