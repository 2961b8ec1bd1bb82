//! The wallet ledger read model (API.md §3 `GET /v1/users/{id}/wallet/ledger`): one item per
//! `WalletAdjusted` with `update_ledger`, newest first. Item metadata is personal, sealed under
//! the user's key like everything else.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use roster_eventlog::Position;
use roster_vault::KeyId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::codec::{Codec, CodecError, seal_object};
use crate::projector::to_object;
use crate::rows::user_key;
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

/// `org NUL id NUL` — every ledger item of one user; the position follows, big-endian.
pub fn ledger_prefix(org: &str, id: &str) -> Vec<u8> {
    let mut key = user_key(org, id);
    key.push(0);
    key
}

/// Key of one ledger item.
pub fn ledger_key(org: &str, id: &str, position: Position) -> Vec<u8> {
    let mut key = ledger_prefix(org, id);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

fn aad(org: &str, id: &str, position: Position) -> Vec<u8> {
    let mut aad = b"ledger/".to_vec();
    aad.extend_from_slice(&ledger_key(org, id, position));
    aad
}

impl LedgerItem {
    /// Serializes the item, sealing its metadata under the key `kid` (dropped if the key is gone).
    pub async fn seal(
        &self,
        codec: &Codec,
        org: &str,
        id: &str,
        position: Position,
        kid: Option<&str>,
    ) -> Result<Vec<u8>, CodecError> {
        let kid = kid.and_then(|k| k.parse::<KeyId>().ok());
        let key = match kid {
            Some(kid) => codec.keys().get(kid).await?.map(|k| (kid, k)),
            None => None,
        };
        let object = seal_object(
            to_object(self),
            key.as_ref().map(|(i, k)| (*i, k)),
            &aad(org, id, position),
        );
        Ok(serde_json::to_vec(&object).expect("JSON values serialize"))
    }

    async fn open(
        bytes: &[u8],
        codec: &Codec,
        org: &str,
        id: &str,
        position: Position,
    ) -> Result<Self, CodecError> {
        let object: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|e| CodecError::Json(e.to_string()))?;
        let (object, _) = codec.open_object(object, &aad(org, id, position)).await?;
        serde_json::from_value(Value::Object(object)).map_err(|e| CodecError::Json(e.to_string()))
    }
}

/// A page of ledger items, newest first.
#[derive(Clone, Debug)]
pub struct LedgerPage {
    /// Items.
    pub items: Vec<LedgerItem>,
    /// Position to pass as the cursor for the next (older) page.
    pub next_cursor: Option<Position>,
}

impl ReadModels {
    /// Ledger items of a user older than `before` (all if `None`), newest first.
    pub async fn ledger(
        &self,
        org: &str,
        id: &str,
        limit: usize,
        before: Option<Position>,
    ) -> Result<LedgerPage, StoreError> {
        let prefix = ledger_prefix(org, id);
        let end = ledger_key(org, id, before.unwrap_or(Position::MAX));
        let mut items = Vec::with_capacity(limit);
        let mut last = None;
        let mut more = false;
        for entry in self.wallet_ledger.range(prefix.clone()..end).rev() {
            let (key, bytes) = entry?;
            if items.len() == limit {
                more = true;
                break;
            }
            let position =
                Position::from_be_bytes(key[prefix.len()..].try_into().unwrap_or([0; 8]));
            items.push(LedgerItem::open(&bytes, &self.codec, org, id, position).await?);
            last = Some(position);
        }
        Ok(LedgerPage {
            items,
            next_cursor: if more { last } else { None },
        })
    }
}
