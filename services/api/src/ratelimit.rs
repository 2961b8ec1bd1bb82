//! Login rate limits (docs/contract.md §5): per account and per client address, in memory (per
//! process).
//!
//! Each key has a token bucket. Every sign-in attempt takes a token from both the account's and
//! the address's bucket *before* the password is checked (so parallel guesses cannot outrun the
//! count); a successful sign-in gives the address its token back and refills the account. With
//! a bucket empty the attempt is refused with 429 and `Retry-After` — without checking the
//! password — until the bucket has refilled by one. Buckets refill continuously, so a penalty
//! never lasts longer than one refill interval after the attempts stop: an attacker is slowed
//! to the refill rate, the real user is never locked out for good.
//!
//! Numbers (see docs/api.md): an account allows 10 failed attempts at once, then one per 30 s;
//! an address 100 at once, then one per 2 s. Unknown accounts are counted like known ones, so
//! the answers do not tell them apart.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A bucket's size and refill rate.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// Attempts allowed at once.
    pub burst: u32,
    /// Time to earn back one attempt.
    pub refill: Duration,
}

/// Per account: 10 attempts, then one per 30 s.
pub const ACCOUNT_LIMIT: Limit = Limit {
    burst: 10,
    refill: Duration::from_secs(30),
};
/// Per client address: 100 attempts, then one per 2 s.
pub const ADDRESS_LIMIT: Limit = Limit {
    burst: 100,
    refill: Duration::from_secs(2),
};
/// Most keys remembered per table; beyond it, buckets that have refilled are forgotten first.
const MAX_KEYS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

struct Table<K> {
    limit: Limit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new(limit: Limit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(bucket.updated).as_secs_f64()
            / self.limit.refill.as_secs_f64();
        (bucket.tokens + earned).min(self.limit.burst as f64)
    }

    /// Seconds until the bucket has a token, 0 if it has one now.
    fn wait(&self, key: &K, now: Instant) -> u64 {
        let buckets = self.buckets.lock();
        match buckets.get(key) {
            Some(b) => {
                let tokens = self.refilled(*b, now);
                if tokens >= 1.0 {
                    0
                } else {
                    // (less a hair, so float error never adds a whole second)
                    ((1.0 - tokens) * self.limit.refill.as_secs_f64() - 1e-6)
                        .ceil()
                        .max(1.0) as u64
                }
            }
            None => 0,
        }
    }

    fn take(&self, key: &K, now: Instant) {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| self.refilled(*b, now) < self.limit.burst as f64);
            if buckets.len() >= MAX_KEYS {
                // Still full of live buckets (a flood of distinct keys): forget some rather
                // than grow without bound; the address limit still holds each attacker back.
                let drop: Vec<K> = buckets.keys().take(MAX_KEYS / 10).cloned().collect();
                for k in drop {
                    buckets.remove(&k);
                }
            }
        }
        let tokens = match buckets.get(key) {
            Some(b) => self.refilled(*b, now),
            None => self.limit.burst as f64,
        };
        buckets.insert(
            key.clone(),
            Bucket {
                tokens: tokens - 1.0,
                updated: now,
            },
        );
    }

    fn give_back(&self, key: &K, now: Instant) {
        let mut buckets = self.buckets.lock();
        if let Some(b) = buckets.get(key).copied() {
            let tokens = (self.refilled(b, now) + 1.0).min(self.limit.burst as f64);
            buckets.insert(
                key.clone(),
                Bucket {
                    tokens,
                    updated: now,
                },
            );
        }
    }

    fn forget(&self, key: &K) {
        self.buckets.lock().remove(key);
    }
}

/// The sign-in limits of one server.
pub struct LoginLimiter {
    accounts: Table<String>,
    addresses: Table<IpAddr>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(ACCOUNT_LIMIT, ADDRESS_LIMIT)
    }
}

impl LoginLimiter {
    /// A limiter with these limits.
    pub fn new(account: Limit, address: Limit) -> Self {
        Self {
            accounts: Table::new(account),
            addresses: Table::new(address),
        }
    }

    /// Takes an attempt for `account` from `address`, or says how many seconds to wait.
    pub fn attempt(&self, account: &str, address: Option<IpAddr>) -> Result<(), u64> {
        self.attempt_at(account, address, Instant::now())
    }

    /// [`Self::attempt`] at a given instant (tests).
    pub fn attempt_at(
        &self,
        account: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), u64> {
        let account = account.to_owned();
        let wait = self
            .accounts
            .wait(&account, now)
            .max(address.as_ref().map_or(0, |a| self.addresses.wait(a, now)));
        if wait > 0 {
            return Err(wait);
        }
        self.accounts.take(&account, now);
        if let Some(a) = &address {
            self.addresses.take(a, now);
        }
        Ok(())
    }

    /// The attempt succeeded: the account starts afresh and the address gets its token back.
    pub fn succeeded(&self, account: &str, address: Option<IpAddr>) {
        self.accounts.forget(&account.to_owned());
        if let Some(a) = &address {
            self.addresses.give_back(a, Instant::now());
        }
    }
}

/// Limits on creating guests and anonymous sessions (docs/guests.md): per client address and
/// per organization, each a token bucket.
pub struct CreationLimiter {
    address: Table<IpAddr>,
    organization: Table<String>,
}

impl CreationLimiter {
    /// `per_address` a minute from one address, `per_organization` an hour in one
    /// organization (bursts of the same size).
    pub fn new(per_address: u32, per_organization: u32) -> Self {
        let limit = |n: u32, period: Duration| Limit {
            burst: n.max(1),
            refill: period / n.max(1),
        };
        Self {
            address: Table::new(limit(per_address, Duration::from_secs(60))),
            organization: Table::new(limit(per_organization, Duration::from_secs(3600))),
        }
    }

    /// Takes one creation, or says how many seconds to wait.
    pub fn attempt(&self, organization: &str, address: Option<IpAddr>) -> Result<(), u64> {
        let now = Instant::now();
        let org = organization.to_owned();
        let wait = address
            .map_or(0, |a| self.address.wait(&a, now))
            .max(self.organization.wait(&org, now));
        if wait > 0 {
            return Err(wait);
        }
        if let Some(a) = address {
            self.address.take(&a, now);
        }
        self.organization.take(&org, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn an_account_is_slowed_then_recovers_without_lasting_lockout() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            limiter.attempt_at("acct", A, t0).unwrap();
        }
        assert_eq!(limiter.attempt_at("acct", A, t0), Err(30));
        // Another account from the same address is not affected.
        limiter.attempt_at("other", A, t0).unwrap();
        // One attempt is earned back per 30 s; the wait shrinks as time passes.
        assert_eq!(
            limiter.attempt_at("acct", A, t0 + Duration::from_secs(20)),
            Err(10)
        );
        limiter
            .attempt_at("acct", A, t0 + Duration::from_secs(30))
            .unwrap();
        assert!(
            limiter
                .attempt_at("acct", A, t0 + Duration::from_secs(31))
                .is_err()
        );
        // After a quiet spell the whole burst is back: no permanent lockout.
        for _ in 0..10 {
            limiter
                .attempt_at("acct", A, t0 + Duration::from_secs(31 + 300))
                .unwrap();
        }
    }

    #[test]
    fn an_address_is_limited_across_accounts_and_success_gives_back() {
        let limiter = LoginLimiter::new(
            ACCOUNT_LIMIT,
            Limit {
                burst: 3,
                refill: Duration::from_secs(2),
            },
        );
        let t0 = Instant::now();
        limiter.attempt_at("a", A, t0).unwrap();
        limiter.succeeded("a", A);
        for name in ["b", "c", "d"] {
            limiter.attempt_at(name, A, t0).unwrap();
        }
        assert_eq!(limiter.attempt_at("e", A, t0), Err(2));
        // Another address is not affected.
        let other = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
        limiter.attempt_at("e", other, t0).unwrap();
    }
}
