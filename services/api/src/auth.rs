//! Who is calling (API.md §1 "Authentication"). Server callers present an API key as
//! `Authorization: Bearer <key>` or `x-api-key: <key>`.

use axum::http::{HeaderMap, header, request::Parts};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, Code};
use crate::state::AppState;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A server (admin/backend) holding an API key; `key_id` is a short fingerprint of the key,
    /// safe to log.
    Server {
        /// First 8 hex digits of the key's SHA-256.
        key_id: String,
    },
}

impl Caller {
    /// The `actor` recorded on events.
    pub fn actor(&self) -> String {
        match self {
            Caller::Server { key_id } => format!("server:{key_id}"),
        }
    }

    /// Authenticates a request.
    pub fn from_parts(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(presented) = credential(&parts.headers) else {
            return Err(ApiError::new(
                Code::Unauthorized,
                "Send the API key as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare digests in constant time against every key, without stopping at a match.
        let mut found = subtle::Choice::from(0);
        for key in state.api_key_digests() {
            found |= key.ct_eq(&digest);
        }
        if bool::from(found) {
            Ok(Caller::Server {
                key_id: hex::encode(&digest[..4]),
            })
        } else {
            Err(ApiError::new(
                Code::Unauthorized,
                "The credentials are not valid.",
            ))
        }
    }
}

fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
