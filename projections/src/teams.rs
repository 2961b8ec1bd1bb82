//! The teams read models (docs/teams.md): one row per team (its name and member count, as its
//! aggregate folds them) and one per membership, keyed by team, so a team's members are one
//! prefix scan. Nothing here is personal (the users a membership names are ids): stored as
//! MessagePack like the tasks.

use roster_domain::Aggregate;
use roster_domain::team::{Membership, Team, TeamEvent};
use roster_eventlog::RecordedEvent;

use crate::codec::{CodecError, FORMAT_2, Layout, from_msgpack, to_msgpack};
use crate::layout::{Table, membership_key, prefix_end, team_key};
use crate::projector::{event_time, recorded};
use crate::store::{ReadModels, StoreError};

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_2];
    to_msgpack(value, Layout::Named, &mut out);
    out
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, CodecError> {
    match bytes.split_first() {
        Some((&FORMAT_2, rest)) => from_msgpack(rest, what),
        _ => Err(CodecError::Malformed(format!("{what}: not format 2"))),
    }
}

/// What a batch changes of teams: rows by key, in order (`None`: removed).
#[derive(Default)]
pub(crate) struct TeamChanges {
    teams: Vec<(Vec<u8>, Option<Team>)>,
    memberships: Vec<(Vec<u8>, Option<Membership>)>,
}

impl TeamChanges {
    fn team(&mut self, key: &[u8]) -> Option<Option<Team>> {
        let i = self.teams.iter().position(|(k, _)| k == key)?;
        Some(self.teams.remove(i).1)
    }

    fn membership(&mut self, key: &[u8]) -> Option<Option<Membership>> {
        let i = self.memberships.iter().position(|(k, _)| k == key)?;
        Some(self.memberships.remove(i).1)
    }

    /// The batch's writes.
    pub(crate) fn write(&self, batch: &mut sled::Batch) {
        let rows = self.teams.iter().map(|(k, t)| (k, t.as_ref().map(encode)));
        let members = self
            .memberships
            .iter()
            .map(|(k, m)| (k, m.as_ref().map(encode)));
        for (key, value) in rows.chain(members) {
            match value {
                Some(bytes) => batch.insert(key.clone(), bytes),
                None => batch.remove(key.clone()),
            }
        }
    }
}

impl ReadModels {
    /// Folds a team event into the batch's changes.
    pub(crate) fn apply_team_event(
        &self,
        changes: &mut TeamChanges,
        org: &str,
        id: &str,
        record: &RecordedEvent,
        event: &TeamEvent,
    ) -> Result<(), StoreError> {
        let key = team_key(org, id);
        let current = match changes.team(&key) {
            Some(team) => team,
            None => self.team(org, id)?,
        };
        changes
            .teams
            .push((key, Team::apply(current, event, recorded(org, id, record))));
        let (membership_id, after) = match event {
            TeamEvent::MemberAdded(m) => (
                &m.membership_id,
                Some(Membership {
                    id: m.membership_id.clone(),
                    team_id: id.to_owned(),
                    user_id: m.user_id.clone(),
                    roles: m.roles.clone(),
                    joined_at: event_time(record.time),
                }),
            ),
            TeamEvent::MemberRolesChanged(c) => {
                let key = membership_key(org, id, &c.membership_id);
                let current = match changes.membership(&key) {
                    Some(m) => m,
                    None => self.membership(org, id, &c.membership_id)?,
                };
                let after = current.map(|mut m| {
                    m.roles.clone_from(&c.roles);
                    m
                });
                (&c.membership_id, after)
            }
            TeamEvent::MemberRemoved(m) => (&m.membership_id, None),
            _ => return Ok(()),
        };
        let key = membership_key(org, id, membership_id);
        changes.membership(&key);
        changes.memberships.push((key, after));
        Ok(())
    }

    /// A team.
    pub fn team(&self, org: &str, id: &str) -> Result<Option<Team>, StoreError> {
        match self.tree.get(team_key(org, id))? {
            Some(bytes) => Ok(Some(decode(&bytes, "team")?)),
            None => Ok(None),
        }
    }

    /// An organization's teams in id order, after `cursor` (an id), those `keep` accepts; at
    /// most `limit` of them, and how many it accepts in all.
    pub fn teams(
        &self,
        org: &str,
        cursor: Option<&str>,
        limit: usize,
        keep: impl Fn(&Team) -> bool,
    ) -> Result<(Vec<Team>, u64), StoreError> {
        let prefix = Table::Teams.prefix(&[org.as_bytes()]);
        let (mut page, mut total) = (Vec::new(), 0u64);
        for item in self.tree.scan_prefix(&prefix) {
            let (_, bytes) = item?;
            let team: Team = decode(&bytes, "team")?;
            if !keep(&team) {
                continue;
            }
            total += 1;
            if page.len() < limit && cursor.is_none_or(|c| team.id.as_str() > c) {
                page.push(team);
            }
        }
        Ok((page, total))
    }

    /// A membership.
    pub fn membership(
        &self,
        org: &str,
        team: &str,
        id: &str,
    ) -> Result<Option<Membership>, StoreError> {
        match self.tree.get(membership_key(org, team, id))? {
            Some(bytes) => Ok(Some(decode(&bytes, "membership")?)),
            None => Ok(None),
        }
    }

    /// A team's memberships in id order (ids are ULIDs: the order they began), after `cursor`
    /// (a membership id), at most `limit`.
    pub fn memberships(
        &self,
        org: &str,
        team: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Membership>, StoreError> {
        let prefix = Table::Memberships.prefix(&[org.as_bytes(), team.as_bytes()]);
        let start = match cursor {
            Some(c) => {
                let mut key = membership_key(org, team, c);
                key.push(0);
                key
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in self.tree.range(start..prefix_end(&prefix)).take(limit) {
            let (_, bytes) = item?;
            out.push(decode(&bytes, "membership")?);
        }
        Ok(out)
    }

    /// The ids of a team's members.
    pub fn member_ids(&self, org: &str, team: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .memberships(org, team, None, usize::MAX)?
            .into_iter()
            .map(|m| m.user_id)
            .collect())
    }
}
