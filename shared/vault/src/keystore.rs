//! The key store contract: per-user data keys, durable before use, destroyable for erasure.

use crate::{DataKey, VaultError};

pub use roster_domain::KeyId;

/// Where data keys live. Backends: [`crate::FileKeyStore`] (embedded) and
/// [`crate::NatsKeyStore`] (a JetStream KV bucket, when scaled out).
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Creates `count` new keys; they are durable when this returns, so nothing sealed under
    /// them can outlive them by accident.
    async fn create(&self, count: usize) -> Result<Vec<(KeyId, DataKey)>, VaultError>;

    /// The key with this id; `None` if it never existed or has been destroyed.
    async fn get(&self, id: KeyId) -> Result<Option<DataKey>, VaultError>;

    /// Destroys keys: when this returns, their bytes are overwritten on disk and synced, and
    /// `get` returns `None` for them. Unknown ids are ignored.
    async fn destroy(&self, ids: &[KeyId]) -> Result<(), VaultError>;

    /// Number of live keys.
    fn len(&self) -> usize;

    /// Whether no live key exists.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finishes what is in flight and releases files and connections. Calls after this fail
    /// with [`VaultError::Closed`] (or are unavailable).
    fn close(&self) {}

    /// Whether new keys can be written now: `Err(reason)` while the store knows they cannot
    /// (the file key store after a failed write, until a write succeeds again — it retries by
    /// itself). Readiness checks use it.
    fn writable(&self) -> Result<(), String> {
        Ok(())
    }
}
