//! The User aggregate's events. Past tense, one type each, each a [`Parts`]: what is public
//! and what is personal is decided here, by the types, and nowhere else.
//!
//! Events are facts: `apply` trusts them and never fails. Personal parts read as their
//! `Default` once the user's data key is destroyed. Which part a type is (all public, all
//! personal, or both) is said by the `one_part!`/`two_parts!` lines below.
//!
//! Stored parts are positional in binary formats: a field may only ever be added at the end
//! of a part, with `#[serde(default)]`; anything else is a new schema version.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use super::profile::{JsonObject, PasswordHash, PublicProfile, UserPersonal};
use super::{DeleteMode, Status, Wallet};
use crate::events::KeyedEvents;
use crate::keys::KeyId;
use crate::values::{OrgId, UserId};
use crate::{event_set, one_part, two_parts};

/// A user was created.
#[derive(Clone, Debug, PartialEq)]
pub struct UserCreated {
    /// Ids and the public fields.
    pub public: UserCreatedPublic,
    /// The personal fields and the password hash.
    pub personal: UserPersonal,
}

/// The public part of [`UserCreated`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserCreatedPublic {
    /// The new user's id.
    pub user_id: UserId,
    /// Its organization.
    pub organization_id: OrgId,
    /// The data key sealing its personal data (assigned by the repository).
    pub key_id: Option<KeyId>,
    /// Role, language, time zone.
    pub profile: PublicProfile,
}

/// A user was replaced whole by an upsert: fields left out are removed.
#[derive(Clone, Debug, PartialEq)]
pub struct UserReplaced {
    /// The new public fields.
    pub public: ProfilePart,
    /// The new personal fields; a `None` password hash keeps the password.
    pub personal: UserPersonal,
}

/// A user was imported (`POST /v1/users/import`): created with what the system it came from
/// kept — creation time, verification flags, status, wallet — or, with `on_conflict=replace`,
/// an existing user replaced whole by the imported line.
#[derive(Clone, Debug, PartialEq)]
pub struct UserImported {
    /// Ids, the public fields, flags, status and wallet.
    pub public: UserImportedPublic,
    /// The personal fields and the password hash (`None` keeps a replaced user's password).
    pub personal: UserPersonal,
}

/// The public part of [`UserImported`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserImportedPublic {
    /// The user's id, as the import line gave it.
    pub user_id: UserId,
    /// Its organization.
    pub organization_id: OrgId,
    /// The data key sealing its personal data (a fresh one for a new user, the user's own for
    /// a replaced one).
    pub key_id: Option<KeyId>,
    /// Role, language, time zone.
    pub profile: PublicProfile,
    /// When the user was created in the system it came from; `None`: when it was imported
    /// (or, replacing, when it was created here).
    #[serde(default, with = "crate::time::micros_option")]
    pub created_at: Option<DateTime<Utc>>,
    /// Whether the email was verified there.
    pub email_verified: bool,
    /// Whether the phone was verified there.
    pub phone_verified: bool,
    /// Its status there (`deleted`: imported soft-deleted).
    pub status: Status,
    /// Its balances there (no ledger items: the ledger's history is not imported).
    pub wallet: Wallet,
}

/// A public profile as an event part.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfilePart {
    /// Role, language, time zone.
    pub profile: PublicProfile,
}

/// Some fields were set or unset by path (public paths in `public`, personal in `personal`).
#[derive(Clone, Debug, PartialEq)]
pub struct UserPartiallyUpdated {
    /// Paths of public fields (`role`, `lang_tag`, `timezone`).
    pub public: PathChanges,
    /// Paths of personal fields.
    pub personal: PathChanges,
}

/// Paths set to values and paths removed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PathChanges {
    /// Paths to values.
    #[serde(default)]
    pub set: JsonObject,
    /// Paths removed.
    #[serde(default)]
    pub unset: Vec<String>,
}

/// The email changed (verification is cleared).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmailChanged {
    /// The new email; `None` removes it.
    #[serde(default)]
    pub email: Option<String>,
}

/// The name changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NameChanged {
    /// The new name; `None` removes it.
    #[serde(default)]
    pub name: Option<String>,
}

/// The phone number changed (verification is cleared).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PhoneChanged {
    /// The new number; `None` removes it.
    #[serde(default)]
    pub phone: Option<String>,
}

/// The password changed. Only its hash is ever recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PasswordChanged {
    /// The new hash.
    #[serde(default)]
    pub password_hash: Option<PasswordHash>,
}

/// A password hash made by another system (an imported one) was replaced by Roster's own
/// argon2id hash of the same password, at its first successful sign-in. Not a password
/// change: it ends no session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PasswordRehashed {
    /// The argon2id hash.
    #[serde(default)]
    pub password_hash: Option<PasswordHash>,
}

/// The preferences were replaced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PrefsUpdated {
    /// The new preferences.
    #[serde(default)]
    pub prefs: JsonObject,
}

/// A verification flag changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VerificationChanged {
    /// New email verification, if it changed.
    #[serde(default)]
    pub email_verified: Option<bool>,
    /// New phone verification, if it changed.
    #[serde(default)]
    pub phone_verified: Option<bool>,
}

/// The user was blocked or unblocked (`PATCH /v1/users/{id}/status`).
///
/// Schema version 2. Version 1 recorded `{"blocked": bool}`; it is upcast when read (see
/// [`crate::user::json`]), so the log's history is never rewritten.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusChanged {
    /// The status a server set: `active` (unblocked) or `blocked`.
    pub status: BlockStatus,
}

impl StatusChanged {
    /// The event for blocking (`true`) or unblocking a user.
    pub fn new(blocked: bool) -> Self {
        Self {
            status: if blocked {
                BlockStatus::Blocked
            } else {
                BlockStatus::Active
            },
        }
    }

    /// Whether the user is blocked after this event.
    pub fn blocked(&self) -> bool {
        self.status == BlockStatus::Blocked
    }
}

/// What a server can set with `PATCH /v1/users/{id}/status`: a user is active or blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockStatus {
    /// Not blocked (Appwrite's `status: true`).
    Active,
    /// Blocked: cannot sign in, and every session ends (Appwrite's `status: false`).
    Blocked,
}

/// The wallet changed by a changeset; each balance stays ≥ 0.
#[derive(Clone, Debug, PartialEq)]
pub struct WalletAdjusted {
    /// The change.
    pub public: WalletChangePart,
    /// The caller's note for the ledger.
    pub personal: LedgerNote,
}

/// The public part of [`WalletAdjusted`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WalletChangePart {
    /// Change per currency (no zero entries).
    pub changeset: BTreeMap<String, i64>,
    /// Whether a ledger item records this change.
    pub update_ledger: bool,
}

/// The personal part of [`WalletAdjusted`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerNote {
    /// Caller metadata for the ledger item.
    #[serde(default)]
    pub metadata: JsonObject,
}

/// The user was deactivated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserDeactivated {
    /// Who asked for it, if given.
    #[serde(default)]
    pub created_by_id: Option<String>,
}

/// The user was reactivated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserReactivated {}

/// The user was deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserDeleted {
    /// How.
    pub mode: DeleteMode,
}

/// A soft- or pruning-deleted user was restored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserRestored {
    /// A fresh data key for a pruned user (its old key was destroyed; assigned by the
    /// repository).
    #[serde(default)]
    pub key_id: Option<KeyId>,
}

/// Every session of the user was ended (sessions signed in before this event stop working).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionsRevoked {}

/// A purpose token was issued for the user (`POST /v1/users/{id}/tokens`); the same fields
/// make `PasswordResetRequested` (account recovery).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenIssued {
    /// Purpose, expiry, and the token sealed under its own key.
    pub public: TokenIssuedPublic,
    /// The token's hash and the address it is bound to.
    pub personal: TokenSecret,
}

/// The public part of [`TokenIssued`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenIssuedPublic {
    /// What the token is for.
    pub purpose: super::tokens::Purpose,
    /// When it stops working.
    #[serde(with = "crate::time::micros")]
    pub expires_at: DateTime<Utc>,
    /// The key of its own the token is sealed under (destroyed when the token is used,
    /// superseded or expires).
    pub key_id: Option<KeyId>,
    /// The token, sealed under `key_id` (base64url). Event views show it `null`.
    pub token: Option<String>,
    /// The key of the token of the same purpose this one supersedes (destroyed).
    pub supersedes: Option<KeyId>,
}

/// The personal part of [`TokenIssued`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenSecret {
    /// Hex SHA-256 of the token (never the token). Event views show it `null`.
    #[serde(default)]
    pub token_hash: Option<String>,
    /// The email or phone number a verification token verifies.
    #[serde(default)]
    pub bound_to: Option<String>,
}

/// A purpose token was redeemed; it works no more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenUsed {
    /// Its purpose.
    pub purpose: super::tokens::Purpose,
    /// Its key (destroyed).
    #[serde(default)]
    pub key_id: Option<KeyId>,
}

/// The user joined a team (the team's side is its `MemberAdded`, in the same append).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TeamJoined {
    /// The team.
    pub team_id: String,
    /// The membership's id.
    pub membership_id: String,
}

/// The user's membership of a team ended (the team's side is its `MemberRemoved`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TeamLeft {
    /// The team.
    pub team_id: String,
    /// The membership's id.
    pub membership_id: String,
}

/// A guest user's expiry (recorded with its creation): after it the guest cannot sign in, its
/// sessions stop working, and the server prunes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GuestExpirySet {
    /// When the guest expires.
    pub expires_at: DateTime<Utc>,
}

/// A guest became a full user (same id and history): role `user`, no expiry, and the
/// username, email and password it chose (sealed; the email starts unverified).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GuestUpgraded {
    /// The username.
    #[serde(default)]
    pub username: Option<String>,
    /// The email, if given.
    #[serde(default)]
    pub email: Option<String>,
    /// The password's hash. Event views show it `null`.
    #[serde(default)]
    pub password_hash: Option<super::PasswordHash>,
}

/// An identity was linked to the user (personal: sealed under the user's key).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityLinked {
    /// The provider.
    #[serde(default)]
    pub provider: String,
    /// The subject at the provider.
    #[serde(default)]
    pub subject: String,
}

/// An identity was unlinked from the user (personal: sealed under the user's key).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityUnlinked {
    /// The provider.
    #[serde(default)]
    pub provider: String,
    /// The subject at the provider.
    #[serde(default)]
    pub subject: String,
}

two_parts! {
    TokenIssued => (TokenIssuedPublic, TokenSecret),
    UserCreated => (UserCreatedPublic, UserPersonal),
    UserReplaced => (ProfilePart, UserPersonal),
    UserImported => (UserImportedPublic, UserPersonal),
    UserPartiallyUpdated => (PathChanges, PathChanges),
    WalletAdjusted => (WalletChangePart, LedgerNote),
}
one_part!(personal: EmailChanged, NameChanged, PhoneChanged, PasswordChanged, PrefsUpdated,
    PasswordRehashed, IdentityLinked, IdentityUnlinked, GuestUpgraded);
one_part!(public: VerificationChanged, StatusChanged, UserDeactivated, UserReactivated,
    UserDeleted, UserRestored, SessionsRevoked, TokenUsed, TeamJoined, TeamLeft, GuestExpirySet);

event_set! {
    /// Every event of the User aggregate.
    pub enum UserEvent {
        /// See [`UserCreated`].
        UserCreated(UserCreated) = 1,
        /// See [`UserReplaced`].
        UserReplaced(UserReplaced) = 1,
        /// See [`UserPartiallyUpdated`].
        UserPartiallyUpdated(UserPartiallyUpdated) = 1,
        /// See [`EmailChanged`].
        EmailChanged(EmailChanged) = 1,
        /// See [`NameChanged`].
        NameChanged(NameChanged) = 1,
        /// See [`PhoneChanged`].
        PhoneChanged(PhoneChanged) = 1,
        /// See [`PasswordChanged`].
        PasswordChanged(PasswordChanged) = 1,
        /// See [`PrefsUpdated`].
        PrefsUpdated(PrefsUpdated) = 1,
        /// See [`VerificationChanged`].
        VerificationChanged(VerificationChanged) = 1,
        /// See [`StatusChanged`].
        StatusChanged(StatusChanged) = 2,
        /// See [`WalletAdjusted`].
        WalletAdjusted(WalletAdjusted) = 1,
        /// See [`UserDeactivated`].
        UserDeactivated(UserDeactivated) = 1,
        /// See [`UserReactivated`].
        UserReactivated(UserReactivated) = 1,
        /// See [`UserDeleted`].
        UserDeleted(UserDeleted) = 1,
        /// See [`UserRestored`].
        UserRestored(UserRestored) = 1,
        /// See [`SessionsRevoked`].
        SessionsRevoked(SessionsRevoked) = 1,
        /// See [`UserImported`].
        UserImported(UserImported) = 1,
        /// See [`PasswordRehashed`].
        PasswordRehashed(PasswordRehashed) = 1,
        /// See [`TokenIssued`].
        TokenIssued(TokenIssued) = 1,
        /// Account recovery issued a password reset token; see [`TokenIssued`].
        PasswordResetRequested(TokenIssued) = 1,
        /// See [`TokenUsed`].
        TokenUsed(TokenUsed) = 1,
        /// See [`TeamJoined`].
        TeamJoined(TeamJoined) = 1,
        /// See [`TeamLeft`].
        TeamLeft(TeamLeft) = 1,
        /// See [`IdentityLinked`].
        IdentityLinked(IdentityLinked) = 1,
        /// See [`IdentityUnlinked`].
        IdentityUnlinked(IdentityUnlinked) = 1,
        /// See [`GuestExpirySet`].
        GuestExpirySet(GuestExpirySet) = 1,
        /// See [`GuestUpgraded`].
        GuestUpgraded(GuestUpgraded) = 1,
    }
}

impl KeyedEvents for UserEvent {
    fn assign_key(&mut self, key: KeyId) {
        match self {
            UserEvent::UserCreated(e) => e.public.key_id = Some(key),
            UserEvent::UserImported(e) => e.public.key_id = Some(key),
            UserEvent::UserRestored(e) => e.key_id = Some(key),
            _ => {}
        }
    }

    fn ended_key(&self) -> Option<KeyId> {
        super::tokens::ended_key(self)
    }

    fn erases_key(&self) -> bool {
        matches!(
            self,
            UserEvent::UserDeleted(UserDeleted {
                mode: DeleteMode::Pruning | DeleteMode::Hard
            })
        )
    }
}

impl UserEvent {
    /// Whether this event ends the user's sessions (so it must be visible to the per-request
    /// token check before the command that caused it answers).
    pub fn ends_sessions(&self) -> bool {
        match self {
            UserEvent::UserReplaced(e) => e.personal.password_hash.is_some(),
            UserEvent::StatusChanged(e) => e.blocked(),
            // A replacement by import is a new account state whole: sessions of the old one end.
            UserEvent::PasswordChanged(_)
            | UserEvent::UserImported(_)
            | UserEvent::UserDeactivated(_)
            | UserEvent::UserDeleted(_)
            | UserEvent::SessionsRevoked(_) => true,
            _ => false,
        }
    }
}
