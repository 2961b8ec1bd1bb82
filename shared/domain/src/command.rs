//! Commands to the User aggregate: imperative, already validated at the edge.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::patch::Patch;
use crate::user::{DeleteMode, Profile};
use crate::values::{Email, OrgId, Phone, UserId};

/// Creates a user, or — as `POST /v1/users/upsert` does — replaces it whole if it exists.
#[derive(Clone, Debug)]
pub struct CreateUser {
    /// The user's id.
    pub user_id: UserId,
    /// Its organization.
    pub org: OrgId,
    /// A fresh data key for its personal data (used only if the user is created).
    pub key_id: String,
    /// Its fields.
    pub profile: Profile,
    /// argon2id hash of the password, if one was given.
    pub password_hash: Option<String>,
}

/// A command to one user.
#[derive(Clone, Debug)]
pub enum Command {
    /// Create; `IdTaken` if the user exists.
    Create(CreateUser),
    /// Create if missing, else replace every field (fields left out are removed).
    Upsert(CreateUser),
    /// Set and unset paths.
    Patch(Patch),
    /// Replace the email (clears its verification).
    ChangeEmail(Option<Email>),
    /// Replace the name.
    ChangeName(Option<String>),
    /// Replace the phone number (clears its verification).
    ChangePhone(Option<Phone>),
    /// Replace the password hash.
    ChangePassword(String),
    /// Replace the preferences.
    ReplacePrefs(Map<String, Value>),
    /// Block (`true`) or unblock.
    SetBlocked(bool),
    /// Set the email verification flag.
    SetEmailVerified(bool),
    /// Set the phone verification flag.
    SetPhoneVerified(bool),
    /// Deactivate.
    Deactivate {
        /// Who asks.
        created_by_id: Option<String>,
    },
    /// Reactivate.
    Reactivate,
    /// Delete in a mode.
    Delete(DeleteMode),
    /// Restore a soft- or pruning-deleted user.
    Restore {
        /// A fresh data key, used if the user was pruned.
        new_key_id: String,
    },
    /// End every session the user has (`DELETE /v1/users/{id}/sessions`).
    RevokeSessions,
    /// Apply a wallet changeset atomically.
    AdjustWallet {
        /// Change per currency.
        changeset: BTreeMap<String, i64>,
        /// Ledger metadata.
        metadata: Map<String, Value>,
        /// Whether to write a ledger item.
        update_ledger: bool,
    },
}
