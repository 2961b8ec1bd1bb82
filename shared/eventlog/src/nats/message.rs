//! The payload of one JetStream message of the log.
//!
//! ```text
//! magic "RSLG" | format u8 (=1) | kind u8 (0 genesis, 1 transactions) | writer u64 LE | batch u64 LE
//! kind 1: one or more records, each framed as in the embedded log:
//!         [payload length u32 LE][crc32 u32 LE][record payload]   (see `crate::record`)
//! ```
//! A message holds one group-committed batch of whole transactions, so it is written or not
//! as a whole. `writer` (random per connected log) and `batch` (its counter) identify the
//! message: they also form its `Nats-Msg-Id`, and let a writer recognise its own message
//! when an acknowledgement was lost.

use crate::record::{self, HEADER_LEN};
use bytes::Bytes;

const MAGIC: &[u8; 4] = b"RSLG";
const FORMAT: u8 = 1;
/// Bytes before the first record.
pub(crate) const PREFIX_LEN: usize = 4 + 1 + 1 + 8 + 8;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The first message of the stream; carries no events. It exists because nats-server 2.9
    /// ignores `Nats-Expected-Last-Sequence: 0`, so the first real append must expect 1.
    Genesis,
    /// Records of one or more transactions.
    Transactions,
}

/// Who wrote a message: a writer's random id and its batch counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub writer: u64,
    pub batch: u64,
}

impl Origin {
    /// The message's `Nats-Msg-Id`.
    pub fn msg_id(self) -> String {
        format!("roster-{:016x}-{}", self.writer, self.batch)
    }
}

/// The `Nats-Msg-Id` of the genesis message: every writer uses the same one, so racing
/// genesis publishes are de-duplicated into one.
pub(crate) const GENESIS_MSG_ID: &str = "roster-log-genesis";

/// Starts a message: its prefix. Records follow, framed by [`crate::record::encode`].
pub(crate) fn start(buf: &mut Vec<u8>, kind: Kind, origin: Origin) {
    buf.extend_from_slice(MAGIC);
    buf.push(FORMAT);
    buf.push(match kind {
        Kind::Genesis => 0,
        Kind::Transactions => 1,
    });
    buf.extend_from_slice(&origin.writer.to_le_bytes());
    buf.extend_from_slice(&origin.batch.to_le_bytes());
}

/// The genesis message.
pub(crate) fn genesis() -> Bytes {
    let mut buf = Vec::with_capacity(PREFIX_LEN);
    start(
        &mut buf,
        Kind::Genesis,
        Origin {
            writer: 0,
            batch: 0,
        },
    );
    Bytes::from(buf)
}

/// Reads a message's prefix.
pub(crate) fn parse(payload: &[u8]) -> Result<(Kind, Origin), &'static str> {
    if payload.len() < PREFIX_LEN || &payload[..4] != MAGIC {
        return Err("not a roster log message");
    }
    if payload[4] != FORMAT {
        return Err("unknown roster log message format");
    }
    let kind = match payload[5] {
        0 => Kind::Genesis,
        1 => Kind::Transactions,
        _ => return Err("unknown roster log message kind"),
    };
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&payload[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Ok((
        kind,
        Origin {
            writer: u64_at(6),
            batch: u64_at(14),
        },
    ))
}

/// The verified record payloads of a transactions message, in order.
pub(crate) fn records(payload: &Bytes) -> Result<Vec<Bytes>, &'static str> {
    let mut out = Vec::new();
    let mut at = PREFIX_LEN;
    while at < payload.len() {
        if payload.len() - at < HEADER_LEN {
            return Err("truncated record header");
        }
        let (len, crc) = record::parse_header(&payload[at..at + HEADER_LEN]);
        let start = at + HEADER_LEN;
        let end = start
            .checked_add(len as usize)
            .filter(|&end| end <= payload.len())
            .ok_or("truncated record")?;
        let body = payload.slice(start..end);
        if !record::crc_ok(&body, crc) {
            return Err("record checksum mismatch");
        }
        out.push(body);
        at = end;
    }
    if out.is_empty() {
        return Err("a transactions message without records");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trips_and_garbage_is_refused() {
        let origin = Origin {
            writer: 0xdead_beef,
            batch: 7,
        };
        let mut buf = Vec::new();
        start(&mut buf, Kind::Transactions, origin);
        assert_eq!(buf.len(), PREFIX_LEN);
        assert_eq!(parse(&buf), Ok((Kind::Transactions, origin)));
        assert_eq!(parse(&genesis()).map(|(k, _)| k), Ok(Kind::Genesis));
        assert!(parse(b"hello world, this is not ours").is_err());
        assert!(records(&Bytes::from(buf.clone())).is_err(), "no records");
        buf.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(records(&Bytes::from(buf)).is_err(), "truncated");
        assert_eq!(origin.msg_id(), "roster-00000000deadbeef-7");
    }
}
