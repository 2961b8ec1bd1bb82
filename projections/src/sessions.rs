//! The sessions read model (docs/contract.md §3 `GET /v1/users/{id}/sessions`, §5): one row per
//! session, keyed org, user, session (session ids are ULIDs, so a user's sessions sort by start).
//! The ip and user agent of the sign-in are personal: sealed under the user's data key like every
//! personal part, so erasing the user erases them.
//!
//! Beside it, in memory, the set of revoked sessions whose tokens could still be unexpired:
//! the per-request token check looks a session up there (with the catalog's user status and
//! `sessions_valid_from`), so revocation takes effect as soon as the projector has applied it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use roster_domain::KeyId;
use roster_domain::session::{SessionEvent, SessionMethod};
use roster_eventlog::RecordedEvent;
use roster_vault::DataKey;
use serde::{Deserialize, Serialize};

use crate::codec::{Codec, CodecError, DecodedEvent, Layout, open_parts, seal_parts};
use crate::layout::{Table, org_of, prefix_end, session_key};
use crate::projector::event_time;
use crate::store::{ReadModels, StoreError};

/// How long after its refresh token's expiry a revoked session stays in the in-memory set: an
/// access token minted by the last refresh outlives the refresh token by at most its own
/// lifetime (15 minutes); an hour leaves room.
const REVOKED_MARGIN_MICROS: i64 = 3600 * 1_000_000;

/// One session: what is public and where it signed in from.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRow {
    /// Ids, method, times, revocation.
    pub info: SessionInfo,
    /// The sign-in's address and user agent (personal).
    pub from: SignedInFrom,
}

/// The public part of a session row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// How the client signed in.
    pub method: SessionMethod,
    /// The user version the sign-in was checked against.
    pub user_version: u64,
    /// When the session started.
    #[serde(with = "roster_domain::time::micros")]
    pub created_at: DateTime<Utc>,
    /// When its refresh token was last exchanged.
    #[serde(with = "roster_domain::time::micros_option")]
    pub refreshed_at: Option<DateTime<Utc>>,
    /// When its current refresh token expires (to the nanosecond, as the event says).
    pub expires_at: DateTime<Utc>,
    /// When it was revoked (by itself; a user-wide revocation shows through `revoked` in the API).
    #[serde(with = "roster_domain::time::micros_option")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
    /// The data key sealing the personal part.
    pub key_id: Option<KeyId>,
}

/// The personal part of a session row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SignedInFrom {
    /// The address it signed in from (`None` once erased).
    pub ip: Option<String>,
    /// The user agent it signed in with (`None` once erased).
    pub user_agent: Option<String>,
}

fn aad(key: &[u8]) -> Vec<u8> {
    let mut aad = b"session2/".to_vec();
    aad.extend_from_slice(key);
    aad
}

impl SessionRow {
    /// The stored bytes under `key`, ip and user agent sealed under `data_key` (dropped if
    /// the user's key is gone).
    pub fn seal(&self, key: &[u8], data_key: Option<&DataKey>) -> Vec<u8> {
        seal_parts(
            &self.info,
            &self.from,
            self.from == SignedInFrom::default(),
            self.info.key_id.zip(data_key),
            &aad(key),
            Layout::Positional,
        )
    }

    /// Reads a stored row, opening ip and user agent if the key still exists.
    pub async fn open(bytes: &[u8], codec: &Codec, key: &[u8]) -> Result<Self, CodecError> {
        let (info, from, _erased) =
            open_parts(codec, bytes, |_: &SessionInfo| aad(key), "session row").await?;
        Ok(Self { info, from })
    }

    fn revoked_until(info: &SessionInfo) -> Option<i64> {
        info.revoked_at?;
        Some(info.expires_at.timestamp_micros() + REVOKED_MARGIN_MICROS)
    }
}

/// Revoked sessions whose tokens could still be unexpired, by `org NUL session id`, with the
/// time after which they can be forgotten.
#[derive(Debug, Default)]
pub struct RevokedSessions {
    map: HashMap<String, i64>,
    /// Size at the last pruning: prune again once the set has doubled.
    pruned_at_len: usize,
}

fn revoked_key(org: &str, session_id: &str) -> String {
    format!("{org}\0{session_id}")
}

impl RevokedSessions {
    fn insert(&mut self, org: &str, session_id: &str, until: i64) {
        self.map.insert(revoked_key(org, session_id), until);
        if self.map.len() > (2 * self.pruned_at_len).max(1024) {
            let now = Utc::now().timestamp_micros();
            self.map.retain(|_, until| *until > now);
            self.pruned_at_len = self.map.len();
        }
    }

    /// Whether the session is revoked.
    pub fn contains(&self, org: &str, session_id: &str) -> bool {
        self.map.contains_key(&revoked_key(org, session_id))
    }
}

/// Session rows a batch changes.
#[derive(Default)]
pub(crate) struct SessionChanges {
    /// Row key → row after the batch.
    rows: Vec<(Vec<u8>, SessionRow)>,
    /// Users hard-deleted in the batch: every session row of theirs goes.
    purge: Vec<Vec<u8>>,
}

impl SessionChanges {
    /// Drops rows of a user the batch hard-deletes (the purge removes the stored ones).
    pub fn purge_user(&mut self, org: &str, user_id: &str) {
        let prefix = Table::Sessions.prefix(&[org.as_bytes(), user_id.as_bytes()]);
        self.rows.retain(|(k, _)| !k.starts_with(&prefix));
        self.purge.push(prefix);
    }
}

impl ReadModels {
    /// Applies one session event to the batch's changes.
    pub(crate) async fn apply_session_event(
        &self,
        changes: &mut SessionChanges,
        org: &str,
        session_id: &str,
        record: &RecordedEvent,
        decoded: DecodedEvent<SessionEvent>,
    ) -> Result<(), StoreError> {
        let event = &decoded.event;
        let key = session_key(org, event.user_id(), session_id);
        let current = match changes.rows.iter().position(|(k, _)| *k == key) {
            Some(i) => Some(changes.rows.remove(i).1),
            None => match self.tree.get(&key)? {
                Some(bytes) => Some(SessionRow::open(&bytes, &self.codec, &key).await?),
                None => None,
            },
        };
        let at = event_time(record.time);
        let row = match (current, event) {
            (None, SessionEvent::SessionStarted(s)) => SessionRow {
                info: SessionInfo {
                    id: session_id.to_owned(),
                    user_id: s.user_id.to_string(),
                    method: s.method,
                    user_version: s.user_version,
                    created_at: at,
                    refreshed_at: None,
                    expires_at: s.expires_at,
                    revoked_at: None,
                    revoked_reason: None,
                    key_id: s.key_id,
                },
                from: SignedInFrom {
                    ip: decoded.meta.ip.clone(),
                    user_agent: decoded.meta.user_agent.clone(),
                },
            },
            // A session of a user hard-deleted in the meantime, or a stray event: nothing to do.
            (None, _) => return Ok(()),
            (Some(row), SessionEvent::SessionStarted(_)) => row,
            (Some(mut row), SessionEvent::SessionRefreshed(r)) => {
                row.info.refreshed_at = Some(at);
                row.info.expires_at = r.expires_at;
                row
            }
            (Some(mut row), SessionEvent::SessionRenewed(r)) => {
                row.info.refreshed_at = Some(at);
                row.info.expires_at = r.expires_at;
                row.info.user_version = r.user_version;
                row
            }
            (Some(mut row), SessionEvent::SessionRevoked(r)) => {
                if row.info.revoked_at.is_none() {
                    row.info.revoked_at = Some(at);
                    row.info.revoked_reason = Some(r.reason.clone());
                }
                row
            }
        };
        changes.rows.push((key, row));
        Ok(())
    }

    /// Adds a batch's session changes to its write.
    pub(crate) async fn session_writes(
        &self,
        changes: &SessionChanges,
        batch: &mut sled::Batch,
    ) -> Result<(), StoreError> {
        for prefix in &changes.purge {
            for key in self.tree.scan_prefix(prefix).keys() {
                batch.remove(key?);
            }
        }
        for (key, row) in &changes.rows {
            let data_key = self.codec.key(row.info.key_id).await?;
            batch.insert(
                key.clone(),
                row.seal(key, data_key.as_ref().map(|(_, k)| k)),
            );
        }
        Ok(())
    }

    /// After a batch's commit: remembers the sessions it revoked.
    pub(crate) fn note_revoked(&self, changes: &SessionChanges) {
        let mut revoked = self.revoked_sessions.write();
        for (key, row) in &changes.rows {
            if let Some(until) = SessionRow::revoked_until(&row.info) {
                revoked.insert(&org_of(key), &row.info.id, until);
            }
        }
    }

    /// Rebuilds the in-memory set of revoked sessions from the rows (at start-up): only their
    /// public parts are read.
    pub(crate) fn rebuild_revoked(&self) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_micros();
        let mut revoked = RevokedSessions::default();
        for item in self.tree.scan_prefix([Table::Sessions as u8]) {
            let (key, bytes) = item?;
            let stored = crate::codec::Stored::parse(&bytes)?;
            let info: SessionInfo = crate::codec::from_msgpack(stored.public, "session row")?;
            if let Some(until) = SessionRow::revoked_until(&info).filter(|u| *u > now) {
                revoked.insert(&org_of(&key), &info.id, until);
            }
        }
        revoked.pruned_at_len = revoked.map.len();
        *self.revoked_sessions.write() = revoked;
        Ok(())
    }

    /// Whether a session has been revoked (by itself; user-wide ends show in the catalog).
    pub fn session_revoked(&self, org: &str, session_id: &str) -> bool {
        self.revoked_sessions.read().contains(org, session_id)
    }

    /// The organizations that have users.
    pub fn organizations(&self) -> Vec<String> {
        self.catalog.read().org_names()
    }

    /// The ids of an organization's guests past their expiry at `now` (not deleted yet).
    pub async fn expired_guests(
        &self,
        org: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let guests: Vec<String> = {
            let catalog = self.catalog.read();
            let Some(c) = catalog.org(org) else {
                return Ok(Vec::new());
            };
            c.iter()
                .filter(|(_, e)| {
                    e.status != roster_domain::Status::Deleted
                        && c.role(e) == roster_domain::user::GUEST_ROLE
                })
                .map(|(_, e)| e.id.to_string())
                .collect()
        };
        let mut expired = Vec::new();
        for id in guests {
            if let Some(row) = self.get(org, &id).await?
                && row.user.expired(now)
            {
                expired.push(id);
            }
        }
        Ok(expired)
    }

    /// What the per-request token check needs of a user: its status, the user version its
    /// sessions must have signed in against, and whether it is a guest (whose expiry the
    /// caller checks on the row); `None` if the user does not exist.
    pub fn session_gate(
        &self,
        org: &str,
        user_id: &str,
    ) -> Option<(roster_domain::Status, u64, bool)> {
        let catalog = self.catalog.read();
        let org = catalog.org(org)?;
        let entry = org.user(user_id)?;
        let guest = org.role(entry) == roster_domain::user::GUEST_ROLE;
        Some((entry.status, entry.sessions_valid_from, guest))
    }

    /// A user's sessions, newest first, starting below the session id `before` if given.
    pub async fn sessions_of(
        &self,
        org: &str,
        user_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<(Vec<SessionRow>, bool), StoreError> {
        let prefix = Table::Sessions.prefix(&[org.as_bytes(), user_id.as_bytes()]);
        let end = match before {
            Some(id) => session_key(org, user_id, id),
            None => prefix_end(&prefix),
        };
        let mut rows = Vec::with_capacity(limit.min(128));
        let mut more = false;
        for item in self.tree.range(prefix..end).rev() {
            let (key, bytes) = item?;
            if rows.len() == limit {
                more = true;
                break;
            }
            rows.push(SessionRow::open(&bytes, &self.codec, &key).await?);
        }
        Ok((rows, more))
    }
}
