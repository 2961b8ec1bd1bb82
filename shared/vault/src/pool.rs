//! Data keys made ahead of need, so creating a user waits for one group commit (the log's),
//! not two in a row (the key store's, then the log's).
//!
//! The pool asks its [`KeyStore`] for keys in batches — one durable write and sync for many
//! keys — whenever it runs low, and hands each key out once. A crash loses only the keys that
//! were made and never handed out: they stay live in the store, sealing nothing. On a clean
//! close the pool destroys them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::{DataKey, KeyId, KeyStore, VaultError};

/// A pool of fresh data keys in front of a [`KeyStore`].
pub struct KeyPool {
    store: Arc<dyn KeyStore>,
    ready: Mutex<Vec<(KeyId, DataKey)>>,
    refilling: AtomicBool,
    /// Keys made per refill; a refill starts when fewer than half are left.
    batch: usize,
}

impl KeyPool {
    /// A pool over `store` that makes `batch` keys at a time (at least 1).
    pub fn new(store: Arc<dyn KeyStore>, batch: usize) -> Arc<Self> {
        Arc::new(Self {
            store,
            ready: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
            batch: batch.max(1),
        })
    }

    /// The store behind the pool.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// `count` fresh keys, each durable and never handed out before. Taken from the pool when
    /// it has them (no wait); the rest are made at once.
    pub async fn take(self: &Arc<Self>, count: usize) -> Result<Vec<(KeyId, DataKey)>, VaultError> {
        let mut keys = {
            let mut ready = self.ready.lock();
            let from = ready.len().saturating_sub(count);
            ready.split_off(from)
        };
        self.refill_if_low();
        if keys.len() < count {
            keys.extend(self.store.create(count - keys.len()).await?);
        }
        Ok(keys)
    }

    /// Gives back keys that were taken but certainly sealed nothing durable (the append that
    /// would have used them was refused). They are handed out again later.
    pub fn give_back(&self, keys: Vec<(KeyId, DataKey)>) {
        self.ready.lock().extend(keys);
    }

    /// Starts a refill in the background if the pool is below half a batch.
    pub fn refill_if_low(self: &Arc<Self>) {
        if self.ready.lock().len() >= self.batch / 2 || self.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            match pool.store.create(pool.batch).await {
                Ok(keys) => pool.ready.lock().extend(keys),
                Err(e) => tracing::warn!(error = %e, "could not make data keys ahead of need"),
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }

    /// Number of keys ready.
    pub fn ready(&self) -> usize {
        self.ready.lock().len()
    }

    /// Destroys the keys made and never handed out (a clean shutdown leaves none behind).
    pub async fn close(&self) -> Result<(), VaultError> {
        let unused: Vec<KeyId> = self.ready.lock().drain(..).map(|(id, _)| id).collect();
        self.store.destroy(&unused).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_handed_out_once_and_unused_ones_destroyed_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KeyStore> =
            Arc::new(crate::FileKeyStore::open(&dir.path().join("keys.dat")).unwrap());
        let pool = KeyPool::new(store.clone(), 8);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            for (id, _) in pool.take(3).await.unwrap() {
                assert!(seen.insert(id), "{id} handed out twice");
                assert!(store.get(id).await.unwrap().is_some(), "durable before use");
            }
            tokio::task::yield_now().await;
        }
        while pool.refilling.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        let live = store.len();
        let ready = pool.ready();
        assert_eq!(live, seen.len() + ready);
        pool.close().await.unwrap();
        assert_eq!(store.len(), seen.len(), "only the handed-out keys remain");
    }
}
