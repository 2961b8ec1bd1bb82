//! Roster's read side: events in, queryable read models out (docs/architecture.md, read models).
//!
//! - [`codec`]: typed values ↔ stored bytes — the one helper that seals personal parts under
//!   the user's key ([`codec::seal_parts`]), events ([`codec::events`]), and the first
//!   release's format (read only).
//! - [`ReadModels`]: one sled tree holding every read model under a table byte
//!   ([`layout`]): users by id, username and email indexes keyed by blind hash, the wallet
//!   ledger, sessions, tasks, organization settings, the checkpoint; plus the in-memory
//!   [`catalog`] (list order, status/role filters, prefix search), rebuilt at start-up.
//! - [`projector`]: applies events in log order; each batch's changes and its checkpoint are
//!   one atomic write, so a crash never leaves a read model that disagrees with a replay.
//! - [`rebuild`]: fresh read models from position 0, beside the live ones, by the same path.

pub mod catalog;
pub mod codec;
pub mod keys;
pub mod layout;
pub mod ledger;
pub mod location;
pub mod projector;
pub mod rebuild;
pub mod rows;
pub mod sessions;
mod store;
pub mod tasks;
pub mod teams;

pub use codec::{Codec, CodecError, DecodedEvent, EventMeta, EventView};
pub use projector::AnyEvent;
pub use store::{ListOrder, ListPage, ListQuery, ReadModels, StoreError, UserRows};
