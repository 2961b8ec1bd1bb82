//! Times in stored values: RFC 3339 strings in JSON, microseconds since the epoch in binary
//! formats (8 bytes instead of ~30, and no parsing when a row is read).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A time from microseconds since the epoch (the log's unit); the epoch if out of range.
pub fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// `#[serde(with = "time::micros")]` for `DateTime<Utc>`.
pub mod micros {
    use super::*;

    /// Serializes a time.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            t.serialize(s)
        } else {
            s.serialize_i64(t.timestamp_micros())
        }
    }

    /// Deserializes a time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        if d.is_human_readable() {
            DateTime::deserialize(d)
        } else {
            i64::deserialize(d).map(from_micros)
        }
    }
}

/// `#[serde(with = "time::micros_option")]` for `Option<DateTime<Utc>>`.
pub mod micros_option {
    use super::*;

    /// Serializes an optional time.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            t.serialize(s)
        } else {
            t.map(|t| t.timestamp_micros()).serialize(s)
        }
    }

    /// Deserializes an optional time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        if d.is_human_readable() {
            Option::<DateTime<Utc>>::deserialize(d)
        } else {
            Ok(Option::<i64>::deserialize(d)?.map(from_micros))
        }
    }
}
