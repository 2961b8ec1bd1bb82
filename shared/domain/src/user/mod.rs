//! The User aggregate: its state, events, commands, and `decide`/`apply`.

mod command;
mod decide;
pub use decide::{GUEST_ROLE, MAX_IDENTITIES_PER_USER, MAX_TEAMS_PER_USER, identity_unique};
mod events;
pub mod json;
mod profile;
mod tokens;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use command::{CreateUser, ImportUser, PatchUser, UserCommand, WalletChange};
pub use events::*;
pub use profile::*;
pub use tokens::{
    IssueToken, LiveToken, Purpose, RECOVERY_INTERVAL_SECS, RedeemToken, Tokens, token_aad,
};

use crate::keys::KeyId;
use crate::time;
use crate::values::{OrgId, UserId};

/// How a user was deleted (docs/contract.md §3 "Deletion modes").
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMode {
    /// Marked deleted; everything kept; restorable.
    Soft,
    /// Marked deleted; personal data erased everywhere; restorable without it.
    Pruning,
    /// Erased completely; id, username and email released.
    Hard,
}

/// The user's status as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Normal.
    Active,
    /// Blocked by the server (Appwrite's status = false).
    Blocked,
    /// Deactivated (reversible; cannot sign in).
    Deactivated,
    /// Soft- or pruning-deleted.
    Deleted,
}

/// Balances per currency; never negative.
pub type Wallet = BTreeMap<String, i64>;

/// A user as the events made it: a public part and a personal part, stored apart (the
/// personal one sealed under the user's data key).
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    /// Ids, flags, lifecycle, wallet, versions, the public profile fields.
    pub public: UserPublic,
    /// The personal profile fields and the password hash.
    pub personal: UserPersonal,
}

/// What of a user is stored in clear.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserPublic {
    /// User id.
    pub id: UserId,
    /// Organization the user belongs to.
    pub organization_id: OrgId,
    /// The data key sealing this user's personal data.
    pub key_id: Option<KeyId>,
    /// Role, language, time zone.
    pub profile: PublicProfile,
    /// Whether the email was verified (cleared when the email changes).
    pub email_verified: bool,
    /// Whether the phone was verified (cleared when the phone changes).
    pub phone_verified: bool,
    /// Blocked by the server.
    pub blocked: bool,
    /// Balance per currency.
    pub wallet: Wallet,
    /// When the user was created.
    #[serde(with = "time::micros")]
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    #[serde(with = "time::micros")]
    pub updated_at: DateTime<Utc>,
    /// When the user was deactivated, if it is.
    #[serde(with = "time::micros_option")]
    pub deactivated_at: Option<DateTime<Utc>>,
    /// Who deactivated the user, if given.
    pub deactivated_by: Option<String>,
    /// When the user was deleted, if it is.
    #[serde(with = "time::micros_option")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// How the user was deleted, if it is.
    pub deletion: Option<DeleteMode>,
    /// Personal data has been erased (pruning, or a destroyed key on replay).
    pub erased: bool,
    /// Sessions signed in against an earlier version of the user no longer work: the version
    /// of the event that created the user, changed its password, blocked, deactivated or
    /// deleted it, or revoked its sessions.
    pub sessions_valid_from: u64,
    /// The user stream's version (ETag).
    pub version: u64,
    /// Live purpose tokens (only in the state folded from the log: read-model rows, which
    /// nothing redeems tokens against, do not store them).
    #[serde(skip)]
    pub tokens: Tokens,
    /// The teams the user is in: team id → membership id.
    #[serde(default)]
    pub teams: BTreeMap<String, String>,
    /// A guest's expiry (`None` for everyone else).
    #[serde(default, with = "time::micros_option")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl User {
    /// The user's id.
    pub fn id(&self) -> &UserId {
        &self.public.id
    }

    /// The status derived from the lifecycle fields: deleted beats deactivated beats blocked.
    pub fn status(&self) -> Status {
        let p = &self.public;
        if p.deleted_at.is_some() {
            Status::Deleted
        } else if p.deactivated_at.is_some() {
            Status::Deactivated
        } else if p.blocked {
            Status::Blocked
        } else {
            Status::Active
        }
    }

    /// Whether the user is (soft- or pruning-) deleted.
    pub fn is_deleted(&self) -> bool {
        self.public.deleted_at.is_some()
    }

    /// The username, if it has one.
    pub fn username(&self) -> Option<&str> {
        self.personal.profile.username.as_deref()
    }

    /// The email, if it has one.
    pub fn email(&self) -> Option<&str> {
        self.personal.profile.email.as_deref()
    }

    /// Whether the user is a guest past its expiry at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.public.expires_at.is_some_and(|t| t <= now)
    }

    /// The normalized username, if it has one.
    pub fn normalized_username(&self) -> Option<String> {
        self.username().map(crate::values::normalize_username)
    }

    /// The password hash, if it has a password.
    pub fn password_hash(&self) -> Option<&PasswordHash> {
        self.personal.password_hash.as_ref()
    }

    /// The whole profile, moved out and back in around `f` (a patch spans both parts).
    pub fn with_profile<T>(&mut self, f: impl FnOnce(&mut Profile) -> T) -> T {
        let mut profile = Profile {
            public: std::mem::take(&mut self.public.profile),
            personal: std::mem::take(&mut self.personal.profile),
        };
        let out = f(&mut profile);
        self.public.profile = profile.public;
        self.personal.profile = profile.personal;
        out
    }
}
