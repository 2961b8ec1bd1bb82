//! The one aggregate model every aggregate follows (after disintegrate's `Decision` and
//! zitadel's unique constraints).
//!
//! An aggregate is a state folded from its stream's events by a total [`Aggregate::apply`],
//! and a pure [`Aggregate::decide`] that turns a command into a [`Decision`]: the events to
//! record and the unique values they claim or release. The repository (services layer) does
//! the rest for every aggregate alike: load, decide, seal, append with the expected version
//! and the decision's reservations in one atomic transaction, retry on conflict.

use chrono::{DateTime, Utc};

use crate::error::DomainError;
use crate::events::EventSet;
use crate::keys::KeyId;

/// A stream's position in its history as `apply` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded<'a> {
    /// The stream's id within its organization (`alice` for `user-alice`).
    pub id: &'a str,
    /// The organization.
    pub org: &'a str,
    /// When the event was committed.
    pub at: DateTime<Utc>,
    /// The event's version in its stream (1-based).
    pub version: u64,
}

/// An aggregate: state, events, commands, and the two functions that relate them.
pub trait Aggregate: Clone + std::fmt::Debug + Send + Sync + Sized + 'static {
    /// Its events.
    type Event: EventSet;
    /// Its commands (validated at the edge: `decide` does not re-validate what newtypes hold).
    type Command;
    /// Stream name prefix (`user-`, `session-`, `task-`); a singleton aggregate's whole name.
    const STREAM_PREFIX: &'static str;

    /// Folds one recorded event into the state. Never fails: events are facts. `None` in,
    /// and a first event that does not create the aggregate, stays `None`.
    fn apply(state: Option<Self>, event: &Self::Event, at: Recorded<'_>) -> Option<Self>;

    /// What a command causes, given the state. Pure.
    fn decide(
        state: Option<&Self>,
        command: &Self::Command,
    ) -> Result<Decision<Self::Event>, DomainError>;

    /// The data key sealing this aggregate's personal data, if it has any (a user's own key;
    /// a session's is its user's).
    fn data_key(&self) -> Option<KeyId> {
        None
    }

    /// About how many bytes the state holds (for caches sized in bytes).
    fn size_hint(&self) -> usize {
        256
    }
}

/// What a command decided: the events to append (none = it changes nothing) and the unique
/// values they take or give back, applied in the same atomic append.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision<E> {
    /// Events, in order.
    pub events: Vec<E>,
    /// Unique values claimed, shared or released by these events, for the aggregate's owner.
    pub uniques: Vec<UniqueChange>,
    /// The events need a fresh data key (a new user, a pruned user restored); the repository
    /// allocates one and hands it to [`EventSet::assign_key`] before anything is sealed.
    pub fresh_key: bool,
}

impl<E> Decision<E> {
    /// A decision that records nothing (zitadel's "no changed event").
    pub fn nothing() -> Self {
        Self {
            events: Vec::new(),
            uniques: Vec::new(),
            fresh_key: false,
        }
    }

    /// A decision recording `event`.
    pub fn event(event: E) -> Self {
        Self {
            events: vec![event],
            ..Self::nothing()
        }
    }

    /// `event` if `changed`, else nothing.
    pub fn when(changed: bool, event: impl FnOnce() -> E) -> Self {
        if changed {
            Self::event(event())
        } else {
            Self::nothing()
        }
    }

    /// The same decision, also changing `uniques`.
    pub fn with_uniques(mut self, uniques: impl IntoIterator<Item = UniqueChange>) -> Self {
        self.uniques.extend(uniques);
        self
    }

    /// The same decision, asking for a fresh data key.
    pub fn with_fresh_key(mut self) -> Self {
        self.fresh_key = true;
        self
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// A value unique within its organization (or a narrower scope).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Unique {
    /// A normalized username.
    Username(String),
    /// A normalized email.
    Email(String),
    /// A custom token's id (`jti`): single use.
    CustomToken(String),
    /// A normalized username within a team (`enforce_unique_usernames: team`).
    TeamUsername {
        /// The team's id.
        team: String,
        /// The normalized username.
        name: String,
    },
    /// A linked identity: a provider's subject.
    Identity {
        /// The provider (`facebook`, `device`, …).
        provider: String,
        /// The subject at the provider.
        subject: String,
    },
}

/// What a decision does to a unique value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UniqueChange {
    /// Takes it exclusively: the append fails if another owner holds it.
    Claim(Unique),
    /// Takes it exclusively until a time (microseconds since the epoch), after which it reads
    /// as free (a custom token's id: the token itself has expired by then).
    ClaimUntil(Unique, i64),
    /// Holds it together with whoever does (usernames while duplicates are allowed); an
    /// exclusive claim by someone else fails while any holder keeps it.
    Share(Unique),
    /// Gives it back.
    Release(Unique),
}

impl UniqueChange {
    /// The value concerned.
    pub fn unique(&self) -> &Unique {
        match self {
            UniqueChange::Claim(u)
            | UniqueChange::ClaimUntil(u, _)
            | UniqueChange::Share(u)
            | UniqueChange::Release(u) => u,
        }
    }
}
