//! The file layer under the embedded log, behind a trait so tests can observe (or break) the
//! order of writes, syncs and renames without patching the log itself.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

/// Mode of every file the log creates: only the server's user may read it.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the log creates.
pub const DIR_MODE: u32 = 0o700;

/// A directory-level file system, as the embedded log uses it.
///
/// Paths are always full paths inside the log's directory. Every method is blocking; the log
/// calls them from its own threads or from `spawn_blocking`.
pub trait Storage: Send + Sync + 'static {
    /// Opens an existing file for reading and writing.
    fn open_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a file for reading and writing, truncating it if it exists.
    fn create_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Names (not paths) of the entries of `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (created, renamed or removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// One open file. Reads and writes are positional, so one handle is shared by the writer and
/// any number of readers without a shared cursor.
pub trait StorageFile: Send + Sync + 'static {
    /// Fills `buf` from `offset`; a short file is an `UnexpectedEof` error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: the written bytes (and the size needed to read them) are on stable storage.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current size.
    fn size(&self) -> io::Result<u64>;
}

/// The real file system (`std::fs`), the default [`Storage`]. Files are created
/// [`FILE_MODE`] and directories [`DIR_MODE`], whatever the process's umask.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdStorage;

struct StdFile(File);

impl Storage for StdStorage {
    fn open_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn create_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            // Names that are not UTF-8 are not ours; skip them.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

impl StorageFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

/// Makes `root` and everything below it private to the server's user: directories
/// [`DIR_MODE`], files [`FILE_MODE`] (other kinds of entry are left alone, and symbolic links
/// are never followed). Stores written by releases that created files `0644` are tightened
/// this way when they are opened.
pub fn restrict_tree(root: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(root)?;
    if meta.is_dir() {
        restrict(root, &meta, DIR_MODE)?;
        for entry in fs::read_dir(root)? {
            let path = entry?.path();
            match restrict_tree(&path) {
                // Removed meanwhile (a checkpoint pruned, a temp file renamed): nothing to do.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    } else if meta.is_file() {
        restrict(root, &meta, FILE_MODE)?;
    }
    Ok(())
}

fn restrict(path: &Path, meta: &fs::Metadata, mode: u32) -> io::Result<()> {
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
