//! Roster's domain: pure, no IO, no async.
//!
//! - [`aggregate`]: the one aggregate model — `decide(state, command) -> Decision` (events and
//!   the unique values they claim or release) and `apply(state, event) -> state`.
//! - [`events`]: events as public and personal parts ([`events::Parts`]), one
//!   [`events::EventSet`] per aggregate.
//! - The aggregates: [`user`] (users), [`session`] (client sessions), [`task`] (bulk tasks),
//!   [`settings`] (an organization's settings), [`team`] (teams and their members), [`webhook`] (webhook subscriptions and their
//!   delivery position).
//! - [`values`], [`input`], [`patch`]: validated newtypes and request shapes, parsed once at
//!   the edge.

pub mod aggregate;
pub mod error;
pub mod events;
pub mod input;
pub mod keys;
pub mod patch;
pub mod session;
pub mod settings;
pub mod task;
pub mod team;
pub mod time;
pub mod user;
pub mod values;
pub mod webhook;

pub use aggregate::{Aggregate, Decision, Recorded, Unique, UniqueChange};
pub use error::{DomainError, FieldError};
pub use events::EventSet;
pub use input::{UserInput, ValidUser};
pub use keys::KeyId;
pub use patch::{Patch, PatchInput};
pub use user::{
    CreateUser, DeleteMode, PasswordHash, Profile, Status, User, UserCommand, UserEvent,
};
pub use values::{Email, OrgId, Password, Phone, UserId, Username};

/// Every event type of every aggregate, in declaration order; webhooks' own last.
pub fn event_types() -> impl Iterator<Item = &'static str> {
    UserEvent::TYPES
        .iter()
        .chain(session::SessionEvent::TYPES)
        .chain(task::TaskEvent::TYPES)
        .chain(settings::SettingsEvent::TYPES)
        .chain(team::TeamEvent::TYPES)
        .chain(webhook::WebhookEvent::TYPES)
        .copied()
}
