//! Durable before acknowledged: the order of writes, syncs and acknowledgements, group
//! commit, and what a failed fsync does.

use crate::common::*;
use parking_lot::Mutex;
use roster_eventlog::embedded::{AckInfo, EmbeddedOptions, StdStorage, Storage, StorageFile};
use roster_eventlog::{AppendError, EventLog, ExpectedVersion, LogError, StreamId};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone, Debug, PartialEq)]
enum Op {
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
    /// The writer is about to acknowledge this record.
    Ack {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

type Journal = Arc<Mutex<Vec<Op>>>;

/// Wraps the real file system and records every write and sync, in order.
struct Recording {
    inner: StdStorage,
    journal: Journal,
}

struct RecordingFile {
    inner: Arc<dyn StorageFile>,
    path: PathBuf,
    journal: Journal,
}

impl Storage for Recording {
    fn open_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(path, self.inner.open_file(path)?))
    }
    fn create_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(path, self.inner.create_file(path)?))
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
}

impl Recording {
    fn wrap(&self, path: &Path, inner: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(RecordingFile {
            inner,
            path: path.to_owned(),
            journal: self.journal.clone(),
        })
    }
}

impl StorageFile for RecordingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
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
        // At least a slow disk's fsync time, so the grouping does not depend on whether the
        // temp dir is on a disk or on tmpfs (where fsync is free).
        std::thread::sleep(std::time::Duration::from_millis(1));
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

fn recording_options(journal: &Journal) -> EmbeddedOptions {
    let acks = journal.clone();
    EmbeddedOptions {
        storage: Arc::new(Recording {
            inner: StdStorage,
            journal: journal.clone(),
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
/// write and returned before the ack.
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
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ack_follows_the_sync_of_its_bytes_and_commits_are_grouped() {
    const APPENDERS: usize = 64;
    const EACH: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let journal: Journal = Arc::default();
    let log = Arc::new(open(dir.path(), recording_options(&journal)).await);
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
    println!("{acks} appends, {segment_syncs} segment syncs");
    assert!(
        segment_syncs * 4 < acks,
        "group commit: {segment_syncs} syncs for {acks} appends"
    );
    assert!(
        segment_files(dir.path()).len() > 1,
        "the run crossed segments"
    );
    log.close().await.unwrap();
}

/// Fails `sync_data` of segment files from the `fail_from`-th call on.
struct FailingSync {
    inner: StdStorage,
    syncs: Arc<AtomicUsize>,
    fail_from: usize,
}

struct FailingFile {
    inner: Arc<dyn StorageFile>,
    is_segment: bool,
    syncs: Arc<AtomicUsize>,
    fail_from: usize,
}

impl Storage for FailingSync {
    fn open_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(path, self.inner.open_file(path)?))
    }
    fn create_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(path, self.inner.create_file(path)?))
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
}

impl FailingSync {
    fn wrap(&self, path: &Path, inner: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(FailingFile {
            inner,
            is_segment: path.extension().is_some_and(|e| e == "seg"),
            syncs: self.syncs.clone(),
            fail_from: self.fail_from,
        })
    }
}

impl StorageFile for FailingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.is_segment && self.syncs.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_from {
            return Err(io::Error::other("injected EIO"));
        }
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_not_acknowledged_and_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        storage: Arc::new(FailingSync {
            inner: StdStorage,
            syncs: Arc::default(),
            fail_from: 4,
        }),
        ..EmbeddedOptions::default()
    };
    let log = open(dir.path(), options).await;
    let s = StreamId::new("acme", "s");
    for i in 0..3 {
        log.append(one(&s, ExpectedVersion::Any, &i.to_string()))
            .await
            .expect("syncs 1-3 work");
    }
    let err = log
        .append(one(&s, ExpectedVersion::Any, "3"))
        .await
        .expect_err("sync 4 fails");
    assert!(
        matches!(err, AppendError::Log(LogError::Io(_))),
        "got {err:?}"
    );
    assert_eq!(log.head(), 3, "the failed batch is not visible");
    assert!(log.read_all(3, 10).await.unwrap().is_empty());
    // fsync errors are not retried: the log refuses everything after.
    let err = log
        .append(one(&StreamId::new("acme", "t"), ExpectedVersion::Any, "x"))
        .await;
    assert!(
        matches!(err, Err(AppendError::Log(LogError::Io(_)))),
        "got {err:?}"
    );
    assert_eq!(log.stream_version(&s).await.unwrap(), Some(3));
    log.close().await.unwrap();
}
