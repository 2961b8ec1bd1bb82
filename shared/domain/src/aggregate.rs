//! The User aggregate: `decide` (pure, may refuse) and `apply` (total, never refuses).

use chrono::{DateTime, Utc};

use crate::command::{Command, CreateUser};
use crate::error::{DomainError, FieldError};
use crate::event::*;
use crate::patch;
use crate::user::{DeleteMode, User};

/// Decides which events a command causes. An empty list means the command changes nothing.
pub fn decide(state: Option<&User>, command: &Command) -> Result<Vec<Event>, DomainError> {
    match command {
        Command::Create(create) => match state {
            None => Ok(vec![created(create)]),
            Some(_) => Err(DomainError::IdTaken),
        },
        Command::Upsert(create) => match state {
            None => Ok(vec![created(create)]),
            Some(user) => {
                live(user)?;
                if user.profile == create.profile && create.password_hash.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![Event::UserReplaced(UserReplaced {
                    profile: create.profile.clone(),
                    password_hash: create.password_hash.clone(),
                })])
            }
        },
        Command::Patch(p) => {
            let user = existing_live(state)?;
            let next = p
                .apply_checked(&user.profile)
                .map_err(DomainError::Invalid)?;
            if next == user.profile {
                return Ok(vec![]);
            }
            Ok(vec![Event::UserPartiallyUpdated(UserPartiallyUpdated {
                set: p.set.clone(),
                unset: p.unset.clone(),
            })])
        }
        Command::ChangeEmail(email) => {
            let user = existing_live(state)?;
            let email = email.as_ref().map(|e| e.as_str().to_owned());
            changed(user.profile.email != email, || {
                Event::EmailChanged(EmailChanged { email })
            })
        }
        Command::ChangeName(name) => {
            let user = existing_live(state)?;
            if let Some(n) = name {
                crate::input::check_scalar("name", n).map_err(|e| DomainError::Invalid(vec![e]))?;
            }
            changed(user.profile.name != *name, || {
                Event::NameChanged(NameChanged { name: name.clone() })
            })
        }
        Command::ChangePhone(phone) => {
            let user = existing_live(state)?;
            let phone = phone.as_ref().map(|p| p.as_str().to_owned());
            changed(user.profile.phone != phone, || {
                Event::PhoneChanged(PhoneChanged { phone })
            })
        }
        Command::ChangePassword(hash) => {
            existing_live(state)?;
            Ok(vec![Event::PasswordChanged(PasswordChanged {
                password_hash: Some(hash.clone()),
            })])
        }
        Command::ReplacePrefs(prefs) => {
            let user = existing_live(state)?;
            crate::input::check_object("prefs", prefs)
                .map_err(|e| DomainError::Invalid(vec![e]))?;
            changed(user.profile.prefs != *prefs, || {
                Event::PrefsUpdated(PrefsUpdated {
                    prefs: prefs.clone(),
                })
            })
        }
        Command::SetBlocked(blocked) => {
            let user = existing_live(state)?;
            changed(user.blocked != *blocked, || {
                Event::StatusChanged(StatusChanged::new(*blocked))
            })
        }
        Command::SetEmailVerified(v) => {
            let user = existing_live(state)?;
            changed(user.email_verified != *v, || {
                Event::VerificationChanged(VerificationChanged {
                    email_verified: Some(*v),
                    phone_verified: None,
                })
            })
        }
        Command::SetPhoneVerified(v) => {
            let user = existing_live(state)?;
            changed(user.phone_verified != *v, || {
                Event::VerificationChanged(VerificationChanged {
                    email_verified: None,
                    phone_verified: Some(*v),
                })
            })
        }
        Command::Deactivate { created_by_id } => {
            let user = existing_live(state)?;
            changed(user.deactivated_at.is_none(), || {
                Event::UserDeactivated(UserDeactivated {
                    created_by_id: created_by_id.clone(),
                })
            })
        }
        Command::Reactivate => {
            let user = existing_live(state)?;
            changed(user.deactivated_at.is_some(), || {
                Event::UserReactivated(UserReactivated {})
            })
        }
        Command::Delete(mode) => {
            let user = state.ok_or(DomainError::NotFound)?;
            // A deletion may only escalate: soft → pruning → hard.
            let escalates = user.deletion.is_none_or(|current| *mode > current);
            changed(escalates, || {
                Event::UserDeleted(UserDeleted { mode: *mode })
            })
        }
        Command::Restore { new_key_id } => {
            let user = state.ok_or(DomainError::NotFound)?;
            changed(user.is_deleted(), || {
                Event::UserRestored(UserRestored {
                    key_id: (user.deletion == Some(DeleteMode::Pruning))
                        .then(|| new_key_id.clone()),
                })
            })
        }
        Command::RevokeSessions => {
            // Always recorded: sessions may have started since the last revocation, and the
            // aggregate does not know them.
            existing_live(state)?;
            Ok(vec![Event::SessionsRevoked(SessionsRevoked {})])
        }
        Command::AdjustWallet {
            changeset,
            metadata,
            update_ledger,
        } => {
            let user = existing_live(state)?;
            check_changeset(changeset)?;
            crate::input::check_object("metadata", metadata)
                .map_err(|e| DomainError::Invalid(vec![e]))?;
            let mut next = user.wallet.clone();
            adjust_wallet(&mut next, changeset)?;
            let effective: std::collections::BTreeMap<String, i64> = changeset
                .iter()
                .filter(|(_, d)| **d != 0)
                .map(|(c, d)| (c.clone(), *d))
                .collect();
            changed(!effective.is_empty(), || {
                Event::WalletAdjusted(WalletAdjusted {
                    changeset: effective.clone(),
                    metadata: metadata.clone(),
                    update_ledger: *update_ledger,
                })
            })
        }
    }
}

fn created(create: &CreateUser) -> Event {
    Event::UserCreated(UserCreated {
        user_id: create.user_id.as_str().to_owned(),
        organization_id: create.org.as_str().to_owned(),
        key_id: Some(create.key_id.clone()),
        profile: create.profile.clone(),
        password_hash: create.password_hash.clone(),
    })
}

/// zitadel's habit: a command that changes nothing emits nothing.
fn changed(is_change: bool, event: impl FnOnce() -> Event) -> Result<Vec<Event>, DomainError> {
    Ok(if is_change { vec![event()] } else { vec![] })
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

fn check_changeset(changeset: &std::collections::BTreeMap<String, i64>) -> Result<(), DomainError> {
    let errors: Vec<FieldError> = changeset
        .keys()
        .filter(|c| {
            c.is_empty()
                || c.len() > 64
                || c.chars().any(|ch| ch.is_control() || ch.is_whitespace())
        })
        .map(|c| {
            FieldError::new(
                format!("changeset.{c}"),
                "currency names are 1 to 64 characters without spaces",
            )
        })
        .collect();
    if changeset.len() > 100 {
        return Err(DomainError::invalid(
            "changeset",
            "at most 100 currencies per changeset",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DomainError::Invalid(errors))
    }
}

/// Applies a changeset to balances, refusing the whole of it if any balance would go below
/// zero or overflow.
fn adjust_wallet(
    wallet: &mut std::collections::BTreeMap<String, i64>,
    changeset: &std::collections::BTreeMap<String, i64>,
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

/// Folds one recorded event into the state. `at` is the event's commit time and `version` its
/// stream version. `None` means the user does not exist (never created, or hard-deleted).
pub fn apply(state: Option<User>, event: &Event, at: DateTime<Utc>, version: u64) -> Option<User> {
    let mut user = match (state, event) {
        (_, Event::UserCreated(e)) => User {
            id: e.user_id.clone(),
            organization_id: e.organization_id.clone(),
            key_id: e.key_id.clone(),
            profile: e.profile.clone(),
            email_verified: false,
            phone_verified: false,
            blocked: false,
            wallet: Default::default(),
            password_hash: e.password_hash.clone(),
            created_at: at,
            updated_at: at,
            deactivated_at: None,
            deactivated_by: None,
            deleted_at: None,
            deletion: None,
            erased: false,
            // A session of an earlier incarnation of this id (before a hard delete) never
            // works for this one.
            sessions_valid_from: version,
            version,
        },
        // Events other than creation on a missing user cannot be recorded by `decide`; if the
        // log holds one anyway, the state stays missing rather than inventing a user.
        (None, _) => return None,
        (Some(mut user), event) => {
            match event {
                Event::UserCreated(_) => unreachable!("handled above"),
                Event::UserReplaced(e) => {
                    let before = user.profile.clone();
                    user.profile = e.profile.clone();
                    if e.password_hash.is_some() {
                        user.password_hash = e.password_hash.clone();
                    }
                    clear_changed_verifications(&mut user, &before);
                }
                Event::UserPartiallyUpdated(e) => {
                    let before = user.profile.clone();
                    patch::apply(&mut user.profile, &e.set, &e.unset);
                    clear_changed_verifications(&mut user, &before);
                }
                Event::EmailChanged(e) => {
                    let before = user.profile.clone();
                    user.profile.email = e.email.clone();
                    clear_changed_verifications(&mut user, &before);
                }
                Event::NameChanged(e) => user.profile.name = e.name.clone(),
                Event::PhoneChanged(e) => {
                    let before = user.profile.clone();
                    user.profile.phone = e.phone.clone();
                    clear_changed_verifications(&mut user, &before);
                }
                Event::PasswordChanged(e) => user.password_hash = e.password_hash.clone(),
                Event::PrefsUpdated(e) => user.profile.prefs = e.prefs.clone(),
                Event::VerificationChanged(e) => {
                    if let Some(v) = e.email_verified {
                        user.email_verified = v;
                    }
                    if let Some(v) = e.phone_verified {
                        user.phone_verified = v;
                    }
                }
                Event::StatusChanged(e) => user.blocked = e.blocked(),
                Event::WalletAdjusted(e) => {
                    // Recorded changesets were checked by `decide`; saturate rather than
                    // panic if history disagrees.
                    for (currency, change) in &e.changeset {
                        let balance = user.wallet.entry(currency.clone()).or_insert(0);
                        *balance = balance.saturating_add(*change).max(0);
                    }
                }
                Event::UserDeactivated(e) => {
                    user.deactivated_at = Some(at);
                    user.deactivated_by = e.created_by_id.clone();
                }
                Event::UserReactivated(_) => {
                    user.deactivated_at = None;
                    user.deactivated_by = None;
                }
                Event::UserDeleted(e) => match e.mode {
                    DeleteMode::Hard => return None,
                    DeleteMode::Soft => {
                        user.deleted_at = Some(at);
                        user.deletion = Some(DeleteMode::Soft);
                    }
                    DeleteMode::Pruning => {
                        user.deleted_at = Some(at);
                        user.deletion = Some(DeleteMode::Pruning);
                        user.profile.erase_personal();
                        user.password_hash = None;
                        user.email_verified = false;
                        user.phone_verified = false;
                        user.erased = true;
                    }
                },
                Event::UserRestored(e) => {
                    user.deleted_at = None;
                    user.deletion = None;
                    if e.key_id.is_some() {
                        user.key_id = e.key_id.clone();
                    }
                }
                Event::SessionsRevoked(_) => {}
            }
            // Blocking, deactivation, deletion, a new password and an explicit revocation end
            // every session signed in before; unblocking or restoring does not bring them back.
            if event.ends_sessions() {
                user.sessions_valid_from = version;
            }
            user
        }
    };
    user.updated_at = at;
    user.version = version;
    Some(user)
}

fn clear_changed_verifications(user: &mut User, before: &crate::user::Profile) {
    if user.profile.email != before.email {
        user.email_verified = false;
    }
    if user.profile.phone != before.phone {
        user.phone_verified = false;
    }
}
