//! Keyed hashes for uniqueness and lookup indexes: the index holds HMAC(secret, value), never
//! the value, so a copy of the index reveals nothing without the server secret.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// HMAC-SHA256 under a server secret, truncated to 128 bits (collisions need ~2^64 values).
#[derive(Clone)]
pub struct BlindIndex {
    secret: Zeroizing<[u8; 32]>,
}

impl BlindIndex {
    /// A blind index keyed by `secret`.
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            secret: Zeroizing::new(secret),
        }
    }

    /// The keyed hash of `value` within `domain` (e.g. `"username"`, or `"org/email"`), as a
    /// 22-character URL-safe string. Different domains never collide.
    pub fn hash(&self, domain: &str, value: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.as_ref())
            .expect("HMAC accepts keys of any length");
        mac.update(&(domain.len() as u64).to_le_bytes());
        mac.update(domain.as_bytes());
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
    }
}

impl std::fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlindIndex(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_domain_separated() {
        let a = BlindIndex::new([1; 32]);
        let b = BlindIndex::new([2; 32]);
        assert_eq!(a.hash("username", "alice"), a.hash("username", "alice"));
        assert_ne!(a.hash("username", "alice"), b.hash("username", "alice"));
        assert_ne!(a.hash("username", "alice"), a.hash("email", "alice"));
        // Length-prefixing the domain keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(a.hash("ab", "c"), a.hash("a", "bc"));
        assert_eq!(a.hash("username", "alice").len(), 22);
    }
}
