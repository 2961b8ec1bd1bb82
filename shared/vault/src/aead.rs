//! Authenticated encryption of personal data under a per-user key.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::VaultError;

/// Format byte in front of every sealed value, so the scheme can change later.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;

/// A 256-bit data key. Zeroed when dropped.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw bytes (for storing the key).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Encrypts `plaintext` under `key`, binding it to `aad` (which is authenticated, not hidden).
/// Output: format byte, random 192-bit nonce, ciphertext with tag.
pub fn seal(key: &DataKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.0.as_ref().into());
    // The thread's CSPRNG (ChaCha, seeded and reseeded from the OS): a random 192-bit nonce
    // per seal without a system call each time.
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// Decrypts what [`seal`] produced with the same key and `aad`.
pub fn open(key: &DataKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT_V1 {
        return Err(VaultError::Unauthentic);
    }
    let cipher = XChaCha20Poly1305::new(key.0.as_ref().into());
    cipher
        .decrypt(
            XNonce::from_slice(&sealed[1..1 + NONCE_LEN]),
            Payload {
                msg: &sealed[1 + NONCE_LEN..],
                aad,
            },
        )
        .map_err(|_| VaultError::Unauthentic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = DataKey::generate();
        let sealed = seal(&key, b"user-1", b"alice@example.com");
        assert!(!sealed.windows(5).any(|w| w == b"alice"));
        assert_eq!(
            open(&key, b"user-1", &sealed).unwrap(),
            b"alice@example.com"
        );
        assert!(open(&key, b"user-2", &sealed).is_err(), "aad is bound");
        assert!(open(&DataKey::generate(), b"user-1", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open(&key, b"user-1", &tampered).is_err());
        assert!(open(&key, b"user-1", &sealed[..10]).is_err());
    }

    #[test]
    fn nonces_differ() {
        let key = DataKey::generate();
        assert_ne!(seal(&key, b"", b"x"), seal(&key, b"", b"x"));
    }
}
