//! Child processes (the servers under test) and what they use: resident memory from
//! `/proc/<pid>/status` (VmRSS, and VmHWM for the peak) and CPU time from `/proc/<pid>/stat`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// A free port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A server running as a child process; killed when dropped.
pub struct Server {
    child: Child,
    /// What it is (`roster`, `ceiling`, `baseline`).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Server {
    /// Starts `program args…`, output to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        addr: SocketAddr,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            child,
            name: name.to_owned(),
            addr,
            log: log.to_owned(),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Whether the child has exited with status 0 (waits for it).
    pub fn exit_success(&mut self) -> bool {
        self.child.wait().is_ok_and(|s| s.success())
    }

    /// The end of its log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// SIGTERM, then waits (SIGKILL after `timeout`). Returns how long the stop took.
    pub async fn stop(mut self, timeout: Duration) -> Duration {
        let started = Instant::now();
        signal(self.child.id(), libc::SIGTERM);
        while started.elapsed() < timeout {
            if self.exited() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.exited() {
            signal(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// The last lines of a log file.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with the id of our own child process; no memory is involved.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets the peak resident size (VmHWM) of a process to its current size, so the next
/// reading of VmHWM is the peak since now.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// User plus system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second.
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Ids of the processes whose command name is `name` (e.g. the PostgreSQL backends).
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// Memory and CPU of a server over one workload.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Resident size at the start, MiB.
    pub rss_start_mb: f64,
    /// Peak resident size during the workload (VmHWM after a reset, or the highest sample), MiB.
    pub rss_peak_mb: f64,
    /// Resident size at the end, MiB.
    pub rss_end_mb: f64,
    /// CPU used by the server (and, for the baseline, PostgreSQL's processes), in cores.
    pub server_cpu_cores: f64,
    /// CPU used by the load generator itself, in cores.
    pub generator_cpu_cores: f64,
    /// CPU used by everything else on the machine meanwhile, in cores: other processes
    /// competing for the same cores make every figure worse (and noisier).
    pub other_cpu_cores: f64,
}

/// Busy clock ticks of the whole machine (all CPUs), from /proc/stat.
pub fn machine_busy_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    Some(f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?)
}

/// Watches a server while a workload runs: samples its RSS every 50 ms.
pub struct Monitor {
    pid: u32,
    cpu_pids: Vec<u32>,
    started: Instant,
    cpu_start: u64,
    self_cpu_start: u64,
    machine_start: u64,
    rss_start: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Starts watching `pid`; CPU is summed over `pid` and `extra_cpu_pids`.
    pub fn start(pid: u32, extra_cpu_pids: &[u32]) -> Self {
        reset_peak(pid);
        let mut cpu_pids = vec![pid];
        cpu_pids.extend_from_slice(extra_cpu_pids);
        let rss_start = status_kib(pid, "VmRSS").unwrap_or(0);
        let peak = Arc::new(AtomicU64::new(rss_start));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = status_kib(pid, "VmRSS") {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Self {
            pid,
            cpu_start: cpu_pids.iter().filter_map(|p| cpu_ticks(*p)).sum(),
            self_cpu_start: cpu_ticks(std::process::id()).unwrap_or(0),
            machine_start: machine_busy_ticks().unwrap_or(0),
            cpu_pids,
            started: Instant::now(),
            rss_start,
            peak,
            stop,
            sampler,
        }
    }

    /// Stops watching; what the server used since [`Monitor::start`].
    pub async fn finish(self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.sampler.await;
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let ticks = ticks_per_sec();
        let cpu_end: u64 = self.cpu_pids.iter().filter_map(|p| cpu_ticks(*p)).sum();
        let self_cpu_end = cpu_ticks(std::process::id()).unwrap_or(0);
        let machine_end = machine_busy_ticks().unwrap_or(0);
        let cores = |ticks_used: u64| ticks_used as f64 / ticks / secs;
        let server = cores(cpu_end.saturating_sub(self.cpu_start));
        let generator = cores(self_cpu_end.saturating_sub(self.self_cpu_start));
        let machine = cores(machine_end.saturating_sub(self.machine_start));
        let end = status_kib(self.pid, "VmRSS").unwrap_or(0);
        let hwm = status_kib(self.pid, "VmHWM").unwrap_or(0);
        let peak = self.peak.load(Ordering::Relaxed).max(hwm).max(end);
        Usage {
            rss_start_mb: mib(self.rss_start),
            rss_peak_mb: mib(peak),
            rss_end_mb: mib(end),
            server_cpu_cores: server,
            generator_cpu_cores: generator,
            other_cpu_cores: (machine - server - generator).max(0.0),
        }
    }
}

/// KiB → MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(cpu_ticks(me).is_some());
        assert!(status_kib(me, "NoSuchField").is_none());
        assert!(machine_busy_ticks().is_some());
    }
}
