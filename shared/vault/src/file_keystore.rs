//! The embedded key store: one file of fixed 64-byte slots, overwritten in place.
//!
//! Slot layout: `[state u8][7 reserved][key id 16][key 32][crc32 of bytes 0..56, LE][4 zero]`.
//! `state` is 0 (never used), 1 (live) or 2 (destroyed: every other byte is zero).
//! Destroying a key rewrites its slot in place and syncs, so the key's bytes leave the file
//! (a log-structured or copy-on-write store would keep them; that is why this is not sled).
//! A live slot whose CRC fails is a torn write of a key that was never acknowledged: it is
//! treated as free.
//!
//! One writer thread does group commit: every create and destroy queued while the previous
//! sync ran shares one round of writes and one `fdatasync`.
//!
//! A failed write or sync (a full disk) fails its batch with [`VaultError::Unavailable`] and
//! changes nothing in memory; before the next batch the writer reopens the file (a fresh
//! descriptor: after a failed fsync the old one's page cache cannot be trusted), cuts off the
//! slots the failed batch appended, zeroes the free slots it reused, and syncs. So the store
//! resumes by itself once the disk does, and no key that was never acknowledged survives.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::RwLock;
use tokio::sync::oneshot;
use ulid::Ulid;

use crate::{DataKey, KeyId, KeyStore, VaultError};

const SLOT: usize = 64;
const LIVE: u8 = 1;
const DESTROYED: u8 = 2;
/// Upper bound of requests folded into one sync.
const MAX_BATCH: usize = 1024;

enum Request {
    Create {
        count: usize,
        reply: oneshot::Sender<Result<Vec<(KeyId, DataKey)>, VaultError>>,
    },
    Destroy {
        ids: Vec<KeyId>,
        reply: oneshot::Sender<Result<(), VaultError>>,
    },
}

struct Shared {
    /// Live keys and their slot numbers; the writer is the only one that changes it.
    keys: RwLock<HashMap<KeyId, (u64, DataKey)>>,
    /// Why the last write failed, until one succeeds again.
    unavailable: parking_lot::Mutex<Option<String>>,
}

/// How often a store whose last write failed tries the disk again by itself.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The embedded [`KeyStore`]: `keys.dat` in the data directory.
pub struct FileKeyStore {
    shared: Arc<Shared>,
    requests: parking_lot::Mutex<Option<mpsc::Sender<Request>>>,
    writer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl FileKeyStore {
    /// Opens (or creates) the key file at `path` and loads every live key.
    pub fn open(path: &Path) -> Result<Self, VaultError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // Raw data keys: only the server's user may read them.
            .mode(0o600)
            .open(path)?;
        if existed {
            // Older releases created the file world-readable.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        if !existed {
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        // A torn extension leaves a partial slot at the end; it was never acknowledged.
        let slots = bytes.len() / SLOT;
        let mut keys = HashMap::new();
        let mut free = Vec::new();
        for (n, slot) in bytes.chunks_exact(SLOT).enumerate() {
            match decode_slot(slot) {
                Some((id, key)) => {
                    keys.insert(id, (n as u64, key));
                }
                None => free.push(n as u64),
            }
        }
        free.reverse(); // pop() hands out the lowest slot first
        let shared = Arc::new(Shared {
            keys: RwLock::new(keys),
            unavailable: parking_lot::Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            file,
            path: path.to_owned(),
            shared: shared.clone(),
            free,
            end: slots as u64,
            damaged: None,
        };
        let handle = std::thread::Builder::new()
            .name("roster-keystore".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            shared,
            requests: parking_lot::Mutex::new(Some(tx)),
            writer: parking_lot::Mutex::new(Some(handle)),
        })
    }

    /// Stops the writer thread after the requests already queued.
    pub fn close(&self) {
        self.requests.lock().take();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }

    fn send(&self, request: Request) -> Result<(), VaultError> {
        match self.requests.lock().as_ref() {
            Some(tx) => tx.send(request).map_err(|_| VaultError::Closed),
            None => Err(VaultError::Closed),
        }
    }
}

impl Drop for FileKeyStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait::async_trait]
impl KeyStore for FileKeyStore {
    async fn create(&self, count: usize) -> Result<Vec<(KeyId, DataKey)>, VaultError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Request::Create { count, reply })?;
        rx.await.map_err(|_| VaultError::Closed)?
    }

    async fn get(&self, id: KeyId) -> Result<Option<DataKey>, VaultError> {
        Ok(self.shared.keys.read().get(&id).map(|(_, k)| k.clone()))
    }

    async fn destroy(&self, ids: &[KeyId]) -> Result<(), VaultError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Request::Destroy {
            ids: ids.to_vec(),
            reply,
        })?;
        rx.await.map_err(|_| VaultError::Closed)?
    }

    fn len(&self) -> usize {
        self.shared.keys.read().len()
    }

    fn close(&self) {
        FileKeyStore::close(self);
    }

    fn writable(&self) -> Result<(), String> {
        match self.shared.unavailable.lock().clone() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

struct Writer {
    file: File,
    path: PathBuf,
    shared: Arc<Shared>,
    /// Reusable slots (never used, destroyed, or torn).
    free: Vec<u64>,
    /// Number of slots in the file.
    end: u64,
    /// After a failed write or sync: the slots the failed batch may have written and what
    /// they must hold again (zeros for reused free slots, the live key for a failed destroy),
    /// restored before anything else is written (the file is cut back to `end` slots too).
    damaged: Option<Vec<(u64, [u8; SLOT])>>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        loop {
            let first = match rx.recv_timeout(PROBE_INTERVAL) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.shared.unavailable.lock().is_some() {
                        self.probe();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if self.damaged.is_some()
                && let Err(e) = self.repair()
            {
                let reason = format!("the key store cannot write ({e}); retry shortly");
                *self.shared.unavailable.lock() = Some(reason.clone());
                for request in batch {
                    fail(request, || VaultError::Unavailable(reason.clone()));
                }
                continue;
            }
            match self.commit(batch) {
                Ok(()) => {
                    if self.shared.unavailable.lock().take().is_some() {
                        tracing::info!("key store writes again");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "key store write failed; it resumes once a write succeeds");
                    *self.shared.unavailable.lock() = Some(e.to_string());
                }
            }
        }
    }

    /// After a failed write and with nothing to do: repairs the file if needed, then writes a
    /// slot's worth of zeros past its end, syncs and cuts it off again, to learn whether the
    /// disk takes writes again (zeros past the end read as a free, torn slot if the process
    /// dies in between).
    fn probe(&mut self) {
        let result = (|| {
            if self.damaged.is_some() {
                self.repair()?;
            }
            let end = self.end * SLOT as u64;
            self.file.write_all_at(&[0u8; SLOT], end)?;
            self.file.sync_data()?;
            self.file.set_len(end)?;
            self.file.sync_data()
        })();
        match result {
            Ok(()) => {
                *self.shared.unavailable.lock() = None;
                tracing::info!("key store writes again");
            }
            Err(e) => {
                // The probe's slot may be half there: repair before anything else.
                self.damaged.get_or_insert_with(Vec::new);
                *self.shared.unavailable.lock() = Some(e.to_string());
            }
        }
    }

    /// Reopens the file after a failed write: cuts it back to the slots known before the
    /// failure, restores the slots the failed batch may have overwritten, syncs.
    fn repair(&mut self) -> Result<(), std::io::Error> {
        let slots = self.damaged.clone().unwrap_or_default();
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        file.set_len(self.end * SLOT as u64)?;
        for (slot, bytes) in &slots {
            file.write_all_at(bytes, slot * SLOT as u64)?;
        }
        file.sync_data()?;
        self.file = file;
        self.damaged = None;
        tracing::info!("key store reopened after a failed write");
        Ok(())
    }

    /// Writes a batch with one sync, then answers every request in it.
    fn commit(&mut self, batch: Vec<Request>) -> Result<(), std::io::Error> {
        let end_before = self.end;
        let mut reused = Vec::new();
        let mut created: Vec<Vec<(KeyId, DataKey, u64)>> = Vec::new();
        let mut destroyed: Vec<(KeyId, u64)> = Vec::new();
        let mut writes: Vec<(u64, [u8; SLOT])> = Vec::new();
        {
            let keys = self.shared.keys.read();
            for request in &batch {
                match request {
                    Request::Create { count, .. } => {
                        let mut made = Vec::with_capacity(*count);
                        for _ in 0..*count {
                            let slot = match self.free.pop() {
                                Some(slot) => {
                                    reused.push(slot);
                                    slot
                                }
                                None => {
                                    self.end += 1;
                                    self.end - 1
                                }
                            };
                            let id = KeyId(Ulid::new());
                            let key = DataKey::generate();
                            writes.push((slot, encode_slot(id, &key)));
                            made.push((id, key, slot));
                        }
                        created.push(made);
                    }
                    Request::Destroy { ids, .. } => {
                        for id in ids {
                            if let Some((slot, _)) = keys.get(id)
                                && !destroyed.iter().any(|(d, _)| d == id)
                            {
                                let mut tombstone = [0u8; SLOT];
                                tombstone[0] = DESTROYED;
                                writes.push((*slot, tombstone));
                                destroyed.push((*id, *slot));
                            }
                        }
                    }
                }
            }
        }
        writes.sort_by_key(|(slot, _)| *slot);
        let result = self
            .write_slots(&writes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            // Nothing of the batch counts: its slots go back, and the file is repaired
            // before the next write.
            self.end = end_before;
            self.free.extend(reused.iter().rev().copied());
            let keys = self.shared.keys.read();
            let restore = destroyed.iter().filter_map(|(id, slot)| {
                keys.get(id).map(|(_, key)| (*slot, encode_slot(*id, key)))
            });
            let zeroed = reused.iter().map(|slot| (*slot, [0u8; SLOT]));
            self.damaged = Some(zeroed.chain(restore).collect());
            drop(keys);
            let reason = format!("the key store cannot write ({e}); retry shortly");
            for request in batch {
                fail(request, || VaultError::Unavailable(reason.clone()));
            }
            return Err(e);
        }
        {
            let mut keys = self.shared.keys.write();
            for made in &created {
                for (id, key, slot) in made {
                    keys.insert(*id, (*slot, key.clone()));
                }
            }
            for (id, _) in &destroyed {
                keys.remove(id);
            }
        }
        self.free.extend(destroyed.iter().map(|(_, slot)| *slot));
        let mut created = created.into_iter();
        for request in batch {
            match request {
                Request::Create { reply, .. } => {
                    let made = created.next().expect("one entry per create request");
                    let _ = reply.send(Ok(made.into_iter().map(|(id, k, _)| (id, k)).collect()));
                }
                Request::Destroy { reply, .. } => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        Ok(())
    }

    /// Writes slots (sorted by slot number), merging runs of adjacent slots into one write.
    fn write_slots(&self, writes: &[(u64, [u8; SLOT])]) -> Result<(), std::io::Error> {
        let mut i = 0;
        let mut buf = Vec::new();
        while i < writes.len() {
            let start = writes[i].0;
            buf.clear();
            let mut j = i;
            while j < writes.len() && writes[j].0 == start + (j - i) as u64 {
                buf.extend_from_slice(&writes[j].1);
                j += 1;
            }
            self.file.write_all_at(&buf, start * SLOT as u64)?;
            i = j;
        }
        Ok(())
    }
}

fn fail(request: Request, error: impl Fn() -> VaultError) {
    match request {
        Request::Create { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Request::Destroy { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
    }
}

fn encode_slot(id: KeyId, key: &DataKey) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[0] = LIVE;
    slot[8..24].copy_from_slice(&id.0.to_bytes());
    slot[24..56].copy_from_slice(key.as_bytes());
    let crc = crc32fast::hash(&slot[..56]);
    slot[56..60].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode_slot(slot: &[u8]) -> Option<(KeyId, DataKey)> {
    if slot[0] != LIVE {
        return None;
    }
    let crc = u32::from_le_bytes(slot[56..60].try_into().ok()?);
    if crc32fast::hash(&slot[..56]) != crc {
        return None;
    }
    let id = KeyId(Ulid::from_bytes(slot[8..24].try_into().ok()?));
    let key = DataKey::from_bytes(slot[24..56].try_into().ok()?);
    Some((id, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test]
    async fn keys_survive_reopen_and_destroy_overwrites_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.dat");
        let store = FileKeyStore::open(&path).unwrap();
        let made = store.create(3).await.unwrap();
        assert_eq!(made.len(), 3);
        assert_eq!(store.len(), 3);
        let (gone, gone_key) = made[1].clone();
        let gone_bytes = *gone_key.as_bytes();
        assert!(contains(&std::fs::read(&path).unwrap(), &gone_bytes));

        store.destroy(&[gone]).await.unwrap();
        assert!(store.get(gone).await.unwrap().is_none());
        assert!(!contains(&std::fs::read(&path).unwrap(), &gone_bytes));
        assert!(!contains(
            &std::fs::read(&path).unwrap(),
            &gone.0.to_bytes()
        ));
        store.close();
        drop(store);

        let store = FileKeyStore::open(&path).unwrap();
        assert_eq!(store.len(), 2);
        assert!(store.get(gone).await.unwrap().is_none());
        for (id, key) in [&made[0], &made[2]] {
            assert_eq!(
                store.get(*id).await.unwrap().unwrap().as_bytes(),
                key.as_bytes()
            );
        }
        // The destroyed slot is reused rather than growing the file.
        let len = std::fs::metadata(&path).unwrap().len();
        store.create(1).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    }

    #[tokio::test]
    async fn torn_slot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.dat");
        let store = FileKeyStore::open(&path).unwrap();
        let made = store.create(2).await.unwrap();
        drop(store);
        // Corrupt the second slot and append half a slot, as a crash mid-write would.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT + 30] ^= 0xff;
        bytes.extend_from_slice(&[1u8; 20]);
        std::fs::write(&path, &bytes).unwrap();
        let store = FileKeyStore::open(&path).unwrap();
        assert_eq!(store.len(), 1);
        assert!(store.get(made[0].0).await.unwrap().is_some());
        assert!(store.get(made[1].0).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn concurrent_creates_share_syncs_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.dat");
        let store = Arc::new(FileKeyStore::open(&path).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.create(2).await.unwrap() }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap().into_iter().map(|(id, _)| id));
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 128);
        store.close();
        let reopened = FileKeyStore::open(&path).unwrap();
        assert_eq!(reopened.len(), 128);
    }
}
