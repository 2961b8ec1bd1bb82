//! Writes a large store the way `roster serve` would have written it, without HTTP: a
//! million-user store (1.36M events) in about 3 minutes on 2 busy cores, for `roster replay`
//! measurements (docs/bench.md, W6).
//!
//! ```sh
//! cargo run --release -p roster-cli --example seed_store -- --store /tmp/roster-1m --users 1000000
//! target/release/roster replay --store /tmp/roster-1m
//! ```
//!
//! Every event goes through the server's own path minus HTTP: the validated input
//! (`UserInput::validate`, `PatchInput::validate`), `decide`, the codec's sealing under the
//! user's data key from the store's `keys.dat`, and one log transaction per request with the
//! request's username/email reservations and expected versions. Creates arrive as
//! `POST /v1/users/upsert` batches of 100 users (one transaction each); partial updates
//! (`PATCH /v1/users/{id}`), wallet adjustments with ledger items and deletions (soft, pruning,
//! hard) are one transaction each, aimed at users created up to `--window` users earlier, so a
//! replay finds them spread over the log as a live server's would be. Keys of pruned and
//! hard-deleted users are destroyed, as the server's projector would have done before it stopped.
//! The store has no read models: `roster replay` (or the next `roster serve`) builds them.
//!
//! The mix is fixed by `--seed` (ids, usernames, which users are patched, paid or deleted);
//! keys, nonces and event ids are random, as on a server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roster_domain::command::{Command, CreateUser};
use roster_domain::settings::{OrgSettings, SETTINGS_CHANGED, SETTINGS_STREAM, SettingsChanged};
use roster_domain::{DeleteMode, OrgId, PatchInput, User, UserId, UserInput, apply, decide};
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_eventlog::{
    EventLog, ExpectedVersion, NewEvent, Reservation, StreamAppend, StreamId, Transaction,
};
use roster_projections::keys::{email_reservation, username_reservation};
use roster_projections::{Codec, EventMeta};
use roster_vault::{BlindIndex, DataKey, FileKeyStore, KeyId, KeyStore};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The data directory to create (must not hold a log yet).
    #[arg(long)]
    store: PathBuf,
    /// Users to create.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Partial updates per created user.
    #[arg(long, default_value_t = 0.25)]
    patches: f64,
    /// Wallet adjustments (with a ledger item) per created user.
    #[arg(long, default_value_t = 0.10)]
    wallet: f64,
    /// Deletions per created user (soft, pruning and hard in turn).
    #[arg(long, default_value_t = 0.01)]
    deletes: f64,
    /// Updates go to users created at most this many users earlier.
    #[arg(long, default_value_t = 50_000)]
    window: u64,
    /// Seed of the mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A user as the server's aggregate cache would hold it.
struct Live {
    user: User,
    version: u64,
    key: (KeyId, DataKey),
}

struct Seeder {
    log: Arc<dyn EventLog>,
    codec: Codec,
    blind: BlindIndex,
    org: OrgId,
}

/// Users per `POST /v1/users/upsert` request.
const BATCH: u64 = 100;
/// Users created per round of concurrent requests.
const ROUND: u64 = 1000;

fn user_id(n: u64) -> String {
    format!("u{n:07}")
}

fn meta(rng: &mut StdRng) -> EventMeta {
    EventMeta {
        actor: "server".into(),
        correlation_id: Some(ulid::Ulid::new().to_string()),
        ip: Some(format!(
            "10.{}.{}.{}",
            rng.r#gen::<u8>(),
            rng.r#gen::<u8>(),
            1
        )),
        user_agent: Some("roster-seed/1 (like a bench client)".into()),
        ..Default::default()
    }
}

impl Seeder {
    fn stream(&self, id: &str) -> StreamId {
        StreamId::new(self.org.as_str(), format!("user-{id}"))
    }

    /// Username and email claims and releases from `before` to `after` (usernames enforced,
    /// the default setting).
    fn reservations(
        &self,
        owner: &str,
        before: Option<&User>,
        after: Option<&User>,
    ) -> Vec<Reservation> {
        let org = self.org.as_str();
        let held = |u: Option<&User>| -> Vec<String> {
            let Some(u) = u else { return vec![] };
            let mut keys = Vec::new();
            if let Some(n) = &u.profile.username {
                keys.push(username_reservation(
                    &self.blind,
                    org,
                    &roster_domain::values::normalize_username(n),
                ));
            }
            if let Some(e) = &u.profile.email {
                keys.push(email_reservation(
                    &self.blind,
                    org,
                    &roster_domain::values::normalize_email(e),
                ));
            }
            keys
        };
        let (old, new) = (held(before), held(after));
        let mut out: Vec<Reservation> = old
            .iter()
            .filter(|k| !new.contains(k))
            .map(|key| Reservation::Release {
                key: key.clone(),
                owner: owner.to_owned(),
            })
            .collect();
        out.extend(
            new.iter()
                .filter(|k| !old.contains(k))
                .map(|key| Reservation::Claim {
                    key: key.clone(),
                    owner: owner.to_owned(),
                    expires_at: None,
                }),
        );
        out
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = &args.store;
    if store.join("log").exists() {
        bail!(
            "{} already holds a log; seed a fresh directory",
            store.display()
        );
    }
    std::fs::create_dir_all(store)?;
    let log: Arc<dyn EventLog> = Arc::new(
        EmbeddedLog::open(&store.join("log"), EmbeddedOptions::default())
            .await
            .context("opening the log")?,
    );
    let keys = Arc::new(FileKeyStore::open(&store.join("keys.dat"))?);
    let secret = roster_vault::load_or_create_secret(&store.join("secrets").join("index.key"))?;
    let seeder = Arc::new(Seeder {
        log: log.clone(),
        codec: Codec::new(keys.clone() as Arc<dyn KeyStore>),
        blind: BlindIndex::new(secret),
        org: OrgId::default_org(),
    });
    let mut rng = StdRng::seed_from_u64(args.seed);
    let started = Instant::now();

    // The organization's settings, as `PUT /v1/settings` writes them.
    let settings = NewEvent {
        id: ulid::Ulid::new(),
        event_type: SETTINGS_CHANGED.into(),
        schema_version: 1,
        data: serde_json::to_vec(&SettingsChanged {
            settings: OrgSettings::default(),
        })?
        .into(),
        metadata: serde_json::to_vec(&EventMeta {
            actor: "server".into(),
            ..Default::default()
        })?
        .into(),
    };
    log.append(Transaction {
        appends: vec![StreamAppend {
            stream: StreamId::new(seeder.org.as_str(), SETTINGS_STREAM),
            expected: ExpectedVersion::Any,
            events: vec![settings],
        }],
        reservations: vec![],
    })
    .await?;

    let mut live: HashMap<u64, Live> = HashMap::new();
    let (mut patches, mut wallets, mut deletes) = (0.0f64, 0.0f64, 0.0f64);
    let mut counts = [0u64; 4]; // created, patched, paid, deleted
    let mut next = 0u64;
    while next < args.users {
        let round_end = (next + ROUND).min(args.users);
        let mut pending = tokio::task::JoinSet::new();

        // `POST /v1/users/upsert` requests of `BATCH` users: one transaction each, a fresh key
        // for every user (the keys of a round are created together, as concurrent requests'
        // key creations share one sync).
        let mut fresh = keys.create((round_end - next) as usize).await?.into_iter();
        for first in (next..round_end).step_by(BATCH as usize) {
            let mut tx = Transaction::default();
            let now = chrono::Utc::now();
            let request_meta = meta(&mut rng);
            for n in first..(first + BATCH).min(round_end) {
                let (kid, key) = fresh.next().context("one key per user")?;
                let id = user_id(n);
                let color = ["red", "green", "blue"][(n % 3) as usize];
                let input: UserInput = serde_json::from_value(json!({
                    "id": id, "username": id, "email": format!("{id}@seed.example"),
                    "name": format!("Seed User {id}"), "display_name": format!("seed {n}"),
                    "lang_tag": "en", "timezone": "Europe/Paris",
                    "custom": {"color": color, "level": n % 100},
                    "metadata": {"tier": "free", "source": "seed"},
                }))?;
                let valid = input
                    .validate()
                    .map_err(|e| anyhow::anyhow!("invalid user: {e:?}"))?;
                let command = Command::Upsert(CreateUser {
                    user_id: UserId::parse(&id).map_err(anyhow::Error::msg)?,
                    org: seeder.org.clone(),
                    key_id: kid.to_string(),
                    profile: valid.profile,
                    password_hash: None,
                });
                let events = decide(None, &command)?;
                let user = events
                    .iter()
                    .fold(None, |u, e| apply(u, e, now, 1))
                    .context("created")?;
                let owner = seeder.stream(&id).name;
                tx.reservations
                    .extend(seeder.reservations(&owner, None, Some(&user)));
                tx.appends.push(StreamAppend {
                    stream: seeder.stream(&id),
                    expected: ExpectedVersion::NoStream,
                    events: events
                        .iter()
                        .map(|e| seeder.codec.encode(e, &request_meta, Some((kid, &key))))
                        .collect(),
                });
                live.insert(
                    n,
                    Live {
                        user,
                        version: 1,
                        key: (kid, key),
                    },
                );
                counts[0] += 1;
            }
            let s = seeder.clone();
            pending.spawn(async move { s.log.append(tx).await.map(|_| None) });
        }

        // Single-user requests on users created earlier (distinct within a round, so their
        // expected versions hold); a round's requests are all in flight at once, as from
        // concurrent clients.
        let created = (round_end - next) as f64;
        patches += args.patches * created;
        wallets += args.wallet * created;
        deletes += args.deletes * created;
        let mut targets = std::collections::HashSet::new();
        let mut pick = |rng: &mut StdRng, live: &HashMap<u64, Live>| -> Option<u64> {
            if next == 0 {
                return None;
            }
            let lo = next.saturating_sub(args.window);
            for _ in 0..8 {
                let n = rng.gen_range(lo..next);
                if live.contains_key(&n) && targets.insert(n) {
                    return Some(n);
                }
            }
            None
        };
        let mut requests: Vec<(u64, Command, Option<DeleteMode>)> = Vec::new();
        while patches >= 1.0 {
            patches -= 1.0;
            if let Some(n) = pick(&mut rng, &live) {
                let k = rng.gen_range(0..16);
                let patch: PatchInput = serde_json::from_value(json!({"set": {
                    "display_name": format!("Player {k}"), "location": format!("City {k}"),
                    "lang_tag": "fr", "custom.level": rng.gen_range(0..1000),
                }}))?;
                let patch = patch
                    .validate()
                    .map_err(|e| anyhow::anyhow!("invalid patch: {e:?}"))?;
                requests.push((n, Command::Patch(patch), None));
            }
        }
        while wallets >= 1.0 {
            wallets -= 1.0;
            if let Some(n) = pick(&mut rng, &live) {
                let command = Command::AdjustWallet {
                    changeset: [("coins".to_string(), rng.gen_range(1..100))].into(),
                    metadata: json!({"reason": "seed", "order": rng.r#gen::<u32>()})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    update_ledger: true,
                };
                requests.push((n, command, None));
            }
        }
        while deletes >= 1.0 {
            deletes -= 1.0;
            if let Some(n) = pick(&mut rng, &live) {
                let mode = [DeleteMode::Soft, DeleteMode::Pruning, DeleteMode::Hard]
                    [(counts[3] % 3) as usize];
                requests.push((n, Command::Delete(mode), Some(mode)));
                counts[3] += 1;
            }
        }
        for (n, command, deletion) in requests {
            let id = user_id(n);
            let entry = live.get_mut(&n).expect("picked from the live users");
            let events = decide(Some(&entry.user), &command)?;
            if events.is_empty() {
                continue;
            }
            let now = chrono::Utc::now();
            let mut after = Some(entry.user.clone());
            for (k, e) in events.iter().enumerate() {
                after = apply(after, e, now, entry.version + 1 + k as u64);
            }
            let owner = seeder.stream(&id).name;
            let request_meta = meta(&mut rng);
            let (kid, key) = (entry.key.0, &entry.key.1);
            let erase =
                matches!(deletion, Some(DeleteMode::Pruning | DeleteMode::Hard)).then_some(kid);
            let tx = Transaction {
                reservations: seeder.reservations(&owner, Some(&entry.user), after.as_ref()),
                appends: vec![StreamAppend {
                    stream: seeder.stream(&id),
                    expected: ExpectedVersion::Exact(entry.version),
                    events: events
                        .iter()
                        .map(|e| seeder.codec.encode(e, &request_meta, Some((kid, key))))
                        .collect(),
                }],
            };
            entry.version += events.len() as u64;
            match (&command, after) {
                (Command::Patch(_), Some(user)) => {
                    counts[1] += 1;
                    entry.user = user;
                }
                (Command::AdjustWallet { .. }, Some(user)) => {
                    counts[2] += 1;
                    entry.user = user;
                }
                _ => {
                    live.remove(&n);
                }
            }
            let s = seeder.clone();
            pending.spawn(async move { s.log.append(tx).await.map(|_| erase) });
        }
        let mut erase = Vec::new();
        while let Some(done) = pending.join_next().await {
            erase.extend(done??);
        }
        // What the projector does when it applies a pruning or hard deletion.
        keys.destroy(&erase).await?;
        // Users beyond the window are no longer updated: forget them.
        let old = next.saturating_sub(args.window);
        for n in old.saturating_sub(ROUND)..old {
            live.remove(&n);
        }
        next = round_end;
        if next.is_multiple_of(100_000) {
            eprintln!(
                "{next} users, {} events, {:.0} s",
                log.head(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let head = log.head();
    log.close().await?;
    keys.close();
    println!(
        "seeded {}: {} events ({} users created, {} partial updates, {} wallet adjustments, {} deletions) in {:.1} s",
        store.display(),
        head,
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
