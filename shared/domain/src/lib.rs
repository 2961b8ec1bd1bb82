//! Roster's domain: pure, no IO, no async.
//!
//! - [`values`]: validated newtypes (`UserId`, `Username`, `Email`, …) parsed once at the edge.
//! - [`input`] and [`patch`]: request shapes and their validation.
//! - [`command`], [`event`], [`aggregate`]: the User aggregate — `decide(state, command)`
//!   returns events or a [`DomainError`]; `apply(state, event)` folds them into [`User`].
//! - [`session`]: client sessions, an aggregate of their own on `session-<id>` streams.
//! - [`personal`]: which parts of a payload are personal data (sealed by the storage layer).

pub mod aggregate;
pub mod command;
pub mod error;
pub mod event;
pub mod input;
pub mod patch;
pub mod personal;
pub mod session;
pub mod settings;
pub mod task;
pub mod upcast;
pub mod user;
pub mod values;

pub use aggregate::{apply, decide};
pub use command::{Command, CreateUser};
pub use error::{DomainError, FieldError};
pub use event::Event;
pub use input::{UserInput, ValidUser};
pub use patch::{Patch, PatchInput};
pub use user::{DeleteMode, Profile, Status, User};
pub use values::{Email, OrgId, Password, Phone, UserId, Username};
