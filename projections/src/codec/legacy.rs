//! Format 1, the first release's: JSON objects whose personal parts sit, sealed, under
//! `"sealed": {"kid": <key id>, "ct": <base64 of the sealed JSON object>}`. Logs written by
//! that release hold it forever; it is read here and nowhere else, and never written.
//!
//! Reading merges the opened personal object back into the public one (objects such as
//! `profile` and `set` member by member, arrays such as `unset` item by item), then hands the
//! whole to the event type's [`roster_domain::events::FromJson`].

use base64::Engine;
use serde_json::{Map, Value};

use super::{Codec, CodecError};

const SEALED: &str = "sealed";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// Whether stored bytes are of format 1 (a JSON object).
pub(crate) fn is_format_1(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{') || bytes.is_empty()
}

/// A JSON object of format 1, its sealed part opened and merged back if its key still
/// exists. The flag says whether a sealed part could not be opened.
pub(crate) async fn open(
    codec: &Codec,
    bytes: &[u8],
    aad: &[u8],
) -> Result<(Map<String, Value>, bool), CodecError> {
    let mut object = parse(bytes)?;
    let Some(sealed) = object.remove(SEALED) else {
        return Ok((object, false));
    };
    let kid = sealed
        .get("kid")
        .and_then(Value::as_str)
        .and_then(|k| k.parse().ok());
    let ct = sealed
        .get("ct")
        .and_then(Value::as_str)
        .and_then(|c| B64.decode(c).ok());
    let (Some(kid), Some(ct)) = (kid, ct) else {
        return Ok((object, true));
    };
    let Some((_, key)) = codec.key(Some(kid)).await? else {
        return Ok((object, true));
    };
    match roster_vault::open(&key, aad, &ct) {
        Ok(plain) => {
            merge(&mut object, parse(&plain)?);
            Ok((object, false))
        }
        Err(_) => {
            tracing::error!(key = %kid, "sealed data of format 1 did not authenticate");
            Ok((object, true))
        }
    }
}

/// Associated data format 1 bound an event's sealed part to: its id and the part's name.
pub(crate) fn event_aad(id: ulid::Ulid, part: &[u8]) -> Vec<u8> {
    let mut aad = id.to_bytes().to_vec();
    aad.extend_from_slice(part);
    aad
}

fn parse(bytes: &[u8]) -> Result<Map<String, Value>, CodecError> {
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CodecError::Malformed("format 1: not a JSON object".into())),
        Err(e) => Err(CodecError::Malformed(format!("format 1: {e}"))),
    }
}

/// Puts a personal object back into its public one: nested objects and arrays of the same
/// name are joined, other members added.
fn merge(data: &mut Map<String, Value>, personal: Map<String, Value>) {
    for (key, value) in personal {
        match (data.get_mut(&key), value) {
            (Some(Value::Object(target)), Value::Object(inner)) => target.extend(inner),
            (Some(Value::Array(target)), Value::Array(items)) => target.extend(items),
            (_, value) => {
                data.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn personal_parts_merge_into_their_objects() {
        let mut data =
            json!({"profile": {"role": "admin"}, "set": {"role": "x"}, "unset": ["timezone"]})
                .as_object()
                .unwrap()
                .clone();
        let personal = json!({"profile": {"username": "al"}, "set": {"name": "Al"}, "unset": ["email"], "password_hash": "h"})
            .as_object()
            .unwrap()
            .clone();
        merge(&mut data, personal);
        assert_eq!(
            Value::Object(data),
            json!({"profile": {"role": "admin", "username": "al"}, "set": {"role": "x", "name": "Al"},
                   "unset": ["timezone", "email"], "password_hash": "h"})
        );
    }
}
