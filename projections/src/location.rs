//! Where the read models live inside the data directory. A rebuild writes a fresh copy beside
//! the live one and then switches a pointer file atomically, so a crash mid-rebuild leaves the
//! old copy in use and the new one to be removed.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const DEFAULT: &str = "readmodels";
const POINTER: &str = "readmodels.current";

/// The directory of the read models in use.
pub fn current_dir(data_dir: &Path) -> PathBuf {
    let name = fs::read_to_string(data_dir.join(POINTER))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && !s.contains('/'))
        .unwrap_or_else(|| DEFAULT.to_owned());
    data_dir.join(name)
}

/// A new, unused directory for a rebuild.
pub fn new_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(format!("{DEFAULT}-{}", ulid::Ulid::new()))
}

/// Makes `dir` the read models in use (atomic: temp file, fsync, rename, fsync the directory).
pub fn switch_to(data_dir: &Path, dir: &Path) -> std::io::Result<()> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("read-model directory has no name"))?;
    let tmp = data_dir.join(format!("{POINTER}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(name.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, data_dir.join(POINTER))?;
    File::open(data_dir)?.sync_all()
}

/// Removes read-model directories that are not in use (left by finished or crashed rebuilds).
pub fn remove_stale(data_dir: &Path) {
    let current = current_dir(data_dir);
    let Ok(entries) = fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_read_models = name == DEFAULT || name.starts_with(&format!("{DEFAULT}-"));
        if is_read_models
            && path != current
            && path.is_dir()
            && let Err(e) = fs::remove_dir_all(&path)
        {
            tracing::warn!(dir = %path.display(), error = %e, "could not remove old read models");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_switches_and_stale_copies_go() {
        let data = tempfile::tempdir().unwrap();
        assert_eq!(current_dir(data.path()), data.path().join("readmodels"));
        fs::create_dir_all(data.path().join("readmodels")).unwrap();
        let fresh = new_dir(data.path());
        fs::create_dir_all(&fresh).unwrap();
        switch_to(data.path(), &fresh).unwrap();
        assert_eq!(current_dir(data.path()), fresh);
        remove_stale(data.path());
        assert!(!data.path().join("readmodels").exists());
        assert!(fresh.exists());
    }
}
