//! Durable before acknowledged: the order of writes, syncs (of files and of directories) and
//! acknowledgements, group commit, and what failed writes and failed fsyncs do — a pause with
//! nothing unacknowledged kept, and a log that writes again by itself once the disk does.

use crate::common::*;
use parking_lot::Mutex;
use roster_eventlog::embedded::{AckInfo, EmbeddedOptions, StdStorage, Storage, StorageFile};
use roster_eventlog::{AppendError, EventLog, ExpectedVersion, LogError, StreamId};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq)]
enum Op {
    /// `create_file` returned.
    Create {
        path: PathBuf,
    },
    /// `write_at` returned.
    Write {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// `sync_data` was called / returned.
    SyncStart {
        path: PathBuf,
    },
    SyncEnd {
        path: PathBuf,
    },
    /// `sync_dir` returned.
    SyncDir {
        dir: PathBuf,
    },
    /// The writer is about to acknowledge this record.
    Ack {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

type Journal = Arc<Mutex<Vec<Op>>>;

/// What the file layer does wrong, switched on and off while the log runs.
#[derive(Default)]
struct Faults {
    /// Writes to segment files fail with ENOSPC (a full disk).
    full: AtomicBool,
    /// `sync_data` of segment files fails with EIO from the `fail_sync_from`-th call on
    /// (0: never).
    fail_sync_from: AtomicUsize,
    /// Segment syncs so far.
    syncs: AtomicUsize,
    /// `sync_dir` fails with EIO.
    fail_dir_sync: AtomicBool,
}

/// The real file system, recording every creation, write and sync in order, and failing
/// some of them on demand.
struct Faulty {
    inner: StdStorage,
    journal: Journal,
    faults: Arc<Faults>,
}

struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    path: PathBuf,
    is_segment: bool,
    journal: Journal,
    faults: Arc<Faults>,
}

impl Storage for Faulty {
    fn open_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(path, self.inner.open_file(path)?))
    }
    fn create_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.inner.create_file(path)?;
        self.journal.lock().push(Op::Create {
            path: path.to_owned(),
        });
        Ok(self.wrap(path, file))
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.faults.fail_dir_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected EIO on a directory sync"));
        }
        self.inner.sync_dir(dir)?;
        self.journal.lock().push(Op::SyncDir {
            dir: dir.to_owned(),
        });
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
}

impl Faulty {
    fn wrap(&self, path: &Path, inner: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(FaultyFile {
            inner,
            path: path.to_owned(),
            is_segment: path.extension().is_some_and(|e| e == "seg"),
            journal: self.journal.clone(),
            faults: self.faults.clone(),
        })
    }
}

impl StorageFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.is_segment && self.faults.full.load(Ordering::SeqCst) {
            // As a full disk does: part of the bytes may land before the error.
            let half = buf.len() / 2;
            self.inner.write_at(&buf[..half], offset)?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.write_at(buf, offset)?;
        self.journal.lock().push(Op::Write {
            path: self.path.clone(),
            offset,
            len: buf.len() as u64,
        });
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.journal.lock().push(Op::SyncStart {
            path: self.path.clone(),
        });
        if self.is_segment {
            let n = self.faults.syncs.fetch_add(1, Ordering::SeqCst) + 1;
            let from = self.faults.fail_sync_from.load(Ordering::SeqCst);
            if from != 0 && n >= from {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
        }
        // At least a slow disk's fsync time, so the grouping does not depend on whether the
        // temp dir is on a disk or on tmpfs (where fsync is free).
        std::thread::sleep(Duration::from_millis(1));
        self.inner.sync_data()?;
        self.journal.lock().push(Op::SyncEnd {
            path: self.path.clone(),
        });
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

fn faulty_options(journal: &Journal, faults: &Arc<Faults>) -> EmbeddedOptions {
    let acks = journal.clone();
    EmbeddedOptions {
        storage: Arc::new(Faulty {
            inner: StdStorage,
            journal: journal.clone(),
            faults: faults.clone(),
        }),
        on_ack: Some(Arc::new(move |a: &AckInfo| {
            acks.lock().push(Op::Ack {
                path: a.segment.clone(),
                offset: a.offset,
                len: a.len,
            });
        })),
        // Small segments, so some batches cross a segment boundary too.
        segment_size: 64 << 10,
        ..EmbeddedOptions::default()
    }
}

/// For every ack: a write covering its bytes, then a sync of that file that started after the
/// write and returned before the ack; and the file's creation (unless it existed before the
/// journal began) followed by a sync of its directory before the ack.
fn assert_synced_before_acked(ops: &[Op]) -> usize {
    let mut acks = 0;
    for (i, op) in ops.iter().enumerate() {
        let Op::Ack { path, offset, len } = op else {
            continue;
        };
        acks += 1;
        let write = ops[..i].iter().rposition(|w| {
            matches!(w, Op::Write { path: p, offset: o, len: l }
                if p == path && *o <= *offset && offset + len <= o + l)
        });
        let write = write.unwrap_or_else(|| panic!("ack #{i} {op:?} has no covering write"));
        let synced = ops[write + 1..i].iter().enumerate().any(|(k, s)| {
            matches!(s, Op::SyncStart { path: p } if p == path)
                && ops[write + 1 + k + 1..i]
                    .iter()
                    .any(|e| matches!(e, Op::SyncEnd { path: p } if p == path))
        });
        assert!(
            synced,
            "ack #{i} {op:?}: no completed sync between its write and its ack"
        );
        if let Some(created) = ops[..i]
            .iter()
            .rposition(|c| matches!(c, Op::Create { path: p } if p == path))
        {
            let dir = path.parent().expect("a segment lives in a directory");
            assert!(
                ops[created + 1..i]
                    .iter()
                    .any(|s| matches!(s, Op::SyncDir { dir: d } if d == dir)),
                "ack #{i} {op:?}: its segment's creation was never made durable (no directory \
                 sync between the creation and the ack)"
            );
        }
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ack_follows_the_sync_of_its_bytes_and_commits_are_grouped() {
    const APPENDERS: usize = 64;
    const EACH: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let journal: Journal = Arc::default();
    let log = Arc::new(open(dir.path(), faulty_options(&journal, &Arc::default())).await);
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let stream = StreamId::new("acme", format!("s{t}"));
                for i in 0..EACH {
                    let data = format!("{t}-{i}-{}", "x".repeat(200));
                    log.append(one(&stream, ExpectedVersion::Any, &data))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let ops = journal.lock().clone();
    let acks = assert_synced_before_acked(&ops);
    assert_eq!(acks, APPENDERS * EACH);
    let segment_syncs = ops
        .iter()
        .filter(
            |o| matches!(o, Op::SyncEnd { path } if path.extension().is_some_and(|e| e == "seg")),
        )
        .count();
    let created = ops
        .iter()
        .filter(
            |o| matches!(o, Op::Create { path } if path.extension().is_some_and(|e| e == "seg")),
        )
        .count();
    println!("{acks} appends, {segment_syncs} segment syncs, {created} segments created");
    assert!(
        segment_syncs * 4 < acks,
        "group commit: {segment_syncs} syncs for {acks} appends"
    );
    assert!(
        created > 1,
        "the run created segments (and synced their directory)"
    );
    log.close().await.unwrap();
}

fn s(name: &str) -> StreamId {
    StreamId::new("acme", name)
}

fn is_unavailable(result: &Result<roster_eventlog::Committed, AppendError>) -> bool {
    matches!(result, Err(AppendError::Log(LogError::Unavailable(_))))
}

/// The payloads of every event, as a fresh open of the directory reads them from disk.
async fn reopened_data(dir: &Path) -> Vec<String> {
    let log = open(dir, EmbeddedOptions::default()).await;
    let events = roster_eventlog::contract::read_everything(&log).await;
    log.close().await.unwrap();
    events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect()
}

/// Waits (at most 10 s) for the log's own probe to find the disk writable again.
async fn until_writable(log: &dyn EventLog) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.writable().is_err() {
        assert!(
            Instant::now() < deadline,
            "the log did not find the disk writable again: {:?}",
            log.writable()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_appends_and_the_log_resumes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let journal: Journal = Arc::default();
    let faults = Arc::new(Faults::default());
    let log = open(dir.path(), faulty_options(&journal, &faults)).await;
    for i in 0..3 {
        log.append(one(&s("a"), ExpectedVersion::Any, &i.to_string()))
            .await
            .expect("the disk has room");
    }
    faults.full.store(true, Ordering::SeqCst);
    for i in 0..3 {
        let refused = log
            .append(one(&s("b"), ExpectedVersion::Any, &format!("lost-{i}")))
            .await;
        assert!(is_unavailable(&refused), "got {refused:?}");
        let Err(AppendError::Log(LogError::Unavailable(message))) = refused else {
            unreachable!()
        };
        assert!(message.contains("not written"), "{message}");
    }
    assert!(log.writable().is_err(), "the log says it cannot write");
    assert_eq!(log.head(), 3, "nothing of the refused appends is visible");
    assert!(log.read_all(3, 10).await.unwrap().is_empty());
    // Still full: the probes keep failing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(log.writable().is_err(), "still full");

    faults.full.store(false, Ordering::SeqCst);
    until_writable(&log).await;
    let resumed = log
        .append(one(&s("b"), ExpectedVersion::NoStream, "kept"))
        .await
        .expect("the log writes again, without a restart");
    assert_eq!(
        resumed.first_position, 4,
        "refused appends took no position"
    );
    log.close().await.unwrap();

    assert_eq!(
        reopened_data(dir.path()).await,
        ["0", "1", "2", "kept"],
        "every acknowledged append, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_not_acknowledged_and_the_log_reopens_from_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let journal: Journal = Arc::default();
    let faults = Arc::new(Faults::default());
    let log = open(dir.path(), faulty_options(&journal, &faults)).await;
    for i in 0..3 {
        log.append(one(&s("a"), ExpectedVersion::Any, &i.to_string()))
            .await
            .expect("syncs work");
    }
    let syncs = faults.syncs.load(Ordering::SeqCst);
    faults.fail_sync_from.store(syncs + 1, Ordering::SeqCst);
    let before = journal.lock().len();
    let refused = log
        .append(one(&s("a"), ExpectedVersion::Any, "unacknowledged"))
        .await;
    assert!(is_unavailable(&refused), "got {refused:?}");
    assert_eq!(log.head(), 3, "the failed batch is not visible");
    assert!(log.read_all(3, 10).await.unwrap().is_empty());
    // The bytes did reach the file before the fsync failed: the writer cut them off (and
    // synced that) before answering.
    let ops = journal.lock()[before..].to_vec();
    assert!(
        ops.iter().any(|o| matches!(o, Op::Write { .. })),
        "the failed append was written: {ops:?}"
    );
    assert!(log.writable().is_err());

    // The disk syncs again; the log does not retry the failed fsync, it reopens.
    faults.fail_sync_from.store(0, Ordering::SeqCst);
    until_writable(&log).await;
    let next = log
        .append(one(&s("a"), ExpectedVersion::Exact(3), "after"))
        .await
        .expect("appends resume");
    assert_eq!(next.first_position, 4);
    assert_eq!(next.versions, [4]);
    log.close().await.unwrap();

    // Reopened from disk: the unacknowledged append is NOT in the log (it was cut off at the
    // last acknowledged record); every acknowledged one is.
    assert_eq!(reopened_data(dir.path()).await, ["0", "1", "2", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_whose_creation_cannot_be_synced_is_removed_again() {
    let dir = tempfile::tempdir().unwrap();
    let journal: Journal = Arc::default();
    let faults = Arc::new(Faults::default());
    let log = open(dir.path(), faulty_options(&journal, &faults)).await;
    let big = "x".repeat(40 << 10);
    log.append(one(&s("a"), ExpectedVersion::Any, &big))
        .await
        .expect("first segment");
    assert_eq!(segment_files(dir.path()).len(), 1);
    // The next record needs a new segment (64 KiB segments), whose directory entry cannot
    // be made durable.
    faults.fail_dir_sync.store(true, Ordering::SeqCst);
    let refused = log.append(one(&s("a"), ExpectedVersion::Any, &big)).await;
    assert!(is_unavailable(&refused), "got {refused:?}");
    faults.fail_dir_sync.store(false, Ordering::SeqCst);
    until_writable(&log).await;
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "the segment made for the refused record is gone"
    );
    log.append(one(&s("a"), ExpectedVersion::Exact(1), &big))
        .await
        .expect("a new segment once the directory syncs");
    assert_eq!(segment_files(dir.path()).len(), 2);
    log.close().await.unwrap();
    let log = open(dir.path(), EmbeddedOptions::default()).await;
    assert_eq!(log.head(), 2);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private_to_the_server_and_old_ones_are_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let log = open(&log_dir, EmbeddedOptions::default()).await;
    log.append(one(&s("a"), ExpectedVersion::Any, "x"))
        .await
        .unwrap();
    log.close().await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let check = |what: &str| {
        assert_eq!(mode(&log_dir), 0o700, "{what}: the log directory");
        for entry in std::fs::read_dir(&log_dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{what}: {}", path.display());
        }
    };
    check("created");
    // As an older release left them: world-readable.
    std::fs::set_permissions(&log_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(&log_dir).unwrap() {
        std::fs::set_permissions(
            entry.unwrap().path(),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let log = open(&log_dir, EmbeddedOptions::default()).await;
    log.close().await.unwrap();
    check("reopened");
}
