//! The User aggregate's `decide` (pure, may refuse) and `apply` (total, never refuses).

use std::collections::BTreeMap;

use super::command::{CreateUser, ImportUser, PatchUser, UserCommand, WalletChange};
use super::events::*;
use super::profile::{Profile, UserPersonal};
use super::{DeleteMode, Status, User, UserPublic};
use crate::aggregate::{Aggregate, Decision, Recorded, Unique, UniqueChange};
use crate::error::DomainError;
use crate::settings::UniqueUsernames;
use crate::values::{legacy_email_forms, normalize_email, normalize_username};

impl Aggregate for User {
    type Event = UserEvent;
    type Command = UserCommand;
    const STREAM_PREFIX: &'static str = "user-";

    fn apply(state: Option<Self>, event: &UserEvent, at: Recorded<'_>) -> Option<Self> {
        apply(state, event, at)
    }

    fn decide(
        state: Option<&Self>,
        command: &UserCommand,
    ) -> Result<Decision<UserEvent>, DomainError> {
        decide(state, command)
    }

    fn data_key(&self) -> Option<crate::keys::KeyId> {
        self.public.key_id
    }

    fn size_hint(&self) -> usize {
        let p = &self.personal.profile;
        let text: usize = [
            &p.username,
            &p.display_name,
            &p.name,
            &p.email,
            &p.phone,
            &p.avatar_url,
            &p.location,
        ]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum();
        let objects = p.custom.len() + p.metadata.len() + p.prefs.len() + self.public.wallet.len();
        512 + text + 96 * objects
    }
}

type Decided = Result<Decision<UserEvent>, DomainError>;

fn decide(state: Option<&User>, command: &UserCommand) -> Decided {
    use UserCommand as C;
    match command {
        C::Create(create) => match state {
            None => Ok(created(create)),
            Some(_) => Err(DomainError::IdTaken),
        },
        C::Upsert(create) => match state {
            None => Ok(created(create)),
            Some(user) => replaced(live(user)?, create),
        },
        C::Patch(patch) => patched(existing_live(state)?, patch),
        C::ChangeEmail(email) => {
            let user = existing_live(state)?;
            let email = email.as_ref().map(|e| e.as_str().to_owned());
            let uniques = email_change(user.email(), email.as_deref());
            Ok(Decision::when(user.email() != email.as_deref(), || {
                UserEvent::EmailChanged(EmailChanged { email })
            })
            .with_uniques(uniques))
        }
        C::ChangeName(name) => {
            let user = existing_live(state)?;
            Ok(Decision::when(user.personal.profile.name != *name, || {
                UserEvent::NameChanged(NameChanged { name: name.clone() })
            }))
        }
        C::ChangePhone(phone) => {
            let user = existing_live(state)?;
            let phone = phone.as_ref().map(|p| p.as_str().to_owned());
            Ok(Decision::when(user.personal.profile.phone != phone, || {
                UserEvent::PhoneChanged(PhoneChanged { phone })
            }))
        }
        C::ChangePassword(hash) => {
            existing_live(state)?;
            Ok(Decision::event(UserEvent::PasswordChanged(
                PasswordChanged {
                    password_hash: Some(hash.clone()),
                },
            )))
        }
        C::RehashPassword(hash) => {
            existing_live(state)?;
            Ok(Decision::event(UserEvent::PasswordRehashed(
                PasswordRehashed {
                    password_hash: Some(hash.clone()),
                },
            )))
        }
        C::Import(import) => imported(state, import),
        C::ReplacePrefs(prefs) => {
            let user = existing_live(state)?;
            Ok(Decision::when(
                user.personal.profile.prefs != *prefs,
                || {
                    UserEvent::PrefsUpdated(PrefsUpdated {
                        prefs: prefs.clone(),
                    })
                },
            ))
        }
        C::SetBlocked(blocked) => {
            let user = existing_live(state)?;
            Ok(Decision::when(user.public.blocked != *blocked, || {
                UserEvent::StatusChanged(StatusChanged::new(*blocked))
            }))
        }
        C::SetEmailVerified(v) => {
            let user = existing_live(state)?;
            Ok(Decision::when(user.public.email_verified != *v, || {
                UserEvent::VerificationChanged(VerificationChanged {
                    email_verified: Some(*v),
                    phone_verified: None,
                })
            }))
        }
        C::SetPhoneVerified(v) => {
            let user = existing_live(state)?;
            Ok(Decision::when(user.public.phone_verified != *v, || {
                UserEvent::VerificationChanged(VerificationChanged {
                    email_verified: None,
                    phone_verified: Some(*v),
                })
            }))
        }
        C::Deactivate { created_by_id } => {
            let user = existing_live(state)?;
            Ok(Decision::when(user.public.deactivated_at.is_none(), || {
                UserEvent::UserDeactivated(UserDeactivated {
                    created_by_id: created_by_id.clone(),
                })
            }))
        }
        C::Reactivate => {
            let user = existing_live(state)?;
            Ok(Decision::when(user.public.deactivated_at.is_some(), || {
                UserEvent::UserReactivated(UserReactivated {})
            }))
        }
        C::Delete(mode) => deleted(state.ok_or(DomainError::NotFound)?, *mode),
        C::Restore => {
            let user = state.ok_or(DomainError::NotFound)?;
            let decision = Decision::when(user.is_deleted(), || {
                UserEvent::UserRestored(UserRestored { key_id: None })
            });
            // A pruned user's key was destroyed: what it holds from now on needs a new one.
            Ok(match user.public.deletion == Some(DeleteMode::Pruning) {
                true => decision.with_fresh_key(),
                false => decision,
            })
        }
        // Always recorded: sessions may have started since the last revocation, and the
        // aggregate does not know them.
        C::RevokeSessions => {
            existing_live(state)?;
            Ok(Decision::event(UserEvent::SessionsRevoked(
                SessionsRevoked {},
            )))
        }
        C::AdjustWallet(change) => adjusted(existing_live(state)?, change),
        C::JoinTeam {
            team_id,
            membership_id,
            usernames,
        } => joined(existing_live(state)?, team_id, membership_id, *usernames),
        C::LeaveTeam { team_id } => {
            let user = state.ok_or(DomainError::NotFound)?;
            Ok(left(user, team_id))
        }
        C::LinkIdentity(identity) => linked(existing_live(state)?, identity),
        C::CreateGuest(create, expires_at) => match state {
            None => {
                let mut decision = created(create);
                decision
                    .events
                    .push(UserEvent::GuestExpirySet(GuestExpirySet {
                        expires_at: *expires_at,
                    }));
                Ok(decision)
            }
            Some(_) => Err(DomainError::IdTaken),
        },
        C::UpgradeGuest {
            username,
            email,
            password_hash,
            usernames,
        } => {
            let user = existing_live(state)?;
            if user.public.profile.role != GUEST_ROLE {
                return Err(DomainError::Conflict("only a guest can be upgraded"));
            }
            let email = email.as_ref().map(|e| e.as_str().to_owned());
            let uniques = username_change(Some(user), Some(username), *usernames)
                .into_iter()
                .chain(email_change(user.email(), email.as_deref()));
            Ok(Decision::event(UserEvent::GuestUpgraded(GuestUpgraded {
                username: Some(username.clone()),
                email,
                password_hash: Some(password_hash.clone()),
            }))
            .with_uniques(uniques))
        }
        C::SignUpWithIdentity(create, identity) => match state {
            None => {
                let mut decision = created(create);
                decision
                    .events
                    .push(UserEvent::IdentityLinked(IdentityLinked {
                        provider: identity.provider.clone(),
                        subject: identity.subject.clone(),
                    }));
                Ok(decision.with_uniques([UniqueChange::Claim(identity_unique(identity))]))
            }
            Some(_) => Err(DomainError::IdTaken),
        },
        C::UnlinkIdentity(identity) => {
            let user = existing_live(state)?;
            if !user.personal.identities.contains(identity) {
                return Err(DomainError::NotHeld("The user has no such identity."));
            }
            Ok(
                Decision::event(UserEvent::IdentityUnlinked(IdentityUnlinked {
                    provider: identity.provider.clone(),
                    subject: identity.subject.clone(),
                }))
                .with_uniques([UniqueChange::Release(identity_unique(identity))]),
            )
        }
        C::IssueToken(issue) => super::tokens::issue(existing_live(state)?, issue),
        C::RedeemToken(redeem) => super::tokens::redeem(state, redeem),
    }
}

fn created(create: &CreateUser) -> Decision<UserEvent> {
    let profile = &create.profile;
    let uniques = username_change(None, profile.personal.username.as_deref(), create.usernames)
        .into_iter()
        .chain(email_change(None, profile.personal.email.as_deref()));
    Decision::event(UserEvent::UserCreated(UserCreated {
        public: UserCreatedPublic {
            user_id: create.id.clone(),
            organization_id: create.org.clone(),
            key_id: None,
            profile: profile.public.clone(),
        },
        personal: UserPersonal {
            profile: profile.personal.clone(),
            password_hash: create.password_hash.clone(),
            identities: Vec::new(),
        },
    }))
    .with_uniques(uniques)
    .with_fresh_key()
}

fn imported(state: Option<&User>, import: &ImportUser) -> Decided {
    let create = &import.create;
    let profile = &create.profile;
    let before = match state {
        None => None,
        Some(_) if !import.replace => return Err(DomainError::IdTaken),
        Some(user) if user.is_deleted() => {
            return Err(DomainError::Conflict(
                "the existing user is deleted: restore it before replacing it by import",
            ));
        }
        Some(user) => Some(user),
    };
    let uniques = username_change(
        before,
        profile.personal.username.as_deref(),
        create.usernames,
    )
    .into_iter()
    .chain(email_change(
        before.and_then(User::email),
        profile.personal.email.as_deref(),
    ));
    let decision = Decision::event(UserEvent::UserImported(UserImported {
        public: UserImportedPublic {
            user_id: create.id.clone(),
            organization_id: create.org.clone(),
            key_id: before.and_then(|u| u.public.key_id),
            profile: profile.public.clone(),
            created_at: import.created_at,
            email_verified: import.email_verified,
            phone_verified: import.phone_verified,
            status: import.status,
            wallet: import.wallet.clone(),
        },
        personal: UserPersonal {
            profile: profile.personal.clone(),
            password_hash: create.password_hash.clone(),
            identities: Vec::new(),
        },
    }))
    .with_uniques(uniques);
    Ok(match before {
        None => decision.with_fresh_key(),
        Some(_) => decision,
    })
}

fn replaced(user: &User, create: &CreateUser) -> Decided {
    let new = &create.profile;
    if user.public.profile == new.public
        && user.personal.profile == new.personal
        && create.password_hash.is_none()
    {
        return Ok(Decision::nothing());
    }
    let uniques = username_change(
        Some(user),
        new.personal.username.as_deref(),
        create.usernames,
    )
    .into_iter()
    .chain(email_change(user.email(), new.personal.email.as_deref()));
    Ok(Decision::event(UserEvent::UserReplaced(UserReplaced {
        public: ProfilePart {
            profile: new.public.clone(),
        },
        personal: UserPersonal {
            profile: new.personal.clone(),
            password_hash: create.password_hash.clone(),
            identities: Vec::new(),
        },
    }))
    .with_uniques(uniques))
}

fn patched(user: &User, patch: &PatchUser) -> Decided {
    let current = Profile {
        public: user.public.profile.clone(),
        personal: user.personal.profile.clone(),
    };
    let next = patch
        .patch
        .apply_checked(&current)
        .map_err(DomainError::Invalid)?;
    if next == current {
        return Ok(Decision::nothing());
    }
    let uniques = username_change(
        Some(user),
        next.personal.username.as_deref(),
        patch.usernames,
    )
    .into_iter()
    .chain(email_change(user.email(), next.personal.email.as_deref()));
    Ok(Decision::event(UserEvent::UserPartiallyUpdated(
        UserPartiallyUpdated::from_paths(patch.patch.set.clone(), patch.patch.unset.clone()),
    ))
    .with_uniques(uniques))
}

fn deleted(user: &User, mode: DeleteMode) -> Decided {
    // A deletion may only escalate: soft → pruning → hard.
    if user.public.deletion.is_some_and(|current| mode <= current) {
        return Ok(Decision::nothing());
    }
    let deleted = UserEvent::UserDeleted(UserDeleted { mode });
    if mode == DeleteMode::Soft {
        // A soft deletion keeps everything: memberships and identities come back on restore.
        return Ok(Decision::event(deleted));
    }
    // Pruning erases the username, email and identities, hard deletion the user: both give
    // them back, and end its memberships (the teams' sides are staged by the caller, from
    // the `TeamLeft` events).
    let mut events: Vec<UserEvent> = user
        .public
        .teams
        .iter()
        .map(|(team_id, membership_id)| {
            UserEvent::TeamLeft(TeamLeft {
                team_id: team_id.clone(),
                membership_id: membership_id.clone(),
            })
        })
        .collect();
    events.push(deleted);
    let identities = user
        .personal
        .identities
        .iter()
        .map(|i| UniqueChange::Release(identity_unique(i)));
    Ok(Decision {
        events,
        ..Decision::nothing()
    }
    .with_uniques(
        username_change(Some(user), None, UniqueUsernames::App)
            .into_iter()
            .chain(email_change(user.email(), None))
            .chain(identities),
    ))
}

/// The role of guest users.
pub const GUEST_ROLE: &str = "guest";

/// Most teams one user is in.
pub const MAX_TEAMS_PER_USER: usize = 100;
/// Most identities linked to one user.
pub const MAX_IDENTITIES_PER_USER: usize = 20;

fn joined(user: &User, team_id: &str, membership_id: &str, usernames: UniqueUsernames) -> Decided {
    if user.public.teams.contains_key(team_id) {
        return Err(DomainError::Conflict(
            "the user is already a member of this team",
        ));
    }
    if user.public.teams.len() >= MAX_TEAMS_PER_USER {
        return Err(DomainError::Conflict("a user is in at most 100 teams"));
    }
    let claim = user.normalized_username().map(|name| {
        let unique = Unique::TeamUsername {
            team: team_id.to_owned(),
            name,
        };
        match usernames {
            UniqueUsernames::Team => UniqueChange::Claim(unique),
            _ => UniqueChange::Share(unique),
        }
    });
    Ok(Decision::event(UserEvent::TeamJoined(TeamJoined {
        team_id: team_id.to_owned(),
        membership_id: membership_id.to_owned(),
    }))
    .with_uniques(claim))
}

fn left(user: &User, team_id: &str) -> Decision<UserEvent> {
    let Some(membership_id) = user.public.teams.get(team_id) else {
        return Decision::nothing();
    };
    let release = user.normalized_username().map(|name| {
        UniqueChange::Release(Unique::TeamUsername {
            team: team_id.to_owned(),
            name,
        })
    });
    Decision::event(UserEvent::TeamLeft(TeamLeft {
        team_id: team_id.to_owned(),
        membership_id: membership_id.clone(),
    }))
    .with_uniques(release)
}

fn linked(user: &User, identity: &super::Identity) -> Decided {
    if user.personal.identities.contains(identity) {
        return Ok(Decision::nothing());
    }
    if user.personal.identities.len() >= MAX_IDENTITIES_PER_USER {
        return Err(DomainError::Conflict("a user has at most 20 identities"));
    }
    Ok(Decision::event(UserEvent::IdentityLinked(IdentityLinked {
        provider: identity.provider.clone(),
        subject: identity.subject.clone(),
    }))
    .with_uniques([UniqueChange::Claim(identity_unique(identity))]))
}

/// The unique value an identity stands for.
pub fn identity_unique(identity: &super::Identity) -> Unique {
    Unique::Identity {
        provider: identity.provider.clone(),
        subject: identity.subject.clone(),
    }
}

fn adjusted(user: &User, change: &WalletChange) -> Decided {
    let mut next = user.public.wallet.clone();
    adjust_wallet(&mut next, &change.changeset)?;
    let effective: BTreeMap<String, i64> = change
        .changeset
        .iter()
        .filter(|(_, d)| **d != 0)
        .map(|(c, d)| (c.clone(), *d))
        .collect();
    Ok(Decision::when(!effective.is_empty(), || {
        UserEvent::WalletAdjusted(WalletAdjusted {
            public: WalletChangePart {
                changeset: effective,
                update_ledger: change.update_ledger,
            },
            personal: LedgerNote {
                metadata: change.metadata.clone(),
            },
        })
    }))
}

/// The unique-value changes of `user`'s username (`None`: a new user) becoming `after`
/// (compared by normalized form), in the organization and in each of its teams: an exclusive
/// claim where the rule asks for one (`app`: the organization; `team`: each team), a shared
/// hold elsewhere — so a value duplicates were allowed to share stays protected if the rule
/// tightens, and duplicates held before it tightened are kept.
fn username_change(
    user: Option<&User>,
    after: Option<&str>,
    usernames: UniqueUsernames,
) -> Vec<UniqueChange> {
    let before = user.and_then(User::normalized_username);
    let after = after.map(normalize_username);
    let mut changes = value_change(
        before.clone(),
        after.clone(),
        usernames == UniqueUsernames::App,
        Unique::Username,
    );
    for team in user.iter().flat_map(|u| u.public.teams.keys()) {
        let in_team = |name: String| Unique::TeamUsername {
            team: team.clone(),
            name,
        };
        changes.extend(value_change(
            before.clone(),
            after.clone(),
            usernames == UniqueUsernames::Team,
            in_team,
        ));
    }
    changes
}

/// The unique-value changes of an email going from `before` to `after`. An address holds its
/// normalized form and also the spellings releases before IDNA comparison reserved
/// ([`legacy_email_forms`]): an address taken then stays taken, however it is spelled now.
fn email_change(before: Option<&str>, after: Option<&str>) -> Vec<UniqueChange> {
    let forms = |e: Option<&str>| -> Vec<String> {
        e.map(|e| {
            let mut forms = legacy_email_forms(e);
            forms.insert(0, normalize_email(e));
            forms
        })
        .unwrap_or_default()
    };
    let (before, after) = (forms(before), forms(after));
    let released = before
        .iter()
        .filter(|f| !after.contains(f))
        .map(|f| UniqueChange::Release(Unique::Email(f.clone())));
    let taken = after
        .iter()
        .filter(|f| !before.contains(f))
        .map(|f| UniqueChange::Claim(Unique::Email(f.clone())));
    released.chain(taken).collect()
}

fn value_change(
    before: Option<String>,
    after: Option<String>,
    exclusive: bool,
    unique: impl Fn(String) -> Unique,
) -> Vec<UniqueChange> {
    if before == after {
        return Vec::new();
    }
    let released = before.map(|v| UniqueChange::Release(unique(v)));
    let taken = after.map(|v| match exclusive {
        true => UniqueChange::Claim(unique(v)),
        false => UniqueChange::Share(unique(v)),
    });
    released.into_iter().chain(taken).collect()
}

fn live(user: &User) -> Result<&User, DomainError> {
    if user.is_deleted() {
        Err(DomainError::UserDeleted)
    } else {
        Ok(user)
    }
}

fn existing_live(state: Option<&User>) -> Result<&User, DomainError> {
    live(state.ok_or(DomainError::NotFound)?)
}

/// Applies a changeset to balances, refusing the whole of it if any balance would go below
/// zero or overflow.
fn adjust_wallet(
    wallet: &mut BTreeMap<String, i64>,
    changeset: &BTreeMap<String, i64>,
) -> Result<(), DomainError> {
    for (currency, change) in changeset {
        let balance = wallet.get(currency).copied().unwrap_or(0);
        let next = balance
            .checked_add(*change)
            .ok_or_else(|| DomainError::WalletOverflow {
                currency: currency.clone(),
            })?;
        if next < 0 {
            return Err(DomainError::WalletNegative {
                currency: currency.clone(),
                balance,
                change: *change,
            });
        }
        wallet.insert(currency.clone(), next);
    }
    Ok(())
}

/// Folds one recorded event into the state. `None` means the user does not exist (never
/// created, or hard-deleted).
fn apply(state: Option<User>, event: &UserEvent, at: Recorded<'_>) -> Option<User> {
    let (time, version) = (at.at, at.version);
    let mut user = match (state, event) {
        (_, UserEvent::UserCreated(e)) => User {
            public: UserPublic {
                id: e.public.user_id.clone(),
                organization_id: e.public.organization_id.clone(),
                key_id: e.public.key_id,
                profile: e.public.profile.clone(),
                email_verified: false,
                phone_verified: false,
                blocked: false,
                wallet: BTreeMap::new(),
                created_at: time,
                updated_at: time,
                deactivated_at: None,
                deactivated_by: None,
                deleted_at: None,
                deletion: None,
                erased: false,
                // A session of an earlier incarnation of this id (before a hard delete) never
                // works for this one.
                sessions_valid_from: version,
                version,
                tokens: Default::default(),
                teams: BTreeMap::new(),
                expires_at: None,
            },
            personal: e.personal.clone(),
        },
        (before, UserEvent::UserImported(e)) => imported_user(before, e, time, version),
        // Events other than creation on a missing user cannot be recorded by `decide`; if the
        // log holds one anyway, the state stays missing rather than inventing a user.
        (None, _) => return None,
        (Some(mut user), event) => {
            if !apply_change(&mut user, event, time) {
                return None;
            }
            // Blocking, deactivation, deletion, a new password and an explicit revocation end
            // every session signed in before; unblocking or restoring does not bring them back.
            if event.ends_sessions() {
                user.public.sessions_valid_from = version;
            }
            user
        }
    };
    user.public.updated_at = time;
    user.public.version = version;
    Some(user)
}

/// The user a `UserImported` makes: new, or `before` replaced whole (its password kept when
/// the line has none, its creation time when the line gives none).
fn imported_user(
    before: Option<User>,
    e: &UserImported,
    time: chrono::DateTime<chrono::Utc>,
    version: u64,
) -> User {
    let p = &e.public;
    let created_at = p
        .created_at
        .or(before.as_ref().map(|u| u.public.created_at))
        .unwrap_or(time);
    let password_hash = e.personal.password_hash.clone().or_else(|| {
        before
            .as_ref()
            .and_then(|u| u.personal.password_hash.clone())
    });
    let deactivated = p.status == Status::Deactivated;
    let deleted = p.status == Status::Deleted;
    // Teams and identities change through their own commands only: a replacement keeps them.
    let (teams, identities) = before
        .map(|u| (u.public.teams, u.personal.identities))
        .unwrap_or_default();
    User {
        public: UserPublic {
            id: p.user_id.clone(),
            organization_id: p.organization_id.clone(),
            key_id: p.key_id,
            profile: p.profile.clone(),
            email_verified: p.email_verified,
            phone_verified: p.phone_verified,
            blocked: p.status == Status::Blocked,
            wallet: p.wallet.clone(),
            created_at,
            updated_at: time,
            deactivated_at: deactivated.then_some(time),
            deactivated_by: None,
            deleted_at: deleted.then_some(time),
            deletion: deleted.then_some(DeleteMode::Soft),
            erased: false,
            sessions_valid_from: version,
            version,
            tokens: Default::default(),
            teams,
            expires_at: None,
        },
        personal: UserPersonal {
            profile: e.personal.profile.clone(),
            password_hash,
            identities,
        },
    }
}

/// Applies an event other than creation; false if it ends the user (hard deletion).
fn apply_change(user: &mut User, event: &UserEvent, at: chrono::DateTime<chrono::Utc>) -> bool {
    // The events that may change the address or the number (pruning clears the flags itself).
    let contact = matches!(
        event,
        UserEvent::UserReplaced(_)
            | UserEvent::UserPartiallyUpdated(_)
            | UserEvent::EmailChanged(_)
            | UserEvent::PhoneChanged(_)
    )
    .then(|| {
        (
            user.personal.profile.email.clone(),
            user.personal.profile.phone.clone(),
        )
    });
    match event {
        UserEvent::UserCreated(_) | UserEvent::UserImported(_) => {
            unreachable!("creation and import are applied by `apply`")
        }
        UserEvent::UserReplaced(e) => {
            user.public.profile = e.public.profile.clone();
            user.personal.profile = e.personal.profile.clone();
            if e.personal.password_hash.is_some() {
                user.personal.password_hash = e.personal.password_hash.clone();
                user.public.tokens.clear();
            }
        }
        UserEvent::UserPartiallyUpdated(e) => user.with_profile(|p| {
            crate::patch::apply(p, &e.public.set, &e.public.unset);
            crate::patch::apply(p, &e.personal.set, &e.personal.unset);
        }),
        UserEvent::EmailChanged(e) => user.personal.profile.email = e.email.clone(),
        UserEvent::NameChanged(e) => user.personal.profile.name = e.name.clone(),
        UserEvent::PhoneChanged(e) => user.personal.profile.phone = e.phone.clone(),
        UserEvent::PasswordChanged(e) => {
            user.personal.password_hash = e.password_hash.clone();
            // A new password kills every purpose token.
            user.public.tokens.clear();
        }
        UserEvent::PasswordRehashed(e) => user.personal.password_hash = e.password_hash.clone(),
        UserEvent::PrefsUpdated(e) => user.personal.profile.prefs = e.prefs.clone(),
        UserEvent::VerificationChanged(e) => {
            if let Some(v) = e.email_verified {
                user.public.email_verified = v;
            }
            if let Some(v) = e.phone_verified {
                user.public.phone_verified = v;
            }
        }
        UserEvent::StatusChanged(e) => user.public.blocked = e.blocked(),
        UserEvent::WalletAdjusted(e) => {
            // Recorded changesets were checked by `decide`; saturate rather than panic if
            // history disagrees.
            for (currency, change) in &e.public.changeset {
                let balance = user.public.wallet.entry(currency.clone()).or_insert(0);
                *balance = balance.saturating_add(*change).max(0);
            }
        }
        UserEvent::UserDeactivated(e) => {
            user.public.deactivated_at = Some(at);
            user.public.deactivated_by = e.created_by_id.clone();
        }
        UserEvent::UserReactivated(_) => {
            user.public.deactivated_at = None;
            user.public.deactivated_by = None;
        }
        UserEvent::TokenIssued(e) | UserEvent::PasswordResetRequested(e) => {
            super::tokens::apply_issued(&mut user.public.tokens, e, at)
        }
        UserEvent::TokenUsed(e) => {
            user.public.tokens.remove(&e.purpose);
        }
        UserEvent::UserDeleted(e) => match e.mode {
            DeleteMode::Hard => return false,
            DeleteMode::Soft => {
                user.public.tokens.clear();
                user.public.deleted_at = Some(at);
                user.public.deletion = Some(DeleteMode::Soft);
            }
            DeleteMode::Pruning => {
                user.public.deleted_at = Some(at);
                user.public.deletion = Some(DeleteMode::Pruning);
                // What is left is role, language and time zone.
                user.personal = UserPersonal::default();
                user.public.tokens.clear();
                user.public.email_verified = false;
                user.public.phone_verified = false;
                user.public.erased = true;
            }
        },
        UserEvent::UserRestored(e) => {
            user.public.deleted_at = None;
            user.public.deletion = None;
            if e.key_id.is_some() {
                user.public.key_id = e.key_id;
            }
        }
        UserEvent::SessionsRevoked(_) => {}
        UserEvent::TeamJoined(e) => {
            user.public
                .teams
                .insert(e.team_id.clone(), e.membership_id.clone());
        }
        UserEvent::TeamLeft(e) => {
            user.public.teams.remove(&e.team_id);
        }
        UserEvent::GuestExpirySet(e) => user.public.expires_at = Some(e.expires_at),
        UserEvent::GuestUpgraded(e) => {
            user.public.profile.role = super::DEFAULT_ROLE.to_owned();
            user.public.expires_at = None;
            user.personal.profile.username.clone_from(&e.username);
            user.personal.profile.email.clone_from(&e.email);
            user.personal.password_hash.clone_from(&e.password_hash);
            user.public.email_verified = false;
        }
        UserEvent::IdentityLinked(e) => user.personal.identities.push(super::Identity {
            provider: e.provider.clone(),
            subject: e.subject.clone(),
        }),
        UserEvent::IdentityUnlinked(e) => user
            .personal
            .identities
            .retain(|i| i.provider != e.provider || i.subject != e.subject),
    }
    // A changed address or number is not verified any more.
    if let Some((email, phone)) = contact {
        if user.personal.profile.email != email {
            user.public.email_verified = false;
        }
        if user.personal.profile.phone != phone {
            user.public.phone_verified = false;
        }
    }
    true
}
