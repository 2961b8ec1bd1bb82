//! Roster's read side: events in, queryable read models out (DESIGN.md §Projections).
//!
//! - [`codec`]: domain events ↔ log records, sealing personal data under the user's key.
//! - [`ReadModels`]: sled trees (users by id, username and email indexes keyed by blind hash,
//!   organization settings, the checkpoint) plus the in-memory [`catalog`] (list order,
//!   status/role filters, prefix search), rebuilt from sled at start-up.
//! - [`sessions`]: client sessions (sealed rows) and the in-memory set of revoked sessions.
//! - [`projector`]: applies events in log order; each batch's changes and its checkpoint are
//!   one sled transaction, so a crash never leaves a read model that disagrees with a replay.
//! - [`rebuild`]: fresh read models from position 0, beside the live ones; fresh models are
//!   filled by a bulk path without per-batch transactions (they are not in use until the
//!   switch), then the projector's path takes over.

mod bulk;
pub mod catalog;
pub mod codec;
pub mod keys;
pub mod ledger;
pub mod location;
pub mod projector;
pub mod rebuild;
pub mod rows;
pub mod sessions;
mod store;
pub mod tasks;

pub use codec::{Codec, CodecError, DecodedEvent, EventMeta};
pub use store::{ListOrder, ListPage, ListQuery, ReadModels, StoreError, UserRows};
