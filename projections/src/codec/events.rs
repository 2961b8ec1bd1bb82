//! Events ↔ log records. An event's public part and its metadata's public part are stored in
//! clear; its personal part and its metadata's personal part (the request's ip, user agent
//! and idempotency key) are sealed together, once, under the data key of the user they
//! concern, bound to the event's id. Without a key (a task's events) personal parts are
//! dropped, never written in clear.

use bytes::Bytes;
use roster_domain::KeyId;
use roster_domain::events::{EventSet, PartsReader, PartsWriter, ReadError};
use roster_eventlog::{NewEvent, RecordedEvent};
use roster_vault::DataKey;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ulid::Ulid;

use super::{
    Codec, CodecError, FORMAT_2, Layout, Opened, Stored, from_msgpack, legacy, seal_parts,
};

/// Metadata recorded with every event (docs/contract.md §6).
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
    /// The client's `Idempotency-Key`, if it sent one (sealed: erased with the user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The caller's address (sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The caller's user agent (sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// What of an event's metadata is stored in clear.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaPublic {
    /// See [`EventMeta::actor`].
    #[serde(default)]
    pub actor: String,
    /// See [`EventMeta::causation_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// See [`EventMeta::correlation_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// What of an event's metadata is personal: sealed with the event's personal part.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaPersonal {
    /// See [`EventMeta::idempotency_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// See [`EventMeta::ip`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// See [`EventMeta::user_agent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl EventMeta {
    fn split(&self) -> (MetaPublic, MetaPersonal) {
        (
            MetaPublic {
                actor: self.actor.clone(),
                causation_id: self.causation_id.clone(),
                correlation_id: self.correlation_id.clone(),
            },
            MetaPersonal {
                idempotency_key: self.idempotency_key.clone(),
                ip: self.ip.clone(),
                user_agent: self.user_agent.clone(),
            },
        )
    }

    fn join(public: MetaPublic, personal: MetaPersonal) -> Self {
        Self {
            actor: public.actor,
            causation_id: public.causation_id,
            correlation_id: public.correlation_id,
            idempotency_key: personal.idempotency_key,
            ip: personal.ip,
            user_agent: personal.user_agent,
        }
    }
}

/// The public part of a record's metadata (actor, causation and correlation ids), of either
/// format, without a key: what a reader needs to follow requests and tasks through the log.
pub fn public_meta(record: &RecordedEvent) -> MetaPublic {
    match record.metadata.split_first() {
        Some((&FORMAT_2, rest)) => from_msgpack(rest, "event metadata").unwrap_or_default(),
        _ => serde_json::from_slice(&record.metadata).unwrap_or_default(),
    }
}

/// An event read back from the log.
#[derive(Clone, Debug)]
pub struct DecodedEvent<E> {
    /// The event (its personal part `Default` if erased).
    pub event: E,
    /// Its metadata (personal fields absent if erased).
    pub meta: EventMeta,
    /// Whether its personal data could not be opened (the key was destroyed).
    pub erased: bool,
    /// Whether its metadata's personal part could not be opened (format 2 seals both parts
    /// together, so there the two flags agree).
    pub meta_erased: bool,
}

/// Associated data binding an event's sealed part to the event.
fn event_aad(id: Ulid) -> [u8; 18] {
    let mut aad = [0u8; 18];
    aad[..16].copy_from_slice(&id.to_bytes());
    aad[16..].copy_from_slice(b"e2");
    aad
}

/// Writes an event's parts, with the metadata's personal part sealed beside its own.
struct Encoder<'a> {
    meta: &'a MetaPersonal,
    key: Option<(KeyId, &'a DataKey)>,
    aad: &'a [u8],
    out: Vec<u8>,
}

impl PartsWriter for Encoder<'_> {
    type Error = std::convert::Infallible;

    fn write<P, S>(&mut self, public: &P, personal: &S) -> Result<(), Self::Error>
    where
        P: Serialize,
        S: Serialize + Default + PartialEq,
    {
        let empty = *personal == S::default() && *self.meta == MetaPersonal::default();
        self.out = seal_parts(
            public,
            &(personal, self.meta),
            empty,
            self.key,
            self.aad,
            Layout::Named,
        );
        Ok(())
    }
}

/// Reads an event's parts; the metadata's personal part comes out beside.
struct Decoder<'a> {
    public: &'a [u8],
    personal: Option<&'a [u8]>,
    meta: &'a mut MetaPersonal,
    what: &'a str,
}

impl PartsReader for Decoder<'_> {
    type Error = CodecError;

    fn read<P, S>(self) -> Result<(P, S), CodecError>
    where
        P: DeserializeOwned,
        S: DeserializeOwned + Default,
    {
        let public = from_msgpack(self.public, self.what)?;
        let personal = match self.personal {
            None => S::default(),
            Some(plain) => {
                let (personal, meta): (S, MetaPersonal) = from_msgpack(plain, self.what)?;
                *self.meta = meta;
                personal
            }
        };
        Ok((public, personal))
    }
}

impl Codec {
    /// A log record for `event`, its personal parts (and the metadata's) sealed under `key`.
    pub fn encode<E: EventSet>(
        &self,
        event: &E,
        meta: &EventMeta,
        key: Option<(KeyId, &DataKey)>,
    ) -> NewEvent {
        let id = Ulid::new();
        let (meta_public, meta_personal) = meta.split();
        let aad = event_aad(id);
        let mut encoder = Encoder {
            meta: &meta_personal,
            key,
            aad: &aad,
            out: Vec::new(),
        };
        let Ok(()) = event.write_parts(&mut encoder);
        let mut metadata = vec![FORMAT_2];
        super::to_msgpack(&meta_public, Layout::Named, &mut metadata);
        NewEvent {
            id,
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            data: Bytes::from(encoder.out),
            metadata: Bytes::from(metadata),
        }
    }

    /// Reads an event of aggregate events `E` back, of either format.
    pub async fn decode<E: EventSet>(
        &self,
        record: &RecordedEvent,
    ) -> Result<DecodedEvent<E>, CodecError> {
        if legacy::is_format_1(&record.data) {
            return self.decode_format_1(record).await;
        }
        let what = record.event_type.as_str();
        let stored = Stored::parse(&record.data)?;
        let meta_public = public_meta(record);
        let (plain, erased) = match stored.open(self, &event_aad(record.id)).await? {
            Opened::Nothing => (None, false),
            Opened::Erased => (None, true),
            Opened::Plain(plain) => (Some(plain), false),
        };
        let mut meta_personal = MetaPersonal::default();
        let decoder = Decoder {
            public: stored.public,
            personal: plain.as_deref(),
            meta: &mut meta_personal,
            what,
        };
        let event = E::read_parts(&record.event_type, record.schema_version, decoder).map_err(
            |e| match e {
                ReadError::Parts(e) => e,
                other => CodecError::Decode {
                    what: what.to_owned(),
                    reason: other.to_string(),
                },
            },
        )?;
        Ok(DecodedEvent {
            event,
            meta: EventMeta::join(meta_public, meta_personal),
            erased,
            meta_erased: erased,
        })
    }

    async fn decode_format_1<E: EventSet>(
        &self,
        record: &RecordedEvent,
    ) -> Result<DecodedEvent<E>, CodecError> {
        let (data, data_erased) =
            legacy::open(self, &record.data, &legacy::event_aad(record.id, b"data")).await?;
        let (meta, meta_erased) = legacy::open(
            self,
            &record.metadata,
            &legacy::event_aad(record.id, b"meta"),
        )
        .await?;
        let event =
            E::from_json(&record.event_type, record.schema_version, data).map_err(|reason| {
                CodecError::Decode {
                    what: record.event_type.clone(),
                    reason,
                }
            })?;
        let meta = serde_json::from_value(Value::Object(meta)).unwrap_or_default();
        Ok(DecodedEvent {
            event,
            meta,
            erased: data_erased,
            meta_erased,
        })
    }
}

/// An event as JSON, the way analysts see it (docs/contract.md §6): its parts merged into one
/// object; once erased, the personal fields `null` and `"erased": true`.
#[derive(Clone, Debug, PartialEq)]
pub struct EventView {
    /// The payload.
    pub data: Map<String, Value>,
    /// The metadata.
    pub metadata: Map<String, Value>,
    /// The schema version of `data` (the current one: older versions are upcast).
    pub schema_version: u32,
}

/// Writes an event's parts as one JSON object.
struct JsonWriter {
    erased: bool,
    out: Map<String, Value>,
}

impl PartsWriter for JsonWriter {
    type Error = serde_json::Error;

    fn write<P, S>(&mut self, public: &P, personal: &S) -> Result<(), serde_json::Error>
    where
        P: Serialize,
        S: Serialize + Default + PartialEq,
    {
        let mut data = object(serde_json::to_value(public)?);
        let nulls = erased_fields::<S>();
        // A type without personal fields has nothing to erase (its metadata may have had).
        if self.erased && !nulls.is_empty() {
            fill(&mut data, nulls);
            data.insert("erased".into(), Value::Bool(true));
        } else if !self.erased {
            join(&mut data, object(serde_json::to_value(personal)?));
        }
        self.out = data;
        Ok(())
    }
}

impl<E: EventSet> DecodedEvent<E> {
    /// The event as analysts see it.
    pub fn view(&self) -> EventView {
        let mut writer = JsonWriter {
            erased: self.erased,
            out: Map::new(),
        };
        if let Err(e) = self.event.write_parts(&mut writer) {
            tracing::error!(error = %e, "an event did not serialize to JSON");
        }
        let mut metadata = object(serde_json::to_value(&self.meta).unwrap_or_default());
        if self.meta_erased {
            for field in ["ip", "user_agent"] {
                metadata.insert(field.into(), Value::Null);
            }
            metadata.insert("erased".into(), Value::Bool(true));
        }
        EventView {
            data: writer.out,
            metadata,
            schema_version: self.event.schema_version(),
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Adds `personal`'s members to `data`, joining objects and arrays both have (a profile's
/// public and personal fields become one profile; a patch's public and personal `unset`
/// paths one list).
fn join(data: &mut Map<String, Value>, personal: Map<String, Value>) {
    for (key, value) in personal {
        match (data.get_mut(&key), value) {
            (Some(Value::Object(target)), Value::Object(inner)) => join(target, inner),
            (Some(Value::Array(target)), Value::Array(items)) => target.extend(items),
            (_, value) => {
                data.insert(key, value);
            }
        }
    }
}

/// Adds the members of `nulls` that `data` lacks (an erased part never hides a public one).
fn fill(data: &mut Map<String, Value>, nulls: Map<String, Value>) {
    for (key, value) in nulls {
        match (data.get_mut(&key), value) {
            (Some(Value::Object(target)), Value::Object(inner)) => fill(target, inner),
            (Some(_), _) => {}
            (None, value) => {
                data.insert(key, value);
            }
        }
    }
}

/// The personal part `S` as an erased event shows it: every field `null` (empty for a type
/// without personal fields). The event schemas describe this form too.
pub fn erased_fields<S: Serialize + Default>() -> Map<String, Value> {
    let mut nulls = object(serde_json::to_value(S::default()).unwrap_or_default());
    null_leaves(&mut nulls);
    nulls
}

/// An erased part as it reads: every field `null`, nested structs field by field (a
/// non-empty object is a struct; an empty one is an empty map, and reads `null` too).
fn null_leaves(object: &mut Map<String, Value>) {
    for value in object.values_mut() {
        match value {
            Value::Object(inner) if !inner.is_empty() => null_leaves(inner),
            other => *other = Value::Null,
        }
    }
}
