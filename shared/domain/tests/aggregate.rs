//! Given/when/then tests of the User aggregate: every rule of API.md §2 and the partial-update
//! rules of §3, plus the lifecycle and wallet rules.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use roster_domain::command::*;
use roster_domain::event::*;
use roster_domain::*;
use serde_json::{Value, json};

/// A history of events, the state they fold to, and a command to try against it.
struct Given {
    history: Vec<Event>,
}

struct Then {
    /// The stream's version before the command (it continues after a hard delete).
    version: u64,
    state_before: Option<User>,
    result: Result<Vec<Event>, DomainError>,
}

fn at(n: u64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + n as i64, 0).unwrap()
}

fn fold(events: &[Event]) -> Option<User> {
    events.iter().enumerate().fold(None, |state, (i, e)| {
        apply(state, e, at(i as u64 + 1), i as u64 + 1)
    })
}

fn given(history: Vec<Event>) -> Given {
    Given { history }
}

impl Given {
    fn when(self, command: Command) -> Then {
        let state_before = fold(&self.history);
        let result = decide(state_before.as_ref(), &command);
        Then {
            version: self.history.len() as u64,
            state_before,
            result,
        }
    }
}

impl Then {
    fn then(self, expected: Vec<Event>) -> Option<User> {
        let events = self.result.expect("command accepted");
        assert_eq!(events, expected);
        let version = self.version;
        events
            .iter()
            .enumerate()
            .fold(self.state_before, |s, (i, e)| {
                apply(s, e, at(100 + i as u64), version + i as u64 + 1)
            })
    }

    fn then_nothing(self) {
        assert_eq!(self.result.expect("command accepted"), vec![]);
    }

    fn then_error(self, expected: DomainError) {
        assert_eq!(self.result.expect_err("command refused"), expected);
    }

    fn then_invalid(self, field: &str) {
        match self.result {
            Err(DomainError::Invalid(errors)) => {
                assert!(
                    errors.iter().any(|e| e.field == field),
                    "{field} not in {errors:?}"
                )
            }
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
}

fn profile(v: Value) -> Profile {
    serde_json::from_value::<UserInput>(v)
        .unwrap()
        .validate()
        .unwrap()
        .profile
}

fn create(id: &str, fields: Value) -> CreateUser {
    CreateUser {
        user_id: UserId::parse(id).unwrap(),
        org: OrgId::default_org(),
        key_id: format!("key-{id}"),
        profile: profile(fields),
        password_hash: None,
    }
}

fn created(id: &str, fields: Value) -> Event {
    Event::UserCreated(UserCreated {
        user_id: id.into(),
        organization_id: "default".into(),
        key_id: Some(format!("key-{id}")),
        profile: profile(fields),
        password_hash: None,
    })
}

fn alice() -> Event {
    created(
        "alice",
        json!({"username": "alice", "email": "alice@example.com", "name": "Alice"}),
    )
}

fn patch(v: Value) -> Command {
    Command::Patch(
        serde_json::from_value::<PatchInput>(v)
            .unwrap()
            .validate()
            .unwrap(),
    )
}

#[test]
fn create_a_new_user() {
    let user = given(vec![])
        .when(Command::Create(create(
            "alice",
            json!({"username": "alice", "email": "alice@example.com", "name": "Alice"}),
        )))
        .then(vec![alice()])
        .unwrap();
    assert_eq!(user.profile.username.as_deref(), Some("alice"));
    assert_eq!(user.profile.role, "user");
    assert_eq!(user.status(), Status::Active);
    assert_eq!(user.version, 1);
    assert!(!user.email_verified);
}

#[test]
fn create_an_existing_id_is_taken() {
    given(vec![alice()])
        .when(Command::Create(create("alice", json!({}))))
        .then_error(DomainError::IdTaken);
}

#[test]
fn create_after_hard_delete_takes_the_id_again() {
    let user = given(vec![
        alice(),
        Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Hard,
        }),
    ])
    .when(Command::Create(create(
        "alice",
        json!({"username": "alice2"}),
    )))
    .then(vec![created("alice", json!({"username": "alice2"}))])
    .unwrap();
    assert_eq!(user.version, 3, "the stream's version continues");
    assert_eq!(user.profile.email, None);
}

#[test]
fn upsert_creates_the_missing() {
    given(vec![])
        .when(Command::Upsert(create("bob", json!({"name": "Bob"}))))
        .then(vec![created("bob", json!({"name": "Bob"}))]);
}

#[test]
fn upsert_replaces_whole_and_removes_left_out_fields() {
    let user = given(vec![alice()])
        .when(Command::Upsert(create(
            "alice",
            json!({"username": "alice", "custom": {"c": 1}}),
        )))
        .then(vec![Event::UserReplaced(UserReplaced {
            profile: profile(json!({"username": "alice", "custom": {"c": 1}})),
            password_hash: None,
        })])
        .unwrap();
    assert_eq!(user.profile.email, None, "left out, so removed");
    assert_eq!(user.profile.name, None);
    assert_eq!(user.created_at, at(1), "creation time is kept");
}

#[test]
fn upsert_with_identical_fields_changes_nothing() {
    given(vec![alice()])
        .when(Command::Upsert(create(
            "alice",
            json!({"username": "alice", "email": "alice@example.com", "name": "Alice"}),
        )))
        .then_nothing();
}

#[test]
fn upsert_keeps_the_password_unless_given() {
    let mut with_password = alice();
    if let Event::UserCreated(e) = &mut with_password {
        e.password_hash = Some("hash-1".into());
    }
    let user = given(vec![with_password])
        .when(Command::Upsert(create(
            "alice",
            json!({"username": "alice"}),
        )))
        .then(vec![Event::UserReplaced(UserReplaced {
            profile: profile(json!({"username": "alice"})),
            password_hash: None,
        })])
        .unwrap();
    assert_eq!(user.password_hash.as_deref(), Some("hash-1"));
}

#[test]
fn user_input_rules_of_section_2() {
    let invalid = |v: Value, field: &str| {
        let errors = serde_json::from_value::<UserInput>(v.clone())
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(errors.iter().any(|e| e.field == field), "{v}: {errors:?}");
    };
    invalid(json!({"id": ""}), "id");
    invalid(json!({"id": "a".repeat(37)}), "id");
    invalid(json!({"id": ".a"}), "id");
    invalid(json!({"id": "a$"}), "id");
    invalid(json!({"name": "n".repeat(129)}), "name");
    invalid(json!({"username": ""}), "username");
    invalid(json!({"username": "u".repeat(129)}), "username");
    invalid(json!({"username": "tab\there"}), "username");
    invalid(json!({"password": "1234567"}), "password");
    invalid(json!({"password": "p".repeat(257)}), "password");
    invalid(json!({"email": "not-an-email"}), "email");
    invalid(
        json!({"email": format!("{}@example.com", "a".repeat(250))}),
        "email",
    );
    invalid(
        json!({"metadata": {"k": "v".repeat(16 * 1024)}}),
        "metadata",
    );
    invalid(json!({"custom": {"k": "v".repeat(16 * 1024)}}), "custom");
    invalid(json!({"prefs": {"k": "v".repeat(64 * 1024)}}), "prefs");
    invalid(json!({"custom": {"has space": 1}}), "custom.has space");
    invalid(json!({"custom": {"has.dot": 1}}), "custom.has.dot");
    let ok = serde_json::from_value::<UserInput>(
        json!({"id": "unique()", "password": "p".repeat(256), "name": "n".repeat(128)}),
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(ok.id.unwrap().as_str().len(), 26, "unique() becomes a ULID");
}

#[test]
fn patch_sets_nested_paths_creating_intermediates() {
    let user = given(vec![alice()])
        .when(patch(
            json!({"set": {"custom.field2.subfield": "x", "display_name": "Al"}}),
        ))
        .then(vec![Event::UserPartiallyUpdated(UserPartiallyUpdated {
            set: serde_json::from_value(
                json!({"custom.field2.subfield": "x", "display_name": "Al"}),
            )
            .unwrap(),
            unset: vec![],
        })])
        .unwrap();
    assert_eq!(
        Value::Object(user.profile.custom),
        json!({"field2": {"subfield": "x"}})
    );
    assert_eq!(user.profile.display_name.as_deref(), Some("Al"));
    assert_eq!(user.version, 2);
}

#[test]
fn patch_unsets_paths() {
    let history = vec![
        alice(),
        Event::UserPartiallyUpdated(UserPartiallyUpdated {
            set: serde_json::from_value(json!({"metadata.a": 1, "metadata.b": 2})).unwrap(),
            unset: vec![],
        }),
    ];
    let user = given(history)
        .when(patch(json!({"unset": ["metadata.a", "name"]})))
        .then(vec![Event::UserPartiallyUpdated(UserPartiallyUpdated {
            set: Default::default(),
            unset: vec!["metadata.a".into(), "name".into()],
        })])
        .unwrap();
    assert_eq!(Value::Object(user.profile.metadata), json!({"b": 2}));
    assert_eq!(user.profile.name, None);
}

#[test]
fn patch_that_changes_nothing_emits_nothing() {
    given(vec![alice()])
        .when(patch(
            json!({"set": {"name": "Alice"}, "unset": ["custom.none"]}),
        ))
        .then_nothing();
}

#[test]
fn patch_result_over_the_size_limit_is_refused() {
    let big = "x".repeat(9 * 1024);
    let history = vec![
        alice(),
        Event::UserPartiallyUpdated(UserPartiallyUpdated {
            set: serde_json::from_value(json!({"custom.a": big})).unwrap(),
            unset: vec![],
        }),
    ];
    given(history)
        .when(patch(json!({"set": {"custom.b": "y".repeat(9 * 1024)}})))
        .then_invalid("custom");
}

#[test]
fn patch_paths_that_cannot_be_set() {
    for path in [
        "id",
        "organization_id",
        "wallet",
        "status",
        "version",
        "created_at",
        "updated_at",
        "deactivated_at",
        "deleted_at",
        "email_verified",
        "phone_verified",
        "password",
    ] {
        let errors = serde_json::from_value::<PatchInput>(json!({"set": {path: "x"}}))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(errors[0].field, format!("set.{path}"));
    }
    let errors =
        serde_json::from_value::<PatchInput>(json!({"set": {"name": "x"}, "unset": ["name"]}))
            .unwrap()
            .validate()
            .unwrap_err();
    assert!(errors[0].message.contains("both set and unset"));
}

#[test]
fn patch_email_clears_verification() {
    let history = vec![
        alice(),
        Event::VerificationChanged(VerificationChanged {
            email_verified: Some(true),
            phone_verified: None,
        }),
    ];
    assert!(fold(&history).unwrap().email_verified);
    let user = given(history)
        .when(patch(json!({"set": {"email": "new@example.com"}})))
        .then(vec![Event::UserPartiallyUpdated(UserPartiallyUpdated {
            set: serde_json::from_value(json!({"email": "new@example.com"})).unwrap(),
            unset: vec![],
        })])
        .unwrap();
    assert!(!user.email_verified);
}

#[test]
fn commands_on_missing_or_deleted_users() {
    given(vec![])
        .when(patch(json!({"set": {"name": "x"}})))
        .then_error(DomainError::NotFound);
    let deleted = vec![
        alice(),
        Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Soft,
        }),
    ];
    given(deleted.clone())
        .when(patch(json!({"set": {"name": "x"}})))
        .then_error(DomainError::UserDeleted);
    given(deleted)
        .when(Command::Upsert(create("alice", json!({}))))
        .then_error(DomainError::UserDeleted);
}

#[test]
fn deletion_escalates_and_pruning_erases() {
    let soft = given(vec![alice()])
        .when(Command::Delete(DeleteMode::Soft))
        .then(vec![Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Soft,
        })])
        .unwrap();
    assert_eq!(soft.status(), Status::Deleted);
    assert_eq!(
        soft.profile.email.as_deref(),
        Some("alice@example.com"),
        "soft keeps everything"
    );

    let soft_history = vec![
        alice(),
        Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Soft,
        }),
    ];
    given(soft_history.clone())
        .when(Command::Delete(DeleteMode::Soft))
        .then_nothing();
    let pruned = given(soft_history)
        .when(Command::Delete(DeleteMode::Pruning))
        .then(vec![Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Pruning,
        })])
        .unwrap();
    assert_eq!(pruned.profile.username, None);
    assert_eq!(pruned.profile.email, None);
    assert!(pruned.profile.custom.is_empty());
    assert!(pruned.erased);

    let hard = given(vec![alice()])
        .when(Command::Delete(DeleteMode::Hard))
        .then(vec![Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Hard,
        })]);
    assert!(hard.is_none());
    given(vec![])
        .when(Command::Delete(DeleteMode::Soft))
        .then_error(DomainError::NotFound);
}

#[test]
fn restore_brings_back_soft_whole_and_pruned_with_a_new_key() {
    let restored = given(vec![
        alice(),
        Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Soft,
        }),
    ])
    .when(Command::Restore {
        new_key_id: "k2".into(),
    })
    .then(vec![Event::UserRestored(UserRestored { key_id: None })])
    .unwrap();
    assert_eq!(restored.status(), Status::Active);
    assert_eq!(restored.profile.name.as_deref(), Some("Alice"));

    let pruned = given(vec![
        alice(),
        Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Pruning,
        }),
    ])
    .when(Command::Restore {
        new_key_id: "k2".into(),
    })
    .then(vec![Event::UserRestored(UserRestored {
        key_id: Some("k2".into()),
    })])
    .unwrap();
    assert_eq!(pruned.profile.name, None);
    assert_eq!(pruned.key_id.as_deref(), Some("k2"));

    given(vec![
        alice(),
        Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Hard,
        }),
    ])
    .when(Command::Restore {
        new_key_id: "k2".into(),
    })
    .then_error(DomainError::NotFound);
    given(vec![alice()])
        .when(Command::Restore {
            new_key_id: "k2".into(),
        })
        .then_nothing();
}

#[test]
fn deactivate_and_reactivate() {
    let user = given(vec![alice()])
        .when(Command::Deactivate {
            created_by_id: Some("admin".into()),
        })
        .then(vec![Event::UserDeactivated(UserDeactivated {
            created_by_id: Some("admin".into()),
        })])
        .unwrap();
    assert_eq!(user.status(), Status::Deactivated);
    let history = vec![
        alice(),
        Event::UserDeactivated(UserDeactivated {
            created_by_id: None,
        }),
    ];
    given(history.clone())
        .when(Command::Deactivate {
            created_by_id: None,
        })
        .then_nothing();
    let back = given(history)
        .when(Command::Reactivate)
        .then(vec![Event::UserReactivated(UserReactivated {})])
        .unwrap();
    assert_eq!(back.status(), Status::Active);
    given(vec![alice()])
        .when(Command::Reactivate)
        .then_nothing();
}

#[test]
fn blocking_shows_as_status() {
    let user = given(vec![alice()])
        .when(Command::SetBlocked(true))
        .then(vec![Event::StatusChanged(StatusChanged::new(true))])
        .unwrap();
    assert_eq!(user.status(), Status::Blocked);
    given(vec![
        alice(),
        Event::StatusChanged(StatusChanged::new(true)),
    ])
    .when(Command::SetBlocked(true))
    .then_nothing();
}

fn wallet(changes: &[(&str, i64)]) -> Command {
    Command::AdjustWallet {
        changeset: changes.iter().map(|(c, d)| (c.to_string(), *d)).collect(),
        metadata: Default::default(),
        update_ledger: true,
    }
}

fn adjusted(changes: &[(&str, i64)]) -> Event {
    Event::WalletAdjusted(WalletAdjusted {
        changeset: changes.iter().map(|(c, d)| (c.to_string(), *d)).collect(),
        metadata: Default::default(),
        update_ledger: true,
    })
}

#[test]
fn wallet_changes_atomically_and_never_below_zero() {
    let user = given(vec![alice()])
        .when(wallet(&[("coins", 10), ("gems", 0)]))
        .then(vec![adjusted(&[("coins", 10)])])
        .unwrap();
    assert_eq!(user.wallet, BTreeMap::from([("coins".to_string(), 10)]));
    given(vec![alice(), adjusted(&[("coins", 10)])])
        .when(wallet(&[("coins", 5), ("gems", -1)]))
        .then_error(DomainError::WalletNegative {
            currency: "gems".into(),
            balance: 0,
            change: -1,
        });
    given(vec![alice(), adjusted(&[("coins", i64::MAX)])])
        .when(wallet(&[("coins", 1)]))
        .then_error(DomainError::WalletOverflow {
            currency: "coins".into(),
        });
    given(vec![alice()])
        .when(wallet(&[("", 1)]))
        .then_invalid("changeset.");
}

#[test]
fn field_commands_emit_only_on_change() {
    given(vec![alice()])
        .when(Command::ChangeName(Some("Alice".into())))
        .then_nothing();
    given(vec![alice()])
        .when(Command::ChangeEmail(Some(
            Email::parse("a2@example.com").unwrap(),
        )))
        .then(vec![Event::EmailChanged(EmailChanged {
            email: Some("a2@example.com".into()),
        })]);
    given(vec![alice()])
        .when(Command::SetEmailVerified(false))
        .then_nothing();
}

#[test]
fn events_round_trip_through_their_recorded_form() {
    let events = vec![
        alice(),
        adjusted(&[("coins", 3)]),
        Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Pruning,
        }),
        Event::UserPartiallyUpdated(UserPartiallyUpdated {
            set: serde_json::from_value(json!({"custom.a": 1})).unwrap(),
            unset: vec!["name".into()],
        }),
    ];
    for e in events {
        let back = Event::from_data(e.event_type(), e.schema_version(), e.to_data()).unwrap();
        assert_eq!(back, e);
    }
    assert!(
        Event::from_data("UserCreated", 99, Default::default()).is_err(),
        "unknown future version"
    );
}

mod reference_model {
    //! Property test: the aggregate's wallet against a trivial model of balances.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn wallet_matches_a_simple_model(changes in prop::collection::vec(
            prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), -50i64..50, 0..3), 0..40)) {
            let mut history = vec![alice()];
            let mut model: BTreeMap<String, i64> = BTreeMap::new();
            for changeset in changes {
                let command = Command::AdjustWallet {
                    changeset: changeset.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    metadata: Default::default(),
                    update_ledger: false,
                };
                let state = fold(&history);
                let ok = changeset.iter().all(|(c, d)| model.get(*c).copied().unwrap_or(0) + d >= 0);
                match decide(state.as_ref(), &command) {
                    Ok(events) => {
                        prop_assert!(ok);
                        for (c, d) in &changeset {
                            if *d != 0 { *model.entry(c.to_string()).or_insert(0) += d; }
                        }
                        history.extend(events);
                    }
                    Err(DomainError::WalletNegative { .. }) => prop_assert!(!ok),
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
                prop_assert_eq!(&fold(&history).unwrap().wallet, &model);
            }
        }
    }
}

#[test]
fn events_that_end_sessions_move_sessions_valid_from() {
    // Version 1: created. Sessions signed in against version ≥ 1 work.
    let user = fold(&[alice()]).unwrap();
    assert_eq!(user.sessions_valid_from, 1);
    let ends = [
        Event::PasswordChanged(PasswordChanged {
            password_hash: Some("$argon2id$new".into()),
        }),
        Event::StatusChanged(StatusChanged::new(true)),
        Event::UserDeactivated(UserDeactivated {
            created_by_id: None,
        }),
        Event::UserDeleted(UserDeleted {
            mode: DeleteMode::Soft,
        }),
        Event::SessionsRevoked(SessionsRevoked {}),
    ];
    for event in ends {
        assert!(event.ends_sessions(), "{event:?}");
        let user = fold(&[alice(), name_changed(), event]).unwrap();
        assert_eq!(
            user.sessions_valid_from, 3,
            "the version of the ending event"
        );
    }
    // Other changes, unblocking, reactivation and restore leave it where it was.
    for event in [
        name_changed(),
        Event::StatusChanged(StatusChanged::new(false)),
        Event::UserReactivated(UserReactivated {}),
        Event::UserRestored(UserRestored { key_id: None }),
        Event::UserReplaced(UserReplaced {
            profile: Profile::default(),
            password_hash: None,
        }),
    ] {
        assert!(!event.ends_sessions(), "{event:?}");
        assert_eq!(fold(&[alice(), event]).unwrap().sessions_valid_from, 1);
    }
    // An upsert with a password is a new password.
    let replaced = Event::UserReplaced(UserReplaced {
        profile: Profile::default(),
        password_hash: Some("$argon2id$other".into()),
    });
    assert_eq!(fold(&[alice(), replaced]).unwrap().sessions_valid_from, 2);
}

#[test]
fn revoking_sessions_is_always_recorded_for_a_live_user() {
    given(vec![alice()])
        .when(Command::RevokeSessions)
        .then(vec![Event::SessionsRevoked(SessionsRevoked {})]);
    given(vec![alice(), Event::SessionsRevoked(SessionsRevoked {})])
        .when(Command::RevokeSessions)
        .then(vec![Event::SessionsRevoked(SessionsRevoked {})]);
    given(vec![])
        .when(Command::RevokeSessions)
        .then_error(DomainError::NotFound);
}

fn name_changed() -> Event {
    Event::NameChanged(NameChanged {
        name: Some("Al".into()),
    })
}
