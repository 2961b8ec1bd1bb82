//! What every event type shares: a public part and a personal part, and one set of events per
//! aggregate ([`EventSet`]), written and read part by part by the storage codec.
//!
//! The domain decides which fields are personal by where it puts them: each event type is a
//! [`Parts`] — a public struct (stored in clear) and a personal struct (sealed under the
//! user's data key by the one generic helper of the storage layer). No list of personal key
//! names exists anywhere; the codec never looks inside either part.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::keys::KeyId;

/// The part of a value that holds nothing: an event without personal fields has
/// `Personal = Nothing`, one without public fields `Public = Nothing`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Nothing {}

/// A value stored as a public part and a personal part.
pub trait Parts: Sized {
    /// Stored in clear.
    type Public: Serialize + DeserializeOwned;
    /// Sealed under the data key; `Default` is what an erased value reads as.
    type Personal: Serialize + DeserializeOwned + Default + PartialEq;
    /// The public part.
    fn public(&self) -> &Self::Public;
    /// The personal part.
    fn personal(&self) -> &Self::Personal;
    /// The value from its parts (the personal part is `Default` once erased).
    fn from_parts(public: Self::Public, personal: Self::Personal) -> Self;
}

/// Writes values part by part (the storage codec, or the JSON view of an event).
pub trait PartsWriter {
    /// Why writing failed.
    type Error;
    /// Writes one value's parts.
    fn write<P, S>(&mut self, public: &P, personal: &S) -> Result<(), Self::Error>
    where
        P: Serialize,
        S: Serialize + Default + PartialEq;
}

/// Reads one value's parts back.
pub trait PartsReader {
    /// Why reading failed.
    type Error;
    /// The parts; the personal one is `Default` when it was erased.
    fn read<P, S>(self) -> Result<(P, S), Self::Error>
    where
        P: DeserializeOwned,
        S: DeserializeOwned + Default;
}

/// An event type's recorded JSON of the first storage format (format 1), read into today's
/// type: the shape as it was, upcast across schema versions.
pub trait FromJson: Sized {
    /// `data` (personal parts already merged back) of schema version `schema_version`.
    fn from_json(schema_version: u32, data: Map<String, Value>) -> Result<Self, String>;
}

/// Implements [`FromJson`] for types whose format-1 JSON is their own serde shape.
#[macro_export]
macro_rules! json_as_is {
    ($($ty:ty),* $(,)?) => {$(
        impl $crate::events::FromJson for $ty {
            fn from_json(
                _schema_version: u32,
                data: serde_json::Map<String, serde_json::Value>,
            ) -> Result<Self, String> {
                serde_json::from_value(serde_json::Value::Object(data)).map_err(|e| e.to_string())
            }
        }
    )*};
}

/// Implements [`Parts`] for a type that is all public (`public`) or all personal (`personal`).
#[macro_export]
macro_rules! one_part {
    (public: $($ty:ty),* $(,)?) => {$(
        impl $crate::events::Parts for $ty {
            type Public = $ty;
            type Personal = $crate::events::Nothing;
            fn public(&self) -> &$ty { self }
            fn personal(&self) -> &$crate::events::Nothing { &$crate::events::Nothing {} }
            fn from_parts(public: $ty, _: $crate::events::Nothing) -> $ty { public }
        }
    )*};
    (personal: $($ty:ty),* $(,)?) => {$(
        impl $crate::events::Parts for $ty {
            type Public = $crate::events::Nothing;
            type Personal = $ty;
            fn public(&self) -> &$crate::events::Nothing { &$crate::events::Nothing {} }
            fn personal(&self) -> &$ty { self }
            fn from_parts(_: $crate::events::Nothing, personal: $ty) -> $ty { personal }
        }
    )*};
}

/// Implements [`Parts`] for a struct with the fields `public` and `personal`.
#[macro_export]
macro_rules! two_parts {
    ($($ty:ty => ($public:ty, $personal:ty)),* $(,)?) => {$(
        impl $crate::events::Parts for $ty {
            type Public = $public;
            type Personal = $personal;
            fn public(&self) -> &$public { &self.public }
            fn personal(&self) -> &$personal { &self.personal }
            fn from_parts(public: $public, personal: $personal) -> $ty { Self { public, personal } }
        }
    )*};
}

/// Why an event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// The type is not one of the set's.
    #[error("unknown event type {0}")]
    UnknownType(String),
    /// The schema version is newer than this server knows.
    #[error("{event_type} schema version {version} is newer than this server knows ({known})")]
    FutureVersion {
        /// The event type.
        event_type: String,
        /// The recorded version.
        version: u32,
        /// The newest version this server knows.
        known: u32,
    },
    /// The parts could not be read.
    #[error(transparent)]
    Parts(E),
}

/// The events of one aggregate: an enum whose variants are [`Parts`] types, made by
/// [`event_set!`].
pub trait EventSet: Clone + std::fmt::Debug + PartialEq + Send + Sync + Sized + 'static {
    /// Every type name, in declaration order.
    const TYPES: &'static [&'static str];
    /// The type name recorded in the log.
    fn event_type(&self) -> &'static str;
    /// The schema version new events of this type are written with.
    fn schema_version(&self) -> u32;
    /// The current schema version of a type of this set, if it is one.
    fn version_of(event_type: &str) -> Option<u32>;
    /// Writes the event's parts.
    fn write_parts<W: PartsWriter>(&self, writer: &mut W) -> Result<(), W::Error>;
    /// Reads an event of `event_type` from its parts.
    fn read_parts<R: PartsReader>(
        event_type: &str,
        schema_version: u32,
        reader: R,
    ) -> Result<Self, ReadError<R::Error>>;
    /// Reads an event of the first storage format (JSON, personal parts merged back).
    fn from_json(
        event_type: &str,
        schema_version: u32,
        data: Map<String, Value>,
    ) -> Result<Self, String>;
    /// Records the fresh data key a decision asked for ([`crate::Decision::fresh_key`]).
    fn assign_key(&mut self, _key: KeyId) {}
    /// Whether applying this event destroys the aggregate's data key (crypto-erasure).
    fn erases_key(&self) -> bool {
        false
    }
    /// A data key other than the aggregate's own that this event puts an end to (a used or
    /// superseded purpose token's): destroyed after the append and by the projector.
    fn ended_key(&self) -> Option<KeyId> {
        None
    }
}

/// Declares an aggregate's event enum and implements [`EventSet`] for it. Each variant names
/// its type and current schema version (`Variant(Type) = 2`).
#[macro_export]
macro_rules! event_set {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident($ty:ty) = $version:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum $name {
            $( $(#[$vmeta])* $variant($ty), )*
        }

        impl $crate::events::EventSet for $name {
            const TYPES: &'static [&'static str] = &[$(stringify!($variant)),*];

            fn event_type(&self) -> &'static str {
                match self { $( Self::$variant(_) => stringify!($variant), )* }
            }

            fn schema_version(&self) -> u32 {
                match self { $( Self::$variant(_) => $version, )* }
            }

            fn version_of(event_type: &str) -> Option<u32> {
                match event_type { $( stringify!($variant) => Some($version), )* _ => None }
            }

            fn write_parts<W: $crate::events::PartsWriter>(
                &self,
                writer: &mut W,
            ) -> Result<(), W::Error> {
                use $crate::events::Parts;
                match self {
                    $( Self::$variant(e) => writer.write(e.public(), e.personal()), )*
                }
            }

            fn read_parts<R: $crate::events::PartsReader>(
                event_type: &str,
                schema_version: u32,
                reader: R,
            ) -> Result<Self, $crate::events::ReadError<R::Error>> {
                use $crate::events::{Parts, ReadError};
                match event_type {
                    $( stringify!($variant) => {
                        if schema_version > $version {
                            return Err(ReadError::FutureVersion {
                                event_type: event_type.to_owned(),
                                version: schema_version,
                                known: $version,
                            });
                        }
                        let (public, personal) = reader
                            .read::<<$ty as Parts>::Public, <$ty as Parts>::Personal>()
                            .map_err(ReadError::Parts)?;
                        Ok(Self::$variant(<$ty>::from_parts(public, personal)))
                    } )*
                    other => Err(ReadError::UnknownType(other.to_owned())),
                }
            }

            fn from_json(
                event_type: &str,
                schema_version: u32,
                data: serde_json::Map<String, serde_json::Value>,
            ) -> Result<Self, String> {
                match event_type {
                    $( stringify!($variant) => {
                        if schema_version > $version {
                            return Err(format!(
                                "{event_type} schema version {schema_version} is newer than this server knows ({})",
                                $version
                            ));
                        }
                        <$ty as $crate::events::FromJson>::from_json(schema_version, data)
                            .map(Self::$variant)
                    } )*
                    other => Err(format!("unknown event type {other}")),
                }
            }

            $crate::event_set!(@keys $name);
        }
    };
    (@keys $name:ident) => {
        fn assign_key(&mut self, key: $crate::keys::KeyId) {
            <$name as $crate::events::KeyedEvents>::assign_key(self, key)
        }
        fn erases_key(&self) -> bool {
            <$name as $crate::events::KeyedEvents>::erases_key(self)
        }
        fn ended_key(&self) -> Option<$crate::keys::KeyId> {
            <$name as $crate::events::KeyedEvents>::ended_key(self)
        }
    };
}

/// The data-key hooks of an event set (every set implements it; most with the defaults).
pub trait KeyedEvents {
    /// See [`EventSet::assign_key`].
    fn assign_key(&mut self, _key: KeyId) {}
    /// See [`EventSet::erases_key`].
    fn erases_key(&self) -> bool {
        false
    }
    /// See [`EventSet::ended_key`].
    fn ended_key(&self) -> Option<KeyId> {
        None
    }
}
