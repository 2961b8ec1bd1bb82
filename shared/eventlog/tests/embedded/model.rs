//! Property test: random transactions (many of them failing) against a simple in-memory
//! reference model, with restarts in between.

use crate::common::*;
use proptest::prelude::*;
use roster_eventlog::embedded::{EmbeddedOptions, StdStorage, Storage, StorageFile};
use roster_eventlog::{
    AppendError, EventLog, ExpectedVersion, Reservation, ReservationInfo, StreamAppend, StreamId,
    Transaction,
};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::Arc;
use ulid::Ulid;

const PAST: i64 = 1;
const FUTURE: i64 = i64::MAX;

/// The real file system without fsync: durability is tested elsewhere, and this test wants
/// many cases quickly.
struct NoSync(StdStorage);
struct NoSyncFile(Arc<dyn StorageFile>);

impl Storage for NoSync {
    fn open_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(NoSyncFile(self.0.open_file(path)?)))
    }
    fn create_file(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(NoSyncFile(self.0.create_file(path)?)))
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.remove_file(path)
    }
}

impl StorageFile for NoSyncFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.0.size()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append(Transaction),
    Reopen,
}

/// What the model expects an append to return.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok {
        first: u64,
        last: u64,
        versions: Vec<u64>,
    },
    Invalid,
    WrongVersion {
        stream: StreamId,
        actual: Option<u64>,
    },
    Held {
        key: String,
        owner: String,
        position: u64,
    },
}

fn outcome(result: &Result<roster_eventlog::Committed, AppendError>) -> Outcome {
    match result {
        Ok(c) => Outcome::Ok {
            first: c.first_position,
            last: c.last_position,
            versions: c.versions.clone(),
        },
        Err(AppendError::Invalid(_)) => Outcome::Invalid,
        Err(AppendError::WrongExpectedVersion { stream, actual, .. }) => Outcome::WrongVersion {
            stream: stream.clone(),
            actual: *actual,
        },
        Err(AppendError::ReservationHeld {
            key,
            owner,
            position,
        }) => Outcome::Held {
            key: key.clone(),
            owner: owner.clone(),
            position: *position,
        },
        Err(AppendError::Log(e)) => panic!("log error: {e}"),
    }
}

#[derive(Default)]
struct Model {
    head: u64,
    /// (stream, version, id) in position order.
    events: Vec<(StreamId, u64, Ulid)>,
    versions: HashMap<StreamId, u64>,
    reservations: HashMap<String, ReservationInfo>,
}

impl Model {
    fn append(&mut self, tx: &Transaction) -> Outcome {
        if tx.appends.is_empty()
            || tx.appends.iter().any(|a| a.events.is_empty())
            || tx
                .appends
                .iter()
                .enumerate()
                .any(|(i, a)| tx.appends[..i].iter().any(|b| b.stream == a.stream))
        {
            return Outcome::Invalid;
        }
        for a in &tx.appends {
            let actual = self.versions.get(&a.stream).copied();
            let ok = match a.expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => actual.is_none(),
                ExpectedVersion::Exact(v) => actual == Some(v),
            };
            if !ok {
                return Outcome::WrongVersion {
                    stream: a.stream.clone(),
                    actual,
                };
            }
        }
        let first = self.head + 1;
        let mut reservations = self.reservations.clone();
        for r in &tx.reservations {
            let live = |res: &HashMap<String, ReservationInfo>, key: &str| {
                res.get(key)
                    .filter(|i| i.expires_at.is_none_or(|at| at > PAST))
                    .cloned()
            };
            // The model keeps a key's holders as a list, first holder first, written
            // independently of the log's effects.
            let holds =
                |h: &ReservationInfo, o: &str| h.owner == o || h.sharers.iter().any(|s| s == o);
            let fresh = |owner: &str, expires_at| ReservationInfo {
                owner: owner.to_owned(),
                position: first,
                expires_at,
                sharers: vec![],
            };
            match r {
                Reservation::Claim {
                    key,
                    owner,
                    expires_at,
                } => match live(&reservations, key) {
                    Some(held) if !holds(&held, owner) => {
                        return Outcome::Held {
                            key: key.clone(),
                            owner: held.owner,
                            position: held.position,
                        };
                    }
                    Some(held) if !held.sharers.is_empty() => {}
                    _ => {
                        reservations.insert(key.clone(), fresh(owner, *expires_at));
                    }
                },
                Reservation::Share { key, owner } => match live(&reservations, key) {
                    None => {
                        reservations.insert(key.clone(), fresh(owner, None));
                    }
                    Some(mut held) => {
                        if !holds(&held, owner) {
                            held.sharers.push(owner.clone());
                        }
                        reservations.insert(key.clone(), held);
                    }
                },
                Reservation::Release { key, owner } => {
                    if let Some(mut held) = live(&reservations, key).filter(|h| holds(h, owner)) {
                        let mut holders = vec![held.owner.clone()];
                        holders.extend(held.sharers.iter().cloned());
                        let was_first = holders[0] == *owner;
                        holders.retain(|h| h != owner);
                        if holders.is_empty() {
                            reservations.remove(key);
                        } else {
                            held.owner = holders.remove(0);
                            held.sharers = holders;
                            if was_first {
                                held.position = first;
                            }
                            reservations.insert(key.clone(), held);
                        }
                    }
                }
            }
        }
        self.reservations = reservations;
        let mut versions = Vec::new();
        for a in &tx.appends {
            let v = self.versions.entry(a.stream.clone()).or_default();
            for e in &a.events {
                *v += 1;
                self.events.push((a.stream.clone(), *v, e.id));
            }
            versions.push(*v);
        }
        self.head = self.events.len() as u64;
        Outcome::Ok {
            first,
            last: self.head,
            versions,
        }
    }

    fn reservation(&self, key: &str) -> Option<ReservationInfo> {
        self.reservations
            .get(key)
            .filter(|i| i.expires_at.is_none_or(|at| at > PAST))
            .cloned()
    }
}

const KEYS: [&str; 3] = ["k0", "k1", "k2"];

fn stream_strategy() -> impl Strategy<Value = StreamId> {
    (0..2u8, 0..3u8).prop_map(|(o, n)| StreamId::new(format!("o{o}"), format!("n{n}")))
}

fn append_strategy() -> impl Strategy<Value = StreamAppend> {
    let expected = prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        (0..5u64).prop_map(ExpectedVersion::Exact),
    ];
    let count = prop_oneof![12 => 1..4usize, 1 => Just(0usize)];
    (stream_strategy(), expected, count).prop_map(|(stream, expected, n)| StreamAppend {
        stream,
        expected,
        // Ids are replaced by fresh ones when the transaction runs.
        events: (0..n).map(|i| event(&format!("e{i}"))).collect(),
    })
}

fn reservation_strategy() -> impl Strategy<Value = Reservation> {
    let key = prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned);
    let owner = prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned);
    (key, owner, 0..5u8).prop_map(|(key, owner, kind)| match kind {
        0 => Reservation::Claim {
            key,
            owner,
            expires_at: None,
        },
        1 => Reservation::Claim {
            key,
            owner,
            expires_at: Some(PAST),
        },
        2 => Reservation::Claim {
            key,
            owner,
            expires_at: Some(FUTURE),
        },
        3 => Reservation::Share { key, owner },
        _ => Reservation::Release { key, owner },
    })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let tx = (
        prop::collection::vec(append_strategy(), 0..4),
        prop::collection::vec(reservation_strategy(), 0..4),
    )
        .prop_map(|(appends, reservations)| Transaction {
            appends,
            reservations,
        });
    prop_oneof![25 => tx.prop_map(Op::Append), 1 => Just(Op::Reopen)]
}

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        storage: Arc::new(NoSync(StdStorage)),
        segment_size: 2048,
        checkpoint_interval: 1024,
        ..EmbeddedOptions::default()
    }
}

async fn check_state(log: &dyn EventLog, model: &Model) {
    let keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
    let snap = snapshot(log, &keys).await;
    assert_eq!(snap.head, model.head);
    let got: Vec<_> = snap
        .events
        .iter()
        .map(|e| (e.stream.clone(), e.version, e.id))
        .collect();
    assert_eq!(got, model.events);
    let versions: BTreeMap<_, _> = model
        .versions
        .iter()
        .map(|(s, v)| (s.clone(), Some(*v)))
        .collect();
    assert_eq!(snap.versions, versions);
    for key in KEYS {
        assert_eq!(
            snap.reservations[key],
            model.reservation(key),
            "reservation {key}"
        );
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), options()).await;
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append(mut tx) => {
                for a in &mut tx.appends {
                    for e in &mut a.events {
                        e.id = Ulid::new();
                    }
                }
                let expected = model.append(&tx);
                let got = outcome(&log.append(tx).await);
                assert_eq!(got, expected);
            }
            Op::Reopen => {
                check_state(&log, &model).await;
                log.close().await.unwrap();
                drop(log);
                log = open(dir.path(), options()).await;
            }
        }
    }
    check_state(&log, &model).await;
    drop(log);
    // A crash-style restart (no close) must give the same state.
    let log = open(dir.path(), options()).await;
    check_state(&log, &model).await;
    log.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_transactions_match_the_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(ops));
    }
}
