//! Server secrets that every `roster serve` process of one deployment must share: the
//! blind-index key (`index`) and the token signing key (`token`). Equal bytes everywhere, or
//! username lookups and tokens would disagree between servers.
//!
//! - [`FileSecretStore`]: files `<dir>/<name>.key` (the embedded store: one server).
//! - [`NatsSecretStore`]: a JetStream KV bucket. The first server to need a secret creates it
//!   with the KV's create-only write; a server that loses that race reads the winner's value.
//!   So the secret is chosen exactly once, whichever servers start together.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use rand::RngCore;
use tokio::time::Instant;

use crate::VaultError;

/// Where the shared server secrets live.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// The 32-byte secret `name` (`index`, `token`, …): the one stored, or a new random one,
    /// stored durably before it is returned. Every caller of one store gets the same bytes.
    async fn load_or_create(&self, name: &str) -> Result<[u8; 32], VaultError>;
}

/// Secrets in files `<dir>/<name>.key` (mode 0600, written atomically and synced).
#[derive(Clone, Debug)]
pub struct FileSecretStore {
    dir: PathBuf,
}

impl FileSecretStore {
    /// Secrets under `dir` (created on first use), e.g. `<data>/secrets`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait::async_trait]
impl SecretStore for FileSecretStore {
    async fn load_or_create(&self, name: &str) -> Result<[u8; 32], VaultError> {
        check_name(name)?;
        let path = self.dir.join(format!("{name}.key"));
        tokio::task::spawn_blocking(move || crate::load_or_create_secret(&path))
            .await
            .map_err(|e| VaultError::Io(std::io::Error::other(e)))?
    }
}

fn check_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(VaultError::Corrupt(format!("invalid secret name {name:?}")))
    }
}

/// Settings of [`NatsSecretStore`].
#[derive(Clone, Debug)]
pub struct NatsSecretStoreOptions {
    /// KV bucket name. Default `roster_secrets`.
    pub bucket: String,
    /// Replicas of the bucket when this call creates it (3 in a 3-node cluster). Default 1.
    pub replicas: usize,
    /// How long to keep trying while JetStream is unreachable or has no quorum. Default 10 s.
    pub timeout: Duration,
}

impl Default for NatsSecretStoreOptions {
    fn default() -> Self {
        Self {
            bucket: "roster_secrets".into(),
            replicas: 1,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Secrets in a JetStream KV bucket shared by every server of a deployment.
pub struct NatsSecretStore {
    kv: kv::Store,
    timeout: Duration,
}

impl NatsSecretStore {
    /// Opens (or creates: file storage, history 1, `options.replicas`) the bucket through an
    /// existing JetStream context, retrying for `options.timeout` while JetStream is not ready.
    pub async fn open(
        context: &jetstream::Context,
        options: NatsSecretStoreOptions,
    ) -> Result<Self, VaultError> {
        let deadline = Instant::now() + options.timeout;
        // The bucket's stream is made here, as the KV API would make it: that API first asks
        // for the account's limits in a form nats-server 2.9 does not answer.
        let config = jetstream::stream::Config {
            name: format!("KV_{}", options.bucket),
            description: Some("Roster server secrets (shared by every server)".into()),
            subjects: vec![format!("$KV.{}.>", options.bucket)],
            max_messages_per_subject: 1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: options.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        let (config, bucket) = (&config, options.bucket.as_str());
        let kv = retry(deadline, "opening the secret bucket", move || async move {
            context
                .get_or_create_stream(config.clone())
                .await
                .map_err(|e| e.to_string())?;
            context
                .get_key_value(bucket)
                .await
                .map_err(|e| e.to_string())
        })
        .await?;
        Ok(Self {
            kv,
            timeout: options.timeout,
        })
    }

    async fn read(&self, name: &str) -> Result<Option<[u8; 32]>, String> {
        match self.kv.entry(name).await.map_err(|e| e.to_string())? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let bytes: [u8; 32] = entry.value.as_ref().try_into().map_err(|_| {
                    format!(
                        "secret {name} in the bucket is {} bytes, not 32",
                        entry.value.len()
                    )
                })?;
                Ok(Some(bytes))
            }
            _ => Ok(None),
        }
    }
}

#[async_trait::async_trait]
impl SecretStore for NatsSecretStore {
    async fn load_or_create(&self, name: &str) -> Result<[u8; 32], VaultError> {
        check_name(name)?;
        let deadline = Instant::now() + self.timeout;
        retry(deadline, "loading a server secret", move || async move {
            if let Some(secret) = self.read(name).await? {
                return Ok(secret);
            }
            let mut secret = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            match self
                .kv
                .create(name, bytes::Bytes::copy_from_slice(&secret))
                .await
            {
                Ok(_) => Ok(secret),
                // Another server created it first: theirs is the secret.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => self
                    .read(name)
                    .await?
                    .ok_or_else(|| format!("secret {name} exists but cannot be read")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }
}

/// Runs `attempt` until it succeeds or `deadline` passes (backoff 50 ms → 1 s).
async fn retry<T, F, Fut>(deadline: Instant, what: &str, mut attempt: F) -> Result<T, VaultError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut backoff = Duration::from_millis(50);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, "{what}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(VaultError::Unavailable(format!("{what}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_secrets_are_created_once_under_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSecretStore::new(dir.path().join("secrets"));
        let a = store.load_or_create("index").await.unwrap();
        assert_eq!(store.load_or_create("index").await.unwrap(), a);
        assert_ne!(store.load_or_create("token").await.unwrap(), a);
        assert!(dir.path().join("secrets/index.key").is_file());
        assert!(store.load_or_create("../escape").await.is_err());
    }
}
