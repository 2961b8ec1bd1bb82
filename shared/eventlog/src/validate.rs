//! What every backend's writer shares: the stream index, transaction shape checks, and the
//! validation of a group-committed batch against committed state (expected versions and
//! reservations), decided in one step with the events — never check-then-act.

use crate::record::{self, AppendSummary, Effect, Summary};
use crate::{
    AppendError, ExpectedVersion, Micros, Position, Reservation, ReservationInfo, Transaction,
    Version,
};
use hashbrown::{HashTable, hash_table};
use sha2::{Digest, Sha256};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A stream's or a reservation's key as the in-memory index holds it: 128 bits of the SHA-256
/// of its text (a million streams and two million reservations would otherwise keep their
/// text twice over). A collision would need ~2^64 keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key(pub u128);

impl Key {
    /// The key of a reservation (or any text).
    pub fn of(text: &str) -> Key {
        Key::from_digest(Sha256::new().chain_update(text.as_bytes()))
    }

    fn from_digest(digest: Sha256) -> Key {
        let bytes: [u8; 16] = digest.finalize()[..16]
            .try_into()
            .expect("SHA-256 has 32 bytes");
        Key(u128::from_le_bytes(bytes))
    }

    /// The 16 bytes of the key.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }

    /// A key from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Key {
        Key(u128::from_le_bytes(bytes))
    }
}

/// Hashes a [`Key`] by its own bits (they are a digest already).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// A map by [`Key`].
pub(crate) type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

/// Committed state as the batch validation sees it: stream versions and reservation holders.
pub(crate) trait CommittedState {
    /// The version of the stream with this key, `None` if it has no events.
    fn version(&self, key: &Key) -> Option<Version>;
    /// The holder of a reservation key (expired or not).
    fn reservation(&self, key: &Key) -> Option<&ReservationInfo>;
}

/// Applies a committed record's streams and reservation effects. `head` is the position of
/// the last event applied so far. Checks continuity first (nothing changes on error), so a
/// reader of a log detects a record that does not follow its predecessor.
pub(crate) fn apply_summary(
    streams: &mut Streams,
    reservations: &mut KeyMap<ReservationInfo>,
    head: Position,
    s: &Summary,
) -> Result<(), &'static str> {
    if s.first_position != head + 1 {
        return Err("record position does not follow the previous record");
    }
    for a in &s.appends {
        let current = streams
            .get(&a.key)
            .map_or(0, |e| e.positions.len() as Version);
        if a.first_version != current + 1 {
            return Err("stream version does not follow the previous event");
        }
    }
    let mut position = s.first_position;
    for a in &s.appends {
        let entry = streams.get_or_insert(a.key);
        entry.positions.extend(position..position + a.count);
        position += a.count;
    }
    for effect in &s.effects {
        let key = Key::of(effect.key());
        let mut slot = reservations.remove(&key);
        apply_effect(&mut slot, s.first_position, effect);
        if let Some(info) = slot {
            reservations.insert(key, info);
        }
    }
    Ok(())
}

/// Applies one reservation effect, of a record whose first event is at `position`, to its
/// key's holders (`None`: free). The log's state and a batch's overlay both change through
/// this, so they cannot disagree.
fn apply_effect(slot: &mut Option<ReservationInfo>, position: Position, effect: &Effect) {
    let sole = |owner: &str, expires_at| ReservationInfo {
        owner: owner.to_owned(),
        position,
        expires_at,
        sharers: Vec::new(),
    };
    match (effect, slot.as_mut()) {
        (
            Effect::Claim {
                owner, expires_at, ..
            },
            _,
        ) => *slot = Some(sole(owner, *expires_at)),
        (Effect::Release { .. }, _) => *slot = None,
        (Effect::Share { owner, .. }, Some(info)) => {
            if !info.is_held_by(owner) {
                info.sharers.push(owner.clone());
            }
        }
        (Effect::Share { owner, .. }, None) => *slot = Some(sole(owner, None)),
        (Effect::Unshare { owner, .. }, Some(info)) if info.owner == *owner => {
            if info.sharers.is_empty() {
                *slot = None;
            } else {
                info.owner = info.sharers.remove(0);
                info.position = position;
            }
        }
        (Effect::Unshare { owner, .. }, Some(info)) => info.sharers.retain(|s| s != owner),
        (Effect::Unshare { .. }, None) => {}
    }
}

/// The key of a stream: of `org/name` (unambiguous because an org has no `/`).
pub(crate) fn stream_key(org: &str, name: &str) -> Key {
    Key::from_digest(
        Sha256::new()
            .chain_update(org.as_bytes())
            .chain_update(b"/")
            .chain_update(name.as_bytes()),
    )
}

/// One stream: its key and the positions of its events; its version is their count. Most
/// user streams hold a handful of events, so they stay inline (no second allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    pub key: Key,
    pub positions: SmallVec<[Position; 4]>,
}

/// Streams by key. The hash table holds only 4-byte indices into a dense `Vec` of entries:
/// a `HashMap` would keep whole entries in a table that is up to half empty after growing,
/// nearly doubling the memory of a million streams.
#[derive(Default)]
pub(crate) struct Streams {
    index: HashTable<u32>,
    entries: Vec<StreamEntry>,
}

impl Streams {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            index: HashTable::with_capacity(n),
            entries: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &StreamEntry> {
        self.entries.iter()
    }

    pub fn get(&self, key: &Key) -> Option<&StreamEntry> {
        let entries = &self.entries;
        self.index
            .find(key.0 as u64, |&i| entries[i as usize].key == *key)
            .map(|&i| &entries[i as usize])
    }

    /// The entry of `key`, created empty if missing.
    pub fn get_or_insert(&mut self, key: Key) -> &mut StreamEntry {
        let entries = &mut self.entries;
        let slot = match self.index.entry(
            key.0 as u64,
            |&i| entries[i as usize].key == key,
            |&i| entries[i as usize].key.0 as u64,
        ) {
            hash_table::Entry::Occupied(e) => *e.get(),
            hash_table::Entry::Vacant(e) => {
                let i = u32::try_from(entries.len()).expect("fewer than 2^32 streams");
                entries.push(StreamEntry {
                    key,
                    positions: SmallVec::new(),
                });
                *e.insert(i).get()
            }
        };
        &mut entries[slot as usize]
    }
}

/// Whether a claim has lapsed at `now`.
pub(crate) fn expired(info: &ReservationInfo, now: Micros) -> bool {
    info.expires_at.is_some_and(|at| at <= now)
}

/// Checks what can be checked without state: shape and size. Returns the size bound of the
/// transaction's record.
pub(crate) fn validate_shape(
    tx: &Transaction,
    max_record_size: usize,
) -> Result<usize, AppendError> {
    let invalid = |msg: String| Err(AppendError::Invalid(msg));
    if tx.appends.is_empty() {
        return invalid("a transaction needs at least one event".into());
    }
    for (i, a) in tx.appends.iter().enumerate() {
        if a.events.is_empty() {
            return invalid(format!("stream {} has no events", a.stream));
        }
        if a.stream.org.contains('/') {
            return invalid(format!("org {:?} contains '/'", a.stream.org));
        }
        if tx.appends[..i].iter().any(|b| b.stream == a.stream) {
            return invalid(format!("stream {} appears twice", a.stream));
        }
    }
    let size = record::max_framed_len(&tx.appends, &tx.reservations);
    if size > max_record_size {
        return invalid(format!(
            "transaction of about {size} bytes exceeds the maximum record size {max_record_size}"
        ));
    }
    Ok(size)
}

/// The effects of the transactions already accepted in the writer's current batch: not yet
/// durable, so not in the committed state, but later transactions of the batch must see them.
#[derive(Default)]
pub(crate) struct BatchOverlay {
    versions: KeyMap<Version>,
    reservations: KeyMap<Option<ReservationInfo>>,
}

impl BatchOverlay {
    /// Validates `tx` against `state` plus this batch and, if it passes, records its effects
    /// here. A rejected transaction leaves the overlay untouched.
    pub fn accept(
        &mut self,
        state: &impl CommittedState,
        tx: &Transaction,
        first_position: Position,
        time: Micros,
    ) -> Result<Summary, AppendError> {
        let mut appends = Vec::with_capacity(tx.appends.len());
        for a in &tx.appends {
            let key = stream_key(&a.stream.org, &a.stream.name);
            let actual = match self.versions.get(&key) {
                Some(&v) => Some(v),
                None => state.version(&key),
            };
            let ok = match a.expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => actual.is_none(),
                ExpectedVersion::Exact(v) => actual == Some(v),
            };
            if !ok {
                return Err(AppendError::WrongExpectedVersion {
                    stream: a.stream.clone(),
                    expected: a.expected,
                    actual,
                });
            }
            appends.push(AppendSummary {
                key,
                first_version: actual.unwrap_or(0) + 1,
                count: a.events.len() as u64,
            });
        }

        // Reservations apply in order; `local` holds this transaction's own changes so that a
        // failure halfway leaves nothing behind.
        let mut local: HashMap<&str, (Key, Option<ReservationInfo>)> = HashMap::new();
        let mut effects = Vec::new();
        for r in &tx.reservations {
            let (key, owner) = match r {
                Reservation::Claim { key, owner, .. }
                | Reservation::Share { key, owner }
                | Reservation::Release { key, owner } => (key.as_str(), owner.as_str()),
            };
            let hashed = match local.get(key) {
                Some((hashed, _)) => *hashed,
                None => Key::of(key),
            };
            let mut slot = match local.get(key) {
                Some((_, v)) => v.clone(),
                None => match self.reservations.get(&hashed) {
                    Some(v) => v.clone(),
                    None => state.reservation(&hashed).cloned(),
                },
            };
            let live = slot.as_ref().filter(|info| !expired(info, time));
            let effect = match (r, live) {
                // Free (or lapsed): taken, whatever the kind of claim.
                (Reservation::Claim { expires_at, .. }, None) => Some(Effect::Claim {
                    key: key.to_owned(),
                    owner: owner.to_owned(),
                    expires_at: *expires_at,
                }),
                (Reservation::Share { .. }, None) => Some(Effect::Claim {
                    key: key.to_owned(),
                    owner: owner.to_owned(),
                    expires_at: None,
                }),
                (Reservation::Release { .. }, None) => None,
                (Reservation::Claim { expires_at, .. }, Some(held)) => {
                    if !held.is_held_by(owner) {
                        return Err(AppendError::ReservationHeld {
                            key: key.to_owned(),
                            owner: held.owner.clone(),
                            position: held.position,
                        });
                    }
                    // Held by this owner alone: claimed again (a new expiry). Shared: kept.
                    held.sharers.is_empty().then(|| Effect::Claim {
                        key: key.to_owned(),
                        owner: owner.to_owned(),
                        expires_at: *expires_at,
                    })
                }
                (Reservation::Share { .. }, Some(held)) => {
                    (!held.is_held_by(owner)).then(|| Effect::Share {
                        key: key.to_owned(),
                        owner: owner.to_owned(),
                    })
                }
                (Reservation::Release { .. }, Some(held)) if !held.is_held_by(owner) => None,
                (Reservation::Release { .. }, Some(held)) if held.sharers.is_empty() => {
                    Some(Effect::Release {
                        key: key.to_owned(),
                    })
                }
                (Reservation::Release { .. }, Some(_)) => Some(Effect::Unshare {
                    key: key.to_owned(),
                    owner: owner.to_owned(),
                }),
            };
            if let Some(effect) = effect {
                // This transaction's view of the key, exactly as the log will apply it.
                apply_effect(&mut slot, first_position, &effect);
                local.insert(key, (hashed, slot));
                effects.push(effect);
            }
        }

        for a in &appends {
            self.versions.insert(a.key, a.first_version + a.count - 1);
        }
        for (_, (key, value)) in local {
            self.reservations.insert(key, value);
        }
        let event_count = appends.iter().map(|a| a.count).sum();
        Ok(Summary {
            first_position,
            event_count,
            time,
            appends,
            effects,
        })
    }
}
