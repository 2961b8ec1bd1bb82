//! `Idempotency-Key` (docs/contract.md §1): the same key with the same request answers as the first
//! time without acting twice; with another request, 422 `idempotency_mismatch`.
//!
//! A key is claimed as a reservation in the same atomic append as the request's events, first
//! of all its reservations, so of two concurrent duplicates one commits and the other is
//! refused on the key (and answered as the first). The reservation key holds a keyed hash of
//! the client's key (HMAC with the server's blind-index secret), never the key itself; the
//! key itself is recorded only in the events' sealed metadata, so erasing the user erases it.
//! The claim's owner names the request: a digest of its method, path, query, organization,
//! caller and body, and its correlation id (which the first request's events carry).

use roster_eventlog::{EventLog, Micros, Position, Reservation};
use roster_vault::BlindIndex;

/// How long idempotency keys are remembered (docs/contract.md §1: at least 24 h).
pub const TTL_MICROS: i64 = 24 * 3600 * 1_000_000;

/// A request's claim on its `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// The reservation key.
    pub key: String,
    /// Which request claims it.
    pub request: Request,
}

/// A request as its idempotency claim names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Digest of everything that makes two requests the same request.
    pub digest: String,
    /// The request's correlation id, which its events carry.
    pub correlation: String,
}

impl Request {
    fn owner(&self) -> String {
        format!("{}:{}", self.digest, self.correlation)
    }

    fn parse(owner: &str) -> Self {
        let (digest, correlation) = owner.split_once(':').unwrap_or((owner, ""));
        Self {
            digest: digest.to_owned(),
            correlation: correlation.to_owned(),
        }
    }
}

/// What the log knows of a key already claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The request that claimed it.
    pub request: Request,
    /// Where its transaction begins.
    pub position: Position,
}

impl Seen {
    /// Whether it was claimed by the same request (else: a different request reused it).
    pub fn same_as(&self, claim: &IdempotencyClaim) -> bool {
        self.request.digest == claim.request.digest
    }
}

impl IdempotencyClaim {
    /// The claim of `key` within `scope` (an organization, or a client user within it) by the
    /// request with this digest and correlation id.
    pub fn new(
        blind: &BlindIndex,
        scope: &str,
        key: &str,
        digest: String,
        correlation: String,
    ) -> Self {
        Self {
            key: format!(
                "i/{scope}/{}",
                blind.hash(&format!("idempotency/{scope}"), key)
            ),
            request: Request {
                digest,
                correlation,
            },
        }
    }

    /// The reservation that claims it, lapsing after [`TTL_MICROS`] from `now`.
    pub fn reservation(&self, now: Micros) -> Reservation {
        Reservation::Claim {
            key: self.key.clone(),
            owner: self.request.owner(),
            expires_at: Some(now + TTL_MICROS),
        }
    }

    /// Who claimed the key before, if anyone did (and the claim has not lapsed).
    pub async fn seen(
        &self,
        log: &dyn EventLog,
    ) -> Result<Option<Seen>, roster_eventlog::LogError> {
        Ok(log.reservation(&self.key).await?.map(|held| Seen {
            request: Request::parse(&held.owner),
            position: held.position,
        }))
    }

    /// The request a refused claim's holder names.
    pub fn holder(owner: &str, position: Position) -> Seen {
        Seen {
            request: Request::parse(owner),
            position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_hide_the_key_and_name_the_request() {
        let blind = BlindIndex::new([7; 32]);
        let claim = IdempotencyClaim::new(&blind, "acme", "signup-42", "d1".into(), "c1".into());
        assert!(claim.key.starts_with("i/acme/") && !claim.key.contains("signup"));
        let other_scope = IdempotencyClaim::new(
            &blind,
            "acme/user:u1",
            "signup-42",
            "d1".into(),
            "c1".into(),
        );
        assert_ne!(claim.key, other_scope.key);
        let Reservation::Claim {
            owner, expires_at, ..
        } = claim.reservation(10)
        else {
            panic!("a claim");
        };
        assert_eq!(expires_at, Some(10 + TTL_MICROS));
        let seen = IdempotencyClaim::holder(&owner, 5);
        assert!(seen.same_as(&claim));
        assert_eq!(seen.request.correlation, "c1");
        let other = IdempotencyClaim::new(&blind, "acme", "signup-42", "d2".into(), "c2".into());
        assert!(!seen.same_as(&other));
    }
}
