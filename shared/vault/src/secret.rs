//! Server secrets kept in the data directory (the blind-index key, the token signing key).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;

use crate::VaultError;

/// Reads the 32-byte secret at `path`, creating it (random, mode 0600, synced) if absent.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32], VaultError> {
    match File::open(path) {
        Ok(mut file) => {
            let mut secret = [0u8; 32];
            let mut rest = Vec::new();
            file.read_exact(&mut secret)?;
            file.read_to_end(&mut rest)?;
            if !rest.is_empty() {
                return Err(VaultError::Corrupt(format!(
                    "{} is longer than 32 bytes",
                    path.display()
                )));
            }
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            write_new_file(path, &secret)?;
            Ok(secret)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `bytes` to a new file at `path` atomically: a synced temp file renamed into place,
/// then the directory synced, so a crash leaves either no file or the whole file.
fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/index.key");
        let a = load_or_create_secret(&path).unwrap();
        let b = load_or_create_secret(&path).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, [0; 32]);
    }
}
