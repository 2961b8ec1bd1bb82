//! Upcasting: old schema versions of an event are rewritten to the current shape when read.
//! History is never rewritten; only its reading changes.

use serde_json::{Map, Value};

/// Event types whose current schema version is above 1.
pub const CURRENT_VERSIONS: &[(&str, u32)] = &[];

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
    Ok(data)
}
