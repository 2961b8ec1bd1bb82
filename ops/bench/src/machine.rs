//! The machine the numbers were measured on, including how fast its disk syncs.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What the results depend on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Cores this process may use.
    pub cores: usize,
    /// Total memory, GiB.
    pub ram_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Operating system (`PRETTY_NAME` of /etc/os-release).
    pub os: String,
    /// File system of the directory the Roster store lives in.
    pub store_fs: String,
    /// 4 KiB write + fdatasync, one after another, per second, in the store's directory: the
    /// rate a log without group commit could reach.
    pub fsync_per_sec: f64,
    /// Mean latency of one such write + fdatasync, ms.
    pub fsync_ms: f64,
}

impl Machine {
    /// Reads the machine and measures the disk in `dir` for `fsync_time`.
    pub fn describe(dir: &Path, fsync_time: Duration) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| "unknown".into());
        let fsync_per_sec = fsync_rate(dir, fsync_time).unwrap_or(0.0);
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ram_gib: mem_kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            os,
            store_fs: fs_type(dir),
            fsync_per_sec,
            fsync_ms: if fsync_per_sec > 0.0 {
                1000.0 / fsync_per_sec
            } else {
                0.0
            },
        }
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        format!(
            "{} × {} cores, {:.1} GiB RAM, Linux {}, {}; store on {} ({:.0} fsync/s, {:.2} ms each)",
            self.cpu_model,
            self.cores,
            self.ram_gib,
            self.kernel,
            self.os,
            self.store_fs,
            self.fsync_per_sec,
            self.fsync_ms
        )
    }
}

/// Sequential 4 KiB writes, each followed by fdatasync, per second.
fn fsync_rate(dir: &Path, time: Duration) -> std::io::Result<f64> {
    let path = dir.join("fsync-probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < time {
        file.write_all_at(&block, n * 4096)?;
        file.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// The file-system type of `dir` (`ext4`, `tmpfs`, …).
pub fn fs_type(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: statfs fills the zeroed struct we own from a valid, NUL-terminated path.
    let magic = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c_path.as_ptr(), &mut st) != 0 {
            return "unknown".into();
        }
        st.f_type as u64
    };
    match magic {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x0102_1997 => "9p".into(),
        0x6573_5546 => "fuse".into(),
        other => format!("fs 0x{other:x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_this_machine() {
        let dir = std::env::temp_dir();
        let m = Machine::describe(&dir, Duration::from_millis(20));
        assert!(m.cores >= 1);
        assert!(m.ram_gib > 0.0);
        assert!(!m.kernel.is_empty());
        assert!(m.fsync_per_sec > 0.0);
    }
}
