//! Events as analysts see them (docs/contract.md §6): personal parts opened, or `null` with
//! `"erased": true` once the user's key is destroyed; older schema versions upcast; password
//! hashes, purpose tokens and webhook secrets never shown (`null` with `"redacted": true`).

use roster_eventlog::RecordedEvent;
use roster_projections::projector::event_time;
use roster_projections::{AnyEvent, Codec};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiResult;

/// One event of the log (docs/contract.md §6).
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
    let decoded = AnyEvent::decode(codec, record).await?;
    Ok(resource(record, decoded.as_ref(), &[]))
}

/// The view of a record decoded as `decoded` (`None`: a stream of no aggregate this server
/// knows, shown as recorded without its data), showing the redacted fields named in `shown`
/// (a webhook that lists `PasswordResetRequested` sees its `token`).
pub fn resource(
    record: &RecordedEvent,
    decoded: Option<&AnyEvent>,
    shown: &[&str],
) -> EventResource {
    let (mut data, metadata, schema_version) = match decoded {
        Some(event) => {
            let view = event.view();
            (view.data, view.metadata, view.schema_version)
        }
        None => (Map::new(), Map::new(), record.schema_version),
    };
    redact_except(&mut data, shown);
    EventResource {
        position: record.position,
        id: record.id.to_string(),
        stream: record.stream.name.clone(),
        version: record.version,
        event_type: record.event_type.clone(),
        schema_version,
        time: event_time(record.time),
        organization_id: record.stream.org.clone(),
        data,
        metadata,
    }
}

/// The fields of event data that hold a password hash (`UserCreated`, `UserReplaced`,
/// `UserImported`, `PasswordChanged`, `PasswordRehashed`), a purpose token and its hash
/// (`TokenIssued`, `PasswordResetRequested`) or a webhook's secret (`WebhookCreated`).
pub const REDACTED_FIELDS: [&str; 4] = ["password_hash", "token", "token_hash", "secret"];

/// Hides recorded password hashes and purpose tokens: every view of events (`/v1/events`, the
/// SSE stream, a user's history and activity log) shows them `null`, with `"redacted": true`.
/// The log keeps them (sealed), since sign-in and redemption are folded from them.
pub fn redact(data: &mut Map<String, Value>) {
    redact_except(data, &[]);
}

/// [`redact`], leaving the fields in `shown` as they are.
pub fn redact_except(data: &mut Map<String, Value>, shown: &[&str]) {
    let mut redacted = false;
    for field in REDACTED_FIELDS.iter().filter(|f| !shown.contains(f)) {
        if let Some(value) = data.get_mut(*field)
            && !value.is_null()
        {
            *value = Value::Null;
            redacted = true;
        }
    }
    if redacted {
        data.insert("redacted".into(), Value::Bool(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_password_hash_is_shown_null_and_marked_redacted() {
        let mut data = json!({"password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"})
            .as_object()
            .cloned()
            .unwrap();
        redact(&mut data);
        assert_eq!(
            Value::Object(data),
            json!({"password_hash": null, "redacted": true})
        );
        // No hash recorded (a user created without a password): nothing to mark.
        let mut data = json!({"password_hash": null}).as_object().cloned().unwrap();
        redact(&mut data);
        assert_eq!(Value::Object(data), json!({"password_hash": null}));
    }
}
