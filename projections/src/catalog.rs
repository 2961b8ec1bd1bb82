//! The in-memory catalog: list order, status/role filters and prefix search, per organization.
//!
//! Search terms are personal data, so they live only in memory (DESIGN.md): the catalog is
//! rebuilt from the sealed `users` rows at start-up and kept current by the projector.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use roster_domain::{Status, User};
use roster_eventlog::Position;

/// What the catalog keeps per user.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// User id.
    pub id: Box<str>,
    /// Status now.
    pub status: Status,
    /// Role now (interned).
    pub role: Arc<str>,
    /// Sessions signed in against an earlier user version no longer work.
    pub sessions_valid_from: u64,
    /// Search terms now (lowercased).
    terms: Vec<Box<str>>,
}

/// One organization's catalog.
#[derive(Debug, Default)]
pub struct OrgCatalog {
    /// Users by creation position.
    by_seq: BTreeMap<Position, Entry>,
    /// Users per status (indexed by [`status_slot`]), kept with `by_seq`: the total of an
    /// unfiltered list page is then O(1), not a scan of every user.
    status_counts: [u64; 4],
    /// Creation position by user id.
    seq_of: HashMap<Box<str>, Position>,
    /// (term, seq) pairs; a prefix range scan finds the users whose term starts with a prefix.
    terms: BTreeSet<(Box<str>, Position)>,
    roles: HashMap<Box<str>, Arc<str>>,
}

/// Terms a user is found by: id, username, email, name and display name whole, and each word
/// of the names.
fn terms_of(user: &User) -> Vec<Box<str>> {
    let mut terms: Vec<String> = vec![user.id.to_lowercase()];
    let p = &user.profile;
    for value in [&p.username, &p.email].into_iter().flatten() {
        terms.push(value.to_lowercase());
    }
    for value in [&p.name, &p.display_name].into_iter().flatten() {
        let lower = value.to_lowercase();
        terms.extend(lower.split_whitespace().map(str::to_owned));
        terms.push(lower);
    }
    terms.sort();
    terms.dedup();
    terms
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(String::into_boxed_str)
        .collect()
}

impl OrgCatalog {
    /// Adds or updates a user created at `seq`.
    pub fn upsert(&mut self, seq: Position, user: &User) {
        self.remove(&user.id);
        let role = match self.roles.get(user.profile.role.as_str()) {
            Some(r) => r.clone(),
            None => {
                let r: Arc<str> = Arc::from(user.profile.role.as_str());
                self.roles
                    .insert(user.profile.role.clone().into_boxed_str(), r.clone());
                r
            }
        };
        let terms = terms_of(user);
        for term in &terms {
            self.terms.insert((term.clone(), seq));
        }
        self.seq_of.insert(user.id.clone().into_boxed_str(), seq);
        self.status_counts[status_slot(user.status())] += 1;
        self.by_seq.insert(
            seq,
            Entry {
                id: user.id.clone().into_boxed_str(),
                status: user.status(),
                role,
                sessions_valid_from: user.sessions_valid_from,
                terms,
            },
        );
    }

    /// Removes a user (hard deletion).
    pub fn remove(&mut self, id: &str) {
        if let Some(seq) = self.seq_of.remove(id)
            && let Some(entry) = self.by_seq.remove(&seq)
        {
            self.status_counts[status_slot(entry.status)] -= 1;
            for term in entry.terms {
                self.terms.remove(&(term, seq));
            }
        }
    }

    /// Creation position of a user.
    pub fn seq_of(&self, id: &str) -> Option<Position> {
        self.seq_of.get(id).copied()
    }

    /// The entry at a creation position.
    pub fn entry(&self, seq: Position) -> Option<&Entry> {
        self.by_seq.get(&seq)
    }

    /// The entry of a user.
    pub fn user(&self, id: &str) -> Option<&Entry> {
        self.seq_of(id).and_then(|seq| self.entry(seq))
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
            let start = (Box::<str>::from(word), 0);
            let matches: BTreeSet<Position> = self
                .terms
                .range(start..)
                .take_while(|(term, _)| term.starts_with(word))
                .map(|(_, seq)| *seq)
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

    fn user(id: &str, username: &str, name: &str) -> User {
        let t = chrono::Utc::now();
        User {
            id: id.into(),
            organization_id: "default".into(),
            key_id: None,
            profile: roster_domain::Profile {
                username: Some(username.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            email_verified: false,
            phone_verified: false,
            blocked: false,
            wallet: Default::default(),
            password_hash: None,
            created_at: t,
            updated_at: t,
            deactivated_at: None,
            deactivated_by: None,
            deleted_at: None,
            deletion: None,
            erased: false,
            sessions_valid_from: 1,
            version: 1,
        }
    }

    #[test]
    fn prefix_search_over_words_and_fields() {
        let mut c = OrgCatalog::default();
        c.upsert(1, &user("u1", "alice", "Alice Liddell"));
        c.upsert(2, &user("u2", "bob", "Bob Alder"));
        c.upsert(3, &user("al-3", "carol", "Carol"));
        assert_eq!(c.search("al"), BTreeSet::from([1, 2, 3]));
        assert_eq!(c.search("lid"), BTreeSet::from([1]));
        assert_eq!(c.search("ALICE LID"), BTreeSet::from([1]));
        assert_eq!(c.search("bob ali"), BTreeSet::new());
        // An update replaces the old terms.
        c.upsert(1, &user("u1", "zed", "Zed"));
        assert_eq!(c.search("alice"), BTreeSet::new());
        c.remove("u2");
        assert_eq!(c.search("al"), BTreeSet::from([3]));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn counts_by_status_follow_updates_and_removals() {
        let mut c = OrgCatalog::default();
        c.upsert(1, &user("u1", "alice", "Alice"));
        c.upsert(2, &user("u2", "bob", "Bob"));
        let mut deleted = user("u3", "carol", "Carol");
        deleted.deleted_at = Some(deleted.created_at);
        c.upsert(3, &deleted);
        assert_eq!(c.count_with_status(None), 2, "deleted users are left out");
        assert_eq!(c.count_with_status(Some(Status::Deleted)), 1);
        let mut blocked = user("u1", "alice", "Alice");
        blocked.blocked = true;
        c.upsert(1, &blocked);
        assert_eq!(c.count_with_status(Some(Status::Active)), 1);
        assert_eq!(c.count_with_status(Some(Status::Blocked)), 1);
        c.remove("u3");
        c.remove("u1");
        assert_eq!(c.count_with_status(None), 1);
        assert_eq!(c.count_with_status(Some(Status::Deleted)), 0);
        assert_eq!(c.count_with_status(Some(Status::Blocked)), 0);
    }
}
