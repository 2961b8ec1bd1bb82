//! Domain events ↔ log records. Personal parts of the payload and of the metadata (ip, user
//! agent) are sealed under the user's data key before they reach the log; reading them back
//! needs the key, and once the key is destroyed they read as erased.
//!
//! Sealed parts sit in the JSON under `"sealed": {"kid": <key id>, "ct": <base64>}`; the
//! ciphertext is bound to the event id, so it cannot be moved to another event.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use roster_domain::event::{DecodeError, Event};
use roster_domain::personal;
use roster_eventlog::{NewEvent, RecordedEvent};
use roster_vault::{DataKey, KeyId, KeyStore, VaultError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ulid::Ulid;

const SEALED: &str = "sealed";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// Metadata recorded with every event (API.md §6). `ip` and `user_agent` are personal and are
/// sealed with the payload's key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventMeta {
    /// Who acted: `server`, `user:<id>`, `task:<id>` or `system`.
    #[serde(default)]
    pub actor: String,
    /// The task or command that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The request the event came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The client's `Idempotency-Key`, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The caller's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The caller's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// A user event read back from the log.
#[derive(Clone, Debug)]
pub struct DecodedEvent {
    /// The event (personal fields absent if erased).
    pub event: Event,
    /// Its metadata (ip and user agent absent if erased).
    pub meta: EventMeta,
    /// Whether its personal data could not be opened (the key was destroyed).
    pub erased: bool,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The payload is not JSON, or not an object.
    #[error("event payload is not a JSON object: {0}")]
    Json(String),
    /// The payload does not fit the event type.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The key store failed (not the same as a destroyed key).
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Seals and opens payloads with keys from a [`KeyStore`].
#[derive(Clone)]
pub struct Codec {
    keys: Arc<dyn KeyStore>,
}

impl Codec {
    /// A codec over a key store.
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        Self { keys }
    }

    /// The key store.
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    /// A log record for `event`, personal parts sealed under `key`.
    pub fn encode(
        &self,
        event: &Event,
        meta: &EventMeta,
        key: Option<(KeyId, &DataKey)>,
    ) -> NewEvent {
        self.encode_data(
            event.event_type(),
            event.schema_version(),
            event.to_data(),
            meta,
            key,
        )
    }

    /// A log record for any event payload (a session's, say), sealed like a user event: the
    /// personal parts of `data` and of `meta` (ip, user agent) under `key`, dropped without one.
    pub fn encode_data(
        &self,
        event_type: &str,
        schema_version: u32,
        data: Map<String, Value>,
        meta: &EventMeta,
        key: Option<(KeyId, &DataKey)>,
    ) -> NewEvent {
        let id = Ulid::new();
        let data = seal_object(data, key, &aad(id, b"data"));
        let meta = match serde_json::to_value(meta) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let metadata = seal_object(meta, key, &aad(id, b"meta"));
        NewEvent {
            id,
            event_type: event_type.to_owned(),
            schema_version,
            data: to_bytes(&data),
            metadata: to_bytes(&metadata),
        }
    }

    /// Opens a record's payload and metadata as JSON, personal parts merged back in; if the key
    /// is gone they read as `null` with `"erased": true` (API.md §6).
    pub async fn open_json(
        &self,
        record: &RecordedEvent,
    ) -> Result<(Map<String, Value>, Map<String, Value>, bool), CodecError> {
        let data = parse_object(&record.data)?;
        let meta = parse_object(&record.metadata)?;
        let (data, data_erased) = self.open_object(data, &aad(record.id, b"data")).await?;
        let (mut meta, meta_erased) = self.open_object(meta, &aad(record.id, b"meta")).await?;
        let mut data = data;
        if data_erased {
            personal::mark_erased(&mut data, personal::personal_keys_of(&record.event_type));
        }
        if meta_erased {
            personal::mark_erased(&mut meta, &["ip", "user_agent"]);
        }
        Ok((data, meta, data_erased || meta_erased))
    }

    /// A user's state after one more of its recorded events: decoded, then applied at the
    /// event's time and stream version. Loading a user is this, over its stream.
    pub async fn fold_user(
        &self,
        user: Option<roster_domain::User>,
        record: &RecordedEvent,
    ) -> Result<Option<roster_domain::User>, CodecError> {
        let decoded = self.decode(record).await?;
        Ok(roster_domain::apply(
            user,
            &decoded.event,
            crate::projector::event_time(record.time),
            record.version,
        ))
    }

    /// Reads a user event back into the domain.
    pub async fn decode(&self, record: &RecordedEvent) -> Result<DecodedEvent, CodecError> {
        let (mut data, mut meta, erased) = self.open_json(record).await?;
        // The erased markers are for readers of JSON; the domain sees absent fields.
        if erased {
            data.retain(|_, v| !v.is_null());
            data.remove(personal::ERASED);
            if let Some(Value::Object(profile)) = data.get_mut("profile") {
                profile.retain(|_, v| !v.is_null());
            }
            meta.retain(|_, v| !v.is_null());
            meta.remove(personal::ERASED);
        }
        let event = Event::from_data(&record.event_type, record.schema_version, data)?;
        let meta = serde_json::from_value(Value::Object(meta)).unwrap_or_default();
        Ok(DecodedEvent {
            event,
            meta,
            erased,
        })
    }

    /// Opens `"sealed"` inside `object` if present. Returns whether it had to be left out.
    pub async fn open_object(
        &self,
        mut object: Map<String, Value>,
        aad: &[u8],
    ) -> Result<(Map<String, Value>, bool), CodecError> {
        let Some(sealed) = object.remove(SEALED) else {
            return Ok((object, false));
        };
        let kid = sealed
            .get("kid")
            .and_then(Value::as_str)
            .and_then(|k| k.parse::<KeyId>().ok());
        let ct = sealed
            .get("ct")
            .and_then(Value::as_str)
            .and_then(|c| B64.decode(c).ok());
        let (Some(kid), Some(ct)) = (kid, ct) else {
            return Ok((object, true));
        };
        let Some(key) = self.keys.get(kid).await? else {
            return Ok((object, true));
        };
        match roster_vault::open(&key, aad, &ct) {
            Ok(plain) => {
                let personal = match serde_json::from_slice(&plain) {
                    Ok(Value::Object(m)) => m,
                    _ => return Err(CodecError::Json("sealed part is not an object".into())),
                };
                personal::merge(&mut object, personal);
                Ok((object, false))
            }
            // A key that exists but does not open the data means tampering or a bug; say so
            // loudly but keep serving what is public.
            Err(_) => {
                tracing::error!(key = %kid, "sealed data did not authenticate");
                Ok((object, true))
            }
        }
    }
}

/// Moves the personal parts of `object` into `"sealed"` under `key`; without a key they are
/// dropped.
pub fn seal_object(
    mut object: Map<String, Value>,
    key: Option<(KeyId, &DataKey)>,
    aad: &[u8],
) -> Map<String, Value> {
    let Some(personal) = personal::split(&mut object) else {
        return object;
    };
    let Some((kid, key)) = key else {
        // The user's key is gone (a pruned user being hard-deleted, say): whatever personal
        // data rides along, such as the request's ip, is dropped, never written in clear.
        return object;
    };
    let plain = serde_json::to_vec(&personal).expect("JSON values serialize");
    let ct = roster_vault::seal(key, aad, &plain);
    let mut sealed = Map::with_capacity(2);
    sealed.insert("kid".into(), Value::String(kid.to_string()));
    sealed.insert("ct".into(), Value::String(B64.encode(ct)));
    object.insert(SEALED.into(), Value::Object(sealed));
    object
}

/// Associated data binding a ciphertext to one event and one part of it.
fn aad(id: Ulid, part: &[u8]) -> Vec<u8> {
    let mut aad = id.to_bytes().to_vec();
    aad.extend_from_slice(part);
    aad
}

fn to_bytes(object: &Map<String, Value>) -> Bytes {
    Bytes::from(serde_json::to_vec(object).expect("JSON values serialize"))
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, CodecError> {
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CodecError::Json("not an object".into())),
        Err(e) => Err(CodecError::Json(e.to_string())),
    }
}
