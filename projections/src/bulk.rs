//! The bulk path of a rebuild: fresh, empty read models filled from the log without the live
//! projector's per-batch transaction.
//!
//! Why that is safe: read models being rebuilt are not in use until the pointer switch
//! (`location::switch_to`), and a rebuild that crashes leaves a directory that
//! `location::remove_stale` deletes. Per-batch atomicity buys nothing there, so each chunk's
//! writes go to each tree as one `sled::Batch`, and the checkpoint is written once, after every
//! chunk, followed by a flush. From then on the models are like any others: the live path
//! (`apply_batch`, the projector) continues from that checkpoint.
//!
//! What it shares with the live path: folding events into rows (`collect`), sealing, index
//! diffs, key destruction before the writes, the catalog — the same code. What differs:
//! - events are decoded and rows sealed on blocking threads, one part per core, and the next
//!   chunk is read and decoded while the current one is folded and written; sled writes run on
//!   a blocking thread beside the catalog update (the next chunk starts once they are done, as
//!   it may read what they wrote: ledger and session purges, tasks, rows not cached);
//! - a user whose first event in a chunk is `UserCreated` has no row (`decide` creates only
//!   users that do not exist, a hard deletion removes the row, and the models started empty),
//!   so it is not looked up;
//! - the rows of the most recently touched users stay in memory ([`RowCache`]) instead of
//!   being read back from sled and opened by the next chunk that updates them;
//! - chunks are larger than the live projector's batches.
//!
//! Dropping a bulk load (a canceled rebuild) leaves at most one chunk's blocking work running;
//! it holds events, rows and tree handles, never the `ReadModels`, and ends on its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use roster_domain::event::Event;
use roster_eventlog::{EventLog, Position, RecordedEvent};

use crate::codec::{Codec, DecodedEvent};
use crate::projector::{Changes, SealedUser, Writes, seal_user, user_of_stream};
use crate::rows::{Row, user_key};
use crate::store::{ReadModels, StoreError};

/// Smallest part worth a thread of its own.
const MIN_PART: usize = 256;

/// A chunk of the log, its user events decoded (`None` for other events).
struct Chunk {
    events: Vec<RecordedEvent>,
    decoded: Vec<Option<DecodedEvent>>,
}

/// What a bulk load does besides filling the trees.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BulkOptions {
    /// Keep the in-memory catalog current (off only when the models are closed right after).
    pub catalog: bool,
    /// Rows of recently touched users kept in memory (see [`RowCache`]).
    pub row_cache: usize,
    /// Events per chunk.
    pub chunk: usize,
}

/// The read models' trees, for writing on a blocking thread.
#[derive(Clone)]
struct Trees {
    users: sled::Tree,
    usernames: sled::Tree,
    emails: sled::Tree,
    settings: sled::Tree,
    wallet_ledger: sled::Tree,
    tasks: sled::Tree,
    task_failures: sled::Tree,
    session_rows: sled::Tree,
}

impl Trees {
    /// Writes a chunk tree by tree, one sled batch per tree (no transaction, no checkpoint).
    fn write(&self, w: Writes) -> Result<(), StoreError> {
        for (tree, ops) in [
            (&self.users, w.rows),
            (&self.wallet_ledger, w.ledger),
            (&self.tasks, w.tasks),
            (&self.task_failures, w.failures),
            (&self.session_rows, w.sessions),
            (&self.settings, w.settings),
        ] {
            if ops.is_empty() {
                continue;
            }
            let mut batch = sled::Batch::default();
            for (key, value) in ops {
                match value {
                    Some(bytes) => batch.insert(key, bytes),
                    None => batch.remove(key),
                }
            }
            tree.apply_batch(batch)?;
        }
        for (tree, ops) in [(&self.usernames, w.usernames), (&self.emails, w.emails)] {
            if ops.is_empty() {
                continue;
            }
            let mut batch = sled::Batch::default();
            for (key, insert) in ops {
                if insert {
                    batch.insert(key, &[][..]);
                } else {
                    batch.remove(key);
                }
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }
}

/// Rows of the users touched most recently (`None`: the user has no row), so a later chunk
/// does not read them back from sled and open them. Evicts in the order rows were put back;
/// a row taken out and put back moves to the end.
struct RowCache {
    rows: HashMap<Vec<u8>, (u64, Option<Row>)>,
    order: VecDeque<(u64, Vec<u8>)>,
    capacity: usize,
    clock: u64,
}

impl RowCache {
    fn new(capacity: usize) -> Self {
        Self {
            rows: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            clock: 0,
        }
    }

    fn take(&mut self, key: &[u8]) -> Option<Option<Row>> {
        self.rows.remove(key).map(|(_, row)| row)
    }

    fn put(&mut self, key: Vec<u8>, row: Option<Row>) {
        if self.capacity == 0 {
            return;
        }
        self.clock += 1;
        self.order.push_back((self.clock, key.clone()));
        self.rows.insert(key, (self.clock, row));
        while self.rows.len() > self.capacity {
            let Some((stamp, key)) = self.order.pop_front() else {
                break;
            };
            if self.rows.get(&key).is_some_and(|(s, _)| *s == stamp) {
                self.rows.remove(&key);
            }
        }
        // Entries taken out and put back leave stale stamps behind; keep the queue bounded.
        if self.order.len() > 2 * self.capacity.max(1024) {
            let rows = &self.rows;
            self.order
                .retain(|(stamp, key)| rows.get(key).is_some_and(|(s, _)| s == stamp));
        }
    }
}

impl ReadModels {
    /// Whether nothing was ever written to these read models.
    pub(crate) fn is_fresh(&self) -> Result<bool, StoreError> {
        Ok(self.stored_checkpoint()? == 0 && self.data_trees().iter().all(|t| t.is_empty()))
    }

    fn trees(&self) -> Trees {
        Trees {
            users: self.users.clone(),
            usernames: self.usernames.clone(),
            emails: self.emails.clone(),
            settings: self.settings.clone(),
            wallet_ledger: self.wallet_ledger.clone(),
            tasks: self.tasks.clone(),
            task_failures: self.task_failures.clone(),
            session_rows: self.session_rows.clone(),
        }
    }

    /// Applies the log from position 0 up to `until` to fresh read models (see the module docs),
    /// then writes the checkpoint and flushes. Returns the number of events applied.
    pub(crate) async fn bulk_load(
        &self,
        log: &Arc<dyn EventLog>,
        until: Position,
        options: BulkOptions,
        progress: &mut impl FnMut(Position),
    ) -> Result<u64, StoreError> {
        let mut cache = RowCache::new(options.row_cache);
        let mut events = 0;
        let mut last = 0;
        let size = options.chunk.max(1);
        let mut pending = read_chunk(log, &self.codec, 0, until, size).await?;
        while let Some(chunk) = pending {
            let end = chunk.events.last().map_or(last, |e| e.position);
            let (applied, next) =
                tokio::join!(self.apply_chunk(chunk, &mut cache, options), async {
                    if end < until {
                        read_chunk(log, &self.codec, end, until, size).await
                    } else {
                        Ok(None)
                    }
                });
            events += applied?;
            pending = next?;
            last = end;
            progress(last);
        }
        if last > 0 {
            self.meta
                .insert(Self::CHECKPOINT_KEY, &Self::checkpoint_bytes(last)[..])?;
        }
        self.flush().await?;
        self.applied.send_replace(last);
        Ok(events)
    }

    async fn apply_chunk(
        &self,
        chunk: Chunk,
        cache: &mut RowCache,
        options: BulkOptions,
    ) -> Result<u64, StoreError> {
        let Chunk { events, decoded } = chunk;
        let mut changes = Changes::default();
        let mut seen = HashSet::new();
        for (event, decoded) in events.iter().zip(&decoded) {
            let Some(id) = user_of_stream(&event.stream.name) else {
                continue;
            };
            let key = user_key(&event.stream.org, id);
            if !seen.insert(key.clone()) {
                continue;
            }
            if let Some(row) = cache.take(&key) {
                changes.known.insert(key, row);
            } else if decoded
                .as_ref()
                .is_some_and(|d| matches!(d.event, Event::UserCreated(_)))
            {
                changes.known.insert(key, None);
            }
        }
        let refs: Vec<&RecordedEvent> = events.iter().collect();
        self.collect(&mut changes, &refs, decoded).await?;
        drop(refs);
        let applied = events.len() as u64;
        let codec = self.codec.clone();
        let (touched, sealed) = parallel(std::mem::take(&mut changes.touched), move |t| {
            tokio::runtime::Handle::current().block_on(seal_user(&codec, t))
        })
        .await?;
        changes.touched = touched;
        let sealed: Vec<SealedUser> = sealed.into_iter().collect::<Result<_, _>>()?;
        let writes = self.writes(&changes, sealed).await?;
        // sled writes on a blocking thread while this one updates the catalog and the cache.
        let trees = self.trees();
        let written = tokio::task::spawn_blocking(move || trees.write(writes));
        if options.catalog {
            self.after_commit(&changes);
        } else {
            self.note_revoked(&changes.sessions);
        }
        for t in std::mem::take(&mut changes.touched) {
            cache.put(user_key(&t.org, &t.id), t.after);
        }
        match written.await {
            Ok(result) => result?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Err(StoreError::Interrupted),
        }
        // Freeing a chunk's worth of rows and events is not free either.
        tokio::task::spawn_blocking(move || drop((changes, events)));
        Ok(applied)
    }
}

/// Reads the next chunk after `after` (at most up to `until`) and decodes its user events.
async fn read_chunk(
    log: &Arc<dyn EventLog>,
    codec: &Codec,
    after: Position,
    until: Position,
    chunk: usize,
) -> Result<Option<Chunk>, StoreError> {
    // A log may answer with fewer events than asked (a paced one does, `rebuild_rate`): then
    // the chunk is what it gave, so progress shows at the pace of the reads.
    let want = chunk.min((until - after) as usize);
    let events = if want == 0 {
        Vec::new()
    } else {
        log.read_all(after, want).await?
    };
    if events.is_empty() {
        return Ok(None);
    }
    let codec = codec.clone();
    let (events, decoded) = parallel(events, move |e| {
        user_of_stream(&e.stream.name)
            .map(|_| tokio::runtime::Handle::current().block_on(codec.decode(e)))
    })
    .await?;
    let decoded = decoded
        .into_iter()
        .map(Option::transpose)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Chunk { events, decoded }))
}

/// Runs `f` over `items` on blocking threads, one contiguous part per core; returns the items
/// and the results, both in order. (The threads hold only what they are given: dropping the
/// caller never leaves them holding the read models.)
async fn parallel<T, R, F>(mut items: Vec<T>, f: F) -> Result<(Vec<T>, Vec<R>), StoreError>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(&T) -> R + Send + Sync + 'static,
{
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let per = items.len().div_ceil(threads).max(MIN_PART);
    let f = Arc::new(f);
    let mut parts = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(per.min(items.len()));
        parts.push(std::mem::replace(&mut items, rest));
    }
    let handle = tokio::runtime::Handle::current();
    let tasks: Vec<_> = parts
        .into_iter()
        .map(|part| {
            let (f, handle) = (f.clone(), handle.clone());
            tokio::task::spawn_blocking(move || {
                let _entered = handle.enter();
                let results: Vec<R> = part.iter().map(|t| f(t)).collect();
                (part, results)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        match task.await {
            Ok((part, r)) => {
                items.extend(part);
                results.extend(r);
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Err(StoreError::Interrupted),
        }
    }
    Ok((items, results))
}
