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
//! (`UserInput::validate`, `PatchInput::validate`), then the repository the server uses
//! (`roster_core::Repository`: decide, seal under the user's data key from the store's
//! `keys.dat`, one log transaction per request with the decision's username/email
//! reservations and expected versions, erased keys destroyed). Creates arrive as
//! `POST /v1/users/upsert` batches of 100 users (one transaction each); partial updates
//! (`PATCH /v1/users/{id}`), wallet adjustments with ledger items and deletions (soft, pruning,
//! hard) are one transaction each, aimed at users created up to `--window` users earlier, so a
//! replay finds them spread over the log as a live server's would be.
//! The store has no read models: `roster replay` (or the next `roster serve`) builds them.
//!
//! The mix is fixed by `--seed` (ids, usernames, which users are patched, paid or deleted);
//! keys, nonces and event ids are random, as on a server.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roster_core::{CommitError, Loaded, Repository};
use roster_domain::settings::UniqueUsernames;
use roster_domain::user::{CreateUser, PatchUser, UserCommand, WalletChange};
use roster_domain::{DeleteMode, OrgId, PatchInput, User, UserId, UserInput};
use roster_eventlog::EventLog;
use roster_eventlog::embedded::{EmbeddedLog, EmbeddedOptions};
use roster_projections::{Codec, EventMeta};
use roster_vault::{BlindIndex, FileKeyStore, KeyStore};
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

/// One request: its users' commands, decided and appended as one transaction.
async fn request(
    repo: Arc<Repository>,
    org: OrgId,
    meta: EventMeta,
    commands: Vec<(String, UserCommand)>,
) -> Result<(), CommitError> {
    let mut work = repo.work(&org, meta);
    for (id, command) in &commands {
        let loaded: Loaded<User> = match command {
            UserCommand::Upsert(_) => Loaded::default(),
            _ => repo.load(&org, id).await?,
        };
        work.decide(id, &loaded, command)
            .await
            .map_err(|e| CommitError::Failed(e.into()))?;
    }
    work.commit().await.map(|_| ())
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
    let codec = Codec::new(keys.clone() as Arc<dyn KeyStore>);
    let repo = Arc::new(Repository::new(
        log.clone(),
        codec.clone(),
        BlindIndex::new(secret),
        roster_core::repository::DEFAULT_CACHE_BYTES,
    ));
    let org = OrgId::default_org();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let started = Instant::now();

    let mut live: HashSet<u64> = HashSet::new();
    let (mut patches, mut wallets, mut deletes) = (0.0f64, 0.0f64, 0.0f64);
    let mut counts = [0u64; 4]; // created, patched, paid, deleted
    let mut next = 0u64;
    while next < args.users {
        let round_end = (next + ROUND).min(args.users);
        let mut pending = tokio::task::JoinSet::new();

        // `POST /v1/users/upsert` requests of `BATCH` users: one transaction each.
        for first in (next..round_end).step_by(BATCH as usize) {
            let mut commands = Vec::with_capacity(BATCH as usize);
            for n in first..(first + BATCH).min(round_end) {
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
                let command = UserCommand::Upsert(CreateUser {
                    id: UserId::parse(&id).map_err(anyhow::Error::msg)?,
                    org: org.clone(),
                    profile: valid.profile,
                    password_hash: None,
                    usernames: UniqueUsernames::App,
                });
                commands.push((id, command));
                live.insert(n);
                counts[0] += 1;
            }
            pending.spawn(request(repo.clone(), org.clone(), meta(&mut rng), commands));
        }

        // Single-user requests on users created earlier (distinct within a round, so their
        // expected versions hold); a round's requests are all in flight at once, as from
        // concurrent clients.
        let created = (round_end - next) as f64;
        patches += args.patches * created;
        wallets += args.wallet * created;
        deletes += args.deletes * created;
        let mut targets = HashSet::new();
        let mut pick = |rng: &mut StdRng, live: &HashSet<u64>| -> Option<u64> {
            if next == 0 {
                return None;
            }
            let lo = next.saturating_sub(args.window);
            for _ in 0..8 {
                let n = rng.gen_range(lo..next);
                if live.contains(&n) && targets.insert(n) {
                    return Some(n);
                }
            }
            None
        };
        let mut requests: Vec<(u64, UserCommand)> = Vec::new();
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
                let command = UserCommand::Patch(PatchUser {
                    patch,
                    usernames: UniqueUsernames::App,
                });
                requests.push((n, command));
                counts[1] += 1;
            }
        }
        while wallets >= 1.0 {
            wallets -= 1.0;
            if let Some(n) = pick(&mut rng, &live) {
                let command = UserCommand::AdjustWallet(WalletChange {
                    changeset: [("coins".to_string(), rng.gen_range(1..100))].into(),
                    metadata: json!({"reason": "seed", "order": rng.r#gen::<u32>()})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    update_ledger: true,
                });
                requests.push((n, command));
                counts[2] += 1;
            }
        }
        while deletes >= 1.0 {
            deletes -= 1.0;
            if let Some(n) = pick(&mut rng, &live) {
                let mode = [DeleteMode::Soft, DeleteMode::Pruning, DeleteMode::Hard]
                    [(counts[3] % 3) as usize];
                requests.push((n, UserCommand::Delete(mode)));
                // A deleted user is no longer updated.
                live.remove(&n);
                counts[3] += 1;
            }
        }
        for (n, command) in requests {
            let commands = vec![(user_id(n), command)];
            pending.spawn(request(repo.clone(), org.clone(), meta(&mut rng), commands));
        }
        while let Some(done) = pending.join_next().await {
            done?.map_err(|e| anyhow::anyhow!("a request failed: {e:?}"))?;
        }
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
    codec.key_pool().close().await?;
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
