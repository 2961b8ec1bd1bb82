//! One record per transaction: its framing and its compact binary encoding.
//!
//! Frame: `[payload length u32 LE][crc32 of payload u32 LE][payload]`. Because a record holds
//! a whole transaction, a torn or corrupt frame loses or keeps the transaction as a whole.
//!
//! Payload (integers little-endian, `v` = LEB128 varint, `s` = `v` length + bytes):
//! ```text
//! kind u8 (=1) | first_position u64 | time i64 | v appends
//!   per append: s org | s name | v first_version | v events
//!     per event: id [16] | s type | v schema_version | s data | s metadata
//! v effects
//!   per effect: tag u8 (1 claim, 2 release) | s key | claim: s owner | u8 has_expiry | i64 expires_at
//! ```
//! Reservations are stored as their *effects* (what the writer decided), not as requests, so
//! replaying the log never re-evaluates expiry against a different clock.

use crate::codec::{DecodeError, MAX_VARINT, Reader, put_bytes, put_i64, put_u64, put_varint};
use crate::validate::stream_key;
use crate::{Micros, Position, RecordedEvent, Reservation, StreamAppend, StreamId, Version};
use bytes::Bytes;
use ulid::Ulid;

/// Bytes of the frame header before the payload.
pub(crate) const HEADER_LEN: usize = 8;
const KIND_TRANSACTION: u8 = 1;
const TAG_CLAIM: u8 = 1;
const TAG_RELEASE: u8 = 2;
const TAG_SHARE: u8 = 3;
const TAG_UNSHARE: u8 = 4;

/// What a transaction did to one reservation key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// `key` now belongs to `owner`, from the record's first position.
    Claim {
        key: String,
        owner: String,
        expires_at: Option<Micros>,
    },
    /// `key` is free.
    Release { key: String },
    /// `owner` joins the holders of `key` (held by someone else).
    Share { key: String, owner: String },
    /// `owner` leaves the holders of shared `key`, which the others keep holding; if it was
    /// the first holder, the next one becomes the first, from the record's first position.
    Unshare { key: String, owner: String },
}

impl Effect {
    /// The reservation key the effect is on.
    pub(crate) fn key(&self) -> &str {
        match self {
            Effect::Claim { key, .. }
            | Effect::Release { key }
            | Effect::Share { key, .. }
            | Effect::Unshare { key, .. } => key,
        }
    }
}

/// A stream append as recovery needs it: no event bodies.
#[derive(Debug)]
pub(crate) struct AppendSummary {
    pub key: crate::validate::Key,
    pub first_version: Version,
    pub count: u64,
}

/// A decoded record without event bodies, for rebuilding state.
#[derive(Debug)]
pub(crate) struct Summary {
    pub first_position: Position,
    pub event_count: u64,
    pub time: Micros,
    pub appends: Vec<AppendSummary>,
    pub effects: Vec<Effect>,
}

/// An upper bound of the framed size of `appends` + `reservations`, whatever positions,
/// versions and effects the writer assigns; used to refuse oversized transactions early.
pub(crate) fn max_framed_len(appends: &[StreamAppend], reservations: &[Reservation]) -> usize {
    let mut n = HEADER_LEN + 1 + 8 + 8 + 2 * MAX_VARINT;
    for a in appends {
        n += 4 * MAX_VARINT + a.stream.org.len() + a.stream.name.len();
        for e in &a.events {
            n += 16 + 4 * MAX_VARINT + e.event_type.len() + e.data.len() + e.metadata.len();
        }
    }
    for r in reservations {
        let (key, owner) = match r {
            Reservation::Claim { key, owner, .. }
            | Reservation::Share { key, owner }
            | Reservation::Release { key, owner } => (key, owner),
        };
        n += 1 + 2 * MAX_VARINT + key.len() + owner.len() + 1 + 8;
    }
    n
}

/// Appends one framed record to `buf`. `first_versions[i]` is the version of the first event
/// of `appends[i]`.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    first_position: Position,
    time: Micros,
    appends: &[StreamAppend],
    first_versions: &[Version],
    effects: &[Effect],
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    buf.push(KIND_TRANSACTION);
    put_u64(buf, first_position);
    put_i64(buf, time);
    put_varint(buf, appends.len() as u64);
    for (a, &first_version) in appends.iter().zip(first_versions) {
        put_bytes(buf, a.stream.org.as_bytes());
        put_bytes(buf, a.stream.name.as_bytes());
        put_varint(buf, first_version);
        put_varint(buf, a.events.len() as u64);
        for e in &a.events {
            buf.extend_from_slice(&e.id.to_bytes());
            put_bytes(buf, e.event_type.as_bytes());
            put_varint(buf, u64::from(e.schema_version));
            put_bytes(buf, &e.data);
            put_bytes(buf, &e.metadata);
        }
    }
    put_varint(buf, effects.len() as u64);
    for effect in effects {
        match effect {
            Effect::Claim {
                key,
                owner,
                expires_at,
            } => {
                buf.push(TAG_CLAIM);
                put_bytes(buf, key.as_bytes());
                put_bytes(buf, owner.as_bytes());
                buf.push(u8::from(expires_at.is_some()));
                put_i64(buf, expires_at.unwrap_or(0));
            }
            Effect::Release { key } => {
                buf.push(TAG_RELEASE);
                put_bytes(buf, key.as_bytes());
            }
            Effect::Share { key, owner } | Effect::Unshare { key, owner } => {
                buf.push(if matches!(effect, Effect::Share { .. }) {
                    TAG_SHARE
                } else {
                    TAG_UNSHARE
                });
                put_bytes(buf, key.as_bytes());
                put_bytes(buf, owner.as_bytes());
            }
        }
    }
    let payload = &buf[start + HEADER_LEN..];
    let len = u32::try_from(payload.len()).expect("records are bounded by max_record_size < 4 GiB");
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The position of a record payload's first event, read from its header without decoding.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn first_position(payload: &[u8]) -> Option<Position> {
    let bytes = payload.get(1..9)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Splits a frame header into (payload length, crc).
pub(crate) fn parse_header(header: &[u8]) -> (u32, u32) {
    let len = u32::from_le_bytes(header[0..4].try_into().expect("header is 8 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("header is 8 bytes"));
    (len, crc)
}

/// Whether `payload` matches the frame's checksum.
pub(crate) fn crc_ok(payload: &[u8], crc: u32) -> bool {
    crc32fast::hash(payload) == crc
}

fn header(r: &mut Reader<'_>) -> Result<(Position, Micros), DecodeError> {
    if r.u8()? != KIND_TRANSACTION {
        return Err(DecodeError("unknown record kind"));
    }
    Ok((r.u64()?, r.i64()?))
}

fn decode_effects(r: &mut Reader<'_>) -> Result<Vec<Effect>, DecodeError> {
    let n = r.count()?;
    let mut effects = Vec::with_capacity(n);
    for _ in 0..n {
        let effect = match r.u8()? {
            TAG_CLAIM => {
                let key = r.str()?.to_owned();
                let owner = r.str()?.to_owned();
                let has_expiry = r.u8()? != 0;
                let at = r.i64()?;
                Effect::Claim {
                    key,
                    owner,
                    expires_at: has_expiry.then_some(at),
                }
            }
            TAG_RELEASE => Effect::Release {
                key: r.str()?.to_owned(),
            },
            TAG_SHARE => Effect::Share {
                key: r.str()?.to_owned(),
                owner: r.str()?.to_owned(),
            },
            TAG_UNSHARE => Effect::Unshare {
                key: r.str()?.to_owned(),
                owner: r.str()?.to_owned(),
            },
            _ => return Err(DecodeError("unknown reservation tag")),
        };
        effects.push(effect);
    }
    Ok(effects)
}

/// Decodes what recovery needs: streams, versions, counts and reservation effects.
pub(crate) fn decode_summary(payload: &[u8]) -> Result<Summary, DecodeError> {
    let mut r = Reader::new(payload);
    let (first_position, time) = header(&mut r)?;
    let n = r.count()?;
    let mut appends = Vec::with_capacity(n);
    let mut event_count = 0u64;
    for _ in 0..n {
        let org = r.str()?;
        let name = r.str()?;
        let first_version = r.varint()?;
        let count = r.count()? as u64;
        for _ in 0..count {
            r.take(16)?;
            r.skip_bytes()?;
            r.varint()?;
            r.skip_bytes()?;
            r.skip_bytes()?;
        }
        if count == 0 {
            return Err(DecodeError("empty stream append"));
        }
        event_count += count;
        appends.push(AppendSummary {
            key: stream_key(org, name),
            first_version,
            count,
        });
    }
    let effects = decode_effects(&mut r)?;
    if !r.is_empty() || event_count == 0 {
        return Err(DecodeError("malformed record"));
    }
    Ok(Summary {
        first_position,
        event_count,
        time,
        appends,
        effects,
    })
}

/// Decodes the events with `lo <= position <= hi` into `out`, skipping the others without
/// allocating. Event bodies are slices of `payload`, not copies.
pub(crate) fn decode_events(
    payload: &Bytes,
    lo: Position,
    hi: Position,
    out: &mut Vec<RecordedEvent>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(payload);
    let (mut position, time) = header(&mut r)?;
    let n = r.count()?;
    for _ in 0..n {
        let org = r.str()?;
        let name = r.str()?;
        let first_version = r.varint()?;
        let count = r.count()? as u64;
        let mut stream: Option<StreamId> = None;
        for i in 0..count {
            if position < lo || position > hi {
                r.take(16)?;
                r.skip_bytes()?;
                r.varint()?;
                r.skip_bytes()?;
                r.skip_bytes()?;
            } else {
                let id_bytes: [u8; 16] = r.take(16)?.try_into().expect("take(16) returns 16 bytes");
                let event_type = r.str()?.to_owned();
                let schema_version =
                    u32::try_from(r.varint()?).map_err(|_| DecodeError("schema version"))?;
                let data = slice_of(payload, &mut r)?;
                let metadata = slice_of(payload, &mut r)?;
                let stream = stream
                    .get_or_insert_with(|| StreamId::new(org, name))
                    .clone();
                out.push(RecordedEvent {
                    position,
                    id: Ulid::from_bytes(id_bytes),
                    stream,
                    version: first_version + i,
                    event_type,
                    schema_version,
                    time,
                    data,
                    metadata,
                });
            }
            position += 1;
        }
        if position > hi {
            // Later appends of this record hold only later positions.
            return Ok(());
        }
    }
    Ok(())
}

/// The next length-prefixed byte string of `r`, as a zero-copy slice of `payload`.
fn slice_of(payload: &Bytes, r: &mut Reader<'_>) -> Result<Bytes, DecodeError> {
    let n = r.count()?;
    let start = r.pos();
    r.take(n)?;
    Ok(payload.slice(start..start + n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExpectedVersion, NewEvent};

    fn sample() -> Vec<StreamAppend> {
        let ev = |t: &str, d: &'static [u8]| NewEvent {
            id: Ulid::new(),
            event_type: t.into(),
            schema_version: 3,
            data: Bytes::from_static(d),
            metadata: Bytes::from_static(b"{\"m\":1}"),
        };
        vec![
            StreamAppend {
                stream: StreamId::new("acme", "user-1"),
                expected: ExpectedVersion::Any,
                events: vec![ev("A", b"1"), ev("B", b"22")],
            },
            StreamAppend {
                stream: StreamId::new("other", "user-1"),
                expected: ExpectedVersion::Any,
                events: vec![ev("C", b"")],
            },
        ]
    }

    #[test]
    fn round_trip() {
        let appends = sample();
        let effects = vec![
            Effect::Claim {
                key: "k".into(),
                owner: "o".into(),
                expires_at: Some(-5),
            },
            Effect::Release { key: "j".into() },
            Effect::Share {
                key: "u".into(),
                owner: "p".into(),
            },
            Effect::Unshare {
                key: "u".into(),
                owner: "q".into(),
            },
        ];
        let mut buf = Vec::new();
        encode(&mut buf, 10, 1234, &appends, &[4, 1], &effects);
        assert!(buf.len() <= max_framed_len(&appends, &[]) + 200);
        let (len, crc) = parse_header(&buf[..8]);
        assert_eq!(len as usize, buf.len() - 8);
        let payload = Bytes::copy_from_slice(&buf[8..]);
        assert!(crc_ok(&payload, crc));

        let s = decode_summary(&payload).unwrap();
        assert_eq!((s.first_position, s.event_count, s.time), (10, 3, 1234));
        assert_eq!(s.appends[1].key, stream_key("other", "user-1"));
        assert_eq!(s.effects, effects);

        let mut out = Vec::new();
        decode_events(&payload, 11, 12, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].position, out[0].version), (11, 5));
        assert_eq!(out[0].data, Bytes::from_static(b"22"));
        assert_eq!(out[1].stream, StreamId::new("other", "user-1"));
        assert_eq!(out[1].id, appends[1].events[0].id);
        assert_eq!(out[1].schema_version, 3);
    }

    #[test]
    fn truncated_payload_is_an_error() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 0, &sample(), &[1, 1], &[]);
        for cut in 8..buf.len() - 1 {
            assert!(decode_summary(&buf[8..cut]).is_err(), "cut at {cut}");
        }
    }
}
