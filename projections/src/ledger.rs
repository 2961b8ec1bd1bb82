//! The wallet ledger (docs/contract.md §3 `GET /v1/users/{id}/wallet/ledger`): one item per
//! `WalletAdjusted` with `update_ledger`, keyed by the event's position. The caller's metadata
//! is personal: sealed under the user's key, so erasing the user erases it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use roster_domain::KeyId;
use roster_domain::user::JsonObject;
use roster_eventlog::Position;
use roster_vault::DataKey;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::codec::{Codec, CodecError, Layout, open_parts, seal_parts};
use crate::layout::{Table, ledger_key, prefix_end};
use crate::store::{ReadModels, StoreError};

/// One ledger item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LedgerItem {
    /// The id of the event that changed the wallet.
    pub id: String,
    /// The change per currency.
    pub changeset: BTreeMap<String, i64>,
    /// The caller's metadata (`{}` once erased).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// When the change was made.
    pub create_time: DateTime<Utc>,
}

/// The public part of a stored item: event id, changeset, time (microseconds).
type Public = (String, BTreeMap<String, i64>, i64);

fn aad(key: &[u8]) -> Vec<u8> {
    let mut aad = b"ledger2/".to_vec();
    aad.extend_from_slice(key);
    aad
}

impl LedgerItem {
    /// The stored bytes under `key`, the metadata sealed under the user's key (dropped if
    /// the user has none any more).
    pub fn seal(&self, key: &[u8], data_key: Option<(KeyId, &DataKey)>) -> Vec<u8> {
        let public: Public = (
            self.id.clone(),
            self.changeset.clone(),
            self.create_time.timestamp_micros(),
        );
        seal_parts(
            &public,
            &self.metadata,
            self.metadata.is_empty(),
            data_key,
            &aad(key),
            Layout::Positional,
        )
    }

    async fn open(bytes: &[u8], key: &[u8], codec: &Codec) -> Result<Self, CodecError> {
        let ((id, changeset, micros), metadata, _erased): (Public, JsonObject, bool) =
            open_parts(codec, bytes, |_: &Public| aad(key), "ledger item").await?;
        Ok(Self {
            id,
            changeset,
            metadata,
            create_time: crate::projector::event_time(micros),
        })
    }
}

/// A page of ledger items, newest first.
#[derive(Clone, Debug)]
pub struct LedgerPage {
    /// The items.
    pub items: Vec<LedgerItem>,
    /// Position to pass as `before` for the next (older) page.
    pub next_cursor: Option<Position>,
}

impl ReadModels {
    /// A user's ledger, newest first, before position `before` if given.
    pub async fn ledger(
        &self,
        org: &str,
        id: &str,
        limit: usize,
        before: Option<Position>,
    ) -> Result<LedgerPage, StoreError> {
        let prefix = Table::Ledger.prefix(&[org.as_bytes(), id.as_bytes()]);
        let end = match before {
            Some(p) => ledger_key(org, id, p),
            None => prefix_end(&prefix),
        };
        let mut items = Vec::with_capacity(limit.min(128));
        let mut last = None;
        let mut more = false;
        for entry in self.tree.range(prefix.clone()..end).rev() {
            let (key, bytes) = entry?;
            if items.len() == limit {
                more = true;
                break;
            }
            let position =
                Position::from_be_bytes(key[prefix.len()..].try_into().unwrap_or([0; 8]));
            items.push(LedgerItem::open(&bytes, &key, &self.codec).await?);
            last = Some(position);
        }
        Ok(LedgerPage {
            items,
            next_cursor: if more { last } else { None },
        })
    }
}
