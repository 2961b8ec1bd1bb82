//! Personal-data protection for Roster (docs/architecture.md, personal data and erasure:
//! "Personal data never reaches disk in plain text").
//!
//! - [`DataKey`], [`seal`] and [`open`]: per-user data keys and AEAD (XChaCha20-Poly1305) for
//!   the personal fields of events and read-model rows.
//! - [`KeyStore`] and its backends [`FileKeyStore`] (embedded) and [`NatsKeyStore`] (a
//!   JetStream KV bucket): keys are durable before they are used, and [`KeyStore::destroy`]
//!   overwrites a key in place and syncs — crypto-erasure.
//! - [`BlindIndex`]: keyed hashes (HMAC-SHA256) of normalized values, so uniqueness and lookup
//!   indexes never hold a username or an email.
//! - [`SecretStore`] and its backends [`FileSecretStore`] (files in the data directory, via
//!   [`load_or_create_secret`]) and [`NatsSecretStore`] (a JetStream KV bucket, so every
//!   server of a scaled-out deployment gets the same secrets).

mod aead;
mod blind;
mod file_keystore;
mod keystore;
mod nats_keystore;
mod pool;
mod secret;
mod secret_store;

pub use aead::{DataKey, open, seal};
pub use blind::BlindIndex;
pub use file_keystore::FileKeyStore;
pub use keystore::{KeyId, KeyStore};
pub use nats_keystore::{NatsKeyStore, NatsKeyStoreOptions};
pub use pool::KeyPool;
pub use secret::load_or_create_secret;
pub use secret_store::{FileSecretStore, NatsSecretStore, NatsSecretStoreOptions, SecretStore};

/// Why a vault operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Sealed bytes did not authenticate under the key (tampered, truncated or wrong key).
    #[error("sealed data does not authenticate")]
    Unauthentic,
    /// I/O on the key store or a secret file failed.
    #[error("vault i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A stored file is not in the expected format.
    #[error("vault file corrupt: {0}")]
    Corrupt(String),
    /// The key store has been closed.
    #[error("key store closed")]
    Closed,
    /// A remote key store is unreachable.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
}
