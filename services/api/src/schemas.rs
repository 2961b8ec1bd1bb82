//! The JSON Schemas in `schemas/` (docs/contract.md §6): one file per type, generated from the
//! types themselves (schemars, JSON Schema draft 2020-12).
//!
//! - `schemas/events/<Type>.json`: the `data` of each event type at its current schema version
//!   (`x-schema-version`); older versions still found in logs as `<Type>.v<N>.json`.
//! - `schemas/commands/<Name>.json`: the request bodies of the API.
//! - `schemas/read_models/<Name>.json`: what queries answer (as serialized).
//! - `schemas/openapi.json`: the OpenAPI 3.1 document `GET /openapi.json` serves.
//!
//! `make schemas` writes them ([`WRITE_ENV`] set); `make test` fails while the committed files
//! differ from what the code generates (`schemas::tests`).

use std::collections::BTreeMap;
use std::path::Path;

use roster_domain::EventSet;
use roster_domain::events::Parts;
use roster_domain::session::{SessionRefreshed, SessionRenewed, SessionRevoked, SessionStarted};
use roster_domain::settings::SettingsChanged;
use roster_domain::task::{
    TaskCanceled, TaskCompleted, TaskCreated, TaskFailed, TaskProgressed, TaskStarted,
};
use roster_domain::team::{
    MemberAdded, MemberRemoved, MemberRolesChanged, TeamCreated, TeamDeleted, TeamRenamed,
};
use roster_domain::user::json::{
    PasswordChangedJson, StatusChangedV1, TokenIssuedJson, UserCreatedJson, UserImportedJson,
    UserPartiallyUpdatedJson, UserReplacedJson, UserRestoredJson, WalletAdjustedJson,
};
use roster_domain::user::{
    EmailChanged, GuestExpirySet, GuestUpgraded, IdentityLinked, IdentityUnlinked, NameChanged,
    PasswordChanged, PasswordRehashed, PhoneChanged, PrefsUpdated, SessionsRevoked, StatusChanged,
    TeamJoined, TeamLeft, TokenIssued, TokenUsed, UserCreated, UserDeactivated, UserDeleted,
    UserImported, UserPartiallyUpdated, UserReactivated, UserReplaced, UserRestored,
    VerificationChanged, WalletAdjusted,
};
use roster_domain::webhook::{
    WebhookChanged, WebhookCreated, WebhookCreatedJson, WebhookDeleted, WebhookFailing,
    WebhookProgressed, WebhookReplayed,
};
use roster_projections::codec::erased_fields;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// Set (to anything) to write the files instead of comparing them.
pub const WRITE_ENV: &str = "ROSTER_WRITE_SCHEMAS";

/// Where the schemas' `$id`s live.
const ID_BASE: &str = "https://roster.dev/schemas";

/// The schemas of one directory, by file name.
pub struct SchemaSet {
    dir: &'static str,
    settings: SchemaSettings,
    files: BTreeMap<String, Value>,
}

impl SchemaSet {
    fn new(dir: &'static str, settings: SchemaSettings) -> Self {
        Self {
            dir,
            settings,
            files: BTreeMap::new(),
        }
    }

    /// Adds `T` as `<schema name>.json`.
    pub fn add<T: JsonSchema>(&mut self) {
        let name = T::schema_name().into_owned();
        self.insert(&name, &name, self.root::<T>(), None);
    }

    /// Adds the JSON shape `T` of the event `E` as `<event_type>.json` (or `.v<N>.json` for an
    /// old version): as recorded, or, when `E` has personal fields, as recorded or erased.
    fn add_event<T: JsonSchema, E: Parts>(&mut self, event_type: &str, version: u32) {
        let current = current_schema_version(event_type);
        let file = if version == current {
            event_type.to_owned()
        } else {
            format!("{event_type}.v{version}")
        };
        let schema = with_erased_form(
            with_redaction(self.root::<T>()),
            &erased_fields::<E::Personal>(),
        );
        self.insert(&file, event_type, schema, Some(version));
    }

    fn root<T: JsonSchema>(&self) -> schemars::Schema {
        self.settings
            .clone()
            .into_generator()
            .into_root_schema_for::<T>()
    }

    fn insert(&mut self, file: &str, title: &str, schema: schemars::Schema, version: Option<u32>) {
        let Value::Object(body) = schema.to_value() else {
            unreachable!("types have object schemas")
        };
        // `$schema` and `$id` first, then the title, then what schemars made.
        let mut out = serde_json::Map::new();
        if let Some(dialect) = body.get("$schema") {
            out.insert("$schema".into(), dialect.clone());
        }
        out.insert(
            "$id".into(),
            Value::String(format!("{ID_BASE}/{}/{file}.json", self.dir)),
        );
        out.insert("title".into(), Value::String(title.to_owned()));
        if let Some(version) = version {
            out.insert("x-schema-version".into(), Value::from(version));
        }
        for (key, value) in body {
            if !matches!(key.as_str(), "$schema" | "title") {
                out.insert(key, value);
            }
        }
        let previous = self
            .files
            .insert(format!("{file}.json"), Value::Object(out));
        assert!(
            previous.is_none(),
            "two schemas named {}/{file}.json",
            self.dir
        );
    }
}

/// The current schema version of an event type of any aggregate.
fn current_schema_version(event_type: &str) -> u32 {
    use roster_domain::{session::SessionEvent, settings::SettingsEvent, task::TaskEvent};
    roster_domain::UserEvent::version_of(event_type)
        .or_else(|| SessionEvent::version_of(event_type))
        .or_else(|| TaskEvent::version_of(event_type))
        .or_else(|| SettingsEvent::version_of(event_type))
        .or_else(|| roster_domain::webhook::WebhookEvent::version_of(event_type))
        .or_else(|| roster_domain::team::TeamEvent::version_of(event_type))
        .unwrap_or(1)
}

/// Every event type with the schema of its `data` as the API shows it: user, session, task,
/// settings and webhook events.
fn events() -> SchemaSet {
    let mut set = SchemaSet::new("events", SchemaSettings::draft2020_12());
    macro_rules! current {
        ($($name:ident: $t:ty),* $(,)?) => {
            $( set.add_event::<$t, $name>(stringify!($name), current_schema_version(stringify!($name))); )*
        };
    }
    current!(
        UserCreated: UserCreatedJson,
        UserReplaced: UserReplacedJson,
        UserPartiallyUpdated: UserPartiallyUpdatedJson,
        EmailChanged: EmailChanged,
        NameChanged: NameChanged,
        PhoneChanged: PhoneChanged,
        PasswordChanged: PasswordChangedJson,
        PrefsUpdated: PrefsUpdated,
        VerificationChanged: VerificationChanged,
        StatusChanged: StatusChanged,
        WalletAdjusted: WalletAdjustedJson,
        UserDeactivated: UserDeactivated,
        UserReactivated: UserReactivated,
        UserDeleted: UserDeleted,
        UserRestored: UserRestoredJson,
        SessionsRevoked: SessionsRevoked,
        UserImported: UserImportedJson,
        PasswordRehashed: PasswordRehashed,
        TokenIssued: TokenIssuedJson,
        TokenUsed: TokenUsed,
        SessionStarted: SessionStarted,
        SessionRefreshed: SessionRefreshed,
        SessionRenewed: SessionRenewed,
        SessionRevoked: SessionRevoked,
        TaskCreated: TaskCreated,
        TaskStarted: TaskStarted,
        TaskProgressed: TaskProgressed,
        TaskCompleted: TaskCompleted,
        TaskFailed: TaskFailed,
        TaskCanceled: TaskCanceled,
        SettingsChanged: SettingsChanged,
        WebhookCreated: WebhookCreatedJson,
        WebhookChanged: WebhookChanged,
        WebhookReplayed: WebhookReplayed,
        WebhookProgressed: WebhookProgressed,
        WebhookFailing: WebhookFailing,
        WebhookDeleted: WebhookDeleted,
        TeamJoined: TeamJoined,
        TeamLeft: TeamLeft,
        IdentityLinked: IdentityLinked,
        IdentityUnlinked: IdentityUnlinked,
        GuestExpirySet: GuestExpirySet,
        GuestUpgraded: GuestUpgraded,
        TeamCreated: TeamCreated,
        TeamRenamed: TeamRenamed,
        MemberAdded: MemberAdded,
        MemberRolesChanged: MemberRolesChanged,
        MemberRemoved: MemberRemoved,
        TeamDeleted: TeamDeleted,
    );
    set.add_event::<StatusChangedV1, StatusChanged>("StatusChanged", 1);
    set.add_event::<TokenIssuedJson, TokenIssued>("PasswordResetRequested", 1);
    set
}

/// `schema`, and when the event has personal fields (`nulls`: them as erased, see
/// [`erased_fields`]), the alternative an analyst reads once the user's key is destroyed:
/// those fields `null` and `"erased": true`.
/// An event that records a password hash or a purpose token shows it `null`, with
/// `"redacted": true`, in every view (`crate::events::redact`): the schema says so.
fn with_redaction(schema: schemars::Schema) -> schemars::Schema {
    let mut value = schema.to_value();
    if !crate::events::REDACTED_FIELDS
        .iter()
        .any(|f| value["properties"].get(f).is_some())
    {
        return schemars::Schema::try_from(value).expect("an object is a schema");
    }
    value["properties"]["redacted"] = json!({
        "const": true,
        "description": "A password hash or a purpose token (or its hash) was recorded here; event views never show it (it reads `null`)."
    });
    schemars::Schema::try_from(value).expect("an object is a schema")
}

fn with_erased_form(schema: schemars::Schema, nulls: &Map<String, Value>) -> schemars::Schema {
    if nulls.is_empty() {
        return schema;
    }
    let Value::Object(mut recorded) = schema.to_value() else {
        unreachable!("types have object schemas")
    };
    let defs = recorded.remove("$defs");
    let empty = Map::new();
    let defs_map = defs.as_ref().and_then(Value::as_object).unwrap_or(&empty);
    let mut root = Map::new();
    for key in ["$schema", "title", "description"] {
        if let Some(value) = recorded.remove(key) {
            root.insert(key.into(), value);
        }
    }
    let mut erased = Value::Object(recorded.clone());
    nullable_at(&mut erased, nulls, defs_map);
    erased["description"] = json!("The event after its user's data key was destroyed.");
    erased["properties"]["erased"] = json!({
        "const": true,
        "description": "The personal fields are gone: each reads `null`."
    });
    match erased["required"].as_array_mut() {
        Some(required) => required.push(json!("erased")),
        None => erased["required"] = json!(["erased"]),
    }
    root.insert("anyOf".into(), json!([Value::Object(recorded), erased]));
    if let Some(defs) = defs {
        root.insert("$defs".into(), defs);
    }
    schemars::Schema::try_from(Value::Object(root)).expect("an object is a schema")
}

/// Makes the properties of `schema` named in `nulls` nullable, nested ones (a non-null
/// member of `nulls`) field by field, resolving `$ref`s into `defs`.
fn nullable_at(schema: &mut Value, nulls: &Map<String, Value>, defs: &Map<String, Value>) {
    for (name, inner) in nulls {
        let property = &mut schema["properties"][name.as_str()];
        assert!(
            !property.is_null(),
            "the JSON view lacks the personal field {name}"
        );
        match inner {
            Value::Object(inner) => {
                if let Some(target) = property["$ref"].as_str() {
                    let def = target.trim_start_matches("#/$defs/");
                    let mut resolved = defs[def].clone();
                    for (key, value) in property.as_object().into_iter().flatten() {
                        if key != "$ref" {
                            resolved[key.as_str()] = value.clone();
                        }
                    }
                    *property = resolved;
                }
                nullable_at(property, inner, defs);
            }
            _ => *property = json!({"anyOf": [property.clone(), {"type": "null"}]}),
        }
    }
}

/// Every file of `schemas/`, by path relative to it, as written (pretty JSON and a newline).
pub fn generate() -> BTreeMap<String, String> {
    let mut commands = SchemaSet::new("commands", SchemaSettings::draft2020_12());
    crate::routes::command_schemas(&mut commands);
    let mut read_models = SchemaSet::new(
        "read_models",
        SchemaSettings::draft2020_12().for_serialize(),
    );
    crate::routes::read_model_schemas(&mut read_models);
    let mut files = BTreeMap::new();
    for set in [events(), commands, read_models] {
        for (name, schema) in set.files {
            files.insert(format!("{}/{name}", set.dir), pretty(&schema));
        }
    }
    let openapi = serde_json::to_value(&*crate::routes::openapi()).expect("OpenAPI serializes");
    files.insert("openapi.json".into(), pretty(&openapi));
    files
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON serializes");
    text.push('\n');
    text
}

/// Files under `dir` (the generated kinds only) that differ from `expected`, are missing, or
/// should not be there.
pub fn stale_files(dir: &Path, expected: &BTreeMap<String, String>) -> Vec<String> {
    let mut stale: Vec<String> = expected
        .iter()
        .filter(|(path, text)| std::fs::read_to_string(dir.join(path)).ok().as_ref() != Some(text))
        .map(|(path, _)| path.clone())
        .collect();
    for path in existing_files(dir) {
        if !expected.contains_key(&path) {
            stale.push(path);
        }
    }
    stale
}

/// Writes `files` under `dir`, removing generated files that are no longer generated.
pub fn write(dir: &Path, files: &BTreeMap<String, String>) -> std::io::Result<()> {
    for path in existing_files(dir) {
        if !files.contains_key(&path) {
            std::fs::remove_file(dir.join(&path))?;
        }
    }
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text)?;
        }
    }
    Ok(())
}

/// The `.json` files of the generated directories (and `openapi.json`) under `dir`.
fn existing_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["events", "commands", "read_models"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                out.push(format!("{sub}/{name}"));
            }
        }
    }
    if dir.join("openapi.json").exists() {
        out.push("openapi.json".into());
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
    }

    /// `make test` fails while `schemas/` is stale; `make schemas` runs this with
    /// [`WRITE_ENV`] set, which writes the files instead.
    #[test]
    fn committed_schemas_are_current() {
        let dir = schemas_dir();
        let files = generate();
        if std::env::var_os(WRITE_ENV).is_some() {
            write(&dir, &files).expect("writing schemas/");
            return;
        }
        let stale = stale_files(&dir, &files);
        assert!(
            stale.is_empty(),
            "schemas/ is stale ({} files differ: {}): run `make schemas` and commit the result",
            stale.len(),
            stale.join(", ")
        );
    }

    #[test]
    fn every_event_type_has_a_schema_at_its_current_version() {
        let files = generate();
        for event_type in roster_domain::event_types() {
            let text = files
                .get(&format!("events/{event_type}.json"))
                .unwrap_or_else(|| panic!("no schema for {event_type}"));
            let schema: Value = serde_json::from_str(text).unwrap();
            assert_eq!(schema["title"], *event_type);
            assert_eq!(
                schema["x-schema-version"],
                current_schema_version(event_type)
            );
        }
        for (event_type, version) in roster_domain::user::json::OLD_VERSIONS {
            assert!(
                files.contains_key(&format!("events/{event_type}.v{version}.json")),
                "no schema for {event_type} v{version}"
            );
        }
        let v2: Value = serde_json::from_str(&files["events/StatusChanged.json"]).unwrap();
        assert_eq!(v2["x-schema-version"], 2);
        assert!(v2["properties"]["status"].is_object(), "{v2}");
        let v1: Value = serde_json::from_str(&files["events/StatusChanged.v1.json"]).unwrap();
        assert_eq!(v1["properties"]["blocked"]["type"], "boolean", "{v1}");
    }
}
