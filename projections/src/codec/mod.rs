//! How typed values reach disk: the one generic helper that writes a value's public part in
//! clear and seals its personal part under a data key ([`seal_parts`]/[`open_parts`]), used by
//! every event ([`events`]) and every read-model row.
//!
//! Format 2 (this release), for events and rows alike:
//! ```text
//! 0x02 | varint n | n bytes: the public part (MessagePack)
//!      | 0x00                                  no personal part (empty, or no key to seal it)
//!      | 0x01 | key id [16] | sealed bytes     the personal part (MessagePack), XChaCha20-
//!                                               Poly1305 under that key, bound to the value
//! ```
//! Events encode their parts with field names (the log is read forever: fields can be added
//! and omitted), rows positionally (read models are rebuilt when their format changes).
//! Format 1 (the first release: JSON objects with a `"sealed": {"kid", "ct"}` member) is
//! still read, see [`legacy`]; it is recognised by its first byte, `{`.

pub mod events;
mod legacy;

use std::sync::Arc;

use roster_domain::KeyId;
use roster_vault::{DataKey, KeyPool, KeyStore, VaultError};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use events::{
    DecodedEvent, EventMeta, EventView, MetaPersonal, MetaPublic, erased_fields, public_meta,
};

/// First byte of every value of format 2.
pub const FORMAT_2: u8 = 2;
const NO_PERSONAL: u8 = 0;
const SEALED: u8 = 1;

/// How a part's structs are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Maps with field names (events: tolerant of added and omitted fields).
    Named,
    /// Arrays in field order (rows: compact; a change of shape is a new read-model format).
    Positional,
}

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a value of a known format.
    #[error("malformed stored value: {0}")]
    Malformed(String),
    /// The value does not fit its type.
    #[error("cannot read {what}: {reason}")]
    Decode {
        /// What was read.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The key store failed (not the same as a destroyed key).
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Seals and opens values with keys from a key store; new keys come from a pool.
#[derive(Clone)]
pub struct Codec {
    keys: Arc<dyn KeyStore>,
    pool: Arc<KeyPool>,
}

/// Fresh keys are made in batches of this many.
const KEY_BATCH: usize = 256;

impl Codec {
    /// A codec over a key store.
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        let pool = KeyPool::new(keys.clone(), KEY_BATCH);
        Self { keys, pool }
    }

    /// The key store.
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    /// The pool fresh keys come from.
    pub fn key_pool(&self) -> &Arc<KeyPool> {
        &self.pool
    }

    /// The key with this id, if it still exists.
    pub async fn key(&self, id: Option<KeyId>) -> Result<Option<(KeyId, DataKey)>, CodecError> {
        let Some(id) = id else { return Ok(None) };
        Ok(self.keys.get(id).await?.map(|k| (id, k)))
    }
}

pub(crate) fn to_msgpack<T: Serialize + ?Sized>(value: &T, layout: Layout, out: &mut Vec<u8>) {
    let result = match layout {
        Layout::Named => {
            value.serialize(&mut rmp_serde::Serializer::new(&mut *out).with_struct_map())
        }
        Layout::Positional => value.serialize(&mut rmp_serde::Serializer::new(&mut *out)),
    };
    result.expect("stored parts are plain data that MessagePack can represent");
}

pub(crate) fn from_msgpack<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes a value of format 2: `public` in clear, then `personal` sealed under `key` and bound
/// to `aad`. The personal part is left out when it is `empty`, and dropped when there is no
/// key (a user whose key is gone holds no personal data any more, and nothing may be written
/// in clear).
pub fn seal_parts<P, S>(
    public: &P,
    personal: &S,
    empty: bool,
    key: Option<(KeyId, &DataKey)>,
    aad: &[u8],
    layout: Layout,
) -> Vec<u8>
where
    P: Serialize + ?Sized,
    S: Serialize + ?Sized,
{
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_2);
    let mut public_bytes = Vec::with_capacity(96);
    to_msgpack(public, layout, &mut public_bytes);
    put_varint(&mut out, public_bytes.len() as u64);
    out.extend_from_slice(&public_bytes);
    match key {
        Some((kid, key)) if !empty => {
            let mut plain = Vec::with_capacity(128);
            to_msgpack(personal, layout, &mut plain);
            out.push(SEALED);
            out.extend_from_slice(&kid.to_bytes());
            out.extend_from_slice(&roster_vault::seal(key, aad, &plain));
        }
        _ => out.push(NO_PERSONAL),
    }
    out
}

/// A value of format 2 split into its public bytes and, if it has one, its sealed part.
pub struct Stored<'a> {
    /// The public part (MessagePack).
    pub public: &'a [u8],
    /// The key id and sealed bytes of the personal part.
    pub sealed: Option<(KeyId, &'a [u8])>,
}

impl<'a> Stored<'a> {
    /// Splits stored bytes of format 2.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let malformed = |m: &str| CodecError::Malformed(m.to_owned());
        let rest = match bytes.split_first() {
            Some((&FORMAT_2, rest)) => rest,
            _ => return Err(malformed("not format 2")),
        };
        let (n, rest) = get_varint(rest).ok_or_else(|| malformed("bad length"))?;
        let n = usize::try_from(n).map_err(|_| malformed("bad length"))?;
        if rest.len() < n + 1 {
            return Err(malformed("truncated"));
        }
        let (public, rest) = rest.split_at(n);
        let sealed = match rest.split_first() {
            Some((&NO_PERSONAL, [])) => None,
            Some((&SEALED, rest)) if rest.len() > 16 => {
                let (kid, sealed) = rest.split_at(16);
                let kid = KeyId::from_bytes(kid.try_into().expect("split at 16"));
                Some((kid, sealed))
            }
            _ => return Err(malformed("bad personal part")),
        };
        Ok(Self { public, sealed })
    }

    /// The personal part's plain bytes, if it has one and its key still opens it.
    pub async fn open(&self, codec: &Codec, aad: &[u8]) -> Result<Opened, CodecError> {
        let Some((kid, sealed)) = self.sealed else {
            return Ok(Opened::Nothing);
        };
        let Some(key) = codec.keys.get(kid).await? else {
            return Ok(Opened::Erased);
        };
        match roster_vault::open(&key, aad, sealed) {
            Ok(plain) => Ok(Opened::Plain(plain)),
            // A key that exists but does not open the data means tampering or a bug: say so
            // loudly, and keep serving what is public.
            Err(_) => {
                tracing::error!(key = %kid, "sealed data did not authenticate");
                Ok(Opened::Erased)
            }
        }
    }
}

/// What opening a personal part gave.
pub enum Opened {
    /// The value has no personal part.
    Nothing,
    /// Its key is destroyed: the personal part reads as erased.
    Erased,
    /// The personal part's plain bytes.
    Plain(Vec<u8>),
}

/// Reads a value of format 2: its public part, and its personal part (`Default` when it has
/// none or it is erased) opened with the associated data `aad` gives for the public part. The
/// flag says whether it was erased.
pub async fn open_parts<P, S, A>(
    codec: &Codec,
    bytes: &[u8],
    aad: impl FnOnce(&P) -> A,
    what: &str,
) -> Result<(P, S, bool), CodecError>
where
    P: DeserializeOwned,
    S: DeserializeOwned + Default,
    A: AsRef<[u8]>,
{
    let stored = Stored::parse(bytes)?;
    let public = from_msgpack(stored.public, what)?;
    let aad = aad(&public);
    Ok(match stored.open(codec, aad.as_ref()).await? {
        Opened::Nothing => (public, S::default(), false),
        Opened::Erased => (public, S::default(), true),
        Opened::Plain(plain) => (public, from_msgpack(&plain, what)?, false),
    })
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Public {
        id: String,
        n: u64,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Personal {
        email: Option<String>,
    }

    fn codec() -> (tempfile::TempDir, Codec) {
        let dir = tempfile::tempdir().unwrap();
        let keys = roster_vault::FileKeyStore::open(&dir.path().join("keys.dat")).unwrap();
        (dir, Codec::new(Arc::new(keys)))
    }

    #[tokio::test]
    async fn parts_round_trip_and_read_as_erased_once_the_key_is_gone() {
        let (_dir, codec) = codec();
        let (kid, key) = codec.key_pool().take(1).await.unwrap().remove(0);
        let public = Public {
            id: "u1".into(),
            n: 7,
        };
        let personal = Personal {
            email: Some("alice@example.com".into()),
        };
        for layout in [Layout::Named, Layout::Positional] {
            let bytes = seal_parts(&public, &personal, false, Some((kid, &key)), b"aad", layout);
            assert!(!bytes.windows(5).any(|w| w == b"alice"), "sealed");
            let (p, s, erased): (Public, Personal, bool) =
                open_parts(&codec, &bytes, |_: &Public| b"aad", "test")
                    .await
                    .unwrap();
            assert_eq!(
                (p, s, erased),
                (
                    Public {
                        id: "u1".into(),
                        n: 7
                    },
                    personal_of(),
                    false
                )
            );
            // Bound to its place: other associated data does not open it.
            let (_, s, erased): (Public, Personal, bool) =
                open_parts(&codec, &bytes, |_: &Public| b"other", "test")
                    .await
                    .unwrap();
            assert_eq!((s, erased), (Personal::default(), true));
        }
        let bytes = seal_parts(
            &public,
            &personal,
            false,
            Some((kid, &key)),
            b"aad",
            Layout::Named,
        );
        codec.keys().destroy(&[kid]).await.unwrap();
        let (p, s, erased): (Public, Personal, bool) =
            open_parts(&codec, &bytes, |_: &Public| b"aad", "test")
                .await
                .unwrap();
        assert_eq!((p.n, s, erased), (7, Personal::default(), true));
        // Without a key the personal part is dropped, never written in clear.
        let bytes = seal_parts(&public, &personal, false, None, b"aad", Layout::Named);
        assert!(!bytes.windows(5).any(|w| w == b"alice"));
        assert!(Stored::parse(&bytes).unwrap().sealed.is_none());
    }

    fn personal_of() -> Personal {
        Personal {
            email: Some("alice@example.com".into()),
        }
    }

    #[test]
    fn malformed_values_are_errors() {
        for bad in [
            &b""[..],
            b"{}",
            b"\x02",
            b"\x02\x05ab",
            b"\x02\x00\x07",
            b"\x02\x00\x01short",
        ] {
            assert!(Stored::parse(bad).is_err(), "{bad:?}");
        }
    }
}
