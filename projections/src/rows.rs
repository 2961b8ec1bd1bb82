//! Read-model rows of the `users` tree: the user as the events made it, personal parts sealed
//! under the user's key like the events themselves.

use roster_domain::User;
use roster_eventlog::Position;
use roster_vault::KeyId;
use serde_json::{Map, Value};

use crate::codec::{Codec, CodecError, seal_object};

/// One user in the `users` tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Position of the event that created this incarnation of the user: the list order.
    pub seq: Position,
    /// The user.
    pub user: User,
    /// Blind hashes under which the user is in the username and email indexes. Kept in the
    /// clear (they are keyed hashes, not personal values) so the entries can still be removed
    /// after the user's key is destroyed and its username and email no longer read back.
    pub indexed: Indexed,
}

/// The index entries of a row.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Indexed {
    /// Blind hash of the normalized username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Blind hash of the normalized email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Key of a user in the `users` tree: organization, NUL, id.
pub fn user_key(org: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(org.len() + 1 + id.len());
    key.extend_from_slice(org.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

fn aad(org: &str, id: &str) -> Vec<u8> {
    let mut aad = b"row/".to_vec();
    aad.extend_from_slice(&user_key(org, id));
    aad
}

impl Row {
    /// Serializes the row, sealing its personal parts.
    pub async fn seal(&self, codec: &Codec) -> Result<Vec<u8>, CodecError> {
        let mut object = match serde_json::to_value(&self.user) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        object.insert("seq".into(), Value::from(self.seq));
        object.insert(
            "indexed".into(),
            serde_json::to_value(&self.indexed).expect("hashes serialize"),
        );
        let kid = self
            .user
            .key_id
            .as_deref()
            .and_then(|k| k.parse::<KeyId>().ok());
        let key = match kid {
            Some(kid) => codec.keys().get(kid).await?.map(|k| (kid, k)),
            None => None,
        };
        let sealed = match &key {
            Some((kid, k)) => seal_object(
                object,
                Some((*kid, k)),
                &aad(&self.user.organization_id, &self.user.id),
            ),
            None => {
                // No key (destroyed): nothing personal may be written. The state of a user
                // whose key is gone holds no personal data anyway; drop whatever remains.
                roster_domain::personal::split(&mut object);
                object
            }
        };
        Ok(serde_json::to_vec(&sealed).expect("JSON values serialize"))
    }

    /// Reads a row back, opening its personal parts if the key still exists.
    pub async fn open(bytes: &[u8], codec: &Codec) -> Result<Row, CodecError> {
        let object: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|e| CodecError::Json(e.to_string()))?;
        let org = object
            .get("organization_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let id = object
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (mut object, _erased) = codec.open_object(object, &aad(&org, &id)).await?;
        let seq = object.remove("seq").and_then(|v| v.as_u64()).unwrap_or(0);
        let indexed = object
            .remove("indexed")
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let user: User = serde_json::from_value(Value::Object(object))
            .map_err(|e| CodecError::Json(e.to_string()))?;
        Ok(Row { seq, user, indexed })
    }
}
