//! Commands to the User aggregate: imperative, validated at the edge into typed values.

use std::collections::BTreeMap;

use super::DeleteMode;
use super::profile::{JsonObject, PasswordHash, Profile};
use crate::patch::Patch;
use crate::settings::UniqueUsernames;
use crate::values::{Email, OrgId, Phone, UserId};

/// Creates a user, or — as `POST /v1/users/upsert` does — replaces it whole if it exists.
#[derive(Clone, Debug)]
pub struct CreateUser {
    /// The user's id.
    pub id: UserId,
    /// Its organization.
    pub org: OrgId,
    /// Its fields.
    pub profile: Profile,
    /// The password's hash, if one was given.
    pub password_hash: Option<PasswordHash>,
    /// Whether its username must be unique in the organization.
    pub usernames: UniqueUsernames,
}

/// Imports a user (`POST /v1/users/import`): what [`CreateUser`] holds, plus what the system
/// it comes from kept.
#[derive(Clone, Debug)]
pub struct ImportUser {
    /// Id, organization, fields, password hash, username rule.
    pub create: CreateUser,
    /// When it was created there.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Email verified there.
    pub email_verified: bool,
    /// Phone verified there.
    pub phone_verified: bool,
    /// Its status there.
    pub status: super::Status,
    /// Its balances there (each ≥ 0, checked at the edge).
    pub wallet: super::Wallet,
    /// `on_conflict=replace`: an existing user is replaced whole; else `IdTaken`.
    pub replace: bool,
}

/// Sets and unsets paths.
#[derive(Clone, Debug)]
pub struct PatchUser {
    /// The validated paths.
    pub patch: Patch,
    /// Whether a username it sets must be unique in the organization.
    pub usernames: UniqueUsernames,
}

/// A wallet changeset, validated at the edge (currency names, at most 100 of them).
#[derive(Clone, Debug)]
pub struct WalletChange {
    /// Change per currency.
    pub changeset: BTreeMap<String, i64>,
    /// Ledger metadata (size checked).
    pub metadata: JsonObject,
    /// Whether to write a ledger item.
    pub update_ledger: bool,
}

/// A command to one user.
#[derive(Clone, Debug)]
pub enum UserCommand {
    /// Create; `IdTaken` if the user exists.
    Create(CreateUser),
    /// Create if missing, else replace every field (fields left out are removed).
    Upsert(CreateUser),
    /// Set and unset paths.
    Patch(PatchUser),
    /// Replace the email (clears its verification).
    ChangeEmail(Option<Email>),
    /// Replace the name (checked at the edge).
    ChangeName(Option<String>),
    /// Replace the phone number (clears its verification).
    ChangePhone(Option<Phone>),
    /// Replace the password hash.
    ChangePassword(PasswordHash),
    /// Replace an imported hash by Roster's own of the same password (ends no session).
    RehashPassword(PasswordHash),
    /// Import (create, or replace whole).
    Import(Box<ImportUser>),
    /// Replace the preferences (size checked at the edge).
    ReplacePrefs(JsonObject),
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
    Restore,
    /// End every session the user has (`DELETE /v1/users/{id}/sessions`).
    RevokeSessions,
    /// Apply a wallet changeset atomically.
    AdjustWallet(WalletChange),
    /// Issue a purpose token.
    IssueToken(super::IssueToken),
    /// Redeem a purpose token.
    RedeemToken(super::RedeemToken),
    /// Join a team (the team's side is the team's decision, in the same append).
    JoinTeam {
        /// The team.
        team_id: String,
        /// The new membership's id.
        membership_id: String,
        /// The organization's username rule (`team`: the username must be free in the team).
        usernames: UniqueUsernames,
    },
    /// Leave a team (nothing if not a member).
    LeaveTeam {
        /// The team.
        team_id: String,
    },
    /// Create a guest: a user of role `guest` (in `create`'s profile) that expires.
    CreateGuest(CreateUser, chrono::DateTime<chrono::Utc>),
    /// Turn a guest into a full user (its new username and email claimed as usual).
    UpgradeGuest {
        /// The username.
        username: String,
        /// The email, if given.
        email: Option<Email>,
        /// The password's hash.
        password_hash: PasswordHash,
        /// The organization's username rule.
        usernames: UniqueUsernames,
    },
    /// Create a user holding an identity (a sign-in by identity that finds no holder).
    SignUpWithIdentity(CreateUser, super::Identity),
    /// Link an identity (checked at the edge); nothing if already linked.
    LinkIdentity(super::Identity),
    /// Unlink an identity (refused if it is not linked).
    UnlinkIdentity(super::Identity),
}
