//! The in-memory catalog: list order, status/role filters and prefix search, per organization.
//!
//! Search terms are personal data, so they live only in memory (docs/architecture.md): the catalog
//! is rebuilt from the sealed `users` rows at start-up and kept current by the projector.
//!
//! Beside them, the username and email indexes: the blind hashes (keyed HMACs, never the
//! values) of each user's normalized username and email, found by hash. They are rebuilt from
//! the rows' public parts at start-up, so the `users` table is the only one a user's creation
//! writes.
//!
//! Compact by design (a million users must fit in a few hundred MB): an entry holds its id and
//! all its search terms in two allocations; the id index is a hash table of positions (the id
//! lives only in the entry); the term index holds the first 8 bytes of each term as a number
//! beside the position, and a longer query word is checked against the entry's terms; blind
//! hashes are held as the 16 bytes they are, in the entry only: the username and email indexes,
//! like the id index, are hash tables of positions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use base64::Engine;
use hashbrown::HashTable;
use roster_domain::{Status, User};
use roster_eventlog::Position;

use crate::rows::Indexed;

/// What the catalog keeps per user.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// User id.
    pub id: Box<str>,
    /// Status now.
    pub status: Status,
    /// Role now (an index into the organization's roles).
    role: u32,
    /// Sessions signed in against an earlier user version no longer work.
    pub sessions_valid_from: u64,
    /// Search terms now (lowercased), NUL-separated.
    terms: Box<str>,
    /// The blind hashes it is indexed under (username, email); bytes, not `u128`, so the
    /// entry is aligned to 8, not 16.
    hashes: [Option<[u8; 16]>; 2],
}

impl Entry {
    fn terms(&self) -> impl Iterator<Item = &str> {
        self.terms.split('\0').filter(|t| !t.is_empty())
    }

    fn hash(&self, unique: usize) -> Option<u128> {
        self.hashes[unique].map(u128::from_be_bytes)
    }
}

/// One organization's catalog.
#[derive(Debug, Default)]
pub struct OrgCatalog {
    /// Users by creation position.
    by_seq: BTreeMap<Position, Entry>,
    /// Users per status (indexed by [`status_slot`]), kept with `by_seq`: the total of an
    /// unfiltered list page is then O(1), not a scan of every user.
    status_counts: [u64; 4],
    /// Creation positions, found by the hash of the id.
    seq_of: HashTable<Position>,
    /// Hashes ids for `seq_of` (seeded per catalog).
    hasher: RandomState,
    /// (first 8 bytes of a term, position); a range finds the users a prefix may match.
    terms: BTreeSet<(u64, Position)>,
    roles: Vec<Box<str>>,
    role_index: HashMap<Box<str>, u32>,
    /// Creation positions, found by blind hash (the entry holds the hash): `[0]` usernames,
    /// `[1]` emails. Several users may share one (where usernames need not be unique).
    by_hash: [HashTable<Position>; 2],
}

/// A blind hash (22 characters of URL-safe base64 of 16 bytes) as a number.
fn hash_value(hash: &str) -> Option<u128> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(hash)
        .ok()?;
    Some(u128::from_be_bytes(bytes.try_into().ok()?))
}

/// Which index a lookup asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unique {
    /// Usernames.
    Username = 0,
    /// Emails.
    Email = 1,
}

/// Terms a user is found by: id, username, email, name and display name whole, and each word
/// of the names; sorted, without duplicates.
fn terms_of(user: &User) -> Vec<String> {
    let mut terms: Vec<String> = vec![user.public.id.as_str().to_lowercase()];
    let p = &user.personal.profile;
    for value in [&p.username, &p.email].into_iter().flatten() {
        terms.push(value.to_lowercase());
    }
    for value in [&p.name, &p.display_name].into_iter().flatten() {
        let lower = value.to_lowercase();
        terms.extend(lower.split_whitespace().map(str::to_owned));
        terms.push(lower);
    }
    terms.retain(|t| !t.is_empty() && !t.contains('\0'));
    terms.sort();
    terms.dedup();
    terms
}

/// The first 8 bytes of `s` as a big-endian number, the rest filled with `fill`.
fn head(s: &str, fill: u8) -> u64 {
    let mut bytes = [fill; 8];
    let n = s.len().min(8);
    bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

impl OrgCatalog {
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Adds or updates a user created at `seq`, indexed under `indexed`.
    pub fn upsert(&mut self, seq: Position, user: &User, indexed: &Indexed) {
        let id = user.public.id.as_str();
        self.remove(id);
        let hashes = [
            indexed.username.as_deref().and_then(hash_value),
            indexed.email.as_deref().and_then(hash_value),
        ];
        let (by_seq, hasher) = (&self.by_seq, &self.hasher);
        for (unique, (index, hash)) in self.by_hash.iter_mut().zip(hashes).enumerate() {
            if let Some(hash) = hash {
                index.insert_unique(hasher.hash_one(hash), seq, |s| {
                    let hash = by_seq.get(s).and_then(|e| e.hash(unique));
                    hash.map_or(0, |h| hasher.hash_one(h))
                });
            }
        }
        let role = self.role_of(&user.public.profile.role);
        let terms = terms_of(user);
        let mut joined = String::with_capacity(terms.iter().map(|t| t.len() + 1).sum());
        for term in &terms {
            self.terms.insert((head(term, 0), seq));
            joined.push_str(term);
            joined.push('\0');
        }
        let hash = self.hash(id);
        let (by_seq, hasher) = (&self.by_seq, &self.hasher);
        self.seq_of.insert_unique(hash, seq, |s| {
            by_seq.get(s).map_or(0, |e| hasher.hash_one(&*e.id))
        });
        let status = user.status();
        self.status_counts[status_slot(status)] += 1;
        self.by_seq.insert(
            seq,
            Entry {
                id: id.into(),
                status,
                role,
                sessions_valid_from: user.public.sessions_valid_from,
                terms: joined.into_boxed_str(),
                hashes: hashes.map(|h| h.map(u128::to_be_bytes)),
            },
        );
    }

    fn role_of(&mut self, role: &str) -> u32 {
        if let Some(i) = self.role_index.get(role) {
            return *i;
        }
        let i = self.roles.len() as u32;
        self.roles.push(role.into());
        self.role_index.insert(role.into(), i);
        i
    }

    /// Removes a user (hard deletion).
    pub fn remove(&mut self, id: &str) {
        let hash = self.hash(id);
        let by_seq = &self.by_seq;
        let Ok(found) = self
            .seq_of
            .find_entry(hash, |s| by_seq.get(s).is_some_and(|e| &*e.id == id))
        else {
            return;
        };
        let (seq, _) = found.remove();
        if let Some(entry) = self.by_seq.remove(&seq) {
            self.status_counts[status_slot(entry.status)] -= 1;
            for term in entry.terms() {
                self.terms.remove(&(head(term, 0), seq));
            }
            for (unique, index) in self.by_hash.iter_mut().enumerate() {
                let Some(hash) = entry.hash(unique) else {
                    continue;
                };
                if let Ok(found) = index.find_entry(self.hasher.hash_one(hash), |s| *s == seq) {
                    found.remove();
                }
            }
        }
    }

    /// Ids of the users indexed under a blind hash, in id order.
    pub fn ids_by(&self, unique: Unique, hash: &str) -> Vec<String> {
        let Some(hash) = hash_value(hash) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = self.by_hash[unique as usize]
            .iter_hash(self.hasher.hash_one(hash))
            .filter_map(|seq| self.by_seq.get(seq))
            .filter(|e| e.hash(unique as usize) == Some(hash))
            .map(|e| e.id.to_string())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Creation position of a user.
    pub fn seq_of(&self, id: &str) -> Option<Position> {
        let by_seq = &self.by_seq;
        self.seq_of
            .find(self.hash(id), |s| {
                by_seq.get(s).is_some_and(|e| &*e.id == id)
            })
            .copied()
    }

    /// The entry at a creation position.
    pub fn entry(&self, seq: Position) -> Option<&Entry> {
        self.by_seq.get(&seq)
    }

    /// The entry of a user.
    pub fn user(&self, id: &str) -> Option<&Entry> {
        self.seq_of(id).and_then(|seq| self.entry(seq))
    }

    /// The role of an entry.
    pub fn role(&self, entry: &Entry) -> &str {
        self.roles.get(entry.role as usize).map_or("", |r| r)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Number of users with this status, or (`None`) that are not deleted: what an unfiltered
    /// list counts.
    pub fn count_with_status(&self, status: Option<Status>) -> u64 {
        match status {
            Some(s) => self.status_counts[status_slot(s)],
            None => self.by_seq.len() as u64 - self.status_counts[status_slot(Status::Deleted)],
        }
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// Creation positions of users with a term starting with every word of `search`.
    pub fn search(&self, search: &str) -> BTreeSet<Position> {
        let mut result: Option<BTreeSet<Position>> = None;
        for word in search.to_lowercase().split_whitespace() {
            let (lo, hi) = (head(word, 0), head(word, u8::MAX));
            let matches: BTreeSet<Position> = self
                .terms
                .range((lo, 0)..=(hi, Position::MAX))
                .map(|(_, seq)| *seq)
                .filter(|seq| {
                    // Eight bytes decide for short words; longer ones are checked whole.
                    word.len() <= 8
                        || self
                            .entry(*seq)
                            .is_some_and(|e| e.terms().any(|t| t.starts_with(word)))
                })
                .collect();
            result = Some(match result {
                None => matches,
                Some(r) => r.intersection(&matches).copied().collect(),
            });
        }
        result.unwrap_or_default()
    }

    /// Every user in creation order (ascending).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (Position, &Entry)> {
        self.by_seq.iter().map(|(s, e)| (*s, e))
    }

    /// Users in creation order within a range of positions.
    pub fn range(
        &self,
        range: impl std::ops::RangeBounds<Position>,
    ) -> impl DoubleEndedIterator<Item = (Position, &Entry)> {
        self.by_seq.range(range).map(|(s, e)| (*s, e))
    }
}

fn status_slot(status: Status) -> usize {
    match status {
        Status::Active => 0,
        Status::Blocked => 1,
        Status::Deactivated => 2,
        Status::Deleted => 3,
    }
}

/// Every organization's catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    orgs: HashMap<String, OrgCatalog>,
}

impl Catalog {
    /// The catalog of one organization, if it has users.
    /// The organizations it holds.
    pub fn org_names(&self) -> Vec<String> {
        self.orgs.keys().cloned().collect()
    }

    /// One organization's part.
    pub fn org(&self, org: &str) -> Option<&OrgCatalog> {
        self.orgs.get(org)
    }

    /// The catalog of one organization, created if missing.
    pub fn org_mut(&mut self, org: &str) -> &mut OrgCatalog {
        self.orgs.entry(org.to_owned()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_domain::user::{PersonalProfile, PublicProfile, UserPersonal, UserPublic};
    use roster_domain::{OrgId, UserId};

    fn user(id: &str, username: &str, name: &str) -> User {
        let t = chrono::Utc::now();
        User {
            public: UserPublic {
                id: UserId::parse(id).unwrap(),
                organization_id: OrgId::default_org(),
                key_id: None,
                profile: PublicProfile::default(),
                email_verified: false,
                phone_verified: false,
                blocked: false,
                wallet: Default::default(),
                created_at: t,
                updated_at: t,
                deactivated_at: None,
                deactivated_by: None,
                deleted_at: None,
                deletion: None,
                erased: false,
                sessions_valid_from: 1,
                version: 1,
                tokens: Default::default(),
                teams: Default::default(),
                expires_at: None,
            },
            personal: UserPersonal {
                profile: PersonalProfile {
                    username: Some(username.into()),
                    name: Some(name.into()),
                    ..Default::default()
                },
                password_hash: None,
                identities: Vec::new(),
            },
        }
    }

    #[test]
    fn blind_hash_indexes_follow_updates_and_removals() {
        let h = |b: u8| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([b; 16]);
        let idx = |u: u8, e: Option<u8>| Indexed {
            username: Some(h(u)),
            email: e.map(h),
        };
        let mut c = OrgCatalog::default();
        c.upsert(1, &user("u1", "alice", "A"), &idx(1, Some(9)));
        c.upsert(2, &user("u2", "alice", "B"), &idx(1, None));
        assert_eq!(
            c.ids_by(Unique::Username, &h(1)),
            ["u1", "u2"],
            "a shared username names both"
        );
        assert_eq!(c.ids_by(Unique::Email, &h(9)), ["u1"]);
        c.upsert(1, &user("u1", "al", "A"), &idx(2, None));
        assert_eq!(c.ids_by(Unique::Username, &h(1)), ["u2"]);
        assert_eq!(c.ids_by(Unique::Username, &h(2)), ["u1"]);
        assert!(
            c.ids_by(Unique::Email, &h(9)).is_empty(),
            "the old email is gone"
        );
        c.remove("u2");
        assert!(c.ids_by(Unique::Username, &h(1)).is_empty());
        assert!(c.ids_by(Unique::Username, "not a hash").is_empty());
    }

    #[test]
    fn prefix_search_over_words_and_fields() {
        let mut c = OrgCatalog::default();
        c.upsert(
            1,
            &user("u1", "alice", "Alice Liddell"),
            &Indexed::default(),
        );
        c.upsert(2, &user("u2", "bob", "Bob Alder"), &Indexed::default());
        c.upsert(3, &user("al-3", "carol", "Carol"), &Indexed::default());
        assert_eq!(c.search("al"), BTreeSet::from([1, 2, 3]));
        assert_eq!(c.search("lid"), BTreeSet::from([1]));
        assert_eq!(c.search("ALICE LID"), BTreeSet::from([1]));
        assert_eq!(c.search("bob ali"), BTreeSet::new());
        // An update replaces the old terms.
        c.upsert(1, &user("u1", "zed", "Zed"), &Indexed::default());
        assert_eq!(c.search("alice"), BTreeSet::new());
        c.remove("u2");
        assert_eq!(c.search("al"), BTreeSet::from([3]));
        assert_eq!(c.len(), 2);
        assert_eq!(c.seq_of("al-3"), Some(3));
        assert_eq!(c.seq_of("u2"), None);
    }

    #[test]
    fn words_longer_than_the_indexed_head_are_checked_whole() {
        let mut c = OrgCatalog::default();
        c.upsert(
            1,
            &user("u1", "christopher", "Christopher Robin"),
            &Indexed::default(),
        );
        c.upsert(
            2,
            &user("u2", "christophine", "Christophine"),
            &Indexed::default(),
        );
        assert_eq!(c.search("christop"), BTreeSet::from([1, 2]));
        assert_eq!(c.search("christoph"), BTreeSet::from([1, 2]));
        assert_eq!(c.search("christophe"), BTreeSet::from([1]));
        assert_eq!(c.search("christophi"), BTreeSet::from([2]));
        assert_eq!(c.search("chr"), BTreeSet::from([1, 2]));
        assert_eq!(c.search("ch robi"), BTreeSet::from([1]));
    }

    #[test]
    fn counts_by_status_follow_updates_and_removals() {
        let mut c = OrgCatalog::default();
        c.upsert(1, &user("u1", "alice", "Alice"), &Indexed::default());
        c.upsert(2, &user("u2", "bob", "Bob"), &Indexed::default());
        let mut deleted = user("u3", "carol", "Carol");
        deleted.public.deleted_at = Some(deleted.public.created_at);
        c.upsert(3, &deleted, &Indexed::default());
        assert_eq!(c.count_with_status(None), 2, "deleted users are left out");
        assert_eq!(c.count_with_status(Some(Status::Deleted)), 1);
        let mut blocked = user("u1", "alice", "Alice");
        blocked.public.blocked = true;
        c.upsert(1, &blocked, &Indexed::default());
        assert_eq!(c.count_with_status(Some(Status::Active)), 1);
        assert_eq!(c.count_with_status(Some(Status::Blocked)), 1);
        c.remove("u3");
        c.remove("u1");
        assert_eq!(c.count_with_status(None), 1);
        assert_eq!(c.count_with_status(Some(Status::Deleted)), 0);
        assert_eq!(c.count_with_status(Some(Status::Blocked)), 0);
    }

    #[test]
    fn many_ids_stay_findable_as_the_table_grows() {
        // Username hashes: 16 bytes of `i`; every tenth user shares one with the one before.
        let hash = |i: u64| {
            let shared = if i % 10 == 9 { i - 1 } else { i };
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(u128::from(shared).to_be_bytes())
        };
        let mut c = OrgCatalog::default();
        for i in 0..5000u64 {
            let indexed = Indexed {
                username: Some(hash(i)),
                email: None,
            };
            c.upsert(
                i + 1,
                &user(&format!("user-{i}"), &format!("n{i}"), "N"),
                &indexed,
            );
        }
        for i in (0..5000u64).step_by(7) {
            assert_eq!(c.seq_of(&format!("user-{i}")), Some(i + 1));
        }
        assert_eq!(
            c.ids_by(Unique::Username, &hash(18)),
            ["user-18", "user-19"]
        );
        assert_eq!(c.ids_by(Unique::Username, &hash(4321)), ["user-4321"]);
        for i in (0..5000u64).step_by(2) {
            c.remove(&format!("user-{i}"));
        }
        assert_eq!(c.len(), 2500);
        assert_eq!(c.seq_of("user-3"), Some(4));
        assert_eq!(c.seq_of("user-4"), None);
        assert_eq!(c.ids_by(Unique::Username, &hash(18)), ["user-19"]);
        assert!(c.ids_by(Unique::Username, &hash(4320)).is_empty());
        assert_eq!(c.ids_by(Unique::Username, &hash(4321)), ["user-4321"]);
    }
}
