//! The sessions read model: rows follow a session's events (ip and user agent sealed under the
//! user's key), revoked sessions are known in memory and again after a restart, and a hard
//! deletion removes the user's sessions.

use std::sync::Arc;

use chrono::{Duration, Utc};
use roster_domain::session::{
    SessionEvent, SessionMethod, SessionRefreshed, SessionRevoked, SessionStarted,
};
use roster_domain::user::{UserCreated, UserCreatedPublic, UserDeleted, UserPersonal};
use roster_domain::{DeleteMode, OrgId, Status, UserEvent, UserId};
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::{EventLog, ExpectedVersion, NewEvent, StreamAppend, StreamId, Transaction};
use roster_projections::{Codec, EventMeta, ReadModels};
use roster_vault::{BlindIndex, FileKeyStore, KeyStore};

async fn append(log: &dyn EventLog, stream: &str, event: NewEvent) {
    log.append(Transaction {
        appends: vec![StreamAppend {
            stream: StreamId::new("default", stream),
            expected: ExpectedVersion::Any,
            events: vec![event],
        }],
        reservations: vec![],
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn session_rows_follow_their_events_and_revocations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log"), EmbeddedOptions::default())
        .await
        .unwrap();
    let keys = Arc::new(FileKeyStore::open(&dir.path().join("keys.dat")).unwrap());
    let codec = Codec::new(keys.clone() as Arc<dyn KeyStore>);
    let blind = BlindIndex::new([7; 32]);
    let (kid, key) = keys.create(1).await.unwrap().remove(0);
    let meta = EventMeta {
        actor: "user:u1".into(),
        ip: Some("203.0.113.9".into()),
        user_agent: Some("SessionAgent/1".into()),
        ..Default::default()
    };
    let u1 = UserId::parse("u1").unwrap();
    let user = UserEvent::UserCreated(UserCreated {
        public: UserCreatedPublic {
            user_id: u1.clone(),
            organization_id: OrgId::default_org(),
            key_id: Some(kid),
            profile: Default::default(),
        },
        personal: UserPersonal::default(),
    });
    append(
        &log,
        "user-u1",
        codec.encode(&user, &meta, Some((kid, &key))),
    )
    .await;
    let session = |event: SessionEvent| codec.encode(&event, &meta, Some((kid, &key)));
    let started = |hash: &str| {
        SessionEvent::SessionStarted(SessionStarted {
            user_id: u1.clone(),
            user_version: 1,
            refresh_hash: hash.into(),
            expires_at: Utc::now() + Duration::days(30),
            method: SessionMethod::Password,
            key_id: Some(kid),
        })
    };
    append(&log, "session-S1", session(started("h1"))).await;
    append(
        &log,
        "session-S1",
        session(SessionEvent::SessionRefreshed(SessionRefreshed {
            user_id: u1.clone(),
            refresh_hash: "h2".into(),
            expires_at: Utc::now() + Duration::days(31),
        })),
    )
    .await;
    append(&log, "session-S2", session(started("h3"))).await;
    append(
        &log,
        "session-S2",
        session(SessionEvent::SessionRevoked(SessionRevoked {
            user_id: u1.clone(),
            reason: "signed_out".into(),
        })),
    )
    .await;

    let models_dir = dir.path().join("readmodels");
    let models = ReadModels::open(&models_dir, codec.clone(), blind.clone())
        .await
        .unwrap();
    // In two batches: the second one reads the first's rows back.
    models
        .apply_batch(&log.read_all(0, 2).await.unwrap())
        .await
        .unwrap();
    models
        .apply_batch(&log.read_all(2, 100).await.unwrap())
        .await
        .unwrap();
    let (rows, more) = models.sessions_of("default", "u1", 10, None).await.unwrap();
    assert!(!more);
    assert_eq!(
        rows.iter().map(|r| r.info.id.as_str()).collect::<Vec<_>>(),
        ["S2", "S1"],
        "newest first"
    );
    assert!(rows[0].info.revoked_at.is_some() && rows[1].info.revoked_at.is_none());
    assert!(rows[1].info.refreshed_at.is_some());
    assert_eq!(rows[1].from.ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(rows[1].from.user_agent.as_deref(), Some("SessionAgent/1"));
    assert!(models.session_revoked("default", "S2"));
    assert!(!models.session_revoked("default", "S1"));
    assert!(!models.session_revoked("other-org", "S2"));
    assert_eq!(
        models.session_gate("default", "u1"),
        Some((Status::Active, 1, false))
    );
    let (page, more) = models.sessions_of("default", "u1", 1, None).await.unwrap();
    assert!(more && page[0].info.id == "S2");
    let (page, _) = models
        .sessions_of("default", "u1", 1, Some("S2"))
        .await
        .unwrap();
    assert_eq!(page[0].info.id, "S1");
    drop(models);

    // After a restart the revoked set is rebuilt from the rows.
    let models = ReadModels::open(&models_dir, codec.clone(), blind.clone())
        .await
        .unwrap();
    assert!(models.session_revoked("default", "S2"));
    // A hard deletion takes the user's sessions with it.
    let deleted = UserEvent::UserDeleted(UserDeleted {
        mode: DeleteMode::Hard,
    });
    append(
        &log,
        "user-u1",
        codec.encode(&deleted, &meta, Some((kid, &key))),
    )
    .await;
    let from = models.checkpoint();
    models
        .apply_batch(&log.read_all(from, 100).await.unwrap())
        .await
        .unwrap();
    let (rows, _) = models.sessions_of("default", "u1", 10, None).await.unwrap();
    assert!(rows.is_empty());
    assert_eq!(models.session_gate("default", "u1"), None);
    log.close().await.unwrap();
}
