//! The read models: sled trees plus the in-memory catalog, and the queries over them.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use roster_domain::Status;
use roster_domain::values::{normalize_email, normalize_username};
use roster_eventlog::Position;
use roster_vault::BlindIndex;
use tokio::sync::watch;

use crate::catalog::{Catalog, Entry, OrgCatalog, Unique};
use crate::codec::{Codec, CodecError};
use crate::keys::{email_hash, username_hash};
use crate::layout::{Table, user_key};
use crate::rows::Row;

const CHECKPOINT: &[u8] = b"mcheckpoint";

/// Why a read-model operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("read model storage: {0}")]
    Sled(#[from] sled::Error),
    /// A row or event could not be read.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] roster_eventlog::LogError),
    /// Work handed to a blocking thread was dropped (the runtime is shutting down).
    #[error("interrupted: the runtime is shutting down")]
    Interrupted,
}

/// Order of a user list, by creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListOrder {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// A `GET /v1/users` query, validated.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Prefix search over id, username, name, display name and email.
    pub search: Option<String>,
    /// Only these ids.
    pub ids: Vec<String>,
    /// Only these usernames (compared normalized).
    pub usernames: Vec<String>,
    /// Only these emails (compared case-insensitively).
    pub emails: Vec<String>,
    /// Only members of one of these teams.
    pub teams: Vec<String>,
    /// Only the holders of the identities asked for (resolved by the caller from the log's
    /// reservations; `Some(empty)`: none holds them).
    pub identity_holders: Option<Vec<String>>,
    /// Only this status (without it, deleted users are left out).
    pub status: Option<Status>,
    /// Only this role.
    pub role: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Exclusive bound: the creation position of the item the page starts after (or ends before).
    pub cursor: Option<Position>,
    /// Page backwards from the cursor (`direction=before`).
    pub before: bool,
    /// Creation order.
    pub order: ListOrder,
}

/// A page of users.
#[derive(Clone, Debug)]
pub struct ListPage {
    /// The users, in the requested order.
    pub users: Vec<Arc<Row>>,
    /// Cursor for the page after this one, if there is one.
    pub next_cursor: Option<Position>,
    /// Cursor for the page before this one, if there is one.
    pub prev_cursor: Option<Position>,
    /// Number of users matching the query (all pages).
    pub total: u64,
}

/// The read models and their checkpoint.
pub struct ReadModels {
    pub(crate) db: sled::Db,
    /// Every read model, by table byte ([`crate::layout`]), and the checkpoint.
    pub(crate) tree: sled::Tree,
    /// Why the projector's last batch failed, while it retries (for `/readyz`).
    pub(crate) failure: parking_lot::Mutex<Option<String>>,
    pub(crate) catalog: RwLock<Catalog>,
    pub(crate) revoked_sessions: RwLock<crate::sessions::RevokedSessions>,
    pub(crate) codec: Codec,
    pub(crate) blind: BlindIndex,
    pub(crate) applied: watch::Sender<Position>,
    /// Recently read or written user rows, opened.
    pub(crate) rows: RowCache,
    /// Whether the in-memory catalog follows the batches (not for a rebuild whose models are
    /// closed when it ends: the next open builds the catalog from the rows).
    pub(crate) catalog_kept: std::sync::atomic::AtomicBool,
}

/// Every key of every table, by table name ([`ReadModels::tree_keys`]).
#[doc(hidden)]
pub type TreeKeys = Vec<(String, Vec<Vec<u8>>)>;

/// sled's cache of the live read models, in bytes.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Opened user rows kept in memory, in bytes (an estimate of what they hold).
pub const DEFAULT_ROW_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The read-model format this release writes. Read models of another format (the first
/// release's JSON rows in per-model trees) are dropped at start-up and rebuilt from the log.
const FORMAT: &[u8] = b"2";
const FORMAT_KEY: &[u8] = b"mformat";
const TREE: &str = "models";

/// Opened user rows by key, weighed by an estimate of their size.
pub(crate) struct RowCache(quick_cache::sync::Cache<Vec<u8>, Arc<Row>, RowWeight>);

#[derive(Clone)]
pub(crate) struct RowWeight;

impl quick_cache::Weighter<Vec<u8>, Arc<Row>> for RowWeight {
    fn weight(&self, key: &Vec<u8>, row: &Arc<Row>) -> u64 {
        let p = &row.user.personal.profile;
        let text: usize = [
            &p.username,
            &p.display_name,
            &p.name,
            &p.email,
            &p.phone,
            &p.avatar_url,
            &p.location,
        ]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum();
        let objects =
            p.custom.len() + p.metadata.len() + p.prefs.len() + row.user.public.wallet.len();
        (key.len() + 400 + text + 96 * objects) as u64
    }
}

impl RowCache {
    fn new(bytes: u64) -> Self {
        let items = (bytes / 600).max(16) as usize;
        Self(quick_cache::sync::Cache::with_weighter(
            items,
            bytes.max(1),
            RowWeight,
        ))
    }

    /// A cached row.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Row>> {
        self.0.get(key)
    }

    /// Remembers a row as written (`None`: it is gone).
    pub(crate) fn remember(&self, key: Vec<u8>, row: Option<Row>) {
        match row {
            Some(row) => self.0.insert(key, Arc::new(row)),
            None => {
                self.0.remove(&key);
            }
        }
    }

    /// (hits, misses) so far.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.0.hits(), self.0.misses())
    }
}

impl ReadModels {
    /// Opens (or creates) the read models in `dir` and rebuilds the in-memory catalog from them.
    pub async fn open(
        dir: &Path,
        codec: Codec,
        blind: BlindIndex,
    ) -> Result<Arc<Self>, StoreError> {
        Self::open_with_cache(dir, codec, blind, DEFAULT_CACHE_BYTES).await
    }

    /// [`ReadModels::open`] with sled's cache of `cache_bytes` (a bulk rebuild writes faster
    /// with a cache that holds the tree's hot pages).
    pub async fn open_with_cache(
        dir: &Path,
        codec: Codec,
        blind: BlindIndex,
        cache_bytes: u64,
    ) -> Result<Arc<Self>, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500))
            .open()?;
        let tree = open_current_format(&db)?;
        let models = Self {
            tree,
            failure: parking_lot::Mutex::new(None),
            db,
            catalog: RwLock::new(Catalog::default()),
            revoked_sessions: RwLock::new(Default::default()),
            codec,
            blind,
            applied: watch::channel(0).0,
            rows: RowCache::new(DEFAULT_ROW_CACHE_BYTES),
            catalog_kept: std::sync::atomic::AtomicBool::new(true),
        };
        let checkpoint = models.stored_checkpoint()?;
        models.applied.send_replace(checkpoint);
        models.rebuild_catalog().await?;
        models.rebuild_revoked()?;
        Ok(Arc::new(models))
    }

    async fn rebuild_catalog(&self) -> Result<(), StoreError> {
        let mut catalog = Catalog::default();
        for item in self.tree.scan_prefix([Table::Users as u8]) {
            let (_, bytes) = item?;
            let row = Row::open(&bytes, &self.codec).await?;
            catalog
                .org_mut(row.user.public.organization_id.as_str())
                .upsert(row.seq, &row.user, &row.indexed);
        }
        *self.catalog.write() = catalog;
        Ok(())
    }

    pub(crate) fn stored_checkpoint(&self) -> Result<Position, StoreError> {
        Ok(match self.tree.get(CHECKPOINT)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        })
    }

    pub(crate) const CHECKPOINT_KEY: &'static [u8] = CHECKPOINT;

    /// Whether nothing has been applied yet.
    pub fn is_fresh(&self) -> Result<bool, StoreError> {
        Ok(self.stored_checkpoint()? == 0)
    }

    /// Whether the catalog follows the batches.
    pub(crate) fn keeps_catalog(&self) -> bool {
        self.catalog_kept.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hits and misses of the cache of opened rows.
    pub fn row_cache_stats(&self) -> (u64, u64) {
        self.rows.stats()
    }

    /// Every key of every table, by table name (for tests and diagnostics: two copies of the
    /// read models built from the same log must hold the same keys).
    #[doc(hidden)]
    pub fn tree_keys(&self) -> Result<TreeKeys, StoreError> {
        let mut out = Vec::new();
        for table in Table::DATA.into_iter().chain([Table::Meta]) {
            let keys = self
                .tree
                .scan_prefix([table as u8])
                .keys()
                .map(|k| k.map(|k| k.to_vec()))
                .filter(|k| k.as_ref().map_or(true, |k| k.as_slice() != FORMAT_KEY))
                .collect::<Result<_, _>>()?;
            out.push((table.name().to_owned(), keys));
        }
        Ok(out)
    }

    /// Destroys the data keys of purpose tokens that expired before `now_micros` (at most
    /// `limit` of them) and forgets them; how many. A key is forgotten only after it is
    /// destroyed, so a crash between the two destroys it again — harmless.
    pub async fn sweep_expired_token_keys(
        &self,
        now_micros: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let start = vec![Table::TokenKeys as u8];
        // Every entry expiring before now sorts below the first possible one at now.
        let end = crate::layout::token_key(now_micros, roster_domain::KeyId::from_bytes([0; 16]));
        let mut entries = Vec::new();
        let mut ids = Vec::new();
        for key in self.tree.range(start..end).keys().take(limit) {
            let key = key?;
            if let Some(id) = key.get(9..25).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
                ids.push(roster_domain::KeyId::from_bytes(id));
            }
            entries.push(key);
        }
        if entries.is_empty() {
            return Ok(0);
        }
        self.codec
            .keys()
            .destroy(&ids)
            .await
            .map_err(crate::codec::CodecError::from)?;
        let mut batch = sled::Batch::default();
        for key in &entries {
            batch.remove(key.clone());
        }
        self.tree.apply_batch(batch)?;
        Ok(entries.len())
    }

    /// Why the projector is failing, if it is (it retries until the batch applies).
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// The log position every read model has applied.
    pub fn checkpoint(&self) -> Position {
        *self.applied.borrow()
    }

    /// Waits until the read models have applied `position`; false on timeout.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Flushes sled to disk (on shutdown; read models never need it for correctness).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// The user with this id, including soft-deleted ones.
    pub async fn get(&self, org: &str, id: &str) -> Result<Option<Arc<Row>>, StoreError> {
        let key = user_key(org, id);
        if let Some(row) = self.rows.get(&key) {
            return Ok(Some(row));
        }
        match self.tree.get(&key)? {
            Some(bytes) => {
                let row = Arc::new(Row::open(&bytes, &self.codec).await?);
                self.rows.0.insert(key, row.clone());
                Ok(Some(row))
            }
            None => Ok(None),
        }
    }

    /// The row stored under a user key, opened, as the projector changes it (a copy).
    pub(crate) async fn row(&self, key: &[u8]) -> Result<Option<Row>, StoreError> {
        if let Some(row) = self.rows.get(key) {
            return Ok(Some((*row).clone()));
        }
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(Row::open(&bytes, &self.codec).await?)),
            None => Ok(None),
        }
    }

    /// Ids of users whose username normalizes like `username`.
    pub fn ids_by_username(&self, org: &str, username: &str) -> Result<Vec<String>, StoreError> {
        let hash = username_hash(&self.blind, org, &normalize_username(username));
        Ok(self.index_lookup(Unique::Username, org, &hash))
    }

    /// Ids of users with this email (case-insensitively).
    pub fn ids_by_email(&self, org: &str, email: &str) -> Result<Vec<String>, StoreError> {
        let hash = email_hash(&self.blind, org, &normalize_email(email));
        Ok(self.index_lookup(Unique::Email, org, &hash))
    }

    /// Number of users in an organization (all statuses).
    pub fn count(&self, org: &str) -> usize {
        self.catalog.read().org(org).map_or(0, OrgCatalog::len)
    }

    /// A page of users (docs/contract.md §3 `GET /v1/users`).
    pub async fn list(&self, org: &str, query: &ListQuery) -> Result<ListPage, StoreError> {
        let candidates = self.candidates(org, query)?;
        let (seqs, next_cursor, prev_cursor, total) = {
            let catalog = self.catalog.read();
            let Some(org_catalog) = catalog.org(org) else {
                return Ok(ListPage {
                    users: vec![],
                    next_cursor: None,
                    prev_cursor: None,
                    total: 0,
                });
            };
            page(org_catalog, candidates.as_ref(), query)
        };
        let mut users = Vec::with_capacity(seqs.len());
        for (_, id) in seqs {
            if let Some(row) = self.get(org, &id).await? {
                users.push(row);
            }
        }
        Ok(ListPage {
            users,
            next_cursor,
            prev_cursor,
            total,
        })
    }

    /// The set of creation positions the exact filters and the search allow (`None` = all).
    fn candidates(
        &self,
        org: &str,
        query: &ListQuery,
    ) -> Result<Option<BTreeSet<Position>>, StoreError> {
        let mut id_sets: Vec<BTreeSet<String>> = Vec::new();
        if !query.ids.is_empty() {
            id_sets.push(query.ids.iter().cloned().collect());
        }
        if !query.usernames.is_empty() {
            let mut ids = BTreeSet::new();
            for u in &query.usernames {
                ids.extend(self.ids_by_username(org, u)?);
            }
            id_sets.push(ids);
        }
        if !query.emails.is_empty() {
            let mut ids = BTreeSet::new();
            for e in &query.emails {
                ids.extend(self.ids_by_email(org, e)?);
            }
            id_sets.push(ids);
        }
        if !query.teams.is_empty() {
            let mut ids = BTreeSet::new();
            for team in &query.teams {
                ids.extend(self.member_ids(org, team)?);
            }
            id_sets.push(ids);
        }
        if let Some(holders) = &query.identity_holders {
            id_sets.push(holders.iter().cloned().collect());
        }
        let catalog = self.catalog.read();
        let Some(org_catalog) = catalog.org(org) else {
            return Ok(Some(BTreeSet::new()));
        };
        let mut result: Option<BTreeSet<Position>> = None;
        let mut intersect = |set: BTreeSet<Position>| {
            result = Some(match result.take() {
                None => set,
                Some(r) => r.intersection(&set).copied().collect(),
            });
        };
        for ids in id_sets {
            intersect(ids.iter().filter_map(|id| org_catalog.seq_of(id)).collect());
        }
        if let Some(search) = query.search.as_deref().filter(|s| !s.trim().is_empty()) {
            intersect(org_catalog.search(search));
        }
        Ok(result)
    }
}

impl ReadModels {
    fn index_lookup(&self, unique: Unique, org: &str, hash: &str) -> Vec<String> {
        let catalog = self.catalog.read();
        catalog
            .org(org)
            .map(|c| c.ids_by(unique, hash))
            .unwrap_or_default()
    }
}

fn matches(catalog: &OrgCatalog, entry: &Entry, query: &ListQuery) -> bool {
    let status_ok = match query.status {
        Some(s) => entry.status == s,
        None => entry.status != Status::Deleted,
    };
    status_ok
        && query
            .role
            .as_deref()
            .is_none_or(|r| catalog.role(entry) == r)
}

type Page = (
    Vec<(Position, String)>,
    Option<Position>,
    Option<Position>,
    u64,
);

/// Cuts one page out of the matching users. `forward` iterates by increasing position.
fn page(catalog: &OrgCatalog, candidates: Option<&BTreeSet<Position>>, query: &ListQuery) -> Page {
    let matching = |bound: Option<Position>,
                    forward: bool|
     -> Box<dyn Iterator<Item = (Position, &Entry)> + '_> {
        let range = match (bound, forward) {
            (None, _) => (Bound::Unbounded, Bound::Unbounded),
            (Some(b), true) => (Bound::Excluded(b), Bound::Unbounded),
            (Some(b), false) => (Bound::Unbounded, Bound::Excluded(b)),
        };
        let entries: Box<dyn DoubleEndedIterator<Item = (Position, &Entry)> + '_> = match candidates
        {
            Some(set) => Box::new(
                set.range(range)
                    .filter_map(|s| catalog.entry(*s).map(|e| (*s, e))),
            ),
            None => Box::new(catalog.range(range)),
        };
        let entries = entries.filter(|(_, e)| matches(catalog, e, query));
        if forward {
            Box::new(entries)
        } else {
            Box::new(entries.rev())
        }
    };
    // Without id, search or role filters the total is the catalog's count by status (O(1));
    // only filtered lists count their matches.
    let total = match (candidates, &query.role) {
        (None, None) => catalog.count_with_status(query.status),
        _ => matching(None, true).count() as u64,
    };
    let display_forward = query.order == ListOrder::Asc;
    let limit = query.limit.max(1);
    let walk_forward = if query.before {
        !display_forward
    } else {
        display_forward
    };
    let mut items: Vec<(Position, String)> = matching(query.cursor, walk_forward)
        .take(limit + 1)
        .map(|(s, e)| (s, e.id.to_string()))
        .collect();
    let more = items.len() > limit;
    items.truncate(limit);
    if query.before {
        items.reverse();
    }
    let (first, last) = (items.first().map(|i| i.0), items.last().map(|i| i.0));
    let exists_beyond = |from: Option<Position>, forward: bool| {
        from.is_some_and(|f| matching(Some(f), forward).next().is_some())
    };
    let (next, prev) = if query.before {
        (
            last.filter(|_| exists_beyond(last, display_forward)),
            first.filter(|_| more),
        )
    } else {
        (
            last.filter(|_| more),
            first.filter(|_| exists_beyond(first, !display_forward)),
        )
    };
    (items, next, prev, total)
}

/// The users of one organization, read one at a time (for exports: memory stays flat).
pub struct UserRows<'a> {
    iter: sled::Iter,
    codec: &'a Codec,
}

impl UserRows<'_> {
    /// The next user, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Row>, StoreError> {
        match self.iter.next() {
            Some(item) => {
                let (_, bytes) = item?;
                Ok(Some(Row::open(&bytes, self.codec).await?))
            }
            None => Ok(None),
        }
    }
}

impl ReadModels {
    /// Every user of an organization, in id order.
    pub fn users_of(&self, org: &str) -> UserRows<'_> {
        UserRows {
            iter: self
                .tree
                .scan_prefix(Table::Users.prefix(&[org.as_bytes()])),
            codec: &self.codec,
        }
    }
}

/// The tree of the current format, after dropping what older formats left.
fn open_current_format(db: &sled::Db) -> Result<sled::Tree, StoreError> {
    for name in db.tree_names() {
        if name.as_ref() != TREE.as_bytes() && name.as_ref() != b"__sled__default" {
            tracing::info!(tree = %String::from_utf8_lossy(&name), "dropping a read model of an older format; it is rebuilt from the log");
            db.drop_tree(&name)?;
        }
    }
    let tree = db.open_tree(TREE)?;
    if tree.get(FORMAT_KEY)?.as_deref() != Some(FORMAT) {
        tree.clear()?;
        tree.insert(FORMAT_KEY, FORMAT)?;
        tree.flush()?;
    }
    Ok(tree)
}
