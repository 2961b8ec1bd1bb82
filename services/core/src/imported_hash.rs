//! Password hashes made by other systems (docs/import.md): what an import line, a create or an
//! upsert may carry as `password_hash`, how it is checked, stored and verified.
//!
//! Each algorithm is verified by a maintained crate — `argon2`, `scrypt`, `pbkdf2`, `sha1`,
//! `sha2`, `md-5`, `aes` + `ctr` (RustCrypto) and `bcrypt` — except phpass, which has none
//! (the `phpass` crate is unmaintained since 2020): it is its short loop over `md-5` below.
//! Every comparison of derived bytes is constant-time. Costs are bounded (`check`) so that no
//! imported hash can make a sign-in spend more than Roster allows.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use roster_domain::PasswordHash;

/// Where a salted digest puts the salt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaltPosition {
    /// digest(salt + password)
    #[default]
    Prefix,
    /// digest(password + salt)
    Suffix,
}

impl SaltPosition {
    fn is_prefix(&self) -> bool {
        *self == SaltPosition::Prefix
    }
}

/// A password hash made by another system, as an import line gives it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "algorithm", rename_all = "snake_case", deny_unknown_fields)]
pub enum ImportedHash {
    /// A PHC string: `$argon2id$…`, `$argon2i$…`, `$argon2d$…`.
    Argon2 {
        /// The PHC string.
        hash: String,
    },
    /// `$2a$`, `$2b$` or `$2y$`.
    Bcrypt {
        /// The modular crypt string.
        hash: String,
    },
    /// scrypt's derived key.
    Scrypt {
        /// The derived key, standard base64.
        hash: String,
        /// Standard base64.
        salt: String,
        /// CPU/memory cost, a power of two ≤ 2^20.
        n: u64,
        /// Block size.
        r: u32,
        /// Parallelism (`r·p` ≤ 64).
        p: u32,
        /// Bytes of the derived key (16..=64).
        length: u32,
    },
    /// Firebase Authentication's scrypt fork.
    ScryptModified {
        /// Standard base64.
        hash: String,
        /// The user's salt, standard base64.
        salt: String,
        /// The project's salt separator, standard base64.
        salt_separator: String,
        /// The project's signer key, standard base64.
        signer_key: String,
        /// scrypt's `r` (1..=64).
        rounds: u32,
        /// log2 of scrypt's `n` (1..=20).
        memory_cost: u32,
    },
    /// PBKDF2-HMAC-SHA256.
    Pbkdf2Sha256 {
        /// The derived key, standard base64.
        hash: String,
        /// Standard base64.
        salt: String,
        /// 1..=10 000 000.
        iterations: u32,
    },
    /// PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        /// The derived key, standard base64.
        hash: String,
        /// Standard base64.
        salt: String,
        /// 1..=10 000 000.
        iterations: u32,
    },
    /// Salted MD5 (weak).
    Md5 {
        /// Lowercase hex.
        hash: String,
        /// UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        salt: Option<String>,
        /// Where the salt goes.
        #[serde(default, skip_serializing_if = "SaltPosition::is_prefix")]
        salt_position: SaltPosition,
    },
    /// Salted SHA-1 (weak).
    Sha1 {
        /// Lowercase hex.
        hash: String,
        /// UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        salt: Option<String>,
        /// Where the salt goes.
        #[serde(default, skip_serializing_if = "SaltPosition::is_prefix")]
        salt_position: SaltPosition,
    },
    /// Salted SHA-256 (weak).
    Sha256 {
        /// Lowercase hex.
        hash: String,
        /// UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        salt: Option<String>,
        /// Where the salt goes.
        #[serde(default, skip_serializing_if = "SaltPosition::is_prefix")]
        salt_position: SaltPosition,
    },
    /// Salted SHA-512 (weak).
    Sha512 {
        /// Lowercase hex.
        hash: String,
        /// UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        salt: Option<String>,
        /// Where the salt goes.
        #[serde(default, skip_serializing_if = "SaltPosition::is_prefix")]
        salt_position: SaltPosition,
    },
    /// phpass portable hashes (WordPress, phpBB): `$P$` or `$H$` (weak).
    Phpass {
        /// The 34-character string.
        hash: String,
    },
}

impl std::fmt::Debug for ImportedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImportedHash({}, ..)", self.algorithm())
    }
}

const MAX_BCRYPT_COST: u32 = 16;
const MAX_SCRYPT_N: u64 = 1 << 20;
const MAX_SCRYPT_RP: u64 = 64;
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
const MAX_ARGON2_KIB: u32 = 1 << 20;
const MAX_ARGON2_T: u32 = 10;
const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn b64(field: &str, value: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(value)
        .map_err(|_| format!("{field} is not standard base64"))
}

fn digest_hex(field: &str, value: &str, len: usize) -> Result<Vec<u8>, String> {
    let bytes = hex::decode(value).map_err(|_| format!("{field} is not hex"))?;
    if bytes.len() != len || value.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("{field} must be {} lowercase hex digits", len * 2));
    }
    Ok(bytes)
}

impl ImportedHash {
    /// Parses and checks an API object. The error names the field; it never repeats a hash,
    /// salt or key.
    pub fn parse(value: &serde_json::Value) -> Result<ImportedHash, String> {
        let algorithm = value.get("algorithm").and_then(|a| a.as_str());
        let parsed: ImportedHash = serde_json::from_value(value.clone()).map_err(|e| {
            let text = e.to_string();
            match algorithm {
                None => "algorithm is missing".to_owned(),
                Some(_) if text.starts_with("unknown variant") => {
                    "unknown algorithm; one of argon2, \
                     bcrypt, scrypt, scrypt_modified, pbkdf2_sha256, pbkdf2_sha512, md5, sha1, \
                     sha256, sha512, phpass"
                        .to_owned()
                }
                // serde names fields and types, never values of strings it refused.
                Some(a) => format!(
                    "not a valid {a} hash: {}",
                    text.split(" at line").next().unwrap_or("")
                ),
            }
        })?;
        parsed.check()?;
        Ok(parsed)
    }

    /// Structural and cost checks: decodes, parses, limits.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Argon2 { hash } => {
                let parsed = argon2::PasswordHash::new(hash)
                    .map_err(|_| "hash is not an argon2 PHC string".to_owned())?;
                if !matches!(
                    parsed.algorithm.as_str(),
                    "argon2id" | "argon2i" | "argon2d"
                ) {
                    return Err("hash is not an argon2 PHC string".into());
                }
                let params = argon2::Params::try_from(&parsed)
                    .map_err(|_| "hash has invalid argon2 parameters".to_owned())?;
                if params.m_cost() > MAX_ARGON2_KIB {
                    return Err("hash: argon2 memory above 1 GiB".into());
                }
                if params.t_cost() > MAX_ARGON2_T {
                    return Err("hash: argon2 t above 10".into());
                }
                if parsed.salt.is_none() || parsed.hash.is_none() {
                    return Err("hash is not an argon2 PHC string".into());
                }
                Ok(())
            }
            Self::Bcrypt { hash } => {
                if !(hash.starts_with("$2a$")
                    || hash.starts_with("$2b$")
                    || hash.starts_with("$2y$"))
                {
                    return Err("hash is not a $2a$, $2b$ or $2y$ bcrypt string".into());
                }
                let parts: bcrypt::HashParts = hash
                    .parse()
                    .map_err(|_| "hash is not a bcrypt string".to_owned())?;
                if parts.get_cost() > MAX_BCRYPT_COST {
                    return Err(format!("hash: bcrypt cost above {MAX_BCRYPT_COST}"));
                }
                Ok(())
            }
            Self::Scrypt {
                hash,
                salt,
                n,
                r,
                p,
                length,
            } => {
                if !n.is_power_of_two() || *n < 2 || *n > MAX_SCRYPT_N {
                    return Err("n must be a power of two from 2 to 2^20".into());
                }
                if *r == 0 || *p == 0 || u64::from(*r) * u64::from(*p) > MAX_SCRYPT_RP {
                    return Err("r and p must be at least 1, with r·p at most 64".into());
                }
                if !(16..=64).contains(length) {
                    return Err("length must be 16 to 64".into());
                }
                b64("salt", salt)?;
                if b64("hash", hash)?.len() != *length as usize {
                    return Err("hash must be length bytes".into());
                }
                Ok(())
            }
            Self::ScryptModified {
                hash,
                salt,
                salt_separator,
                signer_key,
                rounds,
                memory_cost,
            } => {
                if !(1..=20).contains(memory_cost) {
                    return Err("memory_cost must be 1 to 20".into());
                }
                if !(1..=64).contains(rounds) {
                    return Err("rounds must be 1 to 64".into());
                }
                b64("salt", salt)?;
                b64("salt_separator", salt_separator)?;
                let key = b64("signer_key", signer_key)?;
                if b64("hash", hash)?.len() != key.len() {
                    return Err("hash must be as long as signer_key".into());
                }
                Ok(())
            }
            Self::Pbkdf2Sha256 {
                hash,
                salt,
                iterations,
            }
            | Self::Pbkdf2Sha512 {
                hash,
                salt,
                iterations,
            } => {
                if *iterations == 0 || *iterations > MAX_PBKDF2_ITERATIONS {
                    return Err("iterations must be 1 to 10 000 000".into());
                }
                b64("salt", salt)?;
                let len = b64("hash", hash)?.len();
                if !(16..=64).contains(&len) {
                    return Err("hash must decode to 16 to 64 bytes".into());
                }
                Ok(())
            }
            Self::Md5 { hash, .. } => digest_hex("hash", hash, 16).map(drop),
            Self::Sha1 { hash, .. } => digest_hex("hash", hash, 20).map(drop),
            Self::Sha256 { hash, .. } => digest_hex("hash", hash, 32).map(drop),
            Self::Sha512 { hash, .. } => digest_hex("hash", hash, 64).map(drop),
            Self::Phpass { hash } => phpass_parts(hash).map(drop),
        }
    }

    /// The algorithm's name as the contract spells it.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Argon2 { .. } => "argon2",
            Self::Bcrypt { .. } => "bcrypt",
            Self::Scrypt { .. } => "scrypt",
            Self::ScryptModified { .. } => "scrypt_modified",
            Self::Pbkdf2Sha256 { .. } => "pbkdf2_sha256",
            Self::Pbkdf2Sha512 { .. } => "pbkdf2_sha512",
            Self::Md5 { .. } => "md5",
            Self::Sha1 { .. } => "sha1",
            Self::Sha256 { .. } => "sha256",
            Self::Sha512 { .. } => "sha512",
            Self::Phpass { .. } => "phpass",
        }
    }

    /// md5, sha1, sha256, sha512, phpass: accepted, counted, replaced at the first sign-in.
    pub fn is_weak(&self) -> bool {
        matches!(
            self,
            Self::Md5 { .. }
                | Self::Sha1 { .. }
                | Self::Sha256 { .. }
                | Self::Sha512 { .. }
                | Self::Phpass { .. }
        )
    }

    /// What Roster stores: the PHC/MCF string itself for argon2, bcrypt and phpass; the
    /// compact JSON of the object (it starts with `{`) for the others.
    pub fn to_stored(&self) -> PasswordHash {
        match self {
            Self::Argon2 { hash } | Self::Bcrypt { hash } | Self::Phpass { hash } => {
                PasswordHash(hash.clone())
            }
            other => PasswordHash(serde_json::to_string(other).expect("hashes serialize")),
        }
    }

    /// The inverse of [`to_stored`](Self::to_stored), which also reads Roster's own argon2id
    /// strings. `None` for anything else.
    pub fn from_stored(stored: &PasswordHash) -> Option<ImportedHash> {
        let s = stored.as_str();
        let hash = s.to_owned();
        if s.starts_with('{') {
            serde_json::from_str(s).ok()
        } else if s.starts_with("$argon2") {
            Some(Self::Argon2 { hash })
        } else if s.starts_with("$2a$") || s.starts_with("$2b$") || s.starts_with("$2y$") {
            Some(Self::Bcrypt { hash })
        } else if s.starts_with("$P$") || s.starts_with("$H$") {
            Some(Self::Phpass { hash })
        } else {
            None
        }
    }

    /// Whether `password` produced this hash (constant-time comparisons). Synchronous: it
    /// runs on the password pool's threads.
    pub fn verify(&self, password: &[u8]) -> bool {
        if self.check().is_err() {
            return false;
        }
        match self {
            Self::Argon2 { hash } => {
                use argon2::PasswordVerifier;
                argon2::PasswordHash::new(hash).is_ok_and(|parsed| {
                    argon2::Argon2::default()
                        .verify_password(password, &parsed)
                        .is_ok()
                })
            }
            // bcrypt compares in constant time.
            Self::Bcrypt { hash } => bcrypt::verify(password, hash).unwrap_or(false),
            Self::Scrypt {
                hash,
                salt,
                n,
                r,
                p,
                length,
            } => {
                let (Ok(expected), Ok(salt)) = (STANDARD.decode(hash), STANDARD.decode(salt))
                else {
                    return false;
                };
                let log_n = n.trailing_zeros() as u8;
                let Ok(params) = scrypt::Params::new(log_n, *r, *p, *length as usize) else {
                    return false;
                };
                let mut out = vec![0u8; *length as usize];
                scrypt::scrypt(password, &salt, &params, &mut out).is_ok()
                    && bool::from(out.ct_eq(&expected))
            }
            Self::ScryptModified {
                hash,
                salt,
                salt_separator,
                signer_key,
                rounds,
                memory_cost,
            } => firebase_scrypt(
                password,
                hash,
                salt,
                salt_separator,
                signer_key,
                *rounds,
                *memory_cost,
            ),
            Self::Pbkdf2Sha256 {
                hash,
                salt,
                iterations,
            } => pbkdf2_matches(password, hash, salt, *iterations, false),
            Self::Pbkdf2Sha512 {
                hash,
                salt,
                iterations,
            } => pbkdf2_matches(password, hash, salt, *iterations, true),
            Self::Md5 {
                hash,
                salt,
                salt_position,
            } => salted::<md5::Md5>(password, hash, salt, *salt_position),
            Self::Sha1 {
                hash,
                salt,
                salt_position,
            } => salted::<sha1::Sha1>(password, hash, salt, *salt_position),
            Self::Sha256 {
                hash,
                salt,
                salt_position,
            } => salted::<sha2::Sha256>(password, hash, salt, *salt_position),
            Self::Sha512 {
                hash,
                salt,
                salt_position,
            } => salted::<sha2::Sha512>(password, hash, salt, *salt_position),
            Self::Phpass { hash } => phpass_matches(password, hash),
        }
    }
}

fn pbkdf2_matches(password: &[u8], hash: &str, salt: &str, iterations: u32, sha512: bool) -> bool {
    let (Ok(expected), Ok(salt)) = (STANDARD.decode(hash), STANDARD.decode(salt)) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    match sha512 {
        true => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, &salt, iterations, &mut out),
        false => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, &salt, iterations, &mut out),
    }
    bool::from(out.ct_eq(&expected))
}

fn salted<D: sha2::Digest>(
    password: &[u8],
    hash: &str,
    salt: &Option<String>,
    position: SaltPosition,
) -> bool {
    let Ok(expected) = hex::decode(hash) else {
        return false;
    };
    let salt = salt.as_deref().unwrap_or("").as_bytes();
    let mut digest = D::new();
    match position {
        SaltPosition::Prefix => {
            digest.update(salt);
            digest.update(password);
        }
        SaltPosition::Suffix => {
            digest.update(password);
            digest.update(salt);
        }
    }
    bool::from(digest.finalize().as_slice().ct_eq(&expected))
}

/// Firebase's scrypt: the project's signer key, AES-256-CTR-encrypted (zero IV) under the key
/// scrypt derives from the password and `salt ++ salt_separator`, equals the hash.
fn firebase_scrypt(
    password: &[u8],
    hash: &str,
    salt: &str,
    separator: &str,
    signer_key: &str,
    rounds: u32,
    memory_cost: u32,
) -> bool {
    use aes::cipher::{KeyIvInit, StreamCipher};
    let (Ok(expected), Ok(mut salt), Ok(separator), Ok(mut key)) = (
        STANDARD.decode(hash),
        STANDARD.decode(salt),
        STANDARD.decode(separator),
        STANDARD.decode(signer_key),
    ) else {
        return false;
    };
    salt.extend_from_slice(&separator);
    let Ok(params) = scrypt::Params::new(memory_cost as u8, rounds, 1, 32) else {
        return false;
    };
    let mut derived = [0u8; 32];
    if scrypt::scrypt(password, &salt, &params, &mut derived).is_err() {
        return false;
    }
    let mut cipher = ctr::Ctr128BE::<aes::Aes256>::new(&derived.into(), &[0u8; 16].into());
    cipher.apply_keystream(&mut key);
    bool::from(key.ct_eq(&expected))
}

/// A phpass string's rounds (log2), salt and checksum.
fn phpass_parts(hash: &str) -> Result<(u32, &[u8], &[u8]), String> {
    let bytes = hash.as_bytes();
    if bytes.len() != 34 || !(hash.starts_with("$P$") || hash.starts_with("$H$")) {
        return Err("hash is not a $P$ or $H$ phpass string of 34 characters".into());
    }
    let log2 = ITOA64
        .iter()
        .position(|c| *c == bytes[3])
        .ok_or_else(|| "hash has an invalid phpass rounds character".to_owned())?
        as u32;
    if !(7..=30).contains(&log2) {
        return Err("hash: phpass rounds outside 2^7..2^30".into());
    }
    if !bytes[4..].iter().all(|c| ITOA64.contains(c)) {
        return Err("hash has characters outside phpass's alphabet".into());
    }
    Ok((log2, &bytes[4..12], &bytes[12..]))
}

/// phpass's portable hash: md5(salt + password), then `2^log2` times md5(hash + password),
/// the 16 bytes in phpass's own base64 (openwall.com/phpass).
fn phpass_matches(password: &[u8], hash: &str) -> bool {
    use md5::Digest;
    let Ok((log2, salt, expected)) = phpass_parts(hash) else {
        return false;
    };
    let mut sum = md5::Md5::new()
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    for _ in 0..(1u64 << log2) {
        sum = md5::Md5::new()
            .chain_update(sum)
            .chain_update(password)
            .finalize();
    }
    bool::from(phpass_encode(&sum).as_slice().ct_eq(expected))
}

fn phpass_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(22);
    let mut i = 0;
    while i < input.len() {
        let mut value = u32::from(input[i]);
        i += 1;
        out.push(ITOA64[(value & 0x3f) as usize]);
        if i < input.len() {
            value |= u32::from(input[i]) << 8;
        }
        out.push(ITOA64[((value >> 6) & 0x3f) as usize]);
        if i >= input.len() {
            break;
        }
        i += 1;
        if i < input.len() {
            value |= u32::from(input[i]) << 16;
        }
        out.push(ITOA64[((value >> 12) & 0x3f) as usize]);
        if i >= input.len() {
            break;
        }
        i += 1;
        out.push(ITOA64[((value >> 18) & 0x3f) as usize]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(v: serde_json::Value) -> String {
        ImportedHash::parse(&v).expect_err("refused")
    }

    #[test]
    fn costs_beyond_a_sign_in_are_refused() {
        let b = format!("$2b$17${}", "a".repeat(53));
        assert!(refused(json!({"algorithm": "bcrypt", "hash": b})).contains("cost"));
        let salt = STANDARD.encode(b"saltsalt");
        let key = STANDARD.encode([0u8; 32]);
        for (n, r, p) in [(3u64, 8, 1), (1 << 21, 8, 1), (1024, 32, 4)] {
            refused(
                json!({"algorithm": "scrypt", "hash": key, "salt": salt, "n": n, "r": r, "p": p, "length": 32}),
            );
        }
        refused(
            json!({"algorithm": "scrypt", "hash": key, "salt": salt, "n": 1024, "r": 8, "p": 1, "length": 8}),
        );
        for iterations in [0, 10_000_001] {
            refused(
                json!({"algorithm": "pbkdf2_sha256", "hash": key, "salt": salt, "iterations": iterations}),
            );
        }
        let big = "$argon2id$v=19$m=2097152,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(refused(json!({"algorithm": "argon2", "hash": big})).contains("memory"));
        let slow = "$argon2id$v=19$m=1024,t=11,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(refused(json!({"algorithm": "argon2", "hash": slow})).contains("t above"));
        for (rounds, memory_cost) in [(0, 14), (65, 14), (8, 21)] {
            refused(
                json!({"algorithm": "scrypt_modified", "hash": key, "salt": salt,
                "salt_separator": "Bw==", "signer_key": key, "rounds": rounds, "memory_cost": memory_cost}),
            );
        }
    }

    #[test]
    fn malformed_and_unknown_hashes_are_refused_without_repeating_them() {
        let secret = "c2VjcmV0LXNhbHQtbm90LWJhc2U2NCE!!";
        let message = refused(
            json!({"algorithm": "pbkdf2_sha512", "hash": secret, "salt": secret, "iterations": 1000}),
        );
        assert!(!message.contains(secret), "{message}");
        assert!(refused(json!({"algorithm": "md5", "hash": "xyz"})).contains("hex"));
        assert!(refused(json!({"algorithm": "md5", "hash": "A".repeat(32)})).contains("lowercase"));
        assert!(refused(json!({"algorithm": "rot13", "hash": "x"})).contains("unknown algorithm"));
        let unknown = refused(json!({"algorithm": "sha1", "hash": "0".repeat(40), "pepper": "p"}));
        assert!(unknown.contains("pepper"), "{unknown}");
        assert!(refused(json!({"hash": "x"})).contains("algorithm"));
        assert!(refused(json!({"algorithm": "phpass", "hash": "$P$short"})).contains("phpass"));
        assert!(refused(json!({"algorithm": "argon2", "hash": "$2b$04$x"})).contains("argon2"));
    }

    #[test]
    fn debug_shows_the_algorithm_only() {
        let h =
            ImportedHash::parse(&json!({"algorithm": "sha256", "hash": "ab".repeat(32)})).unwrap();
        assert_eq!(format!("{h:?}"), "ImportedHash(sha256, ..)");
        assert!(h.is_weak());
        let b = ImportedHash::Bcrypt {
            hash: "$2b$04$abc".into(),
        };
        assert!(!b.is_weak());
    }

    #[test]
    fn stored_forms_round_trip_and_roster_hashes_read_as_argon2() {
        let own = PasswordHash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into());
        assert_eq!(
            ImportedHash::from_stored(&own),
            Some(ImportedHash::Argon2 {
                hash: own.0.clone()
            })
        );
        let md5 = ImportedHash::parse(&json!({"algorithm": "md5", "hash": "0".repeat(32), "salt": "s", "salt_position": "suffix"})).unwrap();
        let stored = md5.to_stored();
        assert!(stored.as_str().starts_with('{'));
        assert_eq!(ImportedHash::from_stored(&stored), Some(md5));
        assert_eq!(
            ImportedHash::from_stored(&PasswordHash("garbage".into())),
            None
        );
    }
}
