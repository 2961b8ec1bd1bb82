//! A rebuild (`rebuild::rebuild_with`, fresh models: the projector's own batches, in big
//! chunks) gives read models equal by content to the live projector in small batches
//! (`ReadModels::apply_batch`) over a mixed log: users created, updated, renamed, blocked,
//! deleted (soft, pruning and hard, their keys destroyed), restored and re-created; wallet
//! ledgers; sessions, some of a user hard-deleted later; tasks with failures; organization
//! settings. With chunks from one event to the whole log, and with the live projector taking
//! over from a rebuild at every position.

use std::sync::Arc;

use chrono::{Duration, Utc};
use roster_domain::session::{
    SessionEvent, SessionMethod, SessionRefreshed, SessionRevoked, SessionStarted,
};
use roster_domain::settings::{OrgSettings, SettingsChanged, SettingsEvent, UniqueUsernames};
use roster_domain::task::{
    TaskCompleted, TaskCreated, TaskEvent, TaskFailure, TaskKind, TaskProgressed, TaskStarted,
};
use roster_domain::time::from_micros;
use roster_domain::user::{PatchUser, PersonalProfile, WalletChange};
use roster_domain::{
    Aggregate, CreateUser, DeleteMode, EventSet, KeyId, OrgId, PatchInput, Profile, Recorded, User,
    UserCommand, UserEvent, UserId,
};
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::{EventLog, ExpectedVersion, NewEvent, StreamAppend, StreamId, Transaction};
use roster_projections::rebuild::{self, RebuildOptions, rebuild_with};
use roster_projections::{Codec, EventMeta, ListQuery, ReadModels};
use roster_vault::{BlindIndex, FileKeyStore, KeyStore};
use serde_json::{Value, json};

const USERS: &[&str] = &["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"];

struct World {
    dir: tempfile::TempDir,
    log: Arc<dyn EventLog>,
    keys: Arc<FileKeyStore>,
    codec: Codec,
    blind: BlindIndex,
    meta: EventMeta,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(
            EmbeddedLog::open(&dir.path().join("log"), EmbeddedOptions::default())
                .await
                .unwrap(),
        );
        let keys = Arc::new(FileKeyStore::open(&dir.path().join("keys.dat")).unwrap());
        Self {
            codec: Codec::new(keys.clone() as Arc<dyn KeyStore>),
            blind: BlindIndex::new([9; 32]),
            meta: EventMeta {
                actor: "server".into(),
                ip: Some("198.51.100.7".into()),
                user_agent: Some("BulkTest/1".into()),
                ..Default::default()
            },
            dir,
            log,
            keys,
        }
    }

    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) {
        self.log
            .append(Transaction {
                appends: vec![StreamAppend {
                    stream: StreamId::new("default", stream),
                    expected,
                    events,
                }],
                reservations: vec![],
            })
            .await
            .unwrap();
    }

    /// A user's state and version, folded from its stream as the repository loads it.
    async fn load(&self, id: &str) -> (Option<User>, u64) {
        let stream = StreamId::new("default", format!("user-{id}"));
        let (mut state, mut version) = (None, 0);
        for record in self.log.read_stream(&stream, 1, usize::MAX).await.unwrap() {
            let decoded = self.codec.decode::<UserEvent>(&record).await.unwrap();
            let at = Recorded {
                id,
                org: "default",
                at: from_micros(record.time),
                version: record.version,
            };
            state = User::apply(state, &decoded.event, at);
            version = record.version;
        }
        (state, version)
    }

    /// Runs a command on a user as the API does (a fresh key when the decision asks for one,
    /// the key destroyed after a pruning or hard deletion). Returns the user's key afterwards.
    async fn user(&self, id: &str, command: UserCommand) -> Option<KeyId> {
        let (state, version) = self.load(id).await;
        let decision = User::decide(state.as_ref(), &command).unwrap();
        assert!(!decision.is_empty(), "{id}: {command:?} changes nothing");
        let mut events = decision.events;
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
                org: "default",
                at: Utc::now(),
                version: version + i as u64 + 1,
            };
            User::apply(s, e, at)
        });
        let kid = after.as_ref().and_then(User::data_key).or(before_kid);
        let key = match (fresh, kid) {
            (Some(fresh), _) => Some(fresh),
            (None, Some(kid)) => self.keys.get(kid).await.unwrap().map(|k| (kid, k)),
            (None, None) => None,
        };
        let expected = match version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        };
        let records = events
            .iter()
            .map(|e| {
                self.codec
                    .encode(e, &self.meta, key.as_ref().map(|(i, k)| (*i, k)))
            })
            .collect();
        self.append(&format!("user-{id}"), expected, records).await;
        if events.iter().any(EventSet::erases_key)
            && let Some(kid) = before_kid
        {
            self.keys.destroy(&[kid]).await.unwrap();
        }
        kid
    }

    async fn create(&self, id: &str, name: &str) -> Option<KeyId> {
        self.user(
            id,
            UserCommand::Create(CreateUser {
                id: UserId::parse(id).unwrap(),
                org: OrgId::default_org(),
                profile: Profile {
                    public: Default::default(),
                    personal: PersonalProfile {
                        username: Some(name.into()),
                        email: Some(format!("{name}@example.com")),
                        name: Some(format!("{name} Person")),
                        custom: json!({"level": 1}).as_object().unwrap().clone(),
                        ..Default::default()
                    },
                },
                password_hash: None,
                usernames: UniqueUsernames::App,
            }),
        )
        .await
    }

    async fn patch(&self, id: &str, patch: Value) {
        let patch = serde_json::from_value::<PatchInput>(patch)
            .unwrap()
            .validate()
            .unwrap();
        self.user(
            id,
            UserCommand::Patch(PatchUser {
                patch,
                usernames: UniqueUsernames::App,
            }),
        )
        .await;
    }

    async fn wallet(&self, id: &str, coins: i64) {
        self.user(
            id,
            UserCommand::AdjustWallet(WalletChange {
                changeset: [("coins".to_string(), coins)].into(),
                metadata: json!({"order": coins}).as_object().unwrap().clone(),
                update_ledger: true,
            }),
        )
        .await;
    }

    async fn session(&self, session: &str, user: &str, kid: Option<KeyId>, event: SessionEvent) {
        let key = match kid {
            Some(kid) => self.keys.get(kid).await.unwrap().map(|k| (kid, k)),
            None => None,
        };
        let record = self
            .codec
            .encode(&event, &self.meta, key.as_ref().map(|(i, k)| (*i, k)));
        assert!(user.starts_with('u'));
        assert_eq!(event.user_id(), user);
        self.append(
            &format!("session-{session}"),
            ExpectedVersion::Any,
            vec![record],
        )
        .await;
    }

    async fn task(&self, id: &str, event: TaskEvent) {
        let record = self.codec.encode(&event, &EventMeta::default(), None);
        self.append(&format!("task-{id}"), ExpectedVersion::Any, vec![record])
            .await;
    }

    async fn settings(&self, unique: UniqueUsernames) {
        let change = SettingsEvent::SettingsChanged(SettingsChanged {
            settings: OrgSettings {
                enforce_unique_usernames: unique,
                ..Default::default()
            },
        });
        let record = self.codec.encode(&change, &EventMeta::default(), None);
        self.append("settings", ExpectedVersion::Any, vec![record])
            .await;
    }
}

fn started(user: &str, kid: Option<KeyId>) -> SessionEvent {
    SessionEvent::SessionStarted(SessionStarted {
        user_id: UserId::parse(user).unwrap(),
        user_version: 1,
        refresh_hash: format!("h-{user}"),
        expires_at: Utc::now() + Duration::days(30),
        method: SessionMethod::Password,
        key_id: kid,
    })
}

fn uid(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

/// A log touching every read model, with erasure in the middle of it.
async fn mixed_log() -> World {
    let w = World::new().await;
    w.settings(UniqueUsernames::No).await;
    let mut kids = Vec::new();
    for (n, id) in USERS.iter().enumerate() {
        kids.push(w.create(id, &format!("name{n}")).await);
    }
    w.patch(
        "u0",
        json!({"set": {"display_name": "Zero", "custom.level": 2}}),
    )
    .await;
    w.wallet("u1", 5).await;
    w.session("S1", "u1", kids[1], started("u1", kids[1])).await;
    w.wallet("u1", -2).await;
    w.task(
        "T1",
        TaskEvent::TaskCreated(TaskCreated {
            kind: TaskKind::DeactivateUsers,
            user_ids: vec!["u3".into(), "u9".into()],
            mode: None,
            created_by_id: None,
            projection: None,
            server: None,
            total: 2,
            on_conflict: None,
            include_password_hashes: false,
        }),
    )
    .await;
    w.task(
        "T1",
        TaskEvent::TaskStarted(TaskStarted {
            worker: "w1".into(),
            total: None,
        }),
    )
    .await;
    w.user(
        "u3",
        UserCommand::Deactivate {
            created_by_id: Some("T1".into()),
        },
    )
    .await;
    w.task(
        "T1",
        TaskEvent::TaskProgressed(TaskProgressed {
            next_index: 2,
            done: 1,
            failed: 1,
            failures: vec![TaskFailure {
                user_id: "u9".into(),
                code: "not_found".into(),
                detail: "no such user".into(),
                line: None,
            }],
            counters: Default::default(),
        }),
    )
    .await;
    w.task(
        "T1",
        TaskEvent::TaskCompleted(TaskCompleted {
            result: json!({"done": 1}),
        }),
    )
    .await;
    w.session(
        "S1",
        "u1",
        kids[1],
        SessionEvent::SessionRefreshed(SessionRefreshed {
            user_id: uid("u1"),
            refresh_hash: "h2".into(),
            expires_at: Utc::now() + Duration::days(31),
        }),
    )
    .await;
    w.session("S2", "u7", kids[7], started("u7", kids[7])).await;
    w.wallet("u7", 9).await;
    // u2 gives its username up and u4 takes it.
    w.patch("u2", json!({"unset": ["username"]})).await;
    w.patch("u4", json!({"set": {"username": "name2"}})).await;
    w.user("u4", UserCommand::SetBlocked(true)).await;
    w.user("u5", UserCommand::Delete(DeleteMode::Soft)).await;
    w.user("u6", UserCommand::Delete(DeleteMode::Pruning)).await;
    w.session(
        "S2",
        "u7",
        kids[7],
        SessionEvent::SessionRevoked(SessionRevoked {
            user_id: uid("u7"),
            reason: "signed_out".into(),
        }),
    )
    .await;
    w.user("u7", UserCommand::Delete(DeleteMode::Hard)).await;
    w.settings(UniqueUsernames::App).await;
    w.user("u5", UserCommand::Restore).await;
    w.user("u6", UserCommand::Restore).await;
    let u7 = w.create("u7", "seven-again").await;
    w.session("S3", "u7", u7, started("u7", u7)).await;
    w.wallet("u7", 1).await;
    w.patch("u1", json!({"set": {"location": "Lyon"}})).await;
    w.session(
        "S1",
        "u1",
        kids[1],
        SessionEvent::SessionRevoked(SessionRevoked {
            user_id: uid("u1"),
            reason: "signed_out".into(),
        }),
    )
    .await;
    w.user("u0", UserCommand::Delete(DeleteMode::Hard)).await;
    w
}

/// What the read models answer, through the public queries.
async fn contents(models: &ReadModels) -> Vec<String> {
    let org = "default";
    let mut out = vec![format!("checkpoint {}", models.checkpoint())];
    for id in USERS {
        out.push(format!("{id}: {:?}", models.get(org, id).await.unwrap()));
        let ledger = models.ledger(org, id, 100, None).await.unwrap();
        out.push(format!("ledger {id}: {:?}", ledger.items));
        let (sessions, _) = models.sessions_of(org, id, 100, None).await.unwrap();
        out.push(format!("sessions {id}: {sessions:?}"));
        out.push(format!("gate {id}: {:?}", models.session_gate(org, id)));
    }
    for n in 0..USERS.len() {
        let name = format!("name{n}");
        out.push(format!(
            "username {name}: {:?} email: {:?}",
            models.ids_by_username(org, &name).unwrap(),
            models
                .ids_by_email(org, &format!("{name}@example.com"))
                .unwrap()
        ));
    }
    // S2 belonged to the first u7, hard-deleted: whether the in-memory set still lists it
    // depends on whether its revocation and the deletion met in one batch (the live path is
    // like that too), and it does not matter, the user being gone. The others must agree.
    for session in ["S1", "S3"] {
        out.push(format!(
            "revoked {session}: {}",
            models.session_revoked(org, session)
        ));
    }
    for search in [None, Some("name"), Some("seven"), Some("zero")] {
        let page = models
            .list(
                org,
                &ListQuery {
                    search: search.map(str::to_owned),
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        out.push(format!(
            "list {search:?}: {:?} total {}",
            page.users
                .iter()
                .map(|r| (&r.user.public.id, r.seq))
                .collect::<Vec<_>>(),
            page.total
        ));
    }
    out.push(format!("count {}", models.count(org)));
    out.push(format!("settings {:?}", models.settings(org).unwrap()));
    out.push(format!("task {:?}", models.task(org, "T1").unwrap()));
    let failures: Vec<_> = models
        .task_failures(org, "T1")
        .collect::<Result<_, _>>()
        .unwrap();
    out.push(format!("task failures {failures:?}"));
    out
}

async fn assert_same(live: &ReadModels, other: &ReadModels, what: &str) {
    assert_eq!(
        live.tree_keys().unwrap(),
        other.tree_keys().unwrap(),
        "{what}: the trees hold different keys"
    );
    let (a, b) = (contents(live).await, contents(other).await);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "{what}");
    }
    assert_eq!(a.len(), b.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_in_big_chunks_equals_the_live_projector_in_small_batches() {
    let w = mixed_log().await;
    let head = w.log.head();
    let live = ReadModels::open(&w.dir.path().join("live"), w.codec.clone(), w.blind.clone())
        .await
        .unwrap();
    // The live projector: small batches, one atomic write each.
    while live.checkpoint() < head {
        let events = w.log.read_all(live.checkpoint(), 4).await.unwrap();
        live.apply_batch(&events).await.unwrap();
    }
    assert!(live.get("default", "u7").await.unwrap().is_some());
    assert!(live.session_revoked("default", "S1"));
    assert!(live.get("default", "u0").await.unwrap().is_none());

    // Rebuilds in chunks from the whole log at once down to one event, with sled caches from
    // the default down to one small enough that pages are read back from disk.
    for (n, (chunk, cache_bytes)) in [
        (rebuild::CHUNK, RebuildOptions::default().cache_bytes),
        (5, 1 << 20),
        (3, 64 << 10),
        (1, 64 << 10),
        (7, 8 << 20),
    ]
    .into_iter()
    .enumerate()
    {
        let options = RebuildOptions { chunk, cache_bytes };
        let (bulk, stats) = rebuild_with(
            &w.dir.path().join(format!("bulk-{n}")),
            w.codec.clone(),
            w.blind.clone(),
            &w.log,
            None,
            options,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(stats.events, head);
        assert_same(&live, &bulk, &format!("chunk {chunk}, cache {cache_bytes}")).await;
    }

    // A rebuild up to any position, then the live projector (a rebuild catching up while the
    // server keeps writing).
    for cut in 0..=head {
        let options = RebuildOptions {
            chunk: 4,
            cache_bytes: 64 << 10,
        };
        let (models, _) = rebuild_with(
            &w.dir.path().join(format!("cut-{cut}")),
            w.codec.clone(),
            w.blind.clone(),
            &w.log,
            Some(cut),
            options,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(models.checkpoint(), cut);
        while models.checkpoint() < head {
            let events = w.log.read_all(models.checkpoint(), 3).await.unwrap();
            models.apply_batch(&events).await.unwrap();
        }
        assert_same(&live, &models, &format!("rebuilt to {cut}, then live")).await;
        drop(models);
        let _ = std::fs::remove_dir_all(w.dir.path().join(format!("cut-{cut}")));
    }
    w.log.close().await.unwrap();
}

#[tokio::test]
async fn a_rebuild_into_models_that_hold_something_carries_on_from_their_checkpoint() {
    let w = mixed_log().await;
    let head = w.log.head();
    let dir = w.dir.path().join("partial");
    let partial = ReadModels::open(&dir, w.codec.clone(), w.blind.clone())
        .await
        .unwrap();
    partial
        .apply_batch(&w.log.read_all(0, 10).await.unwrap())
        .await
        .unwrap();
    drop(partial);
    let models = loop {
        // sled lets go of its directory lock when its background threads notice.
        match rebuild_with(
            &dir,
            w.codec.clone(),
            w.blind.clone(),
            &w.log,
            None,
            RebuildOptions::default(),
            |_| {},
        )
        .await
        {
            Ok((models, stats)) => {
                assert_eq!(stats.events, head - 10);
                break models;
            }
            Err(e) => {
                assert!(e.to_string().contains("lock"), "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let live = ReadModels::open(&w.dir.path().join("live"), w.codec.clone(), w.blind.clone())
        .await
        .unwrap();
    live.apply_batch(&w.log.read_all(0, usize::MAX).await.unwrap())
        .await
        .unwrap();
    assert_same(&live, &models, "partial, then rebuilt").await;
}
