//! Password hashing and verification: argon2id with OWASP's parameters (19 MiB, 2 passes,
//! 1 lane), run on a pool of its own — one thread per core, at a lower CPU priority — never on
//! the async runtime's threads. So a burst of logins uses the idle CPU but cannot starve other
//! requests of it, memory stays bounded (one 19 MiB hash per thread), and a queue too long to
//! serve in time is refused (503) instead of growing without bound.
//!
//! Verification of an unknown user (or one without a password) runs against a dummy hash with
//! the same parameters, so both cost one argon2id verification and take the same time.
//!
//! Each pool thread keeps its 19 MiB of argon2 working memory and reuses it for every hash: a
//! fresh allocation per hash costs page faults (and, with jemalloc returning large freed
//! blocks to the system, halved the login rate).

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use argon2::password_hash::{Output, ParamsString, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use roster_domain::Password;

use crate::imported_hash::ImportedHash;
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

/// The server's argon2id parameters (OWASP: m = 19 MiB, t = 2, p = 1).
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2id parameters are valid")
}

/// The argon2id instance with the server's parameters.
pub fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

thread_local! {
    /// This thread's argon2 working memory, reused by every hash it computes.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// `argon` of `password` and `salt` into `out`, in this thread's reused memory (argon2 writes
/// every block before it reads it, so what an earlier hash left there does not matter). Memory
/// beyond the server's parameters (a hash made with larger ones) is allocated for the call only.
fn argon2_into(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let blocks = argon.params().block_count();
    if blocks > params().block_count() {
        return argon.hash_password_into(password, salt, out);
    }
    BLOCKS.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
    })
}

/// The PHC string of the server's argon2id of `password` with `salt`.
fn hash_with(password: &[u8], salt: &SaltString) -> Result<String, argon2::password_hash::Error> {
    let argon = argon2();
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes)?;
    let len = argon
        .params()
        .output_len()
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(len, |out| {
        Ok(argon2_into(&argon, password, salt_bytes, out)?)
    })?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` hashes to `hash` (with the algorithm, version and parameters `hash`
/// names), compared in constant time (`Output`'s equality).
fn verify_with(password: &[u8], hash: &PasswordHash<'_>) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(hash.algorithm),
        hash.version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(hash),
    ) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params);
    Output::init_with(expected.len(), |out| {
        Ok(argon2_into(&argon, password, salt_bytes, out)?)
    })
    .is_ok_and(|computed| computed == *expected)
}

/// A hash of a random password with the server's parameters, verified against when there is
/// no real hash to check.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut random = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        hash_with(&random, &SaltString::generate(&mut OsRng))
            .expect("argon2id hashes a random password")
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
    pub async fn hash(&self, password: Password) -> Result<roster_domain::PasswordHash, HashError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            hash_with(password.expose().as_bytes(), &salt)
                .map(roster_domain::PasswordHash)
                .map_err(|e| HashError::Failed(format!("argon2: {e}")))
        })
        .await?
    }

    /// Hashes `password` as it was typed (no length rules: a password that matched an imported
    /// hash is rehashed whatever it is).
    pub async fn rehash(&self, password: String) -> Result<roster_domain::PasswordHash, HashError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            hash_with(password.as_bytes(), &salt)
                .map(roster_domain::PasswordHash)
                .map_err(|e| HashError::Failed(format!("argon2: {e}")))
        })
        .await?
    }

    /// Whether `password` matches a stored hash — Roster's own argon2id or one imported from
    /// another system ([`ImportedHash`]) — and whether a match should be rehashed with
    /// Roster's own parameters. An imported hash is checked by its algorithm and then the
    /// dummy argon2id is verified as well, so a weak imported hash (md5, sha*, phpass) takes
    /// at least what an argon2id one takes: an unknown user, an imported md5 user and an
    /// argon2id user cannot be told apart by time.
    pub async fn verify_stored(
        &self,
        password: String,
        hash: Option<roster_domain::PasswordHash>,
    ) -> Result<Verified, HashError> {
        self.run(move || {
            let own = hash
                .as_ref()
                .filter(|h| h.as_str().starts_with(OWN_PREFIX))
                .and_then(|h| PasswordHash::new(h.as_str()).ok());
            if let Some(own) = own {
                return Verified {
                    matches: verify_with(password.as_bytes(), &own),
                    rehash: false,
                };
            }
            let imported = hash.as_ref().and_then(ImportedHash::from_stored);
            let matches = imported
                .as_ref()
                .is_some_and(|h| h.verify(password.as_bytes()));
            let dummy = PasswordHash::new(dummy_hash()).expect("the dummy hash parses");
            std::hint::black_box(verify_with(password.as_bytes(), &dummy));
            Verified {
                matches,
                rehash: matches,
            }
        })
        .await
    }

    /// Whether `password` matches `hash`. Without a hash (unknown user, no password, a hash
    /// that does not parse) it verifies against the dummy hash and answers false: the same work
    /// either way. argon2's own comparison of the outputs is constant-time.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<roster_domain::PasswordHash>,
    ) -> Result<bool, HashError> {
        self.run(move || {
            let real = hash
                .as_ref()
                .and_then(|h| PasswordHash::new(h.as_str()).ok());
            let dummy = PasswordHash::new(dummy_hash()).expect("the dummy hash parses");
            let matches = verify_with(password.as_bytes(), real.as_ref().unwrap_or(&dummy));
            matches && real.is_some()
        })
        .await
    }
}

/// What [`PasswordHasher::verify_stored`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The password matches.
    pub matches: bool,
    /// It matched a hash other than Roster's own argon2id with the server's parameters:
    /// replace it (`PasswordRehashed`).
    pub rehash: bool,
}

/// How Roster's own hashes begin (argon2id, version 19, the server's parameters).
const OWN_PREFIX: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

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
            hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            hash.as_str()
        );
        assert!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        // Salted: the same password again is another hash.
        let again = hasher
            .hash(Password::parse("correct horse").unwrap())
            .await
            .unwrap();
        assert_ne!(again.as_str(), hash.as_str());
    }

    /// Hashes computed in reused memory are argon2id's: the crate's own verifier accepts
    /// them, ours accepts the crate's, and memory dirtied by other hashes changes nothing.
    #[test]
    fn reused_memory_gives_the_same_hashes_as_fresh_memory() {
        use argon2::PasswordVerifier as _;
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::generate(&mut OsRng);
        let ours = hash_with(b"first password", &salt).unwrap();
        let _ = hash_with(
            b"something else entirely",
            &SaltString::generate(&mut OsRng),
        );
        let again = hash_with(b"first password", &salt).unwrap();
        let theirs = argon2()
            .hash_password(b"first password", &salt)
            .unwrap()
            .to_string();
        assert_eq!((&ours, &again), (&theirs, &theirs));
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2().verify_password(b"first password", &parsed).is_ok());
        assert!(verify_with(b"first password", &parsed));
        assert!(!verify_with(b"first passwore", &parsed));
        // A hash with other parameters (more memory than the server's) still verifies.
        let bigger = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(32 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"p", &salt)
        .unwrap()
        .to_string();
        assert!(verify_with(b"p", &PasswordHash::new(&bigger).unwrap()));
        assert!(!verify_with(b"q", &PasswordHash::new(&bigger).unwrap()));
    }

    #[tokio::test]
    async fn without_a_hash_the_dummy_is_verified_and_fails() {
        assert!(dummy_hash().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let hasher = PasswordHasher::new();
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
        assert!(
            !hasher
                .verify(
                    "anything".into(),
                    Some(roster_domain::PasswordHash("garbage".into()))
                )
                .await
                .unwrap()
        );
    }
}
