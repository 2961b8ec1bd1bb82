//! Given/when/then tests of the User aggregate: every rule of docs/contract.md §2 and the
//! partial-update rules of §3, plus the lifecycle and wallet rules, and the unique values each
//! decision claims or releases.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use roster_domain::events::{PartsReader, PartsWriter, ReadError};
use roster_domain::settings::UniqueUsernames;
use roster_domain::user::*;
use roster_domain::{
    Aggregate, Decision, DomainError, Email, EventSet, KeyId, OrgId, PatchInput, Recorded, Unique,
    UniqueChange, UserId, UserInput,
};
use serde_json::{Map, Value, json};

/// A history of events, the state they fold to, and a command to try against it.
struct Given {
    history: Vec<UserEvent>,
}

struct Then {
    /// The stream's version before the command (it continues after a hard delete).
    version: u64,
    /// The data key the repository would assign if the decision asks for a fresh one.
    fresh: KeyId,
    state_before: Option<User>,
    result: Result<Decision<UserEvent>, DomainError>,
}

fn at(n: u64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + n as i64, 0).unwrap()
}

/// Where an event of the test stream was recorded.
fn recorded(version: u64, time: DateTime<Utc>) -> Recorded<'static> {
    Recorded {
        id: "alice",
        org: "default",
        at: time,
        version,
    }
}

/// A fixed data key: the one the repository hands to the event recorded at `version`.
fn key(version: u64) -> KeyId {
    KeyId::from_bytes([version as u8; 16])
}

fn fold(events: &[UserEvent]) -> Option<User> {
    events.iter().enumerate().fold(None, |state, (i, e)| {
        User::apply(state, e, recorded(i as u64 + 1, at(i as u64 + 1)))
    })
}

fn given(history: Vec<UserEvent>) -> Given {
    Given { history }
}

impl Given {
    fn when(self, command: UserCommand) -> Then {
        let state_before = fold(&self.history);
        let result = User::decide(state_before.as_ref(), &command);
        let version = self.history.len() as u64;
        Then {
            version,
            fresh: key(version + 1),
            state_before,
            result,
        }
    }
}

impl Then {
    /// The unique values the decision claims, shares or releases, in order.
    fn uniques(self, expected: Vec<UniqueChange>) -> Self {
        let decision = self.result.as_ref().expect("command accepted");
        assert_eq!(decision.uniques, expected, "unique values");
        self
    }

    /// The events, once the repository has assigned the fresh key the decision asked for;
    /// returns the state after them.
    fn then(self, expected: Vec<UserEvent>) -> Option<User> {
        let decision = self.result.expect("command accepted");
        let mut events = decision.events.clone();
        if decision.fresh_key {
            for e in &mut events {
                e.assign_key(self.fresh);
            }
            assert_ne!(
                events, decision.events,
                "a fresh key is asked for only by events that take it"
            );
        }
        assert_eq!(events, expected);
        let version = self.version;
        events
            .iter()
            .enumerate()
            .fold(self.state_before, |s, (i, e)| {
                User::apply(s, e, recorded(version + i as u64 + 1, at(100 + i as u64)))
            })
    }

    fn then_nothing(self) {
        let decision = self.result.expect("command accepted");
        assert_eq!(decision.events, vec![]);
        assert_eq!(
            decision.uniques,
            vec![],
            "nothing recorded, nothing claimed"
        );
        assert!(!decision.fresh_key);
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

fn obj(v: Value) -> Map<String, Value> {
    serde_json::from_value(v).unwrap()
}

fn create(id: &str, fields: Value) -> CreateUser {
    CreateUser {
        id: UserId::parse(id).unwrap(),
        org: OrgId::default_org(),
        profile: profile(fields),
        password_hash: None,
        usernames: UniqueUsernames::App,
    }
}

/// A creation whose data key is the one assigned at `version`.
fn created_at(id: &str, fields: Value, version: u64) -> UserEvent {
    let p = profile(fields);
    UserEvent::UserCreated(UserCreated {
        public: UserCreatedPublic {
            user_id: UserId::parse(id).unwrap(),
            organization_id: OrgId::default_org(),
            key_id: Some(key(version)),
            profile: p.public,
        },
        personal: UserPersonal {
            profile: p.personal,
            password_hash: None,
            identities: Vec::new(),
        },
    })
}

fn created(id: &str, fields: Value) -> UserEvent {
    created_at(id, fields, 1)
}

fn replaced(fields: Value) -> UserEvent {
    let p = profile(fields);
    UserEvent::UserReplaced(UserReplaced {
        public: ProfilePart { profile: p.public },
        personal: UserPersonal {
            profile: p.personal,
            password_hash: None,
            identities: Vec::new(),
        },
    })
}

/// A partial update with its paths in the parts the test says (not split by `from_paths`).
fn partially_updated(public: PathChanges, personal: PathChanges) -> UserEvent {
    UserEvent::UserPartiallyUpdated(UserPartiallyUpdated { public, personal })
}

fn paths(set: Value, unset: &[&str]) -> PathChanges {
    PathChanges {
        set: obj(set),
        unset: unset.iter().map(|s| s.to_string()).collect(),
    }
}

fn deleted(mode: DeleteMode) -> UserEvent {
    UserEvent::UserDeleted(UserDeleted { mode })
}

fn alice() -> UserEvent {
    created(
        "alice",
        json!({"username": "alice", "email": "alice@example.com", "name": "Alice"}),
    )
}

fn claim_username(u: &str) -> UniqueChange {
    UniqueChange::Claim(Unique::Username(u.into()))
}

fn claim_email(e: &str) -> UniqueChange {
    UniqueChange::Claim(Unique::Email(e.into()))
}

fn release_username(u: &str) -> UniqueChange {
    UniqueChange::Release(Unique::Username(u.into()))
}

fn release_email(e: &str) -> UniqueChange {
    UniqueChange::Release(Unique::Email(e.into()))
}

fn patch(v: Value) -> UserCommand {
    patch_with(v, UniqueUsernames::App)
}

fn patch_with(v: Value, usernames: UniqueUsernames) -> UserCommand {
    UserCommand::Patch(PatchUser {
        patch: serde_json::from_value::<PatchInput>(v)
            .unwrap()
            .validate()
            .unwrap(),
        usernames,
    })
}

#[test]
fn create_a_new_user() {
    let user = given(vec![])
        .when(UserCommand::Create(create(
            "alice",
            json!({"username": "alice", "email": "alice@example.com", "name": "Alice"}),
        )))
        .uniques(vec![
            claim_username("alice"),
            claim_email("alice@example.com"),
        ])
        .then(vec![alice()])
        .unwrap();
    assert_eq!(user.username(), Some("alice"));
    assert_eq!(user.public.profile.role, "user");
    assert_eq!(user.status(), Status::Active);
    assert_eq!(user.public.version, 1);
    assert!(!user.public.email_verified);
    assert_eq!(
        user.public.key_id,
        Some(key(1)),
        "the key the repository assigned"
    );
}

#[test]
fn create_an_existing_id_is_taken() {
    given(vec![alice()])
        .when(UserCommand::Create(create("alice", json!({}))))
        .then_error(DomainError::IdTaken);
}

#[test]
fn create_after_hard_delete_takes_the_id_again() {
    let user = given(vec![alice(), deleted(DeleteMode::Hard)])
        .when(UserCommand::Create(create(
            "alice",
            json!({"username": "alice2"}),
        )))
        .uniques(vec![claim_username("alice2")])
        .then(vec![created_at("alice", json!({"username": "alice2"}), 3)])
        .unwrap();
    assert_eq!(user.public.version, 3, "the stream's version continues");
    assert_eq!(user.email(), None);
    assert_ne!(
        user.public.key_id,
        Some(key(1)),
        "a fresh key, not the destroyed one"
    );
}

#[test]
fn upsert_creates_the_missing() {
    given(vec![])
        .when(UserCommand::Upsert(create("bob", json!({"name": "Bob"}))))
        .uniques(vec![])
        .then(vec![created("bob", json!({"name": "Bob"}))]);
}

#[test]
fn upsert_replaces_whole_and_removes_left_out_fields() {
    let user = given(vec![alice()])
        .when(UserCommand::Upsert(create(
            "alice",
            json!({"username": "alice", "custom": {"c": 1}}),
        )))
        .uniques(vec![release_email("alice@example.com")])
        .then(vec![replaced(
            json!({"username": "alice", "custom": {"c": 1}}),
        )])
        .unwrap();
    assert_eq!(user.email(), None, "left out, so removed");
    assert_eq!(user.personal.profile.name, None);
    assert_eq!(user.public.created_at, at(1), "creation time is kept");
}

#[test]
fn upsert_with_identical_fields_changes_nothing() {
    given(vec![alice()])
        .when(UserCommand::Upsert(create(
            "alice",
            json!({"username": "alice", "email": "alice@example.com", "name": "Alice"}),
        )))
        .then_nothing();
}

#[test]
fn upsert_keeps_the_password_unless_given() {
    let mut with_password = alice();
    if let UserEvent::UserCreated(e) = &mut with_password {
        e.personal.password_hash = Some(PasswordHash("hash-1".into()));
    }
    let user = given(vec![with_password])
        .when(UserCommand::Upsert(create(
            "alice",
            json!({"username": "alice"}),
        )))
        .then(vec![replaced(json!({"username": "alice"}))])
        .unwrap();
    assert_eq!(
        user.password_hash().map(PasswordHash::as_str),
        Some("hash-1")
    );
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
        .uniques(vec![])
        .then(vec![partially_updated(
            PathChanges::default(),
            paths(
                json!({"custom.field2.subfield": "x", "display_name": "Al"}),
                &[],
            ),
        )])
        .unwrap();
    assert_eq!(
        Value::Object(user.personal.profile.custom),
        json!({"field2": {"subfield": "x"}})
    );
    assert_eq!(user.personal.profile.display_name.as_deref(), Some("Al"));
    assert_eq!(user.public.version, 2);
}

#[test]
fn patch_unsets_paths() {
    let history = vec![
        alice(),
        UserEvent::UserPartiallyUpdated(UserPartiallyUpdated::from_paths(
            obj(json!({"metadata.a": 1, "metadata.b": 2})),
            vec![],
        )),
    ];
    let user = given(history)
        .when(patch(json!({"unset": ["metadata.a", "name"]})))
        .then(vec![partially_updated(
            PathChanges::default(),
            paths(json!({}), &["metadata.a", "name"]),
        )])
        .unwrap();
    assert_eq!(
        Value::Object(user.personal.profile.metadata),
        json!({"b": 2})
    );
    assert_eq!(user.personal.profile.name, None);
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
        UserEvent::UserPartiallyUpdated(UserPartiallyUpdated::from_paths(
            obj(json!({"custom.a": big})),
            vec![],
        )),
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
        UserEvent::VerificationChanged(VerificationChanged {
            email_verified: Some(true),
            phone_verified: None,
        }),
    ];
    assert!(fold(&history).unwrap().public.email_verified);
    let user = given(history)
        .when(patch(json!({"set": {"email": "new@example.com"}})))
        .uniques(vec![
            release_email("alice@example.com"),
            claim_email("new@example.com"),
        ])
        .then(vec![partially_updated(
            PathChanges::default(),
            paths(json!({"email": "new@example.com"}), &[]),
        )])
        .unwrap();
    assert!(!user.public.email_verified);
}

#[test]
fn a_username_change_releases_the_old_and_claims_or_shares_the_new() {
    // Compared by normalized form: a change of case or punctuation keeps the same value.
    given(vec![alice()])
        .when(patch(json!({"set": {"username": "Alice"}})))
        .uniques(vec![])
        .then(vec![partially_updated(
            PathChanges::default(),
            paths(json!({"username": "Alice"}), &[]),
        )]);
    given(vec![alice()])
        .when(patch(json!({"set": {"username": "Ally.B"}})))
        .uniques(vec![release_username("alice"), claim_username("allyb")]);
    // Where duplicates are allowed the new one is held together with whoever holds it.
    given(vec![alice()])
        .when(patch_with(
            json!({"set": {"username": "ally"}}),
            UniqueUsernames::No,
        ))
        .uniques(vec![
            release_username("alice"),
            UniqueChange::Share(Unique::Username("ally".into())),
        ]);
    given(vec![alice()])
        .when(patch(json!({"unset": ["username", "email"]})))
        .uniques(vec![
            release_username("alice"),
            release_email("alice@example.com"),
        ]);
}

#[test]
fn commands_on_missing_or_deleted_users() {
    given(vec![])
        .when(patch(json!({"set": {"name": "x"}})))
        .then_error(DomainError::NotFound);
    let soft_deleted = vec![alice(), deleted(DeleteMode::Soft)];
    given(soft_deleted.clone())
        .when(patch(json!({"set": {"name": "x"}})))
        .then_error(DomainError::UserDeleted);
    given(soft_deleted)
        .when(UserCommand::Upsert(create("alice", json!({}))))
        .then_error(DomainError::UserDeleted);
}

#[test]
fn deletion_escalates_and_pruning_erases() {
    let soft = given(vec![alice()])
        .when(UserCommand::Delete(DeleteMode::Soft))
        .uniques(vec![])
        .then(vec![deleted(DeleteMode::Soft)])
        .unwrap();
    assert_eq!(soft.status(), Status::Deleted);
    assert_eq!(
        soft.email(),
        Some("alice@example.com"),
        "soft keeps everything"
    );

    let soft_history = vec![alice(), deleted(DeleteMode::Soft)];
    given(soft_history.clone())
        .when(UserCommand::Delete(DeleteMode::Soft))
        .then_nothing();
    let pruned = given(soft_history)
        .when(UserCommand::Delete(DeleteMode::Pruning))
        .uniques(vec![
            release_username("alice"),
            release_email("alice@example.com"),
        ])
        .then(vec![deleted(DeleteMode::Pruning)])
        .unwrap();
    assert_eq!(pruned.username(), None);
    assert_eq!(pruned.email(), None);
    assert!(pruned.personal.profile.custom.is_empty());
    assert!(pruned.public.erased);
    // What pruning gave back is not given back twice.
    given(vec![alice(), deleted(DeleteMode::Pruning)])
        .when(UserCommand::Delete(DeleteMode::Hard))
        .uniques(vec![])
        .then(vec![deleted(DeleteMode::Hard)]);

    let hard = given(vec![alice()])
        .when(UserCommand::Delete(DeleteMode::Hard))
        .uniques(vec![
            release_username("alice"),
            release_email("alice@example.com"),
        ])
        .then(vec![deleted(DeleteMode::Hard)]);
    assert!(hard.is_none());
    given(vec![])
        .when(UserCommand::Delete(DeleteMode::Soft))
        .then_error(DomainError::NotFound);
}

#[test]
fn restore_brings_back_soft_whole_and_pruned_with_a_new_key() {
    let restored = given(vec![alice(), deleted(DeleteMode::Soft)])
        .when(UserCommand::Restore)
        .uniques(vec![])
        .then(vec![UserEvent::UserRestored(UserRestored { key_id: None })])
        .unwrap();
    assert_eq!(restored.status(), Status::Active);
    assert_eq!(restored.personal.profile.name.as_deref(), Some("Alice"));
    assert_eq!(restored.public.key_id, Some(key(1)), "its key was kept");

    let pruned = given(vec![alice(), deleted(DeleteMode::Pruning)])
        .when(UserCommand::Restore)
        .uniques(vec![])
        .then(vec![UserEvent::UserRestored(UserRestored {
            key_id: Some(key(3)),
        })])
        .unwrap();
    assert_eq!(pruned.personal.profile.name, None);
    assert_eq!(pruned.public.key_id, Some(key(3)));

    given(vec![alice(), deleted(DeleteMode::Hard)])
        .when(UserCommand::Restore)
        .then_error(DomainError::NotFound);
    given(vec![alice()])
        .when(UserCommand::Restore)
        .then_nothing();
}

#[test]
fn deactivate_and_reactivate() {
    let user = given(vec![alice()])
        .when(UserCommand::Deactivate {
            created_by_id: Some("admin".into()),
        })
        .then(vec![UserEvent::UserDeactivated(UserDeactivated {
            created_by_id: Some("admin".into()),
        })])
        .unwrap();
    assert_eq!(user.status(), Status::Deactivated);
    let history = vec![
        alice(),
        UserEvent::UserDeactivated(UserDeactivated {
            created_by_id: None,
        }),
    ];
    given(history.clone())
        .when(UserCommand::Deactivate {
            created_by_id: None,
        })
        .then_nothing();
    let back = given(history)
        .when(UserCommand::Reactivate)
        .then(vec![UserEvent::UserReactivated(UserReactivated {})])
        .unwrap();
    assert_eq!(back.status(), Status::Active);
    given(vec![alice()])
        .when(UserCommand::Reactivate)
        .then_nothing();
}

#[test]
fn blocking_shows_as_status() {
    let user = given(vec![alice()])
        .when(UserCommand::SetBlocked(true))
        .then(vec![UserEvent::StatusChanged(StatusChanged::new(true))])
        .unwrap();
    assert_eq!(user.status(), Status::Blocked);
    given(vec![
        alice(),
        UserEvent::StatusChanged(StatusChanged::new(true)),
    ])
    .when(UserCommand::SetBlocked(true))
    .then_nothing();
}

fn changeset(changes: &[(&str, i64)]) -> BTreeMap<String, i64> {
    changes.iter().map(|(c, d)| (c.to_string(), *d)).collect()
}

fn wallet(changes: &[(&str, i64)]) -> UserCommand {
    UserCommand::AdjustWallet(WalletChange {
        changeset: changeset(changes),
        metadata: Default::default(),
        update_ledger: true,
    })
}

fn adjusted(changes: &[(&str, i64)]) -> UserEvent {
    UserEvent::WalletAdjusted(WalletAdjusted {
        public: WalletChangePart {
            changeset: changeset(changes),
            update_ledger: true,
        },
        personal: LedgerNote {
            metadata: Default::default(),
        },
    })
}

#[test]
fn wallet_changes_atomically_and_never_below_zero() {
    let user = given(vec![alice()])
        .when(wallet(&[("coins", 10), ("gems", 0)]))
        .then(vec![adjusted(&[("coins", 10)])])
        .unwrap();
    assert_eq!(
        user.public.wallet,
        BTreeMap::from([("coins".to_string(), 10)])
    );
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
    // Changed on purpose: currency names are checked at the HTTP edge now (the API's
    // `valid_change`, not public; `tests/api/wallet.rs` refuses `{"": 1}` with 422). The
    // domain trusts a `WalletChange` and records it.
    given(vec![alice()])
        .when(wallet(&[("", 1)]))
        .then(vec![adjusted(&[("", 1)])]);
}

#[test]
fn field_commands_emit_only_on_change() {
    given(vec![alice()])
        .when(UserCommand::ChangeName(Some("Alice".into())))
        .then_nothing();
    given(vec![alice()])
        .when(UserCommand::ChangeEmail(Some(
            Email::parse("a2@example.com").unwrap(),
        )))
        .uniques(vec![
            release_email("alice@example.com"),
            claim_email("a2@example.com"),
        ])
        .then(vec![UserEvent::EmailChanged(EmailChanged {
            email: Some("a2@example.com".into()),
        })]);
    // The same address in another case is the same unique value.
    given(vec![alice()])
        .when(UserCommand::ChangeEmail(Some(
            Email::parse("Alice@Example.com").unwrap(),
        )))
        .uniques(vec![]);
    given(vec![alice()])
        .when(UserCommand::SetEmailVerified(false))
        .then_nothing();
}

/// Writes an event's parts as JSON values (a stand-in for the storage codec).
#[derive(Default)]
struct JsonParts {
    public: Value,
    personal: Value,
}

impl PartsWriter for JsonParts {
    type Error = serde_json::Error;

    fn write<P, S>(&mut self, public: &P, personal: &S) -> Result<(), Self::Error>
    where
        P: serde::Serialize,
        S: serde::Serialize + Default + PartialEq,
    {
        self.public = serde_json::to_value(public)?;
        self.personal = serde_json::to_value(personal)?;
        Ok(())
    }
}

impl PartsReader for JsonParts {
    type Error = serde_json::Error;

    fn read<P, S>(self) -> Result<(P, S), Self::Error>
    where
        P: serde::de::DeserializeOwned,
        S: serde::de::DeserializeOwned + Default,
    {
        Ok((
            serde_json::from_value(self.public)?,
            serde_json::from_value(self.personal)?,
        ))
    }
}

/// The first storage format's shape: both parts as one object (objects both have joined
/// member by member, arrays such as `unset` item by item).
fn merged(mut public: Map<String, Value>, personal: Map<String, Value>) -> Map<String, Value> {
    for (k, v) in personal {
        match (public.get_mut(&k), v) {
            (Some(Value::Object(target)), Value::Object(inner)) => {
                let joined = merged(std::mem::take(target), inner);
                *target = joined;
            }
            (Some(Value::Array(target)), Value::Array(items)) => target.extend(items),
            (_, v) => {
                public.insert(k, v);
            }
        }
    }
    public
}

#[test]
fn events_round_trip_through_their_recorded_form() {
    let events = vec![
        alice(),
        adjusted(&[("coins", 3)]),
        deleted(DeleteMode::Pruning),
        UserEvent::UserPartiallyUpdated(UserPartiallyUpdated::from_paths(
            obj(json!({"custom.a": 1})),
            vec!["name".into()],
        )),
        // Paths of both parts: public (`role`, `timezone`) and personal ones.
        UserEvent::UserPartiallyUpdated(UserPartiallyUpdated::from_paths(
            obj(json!({"role": "admin", "display_name": "Al"})),
            vec!["timezone".into(), "email".into()],
        )),
    ];
    for e in events {
        // Format 2 records the parts.
        let mut parts = JsonParts::default();
        e.write_parts(&mut parts).unwrap();
        let back = UserEvent::read_parts(e.event_type(), e.schema_version(), parts).unwrap();
        assert_eq!(back, e);
        // Format 1 recorded one object (personal parts merged back in).
        let mut parts = JsonParts::default();
        e.write_parts(&mut parts).unwrap();
        let data = merged(
            serde_json::from_value(parts.public).unwrap(),
            serde_json::from_value(parts.personal).unwrap(),
        );
        let back = UserEvent::from_json(e.event_type(), e.schema_version(), data).unwrap();
        assert_eq!(back, e);
    }
    assert!(
        UserEvent::from_json("UserCreated", 99, Default::default()).is_err(),
        "unknown future version"
    );
    let mut parts = JsonParts::default();
    alice().write_parts(&mut parts).unwrap();
    assert!(
        matches!(
            UserEvent::read_parts("UserCreated", 99, parts),
            Err(ReadError::FutureVersion { version: 99, .. })
        ),
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
                let command = UserCommand::AdjustWallet(WalletChange {
                    changeset: changeset.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    metadata: Default::default(),
                    update_ledger: false,
                });
                let state = fold(&history);
                let ok = changeset.iter().all(|(c, d)| model.get(*c).copied().unwrap_or(0) + d >= 0);
                match User::decide(state.as_ref(), &command) {
                    Ok(decision) => {
                        prop_assert!(ok);
                        for (c, d) in &changeset {
                            if *d != 0 { *model.entry(c.to_string()).or_insert(0) += d; }
                        }
                        history.extend(decision.events);
                    }
                    Err(DomainError::WalletNegative { .. }) => prop_assert!(!ok),
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
                prop_assert_eq!(&fold(&history).unwrap().public.wallet, &model);
            }
        }
    }
}

#[test]
fn events_that_end_sessions_move_sessions_valid_from() {
    // Version 1: created. Sessions signed in against version ≥ 1 work.
    let user = fold(&[alice()]).unwrap();
    assert_eq!(user.public.sessions_valid_from, 1);
    let ends = [
        UserEvent::PasswordChanged(PasswordChanged {
            password_hash: Some(PasswordHash("$argon2id$new".into())),
        }),
        UserEvent::StatusChanged(StatusChanged::new(true)),
        UserEvent::UserDeactivated(UserDeactivated {
            created_by_id: None,
        }),
        deleted(DeleteMode::Soft),
        UserEvent::SessionsRevoked(SessionsRevoked {}),
    ];
    for event in ends {
        assert!(event.ends_sessions(), "{event:?}");
        let user = fold(&[alice(), name_changed(), event]).unwrap();
        assert_eq!(
            user.public.sessions_valid_from, 3,
            "the version of the ending event"
        );
    }
    // Other changes, unblocking, reactivation and restore leave it where it was.
    for event in [
        name_changed(),
        UserEvent::StatusChanged(StatusChanged::new(false)),
        UserEvent::UserReactivated(UserReactivated {}),
        UserEvent::UserRestored(UserRestored { key_id: None }),
        UserEvent::UserReplaced(UserReplaced {
            public: ProfilePart::default(),
            personal: UserPersonal::default(),
        }),
    ] {
        assert!(!event.ends_sessions(), "{event:?}");
        assert_eq!(
            fold(&[alice(), event]).unwrap().public.sessions_valid_from,
            1
        );
    }
    // An upsert with a password is a new password.
    let replaced = UserEvent::UserReplaced(UserReplaced {
        public: ProfilePart::default(),
        personal: UserPersonal {
            password_hash: Some(PasswordHash("$argon2id$other".into())),
            ..Default::default()
        },
    });
    assert_eq!(
        fold(&[alice(), replaced])
            .unwrap()
            .public
            .sessions_valid_from,
        2
    );
}

#[test]
fn revoking_sessions_is_always_recorded_for_a_live_user() {
    given(vec![alice()])
        .when(UserCommand::RevokeSessions)
        .then(vec![UserEvent::SessionsRevoked(SessionsRevoked {})]);
    given(vec![
        alice(),
        UserEvent::SessionsRevoked(SessionsRevoked {}),
    ])
    .when(UserCommand::RevokeSessions)
    .then(vec![UserEvent::SessionsRevoked(SessionsRevoked {})]);
    given(vec![])
        .when(UserCommand::RevokeSessions)
        .then_error(DomainError::NotFound);
}

fn name_changed() -> UserEvent {
    UserEvent::NameChanged(NameChanged {
        name: Some("Al".into()),
    })
}
