//! Token formats (docs/contract.md §5).
//!
//! - **Access token**: a JWT signed HS256 with the server's 32-byte token key (`secrets/token.key`),
//!   claims `sub` (user id), `sid` (session id), `org`, `iat`, `exp` (15 minutes), `typ: "access"`,
//!   `uv` (the user version the sign-in was checked against) and `pos` (the log position of the
//!   sign-in, so a server whose read models lag can wait for it). Verified on every request,
//!   then checked against the read models (session not revoked, user active, `uv` not older than
//!   the user's `sessions_valid_from`).
//! - **Refresh token**: `<session id>.<secret>`, the secret 256 random bits in base64url; only
//!   its SHA-256 is recorded. Rotated on every refresh.
//! - **Custom token**: a JWT with `typ: "custom"`, `sub`, `org`, `jti`, `exp` ≤ 1 h; single use
//!   (its `jti` is claimed in the log with the sign-in).

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Lifetime of an access token.
pub const ACCESS_TTL_SECS: i64 = 15 * 60;
/// `typ` of anonymous tokens.
const TYP_ANONYMOUS: &str = "anonymous";
/// Lifetime of an anonymous token.
pub const ANONYMOUS_TTL_SECS: i64 = 3600;
/// Lifetime of a refresh token (each refresh issues a new one with a new lifetime).
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;
/// Longest lifetime of a custom token.
pub const CUSTOM_MAX_TTL_SECS: u64 = 3600;
/// Lifetime of a custom token when none is asked for.
pub const CUSTOM_DEFAULT_TTL_SECS: u64 = 15 * 60;

const TYP_ACCESS: &str = "access";
const TYP_CUSTOM: &str = "custom";
/// Clock skew tolerated between servers when checking `exp`.
const LEEWAY_SECS: u64 = 5;

/// Claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// User id.
    pub sub: String,
    /// Session id.
    pub sid: String,
    /// Organization.
    pub org: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// `access`.
    pub typ: String,
    /// The user version the sign-in was checked against.
    pub uv: u64,
    /// Log position of the sign-in.
    pub pos: u64,
}

/// Claims of a custom token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomClaims {
    /// User id (created on sign-in if new).
    pub sub: String,
    /// Organization.
    pub org: String,
    /// Unique id: claimed in the log when used, so the token works once.
    pub jti: String,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// `custom`.
    pub typ: String,
    /// For a token minted for an identity instead of a user id: `provider:subject` (the
    /// sign-in finds its holder, or creates one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
}

/// Signs and verifies tokens with the server's token key.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    /// Keys from the 32-byte token secret.
    pub fn new(secret: &[u8; 32]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    fn sign<T: Serialize>(&self, claims: &T) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of serializable claims cannot fail")
    }

    fn verify<T: serde::de::DeserializeOwned>(&self, token: &str) -> Option<T> {
        jsonwebtoken::decode::<T>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }

    /// A signed access token; `typ` is set here.
    pub fn sign_access(&self, mut claims: AccessClaims) -> String {
        claims.typ = TYP_ACCESS.to_owned();
        self.sign(&claims)
    }

    /// The claims of a valid, unexpired access token (signature, `exp`, `typ` checked).
    pub fn verify_access(&self, token: &str) -> Option<AccessClaims> {
        self.verify::<AccessClaims>(token)
            .filter(|c| c.typ == TYP_ACCESS)
    }

    /// A signed anonymous token (docs/guests.md): `sub` and `sid` empty, `typ` set here.
    pub fn sign_anonymous(&self, mut claims: AccessClaims) -> String {
        claims.typ = TYP_ANONYMOUS.to_owned();
        self.sign(&claims)
    }

    /// The claims of a valid, unexpired anonymous token.
    pub fn verify_anonymous(&self, token: &str) -> Option<AccessClaims> {
        self.verify::<AccessClaims>(token)
            .filter(|c| c.typ == TYP_ANONYMOUS)
    }

    /// A signed custom token; `typ` is set here.
    pub fn sign_custom(&self, mut claims: CustomClaims) -> String {
        claims.typ = TYP_CUSTOM.to_owned();
        self.sign(&claims)
    }

    /// The claims of a valid, unexpired custom token.
    pub fn verify_custom(&self, token: &str) -> Option<CustomClaims> {
        self.verify::<CustomClaims>(token)
            .filter(|c| c.typ == TYP_CUSTOM)
    }
}

/// A new refresh token for a session: the token to hand out and the hash to record.
pub fn new_refresh_token(session_id: &str) -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let hash = refresh_hash(&secret);
    (format!("{session_id}.{secret}"), hash)
}

/// Hex SHA-256 of a refresh token's secret. The secret has 256 bits of entropy, so a fast hash
/// is enough: nobody can guess their way back from it.
pub fn refresh_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits a refresh token into its session id and secret.
pub fn split_refresh_token(token: &str) -> Option<(&str, &str)> {
    let (session_id, secret) = token.split_once('.')?;
    let ok = !session_id.is_empty()
        && session_id.len() <= 64
        && session_id.bytes().all(|b| b.is_ascii_alphanumeric())
        && (16..=128).contains(&secret.len());
    ok.then_some((session_id, secret))
}

/// Compares two hex hashes in constant time.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> AccessClaims {
        AccessClaims {
            sub: "u1".into(),
            sid: "s1".into(),
            org: "default".into(),
            iat: exp - ACCESS_TTL_SECS,
            exp,
            typ: String::new(),
            uv: 1,
            pos: 1,
        }
    }

    #[test]
    fn access_tokens_verify_only_with_their_key_and_before_expiry() {
        let keys = TokenKeys::new(&[7; 32]);
        let now = chrono::Utc::now().timestamp();
        let token = keys.sign_access(claims(now + 60));
        assert_eq!(keys.verify_access(&token).unwrap().sub, "u1");
        assert!(TokenKeys::new(&[8; 32]).verify_access(&token).is_none());
        assert!(
            keys.verify_access(&keys.sign_access(claims(now - 60)))
                .is_none()
        );
        // A custom token is not an access token, nor the other way round.
        let custom = keys.sign_custom(CustomClaims {
            sub: "u1".into(),
            org: "default".into(),
            jti: "j".into(),
            iat: now,
            exp: now + 60,
            typ: String::new(),
            idp: None,
        });
        assert!(keys.verify_access(&custom).is_none());
        assert!(keys.verify_custom(&token).is_none());
        assert!(keys.verify_custom(&custom).is_some());
        // Tampering with the payload breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims(now + 3600)).unwrap());
        assert!(keys.verify_access(&parts.join(".")).is_none());
    }

    #[test]
    fn refresh_tokens_carry_their_session_and_hash_their_secret() {
        let (token, hash) = new_refresh_token("01JSESSION");
        let (sid, secret) = split_refresh_token(&token).unwrap();
        assert_eq!(sid, "01JSESSION");
        assert_eq!(secret.len(), 43, "256 bits in base64url");
        assert!(hashes_equal(&refresh_hash(secret), &hash));
        assert!(!hashes_equal(&refresh_hash("other"), &hash));
        assert!(split_refresh_token("no-dot").is_none());
        assert!(split_refresh_token("a.short").is_none());
    }
}
