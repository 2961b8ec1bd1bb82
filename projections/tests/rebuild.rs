//! Property: applying events incrementally, in arbitrary batches as they are appended, gives the
//! same read models as rebuilding from position 0 — including across pruning and hard
//! deletion whose keys are destroyed before the rebuild runs. And a rebuild (the projector's
//! own batches, in big chunks, beside the live models) gives the same read models as the live
//! projector in small batches, also when the live projector takes over halfway.

use std::sync::Arc;

use proptest::prelude::*;
use roster_domain::settings::{OrgSettings, SettingsChanged, SettingsEvent, UniqueUsernames};
use roster_domain::time::from_micros;
use roster_domain::user::{PersonalProfile, WalletChange};
use roster_domain::{
    Aggregate, CreateUser, DeleteMode, EventSet, OrgId, PatchInput, Profile, Recorded, User,
    UserCommand, UserEvent, UserId,
};
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::{EventLog, ExpectedVersion, StreamAppend, StreamId, Transaction};
use roster_projections::rebuild::{RebuildOptions, rebuild_with};
use roster_projections::{Codec, EventMeta, ListQuery, ReadModels};
use roster_vault::{BlindIndex, FileKeyStore, KeyStore};
use serde_json::json;

const IDS: &[&str] = &["u0", "u1", "u2", "u3"];
const NAMES: &[&str] = &["alice", "Alice", "bob", "carol"];

#[derive(Clone, Debug)]
enum Op {
    Create {
        user: usize,
        name: usize,
        upsert: bool,
    },
    Patch {
        user: usize,
        name: usize,
        custom: i64,
    },
    Unset {
        user: usize,
    },
    Block {
        user: usize,
        blocked: bool,
    },
    Deactivate {
        user: usize,
    },
    Delete {
        user: usize,
        mode: DeleteMode,
    },
    Restore {
        user: usize,
    },
    Wallet {
        user: usize,
        delta: i64,
    },
    Settings {
        unique: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..IDS.len();
    let name = 0..NAMES.len();
    prop_oneof![
        3 => (user.clone(), name.clone(), any::<bool>()).prop_map(|(user, name, upsert)| Op::Create { user, name, upsert }),
        3 => (user.clone(), name, -5i64..5).prop_map(|(user, name, custom)| Op::Patch { user, name, custom }),
        1 => user.clone().prop_map(|user| Op::Unset { user }),
        1 => (user.clone(), any::<bool>()).prop_map(|(user, blocked)| Op::Block { user, blocked }),
        1 => user.clone().prop_map(|user| Op::Deactivate { user }),
        2 => (user.clone(), prop::sample::select(vec![DeleteMode::Soft, DeleteMode::Pruning, DeleteMode::Hard]))
            .prop_map(|(user, mode)| Op::Delete { user, mode }),
        1 => user.clone().prop_map(|user| Op::Restore { user }),
        1 => (user, -3i64..6).prop_map(|(user, delta)| Op::Wallet { user, delta }),
        1 => any::<bool>().prop_map(|unique| Op::Settings { unique }),
    ]
}

struct World {
    _dir: tempfile::TempDir,
    log: Arc<dyn EventLog>,
    keys: Arc<FileKeyStore>,
    codec: Codec,
    blind: BlindIndex,
    org: OrgId,
}

impl World {
    /// A user's state and version, folded from its stream as the repository loads it.
    async fn load(&self, id: &str) -> (Option<User>, u64) {
        let stream = StreamId::new(self.org.as_str(), format!("user-{id}"));
        let mut state = None;
        let mut version = 0;
        for record in self.log.read_stream(&stream, 1, usize::MAX).await.unwrap() {
            let decoded = self.codec.decode::<UserEvent>(&record).await.unwrap();
            let at = Recorded {
                id,
                org: self.org.as_str(),
                at: from_micros(record.time),
                version: record.version,
            };
            state = User::apply(state, &decoded.event, at);
            version = record.version;
        }
        (state, version)
    }

    /// Runs one operation the way the API would; refused commands append nothing.
    async fn run(&self, op: &Op) {
        if let Op::Settings { unique } = op {
            let settings = OrgSettings {
                enforce_unique_usernames: if *unique {
                    UniqueUsernames::App
                } else {
                    UniqueUsernames::No
                },
                ..Default::default()
            };
            let event = self.codec.encode(
                &SettingsEvent::SettingsChanged(SettingsChanged { settings }),
                &EventMeta::default(),
                None,
            );
            let tx = Transaction {
                appends: vec![StreamAppend {
                    stream: StreamId::new(self.org.as_str(), "settings"),
                    expected: ExpectedVersion::Any,
                    events: vec![event],
                }],
                reservations: vec![],
            };
            self.log.append(tx).await.unwrap();
            return;
        }
        let user = match op {
            Op::Create { user, .. }
            | Op::Patch { user, .. }
            | Op::Unset { user }
            | Op::Block { user, .. }
            | Op::Deactivate { user }
            | Op::Delete { user, .. }
            | Op::Restore { user }
            | Op::Wallet { user, .. } => *user,
            Op::Settings { .. } => unreachable!(),
        };
        let id = IDS[user];
        let (state, version) = self.load(id).await;
        let patch = |v: serde_json::Value| {
            UserCommand::Patch(roster_domain::user::PatchUser {
                patch: serde_json::from_value::<PatchInput>(v)
                    .unwrap()
                    .validate()
                    .unwrap(),
                usernames: UniqueUsernames::App,
            })
        };
        let command = match op {
            Op::Create { name, upsert, .. } => {
                let create = CreateUser {
                    id: UserId::parse(id).unwrap(),
                    org: self.org.clone(),
                    profile: Profile {
                        public: Default::default(),
                        personal: PersonalProfile {
                            username: Some(NAMES[*name].into()),
                            email: Some(format!("{}@example.com", NAMES[*name])),
                            name: Some(format!("{} Person", NAMES[*name])),
                            ..Default::default()
                        },
                    },
                    password_hash: None,
                    usernames: UniqueUsernames::App,
                };
                if *upsert {
                    UserCommand::Upsert(create)
                } else {
                    UserCommand::Create(create)
                }
            }
            Op::Patch { name, custom, .. } => patch(
                json!({"set": {"display_name": NAMES[*name], "custom.n": custom, "role": "r"}}),
            ),
            Op::Unset { .. } => patch(json!({"unset": ["username", "custom", "role"]})),
            Op::Block { blocked, .. } => UserCommand::SetBlocked(*blocked),
            Op::Deactivate { .. } => UserCommand::Deactivate {
                created_by_id: None,
            },
            Op::Delete { mode, .. } => UserCommand::Delete(*mode),
            Op::Restore { .. } => UserCommand::Restore,
            Op::Wallet { delta, .. } => UserCommand::AdjustWallet(WalletChange {
                changeset: [("coins".to_string(), *delta)].into(),
                metadata: Default::default(),
                update_ledger: true,
            }),
            Op::Settings { .. } => unreachable!(),
        };
        let Ok(decision) = User::decide(state.as_ref(), &command) else {
            return;
        };
        if decision.is_empty() {
            return;
        }
        let mut events = decision.events;
        // A creation, or the restore of a pruned user, gets a fresh key, as the repository
        // gives it.
        let fresh = match decision.fresh_key {
            true => {
                let fresh = self.codec.key_pool().take(1).await.unwrap().remove(0);
                for event in &mut events {
                    event.assign_key(fresh.0);
                }
                Some(fresh)
            }
            false => None,
        };
        let before_kid = state.as_ref().and_then(User::data_key);
        let after = events.iter().enumerate().fold(state.clone(), |s, (i, e)| {
            let at = Recorded {
                id,
                org: self.org.as_str(),
                at: chrono::Utc::now(),
                version: version + i as u64 + 1,
            };
            User::apply(s, e, at)
        });
        let key = match (
            fresh,
            after.as_ref().and_then(User::data_key).or(before_kid),
        ) {
            (Some(fresh), _) => Some(fresh),
            (None, Some(kid)) => self.keys.get(kid).await.unwrap().map(|k| (kid, k)),
            (None, None) => None,
        };
        let meta = EventMeta {
            actor: "test".into(),
            ip: Some("10.1.2.3".into()),
            ..Default::default()
        };
        let tx = Transaction {
            appends: vec![StreamAppend {
                stream: StreamId::new(self.org.as_str(), format!("user-{id}")),
                expected: if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                },
                events: events
                    .iter()
                    .map(|e| {
                        self.codec
                            .encode(e, &meta, key.as_ref().map(|(i, k)| (*i, k)))
                    })
                    .collect(),
            }],
            reservations: vec![],
        };
        self.log.append(tx).await.unwrap();
        // Erasure: pruning and hard deletion destroy the user's key, as the API does.
        if events.iter().any(EventSet::erases_key)
            && let Some(kid) = before_kid
        {
            self.keys.destroy(&[kid]).await.unwrap();
        }
    }
}

async fn snapshot(models: &ReadModels, org: &str) -> Vec<String> {
    let mut out = Vec::new();
    for id in IDS {
        out.push(format!("{id}: {:?}", models.get(org, id).await.unwrap()));
        let ledger = models.ledger(org, id, 100, None).await.unwrap();
        out.push(format!("ledger {id}: {:?}", ledger.items));
    }
    for name in NAMES {
        out.push(format!(
            "username {name}: {:?}",
            models.ids_by_username(org, name).unwrap()
        ));
        out.push(format!(
            "email {name}: {:?}",
            models
                .ids_by_email(org, &format!("{name}@example.com"))
                .unwrap()
        ));
        let query = ListQuery {
            search: Some(name.to_string()),
            limit: 100,
            ..Default::default()
        };
        let page = models.list(org, &query).await.unwrap();
        out.push(format!(
            "search {name}: {:?} total {}",
            page.users
                .iter()
                .map(|r| &r.user.public.id)
                .collect::<Vec<_>>(),
            page.total
        ));
    }
    let all = models
        .list(
            org,
            &ListQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    out.push(format!(
        "list: {:?}",
        all.users
            .iter()
            .map(|r| (&r.user.public.id, r.seq))
            .collect::<Vec<_>>()
    ));
    out.push(format!("settings: {:?}", models.settings(org).unwrap()));
    out
}

/// How a rebuild runs in a property case: its chunk size (the projector's batches), sled's
/// cache for the new models, and after how many events (a fraction of them) it stops and the
/// live projector carries on.
#[derive(Clone, Copy, Debug)]
struct Bulk {
    chunk: usize,
    cache_bytes: u64,
    cut: f64,
}

async fn bulk_rebuild(
    dir: &std::path::Path,
    world: &World,
    until: Option<u64>,
    bulk: Bulk,
) -> Arc<ReadModels> {
    let options = RebuildOptions {
        chunk: bulk.chunk,
        cache_bytes: bulk.cache_bytes,
    };
    let (models, stats) = rebuild_with(
        dir,
        world.codec.clone(),
        world.blind.clone(),
        &world.log,
        until,
        options,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(stats.events, until.unwrap_or_else(|| world.log.head()));
    models
}

/// Asserts two read models hold the same keys in every tree and read back the same.
async fn assert_same(a: &ReadModels, b: &ReadModels, org: &str, what: &str) {
    assert_eq!(a.checkpoint(), b.checkpoint(), "{what}: checkpoint");
    assert_eq!(
        a.tree_keys().unwrap(),
        b.tree_keys().unwrap(),
        "{what}: keys"
    );
    let (x, y) = (snapshot(a, org).await, snapshot(b, org).await);
    for (x, y) in x.iter().zip(&y) {
        assert_eq!(x, y, "{what}");
    }
    assert_eq!(x.len(), y.len());
}

async fn check(ops: Vec<Op>, chunks: Vec<usize>, bulk: Bulk) {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(
        EmbeddedLog::open(&dir.path().join("log"), EmbeddedOptions::default())
            .await
            .unwrap(),
    );
    let keys = Arc::new(FileKeyStore::open(&dir.path().join("keys.dat")).unwrap());
    let codec = Codec::new(keys.clone() as Arc<dyn KeyStore>);
    let blind = BlindIndex::new([7; 32]);
    let world = World {
        log: log.clone(),
        keys,
        codec: codec.clone(),
        blind: blind.clone(),
        org: OrgId::default_org(),
        _dir: dir,
    };

    let incremental = ReadModels::open(&world._dir.path().join("a"), codec.clone(), blind.clone())
        .await
        .unwrap();
    let mut chunk = chunks.into_iter().cycle();
    for op in &ops {
        world.run(op).await;
        // Apply whatever is new, in batches of an arbitrary size.
        loop {
            let from = incremental.checkpoint();
            let size = chunk.next().unwrap_or(1);
            let events = log.read_all(from, size).await.unwrap();
            if events.is_empty() {
                break;
            }
            incremental.apply_batch(&events).await.unwrap();
        }
    }
    let rebuilt = ReadModels::open(
        &world._dir.path().join("b"),
        codec.clone(),
        world.blind.clone(),
    )
    .await
    .unwrap();
    let all = log.read_all(0, usize::MAX).await.unwrap();
    rebuilt.apply_batch(&all).await.unwrap();
    assert_eq!(incremental.checkpoint(), rebuilt.checkpoint());
    let org = world.org.as_str();

    // A rebuild in its own chunks, all the way and stopped halfway with the live projector
    // taking over in small batches.
    let bulk_models = bulk_rebuild(&world._dir.path().join("c"), &world, None, bulk).await;
    assert_same(&rebuilt, &bulk_models, org, "bulk").await;
    let cut = (log.head() as f64 * bulk.cut) as u64;
    let mixed = bulk_rebuild(&world._dir.path().join("d"), &world, Some(cut), bulk).await;
    assert_eq!(mixed.checkpoint(), cut);
    loop {
        let events = log.read_all(mixed.checkpoint(), 3).await.unwrap();
        if events.is_empty() {
            break;
        }
        mixed.apply_batch(&events).await.unwrap();
    }
    assert_same(&rebuilt, &mixed, org, "bulk, then live").await;
    let (a, b) = (
        snapshot(&incremental, org).await,
        snapshot(&rebuilt, org).await,
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    // Reopening the incremental models (catalog rebuilt from sled) changes nothing either.
    drop(incremental);
    let reopened = reopen(&world._dir.path().join("a"), &world).await;
    assert_eq!(snapshot(&reopened, org).await, b);
    // Nor does reopening the rebuilt ones (their catalog is rebuilt from sled too).
    drop(bulk_models);
    let reopened = reopen(&world._dir.path().join("c"), &world).await;
    assert_same(&rebuilt, &reopened, org, "bulk, reopened").await;
}

/// Opens read models that were just dropped: sled lets go of its directory lock when its
/// background threads notice, which on a busy machine can take a moment.
async fn reopen(dir: &std::path::Path, world: &World) -> Arc<ReadModels> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match ReadModels::open(dir, world.codec.clone(), world.blind.clone()).await {
            Ok(models) => return models,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("reopening {}: {e}; retrying", dir.display());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopening {}: {e}", dir.display()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn incremental_equals_rebuild(
        ops in prop::collection::vec(op(), 1..40),
        chunks in prop::collection::vec(1usize..5, 1..4),
        bulk in (1usize..8, prop::sample::select(vec![64u64 << 10, 1 << 20, 8 << 20]), 0.0f64..1.0)
            .prop_map(|(chunk, cache_bytes, cut)| Bulk { chunk, cache_bytes, cut }),
    ) {
        tokio::runtime::Runtime::new().unwrap().block_on(check(ops, chunks, bulk));
    }
}

#[tokio::test]
async fn applying_a_batch_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(
        EmbeddedLog::open(&dir.path().join("log"), EmbeddedOptions::default())
            .await
            .unwrap(),
    );
    let keys = Arc::new(FileKeyStore::open(&dir.path().join("keys.dat")).unwrap());
    let codec = Codec::new(keys.clone() as Arc<dyn KeyStore>);
    let blind = BlindIndex::new([7; 32]);
    let world = World {
        log: log.clone(),
        keys,
        codec: codec.clone(),
        blind: blind.clone(),
        org: OrgId::default_org(),
        _dir: dir,
    };
    for op in [
        Op::Create {
            user: 0,
            name: 0,
            upsert: false,
        },
        Op::Patch {
            user: 0,
            name: 2,
            custom: 1,
        },
        Op::Wallet { user: 0, delta: 3 },
    ] {
        world.run(&op).await;
    }
    let models = ReadModels::open(&world._dir.path().join("a"), codec, blind)
        .await
        .unwrap();
    let events = log.read_all(0, 100).await.unwrap();
    models.apply_batch(&events).await.unwrap();
    let once = snapshot(&models, "default").await;
    // A crash between commit and acknowledgement re-delivers the batch: it must be a no-op.
    models.apply_batch(&events).await.unwrap();
    assert_eq!(snapshot(&models, "default").await, once);
    assert!(
        once[0].contains("coins\": 3") || once[0].contains("\"coins\": 3"),
        "{}",
        once[0]
    );
}
