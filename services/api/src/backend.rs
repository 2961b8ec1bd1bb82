//! The stores a server runs on, chosen by [`Store`]: the embedded log and key file in a
//! directory, or NATS JetStream shared by several servers (docs/architecture.md, the event log).
//!
//! | what | embedded (`./data`) | NATS (`nats://…`) |
//! |---|---|---|
//! | event log | `<store>/log` ([`EmbeddedLog`]) | stream `<NS>` ([`NatsLog`]) |
//! | data keys | `<store>/keys.dat` | KV bucket `<ns>_keys` ([`NatsKeyStore`]) |
//! | server secrets | `<store>/secrets/*.key` | KV bucket `<ns>_secrets`, create-only |
//! | export files | `<data>/exports` | object store bucket `<ns>_exports` |
//! | read models | `<data>/readmodels` (sled) | the same, local to each server |
//! | task worker | exclusive (directory lock) | lease-based takeover |

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use roster_eventlog::EventLog;
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::nats::{NatsLog, NatsOptions};
use roster_vault::{
    FileKeyStore, FileSecretStore, KeyStore, NatsKeyStore, NatsKeyStoreOptions, NatsSecretStore,
    NatsSecretStoreOptions, SecretStore,
};

use roster_worker::ExportStore;

/// Where the event log, the data keys and the shared server secrets live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Store {
    /// The embedded segment log and key file in this directory (one server).
    Embedded(PathBuf),
    /// NATS JetStream at these comma-separated URLs (`nats://h1:4222,nats://h2:4222`),
    /// shared by every server of the deployment.
    Nats(String),
}

impl Store {
    /// Parses `--store`: `nats://…` (several URLs comma-separated; each may omit the
    /// scheme after the first) or a directory path.
    pub fn parse(value: &str) -> anyhow::Result<Store> {
        let value = value.trim();
        if value.is_empty() {
            anyhow::bail!("the store is empty: give a directory or nats://host:port");
        }
        if value.starts_with("nats://") {
            let urls: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| {
                    if u.contains("://") {
                        u.to_owned()
                    } else {
                        format!("nats://{u}")
                    }
                })
                .collect();
            for url in &urls {
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|e| anyhow::anyhow!("invalid NATS URL {url:?}: {e}"))?;
            }
            return Ok(Store::Nats(urls.join(",")));
        }
        if let Some((scheme, _)) = value.split_once("://") {
            anyhow::bail!(
                "store {value}: the {scheme}:// store is not available in this build \
                 (use a directory for the embedded store, or nats://host:port)"
            );
        }
        Ok(Store::Embedded(PathBuf::from(value)))
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Embedded(dir) => write!(f, "{}", dir.display()),
            Store::Nats(urls) => f.write_str(urls),
        }
    }
}

/// Settings of the NATS store.
#[derive(Clone, Debug)]
pub struct NatsSettings {
    /// Names everything the deployment keeps in JetStream: the stream `<NAMESPACE>` (upper
    /// case) on subjects `<namespace>.>`, and the buckets `<namespace>_keys`,
    /// `<namespace>_secrets`, `<namespace>_exports`. Lowercase ASCII letters, digits, `_`,
    /// `-`, not starting with `_` or `-`.
    /// Default `roster`.
    pub namespace: String,
    /// Replicas of the stream and buckets when a server creates them: 3 on a 3-node cluster
    /// (an acknowledged write is then on a quorum of two). Default 1.
    pub replicas: usize,
    /// How long a write keeps being retried while JetStream is unreachable or has no quorum
    /// before the request gets 503 `unavailable`. Default 10 s.
    pub unavailable_timeout: Duration,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            namespace: "roster".into(),
            replicas: 1,
            unavailable_timeout: Duration::from_secs(10),
        }
    }
}

impl NatsSettings {
    fn validate(&self) -> anyhow::Result<()> {
        let ns = &self.namespace;
        let valid = !ns.is_empty()
            && !ns.starts_with(['_', '-'])
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        anyhow::ensure!(
            valid,
            "NATS namespace {ns:?}: use lowercase ASCII letters, digits, '_' and '-' \
             (the stream is its upper-case form)"
        );
        anyhow::ensure!(
            (1..=5).contains(&self.replicas),
            "NATS replicas must be 1 to 5, not {}",
            self.replicas
        );
        Ok(())
    }

    fn bucket(&self, what: &str) -> String {
        format!("{}_{what}", self.namespace)
    }
}

/// The opened stores.
pub(crate) struct Backend {
    pub log: Arc<dyn EventLog>,
    pub keys: Arc<dyn KeyStore>,
    pub secrets: Arc<dyn SecretStore>,
    pub exports: ExportStore,
    /// Whether this server is the only one on its store (the embedded directory lock makes
    /// it so): the task worker then resumes unfinished tasks at once, else after a lease.
    pub exclusive: bool,
    /// Where a generated API key is kept, if the store allows one (embedded only).
    pub api_key_file: Option<PathBuf>,
    /// Where presence is kept (docs/presence.md).
    pub presence: PresenceSource,
}

/// Where presence is kept.
pub(crate) enum PresenceSource {
    /// A sled tree in this directory.
    Local(PathBuf),
    /// A JetStream key-value bucket.
    Nats {
        /// The connection.
        context: Box<async_nats::jetstream::Context>,
        /// The bucket's name.
        bucket: String,
        /// Its replicas.
        replicas: usize,
    },
}

impl PresenceSource {
    /// The presence store, sealing messages with `codec`.
    pub async fn open(
        &self,
        codec: roster_projections::Codec,
    ) -> anyhow::Result<Arc<crate::presence::Presence>> {
        Ok(match self {
            PresenceSource::Local(dir) => crate::presence::Presence::open_local(dir, codec).await?,
            PresenceSource::Nats {
                context,
                bucket,
                replicas,
            } => crate::presence::Presence::open_nats(context, bucket, *replicas, codec).await?,
        })
    }
}

impl Backend {
    pub async fn open(
        store: &Store,
        data_dir: &std::path::Path,
        nats: &NatsSettings,
    ) -> anyhow::Result<Backend> {
        match store {
            Store::Embedded(dir) => Self::embedded(dir, data_dir).await,
            Store::Nats(urls) => Self::nats(urls, nats).await,
        }
    }

    async fn embedded(
        dir: &std::path::Path,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Backend> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the store directory {}", dir.display()))?;
        let log = EmbeddedLog::open(&dir.join("log"), EmbeddedOptions::default())
            .await
            .context("opening the event log")?;
        let keys = FileKeyStore::open(&dir.join("keys.dat")).context("opening the key store")?;
        Ok(Backend {
            log: Arc::new(log),
            keys: Arc::new(keys),
            secrets: Arc::new(FileSecretStore::new(dir.join("secrets"))),
            exports: ExportStore::Local(data_dir.join("exports")),
            exclusive: true,
            api_key_file: Some(dir.join("api_key")),
            presence: PresenceSource::Local(dir.join("presence")),
        })
    }

    async fn nats(urls: &str, settings: &NatsSettings) -> anyhow::Result<Backend> {
        settings.validate()?;
        let timeout = settings.unavailable_timeout;
        let log = NatsLog::connect(
            urls,
            NatsOptions {
                stream: settings.namespace.to_ascii_uppercase(),
                subject_prefix: settings.namespace.clone(),
                replicas: settings.replicas,
                unavailable_timeout: timeout,
                ..NatsOptions::default()
            },
        )
        .await
        .with_context(|| format!("connecting the event log to NATS at {urls}"))?;
        let keys = retry_connect(timeout, "opening the key bucket", || {
            NatsKeyStore::connect(
                urls,
                NatsKeyStoreOptions {
                    bucket: settings.bucket("keys"),
                    replicas: settings.replicas,
                    timeout,
                },
            )
        })
        .await?;
        let context = jetstream_context(urls, timeout).await?;
        let secrets = NatsSecretStore::open(
            &context,
            NatsSecretStoreOptions {
                bucket: settings.bucket("secrets"),
                replicas: settings.replicas,
                timeout,
            },
        )
        .await
        .context("opening the secret bucket")?;
        let exports = ExportStore::open_nats(
            &context,
            &settings.bucket("exports"),
            settings.replicas,
            timeout,
        )
        .await?;
        Ok(Backend {
            log: Arc::new(log),
            keys: Arc::new(keys),
            secrets: Arc::new(secrets),
            exports,
            exclusive: false,
            api_key_file: None,
            presence: PresenceSource::Nats {
                context: Box::new(context),
                bucket: settings.bucket("presence"),
                replicas: settings.replicas,
            },
        })
    }
}

/// A JetStream context on its own connection (secrets and export files).
async fn jetstream_context(
    urls: &str,
    timeout: Duration,
) -> anyhow::Result<async_nats::jetstream::Context> {
    let addrs = urls
        .split(',')
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the NATS URLs")?;
    let client = retry_connect(timeout, "connecting to NATS", || {
        async_nats::ConnectOptions::new()
            .name("roster-server")
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .connect(addrs.as_slice())
    })
    .await?;
    Ok(async_nats::jetstream::ContextBuilder::new()
        .timeout(timeout)
        .build(client))
}

/// Retries a connection for `timeout` (backoff 50 ms → 1 s) while NATS is not ready.
async fn retry_connect<T, E, F, Fut>(
    timeout: Duration,
    what: &str,
    mut connect: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: fmt::Display,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, "{what}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => anyhow::bail!("{what}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_parse() {
        assert_eq!(
            Store::parse("./data").unwrap(),
            Store::Embedded("./data".into())
        );
        assert_eq!(
            Store::parse("nats://10.0.0.1:4222, 10.0.0.2:4222").unwrap(),
            Store::Nats("nats://10.0.0.1:4222,nats://10.0.0.2:4222".into())
        );
        assert!(Store::parse("esdb://localhost:2113").is_err());
        assert!(Store::parse("").is_err());
    }

    #[test]
    fn namespaces_are_checked() {
        let mut s = NatsSettings::default();
        assert!(s.validate().is_ok());
        s.namespace = "a.b".into();
        assert!(s.validate().is_err());
        s.namespace = "ok_1".into();
        s.replicas = 0;
        assert!(s.validate().is_err());
    }
}
