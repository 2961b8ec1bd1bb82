//! Upcasting: old schema versions of an event are rewritten to the current shape when read.
//! History is never rewritten; only its reading changes.
//!
//! To change an event's shape: keep the old shape here as a frozen struct (its JSON Schema
//! stays in `schemas/events/<Type>.v<N>.json`), raise the type's version in
//! [`CURRENT_VERSIONS`], and add one step from the old version to the next in [`step`].
//! Recorded payloads then go up one version at a time until they reach the current one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::StatusChanged;

/// Event types whose current schema version is above 1.
pub const CURRENT_VERSIONS: &[(&str, u32)] = &[("StatusChanged", 2)];

/// Older schema versions still found in logs: (event type, version), each with a frozen shape.
pub const OLD_VERSIONS: &[(&str, u32)] = &[("StatusChanged", 1)];

/// `StatusChanged` as schema version 1 recorded it. Frozen: logs hold it forever.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusChangedV1 {
    /// Whether the user is now blocked.
    pub blocked: bool,
}

impl From<StatusChangedV1> for StatusChanged {
    fn from(v1: StatusChangedV1) -> Self {
        StatusChanged::new(v1.blocked)
    }
}

/// Brings `data` recorded as `event_type` v`schema_version` up to the current version.
pub fn upcast(
    event_type: &str,
    schema_version: u32,
    data: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let current = crate::event::current_schema_version(event_type);
    if schema_version > current {
        return Err(format!(
            "schema version {schema_version} is newer than this server knows ({current})"
        ));
    }
    let mut data = data;
    // Version 0 does not exist; read it as 1 rather than loop forever.
    for from in schema_version.max(1)..current {
        data = step(event_type, from, data)?;
    }
    Ok(data)
}

/// One version up: `data` of `event_type` at version `from` → version `from + 1`.
fn step(
    event_type: &str,
    from: u32,
    data: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    match (event_type, from) {
        ("StatusChanged", 1) => {
            let v1: StatusChangedV1 =
                serde_json::from_value(Value::Object(data.clone())).map_err(|e| e.to_string())?;
            // Keys other than the changed one (a reader's markers, say) are kept.
            let mut next = data;
            next.remove("blocked");
            next.extend(object(&StatusChanged::from(v1)));
            Ok(next)
        }
        // A version whose shape did not change for this type.
        _ => Ok(data),
    }
}

fn object(value: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("event payloads serialize to objects"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn status_changed_v1_reads_as_v2() {
        for (blocked, status) in [(true, "blocked"), (false, "active")] {
            let v1 = obj(json!({ "blocked": blocked }));
            let v2 = upcast("StatusChanged", 1, v1.clone()).unwrap();
            assert_eq!(Value::Object(v2), json!({ "status": status }));
            let event = Event::from_data("StatusChanged", 1, v1).unwrap();
            assert_eq!(event, Event::StatusChanged(StatusChanged::new(blocked)));
        }
    }

    #[test]
    fn current_payloads_pass_unchanged_and_new_events_are_v2() {
        let event = Event::StatusChanged(StatusChanged::new(true));
        assert_eq!(event.schema_version(), 2);
        assert_eq!(Value::Object(event.to_data()), json!({"status": "blocked"}));
        let back = Event::from_data("StatusChanged", 2, event.to_data()).unwrap();
        assert_eq!(back, event);
        // Types without a v2 are untouched at v1.
        let data = obj(json!({"email": "a@example.com"}));
        assert_eq!(upcast("EmailChanged", 1, data.clone()).unwrap(), data);
    }

    #[test]
    fn malformed_and_future_versions_are_errors() {
        assert!(upcast("StatusChanged", 1, obj(json!({"blocked": "yes"}))).is_err());
        assert!(Event::from_data("StatusChanged", 2, obj(json!({"blocked": true}))).is_err());
        assert!(upcast("StatusChanged", 3, obj(json!({"status": "active"}))).is_err());
    }

    #[test]
    fn every_old_version_is_below_its_current_one() {
        for (event_type, version) in OLD_VERSIONS {
            assert!(*version < crate::event::current_schema_version(event_type));
        }
        for (event_type, _) in CURRENT_VERSIONS {
            assert!(Event::TYPES.contains(event_type), "{event_type}");
        }
    }
}
