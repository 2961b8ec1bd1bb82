//! The sessions read model (API.md §3 `GET /v1/users/{id}/sessions`, §5): one row per session
//! in the `sessions` tree, keyed `org NUL user NUL session` (session ids are ULIDs, so a user's
//! sessions sort by start). The ip and user agent of the sign-in are personal: sealed under the
//! user's data key like every row, so erasing the user erases them.
//!
//! Beside it, in memory, the set of revoked sessions whose tokens could still be unexpired:
//! the per-request token check looks a session up there (with the catalog's user status and
//! `sessions_valid_from`), so revocation takes effect as soon as the projector has applied it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use roster_domain::session::{Session, SessionEvent, SessionMethod};
use roster_eventlog::RecordedEvent;
use roster_vault::KeyId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::codec::{Codec, CodecError, seal_object};
use crate::projector::{event_time, to_object};
use crate::rows::user_key;
use crate::store::{ReadModels, StoreError};

/// How long after its refresh token's expiry a revoked session stays in the in-memory set: an
/// access token minted by the last refresh outlives the refresh token by at most its own
/// lifetime (15 minutes); an hour leaves room.
const REVOKED_MARGIN_MICROS: i64 = 3600 * 1_000_000;

/// One session as `GET /v1/users/{id}/sessions` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// How the client signed in.
    pub method: SessionMethod,
    /// The user version the sign-in was checked against.
    pub user_version: u64,
    /// When the session started.
    pub created_at: DateTime<Utc>,
    /// When its refresh token was last exchanged.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// When its current refresh token expires.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked (by itself; a user-wide revocation shows through `revoked` in the API).
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
    /// The address it signed in from (`null` once erased).
    #[serde(default)]
    pub ip: Option<String>,
    /// The user agent it signed in with (`null` once erased).
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The data key sealing `ip` and `user_agent`.
    #[serde(default)]
    pub key_id: Option<String>,
}

/// Key of a session row.
pub fn session_key(org: &str, user_id: &str, session_id: &str) -> Vec<u8> {
    let mut key = session_prefix(org, user_id);
    key.extend_from_slice(session_id.as_bytes());
    key
}

/// `org NUL user NUL`: every session of one user.
pub fn session_prefix(org: &str, user_id: &str) -> Vec<u8> {
    let mut key = user_key(org, user_id);
    key.push(0);
    key
}

fn aad(key: &[u8]) -> Vec<u8> {
    let mut aad = b"session/".to_vec();
    aad.extend_from_slice(key);
    aad
}

fn revoked_key(org: &str, session_id: &str) -> String {
    format!("{org}\0{session_id}")
}

impl SessionRow {
    /// Serializes the row, sealing ip and user agent under its key (dropped if the key is gone).
    pub async fn seal(&self, codec: &Codec, key: &[u8]) -> Result<Vec<u8>, CodecError> {
        let kid = self.key_id.as_deref().and_then(|k| k.parse::<KeyId>().ok());
        let data_key = match kid {
            Some(kid) => codec.keys().get(kid).await?.map(|k| (kid, k)),
            None => None,
        };
        let object = seal_object(
            to_object(self),
            data_key.as_ref().map(|(i, k)| (*i, k)),
            &aad(key),
        );
        Ok(serde_json::to_vec(&object).expect("JSON values serialize"))
    }

    /// Reads a stored row, opening ip and user agent if the key still exists.
    pub async fn open(bytes: &[u8], codec: &Codec, key: &[u8]) -> Result<Self, CodecError> {
        let object: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|e| CodecError::Json(e.to_string()))?;
        let (object, _) = codec.open_object(object, &aad(key)).await?;
        serde_json::from_value(Value::Object(object)).map_err(|e| CodecError::Json(e.to_string()))
    }

    /// The public part of a stored row, without opening anything (for start-up).
    fn public(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    fn revoked_until(&self) -> Option<i64> {
        self.revoked_at?;
        Some(self.expires_at.timestamp_micros() + REVOKED_MARGIN_MICROS)
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
    pub rows: Vec<(Vec<u8>, SessionRow)>,
    /// Users hard-deleted in the batch: every session row of theirs goes.
    pub purge: Vec<Vec<u8>>,
}

impl SessionChanges {
    /// Drops rows of a user the batch hard-deletes (the purge removes the stored ones).
    pub fn purge_user(&mut self, org: &str, user_id: &str) {
        let prefix = session_prefix(org, user_id);
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
        event: &RecordedEvent,
    ) -> Result<(), StoreError> {
        let Ok(session_event) = SessionEvent::from_data(&event.event_type, &event.data) else {
            tracing::warn!(event_type = %event.event_type, position = event.position, "skipping an unreadable session event");
            return Ok(());
        };
        let key = session_key(org, session_event.user_id(), session_id);
        let current = match changes.rows.iter().position(|(k, _)| *k == key) {
            Some(i) => Some(changes.rows.remove(i).1),
            None => match self.session_rows.get(&key)? {
                Some(bytes) => Some(SessionRow::open(&bytes, &self.codec, &key).await?),
                None => None,
            },
        };
        let at = event_time(event.time);
        let row = match (current, &session_event) {
            (None, SessionEvent::SessionStarted(s)) => {
                let (_, meta, _) = self.codec.open_json(event).await?;
                let text = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_owned);
                SessionRow {
                    id: session_id.to_owned(),
                    user_id: s.user_id.clone(),
                    method: s.method,
                    user_version: s.user_version,
                    created_at: at,
                    refreshed_at: None,
                    expires_at: s.expires_at,
                    revoked_at: None,
                    revoked_reason: None,
                    ip: text("ip"),
                    user_agent: text("user_agent"),
                    key_id: s.key_id.clone(),
                }
            }
            // A session of a user hard-deleted in the meantime, or a stray event: nothing to do.
            (None, _) => return Ok(()),
            (Some(row), SessionEvent::SessionStarted(_)) => row,
            (Some(mut row), SessionEvent::SessionRefreshed(r)) => {
                row.refreshed_at = Some(at);
                row.expires_at = r.expires_at;
                row
            }
            (Some(mut row), SessionEvent::SessionRevoked(r)) => {
                if row.revoked_at.is_none() {
                    row.revoked_at = Some(at);
                    row.revoked_reason = Some(r.reason.clone());
                }
                row
            }
        };
        changes.rows.push((key, row));
        Ok(())
    }

    /// The tree operations of a batch's session changes.
    pub(crate) async fn session_ops(
        &self,
        changes: &SessionChanges,
    ) -> Result<Vec<(Vec<u8>, Option<Vec<u8>>)>, StoreError> {
        let mut ops = Vec::new();
        for prefix in &changes.purge {
            for item in self.session_rows.scan_prefix(prefix) {
                ops.push((item?.0.to_vec(), None));
            }
        }
        for (key, row) in &changes.rows {
            ops.push((key.clone(), Some(row.seal(&self.codec, key).await?)));
        }
        Ok(ops)
    }

    /// After a batch's commit: remembers the sessions it revoked.
    pub(crate) fn note_revoked(&self, changes: &SessionChanges) {
        let mut revoked = self.revoked_sessions.write();
        for (key, row) in &changes.rows {
            if let Some(until) = row.revoked_until() {
                let org = key.split(|b| *b == 0).next().unwrap_or_default();
                revoked.insert(&String::from_utf8_lossy(org), &row.id, until);
            }
        }
    }

    /// Rebuilds the in-memory set of revoked sessions from the rows (at start-up).
    pub(crate) fn rebuild_revoked(&self) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_micros();
        let mut revoked = RevokedSessions::default();
        for item in self.session_rows.iter() {
            let (key, bytes) = item?;
            if let Some(row) = SessionRow::public(&bytes)
                && let Some(until) = row.revoked_until().filter(|u| *u > now)
            {
                let org = key.split(|b| *b == 0).next().unwrap_or_default();
                revoked.insert(&String::from_utf8_lossy(org), &row.id, until);
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

    /// What the per-request token check needs of a user: its status and the user version its
    /// sessions must have signed in against (`None` if the user does not exist).
    pub fn session_gate(&self, org: &str, user_id: &str) -> Option<(roster_domain::Status, u64)> {
        let catalog = self.catalog.read();
        let entry = catalog.org(org)?.user(user_id)?;
        Some((entry.status, entry.sessions_valid_from))
    }

    /// A user's sessions, newest first, starting below the session id `before` if given.
    pub async fn sessions_of(
        &self,
        org: &str,
        user_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<(Vec<SessionRow>, bool), StoreError> {
        let prefix = session_prefix(org, user_id);
        let end = match before {
            Some(id) => session_key(org, user_id, id),
            None => {
                let mut end = prefix.clone();
                end.push(0xff);
                end
            }
        };
        let mut rows = Vec::with_capacity(limit.min(128));
        let mut more = false;
        for item in self.session_rows.range(prefix..end).rev() {
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

/// A session's state folded from its stream's records (`None` if it has none).
pub fn fold_session(org: &str, session_id: &str, records: &[RecordedEvent]) -> Option<Session> {
    records.iter().fold(None, |state, record| {
        match SessionEvent::from_data(&record.event_type, &record.data) {
            Ok(event) => Session::apply(
                state,
                &event,
                (org, session_id),
                event_time(record.time),
                record.version,
            ),
            Err(_) => state,
        }
    })
}
