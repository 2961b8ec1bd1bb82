//! Events as analysts see them (API.md §6): personal parts opened, or `null` with
//! `"erased": true` once the user's key is destroyed; older schema versions upcast.

use roster_domain::upcast::upcast;
use roster_eventlog::RecordedEvent;
use roster_projections::Codec;
use roster_projections::projector::event_time;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiResult;

/// One event of the log (API.md §6).
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[schemars(rename = "Event")]
pub struct EventResource {
    /// Global log position.
    pub position: u64,
    /// Event id (ULID).
    pub id: String,
    /// Stream name, e.g. `user-<id>`.
    pub stream: String,
    /// Version within the stream.
    pub version: u64,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data` as shown (after upcasting).
    pub schema_version: u32,
    /// Commit time.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Organization.
    pub organization_id: String,
    /// Payload.
    pub data: Map<String, Value>,
    /// Actor, causation and correlation ids, idempotency key, ip and user agent.
    pub metadata: Map<String, Value>,
}

/// Renders a recorded event.
pub async fn render(codec: &Codec, record: &RecordedEvent) -> ApiResult<EventResource> {
    let (data, metadata, _erased) = codec.open_json(record).await?;
    let current = roster_domain::event::current_schema_version(&record.event_type);
    let data = if record.schema_version < current {
        upcast(&record.event_type, record.schema_version, data).unwrap_or_default()
    } else {
        data
    };
    Ok(EventResource {
        position: record.position,
        id: record.id.to_string(),
        stream: record.stream.name.clone(),
        version: record.version,
        event_type: record.event_type.clone(),
        schema_version: record.schema_version.max(current),
        time: event_time(record.time),
        organization_id: record.stream.org.clone(),
        data,
        metadata,
    })
}
