//! Password hashing and verification: argon2id with OWASP's parameters (19 MiB, 2 passes,
//! 1 lane), run on a pool of its own — one thread per core, at a lower CPU priority — never on
//! the async runtime's threads. So a burst of logins uses the idle CPU but cannot starve other
//! requests of it, memory stays bounded (one 19 MiB hash per thread), and a queue too long to
//! serve in time is refused (503) instead of growing without bound.
//!
//! Verification of an unknown user (or one without a password) runs against a dummy hash with
//! the same parameters, so both cost one argon2id verification and take the same time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use argon2::password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};
use roster_domain::Password;
use tokio::sync::oneshot;

/// Most password jobs waiting for a thread before new ones are refused (per core).
const MAX_QUEUED_PER_THREAD: usize = 256;
/// Nice value of the pool's threads (Linux): the runtime's threads (nice 0) get the CPU first.
const POOL_NICE: i32 = 10;

/// The pool is saturated; retry shortly.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many hashes are queued.
    #[error("too many password checks are queued")]
    Busy,
    /// The pool is gone (shutting down) or argon2 failed.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords off the async runtime.
#[derive(Clone)]
pub struct PasswordHasher {
    jobs: mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// The argon2id instance with the server's parameters (OWASP: m = 19 MiB, t = 2, p = 1).
pub fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2id parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a random password with the server's parameters, verified against when there is
/// no real hash to check.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut random = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        argon2()
            .hash_password(&random, &SaltString::generate(&mut OsRng))
            .expect("argon2id hashes a random password")
            .to_string()
    })
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id only changes
    // this thread's nice value (per-thread on Linux), which needs no privilege when raised.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, POOL_NICE);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

impl PasswordHasher {
    /// A pool with one thread per available core.
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("roster-argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match receiver.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // every sender is gone
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password thread");
            }
        }
        let hasher = Self {
            jobs,
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued: threads * MAX_QUEUED_PER_THREAD,
        };
        // Compute the dummy hash now, so the first unknown-user login costs what the others do.
        let _ = hasher.jobs.send(Box::new(|| {
            dummy_hash();
        }));
        hasher
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let (tx, rx) = oneshot::channel();
        let queued = self.queued.clone();
        let job: Job = Box::new(move || {
            let result = work();
            queued.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(result);
        });
        if self.jobs.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Failed("the password pool is gone".into()));
        }
        rx.await
            .map_err(|_| HashError::Failed("a password job was dropped".into()))
    }

    /// The PHC string of an argon2id hash of `password`, with a random salt.
    pub async fn hash(&self, password: Password) -> anyhow::Result<String> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("argon2: {e}"))
        })
        .await?
    }

    /// Whether `password` matches `hash`. Without a hash (unknown user, no password, a hash
    /// that does not parse) it verifies against the dummy hash and answers false: the same work
    /// either way. argon2's own comparison of the outputs is constant-time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        self.run(move || {
            let real = hash.as_deref().and_then(|h| PasswordHash::new(h).ok());
            let dummy = PasswordHash::new(dummy_hash()).expect("the dummy hash parses");
            let matches = argon2()
                .verify_password(password.as_bytes(), real.as_ref().unwrap_or(&dummy))
                .is_ok();
            matches && real.is_some()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters() {
        let hasher = PasswordHasher::new();
        let hash = hasher
            .hash(Password::parse("correct horse").unwrap())
            .await
            .unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn without_a_hash_the_dummy_is_verified_and_fails() {
        assert!(dummy_hash().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let hasher = PasswordHasher::new();
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
        assert!(
            !hasher
                .verify("anything".into(), Some("garbage".into()))
                .await
                .unwrap()
        );
    }
}
