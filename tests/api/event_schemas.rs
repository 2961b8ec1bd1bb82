//! Every event a test's server wrote is checked against its committed JSON Schema
//! (`schemas/events/<Type>.json`, or `<Type>.v<n>.json` for an older schema version) when the
//! server stops: [`crate::helpers::Running`] reads the whole log as `/v1/events` shows it and
//! calls [`check`]. A test that makes an event its schema does not describe fails.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

/// Compiled schemas by (event type, schema version).
type Compiled = Mutex<HashMap<(String, u64), Arc<jsonschema::Validator>>>;

/// The compiled schemas, loaded once per test process.
fn schemas() -> &'static Compiled {
    static SCHEMAS: OnceLock<Compiled> = OnceLock::new();
    SCHEMAS.get_or_init(Mutex::default)
}

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/events")
}

/// The validator of `event_type` at `version`: the current file if its `x-schema-version` is
/// `version`, else `<Type>.v<version>.json`.
fn validator(event_type: &str, version: u64) -> Result<Arc<jsonschema::Validator>, String> {
    let key = (event_type.to_owned(), version);
    if let Some(v) = schemas().lock().unwrap().get(&key) {
        return Ok(v.clone());
    }
    let read = |name: String| -> Option<Value> {
        let text = std::fs::read_to_string(schema_dir().join(name)).ok()?;
        Some(serde_json::from_str(&text).expect("schema files are JSON"))
    };
    let schema = read(format!("{event_type}.json"))
        .filter(|s| s["x-schema-version"].as_u64() == Some(version))
        .or_else(|| read(format!("{event_type}.v{version}.json")))
        .ok_or_else(|| format!("no schema for {event_type} version {version} in schemas/events"))?;
    let compiled = jsonschema::validator_for(&schema)
        .map_err(|e| format!("schema of {event_type} v{version} does not compile: {e}"))?;
    let compiled = Arc::new(compiled);
    schemas().lock().unwrap().insert(key, compiled.clone());
    Ok(compiled)
}

/// Checks each event's `data` against its schema; every mismatch, one line each.
pub fn check(events: &[Value]) -> Result<usize, String> {
    let mut failures = Vec::new();
    for event in events {
        let event_type = event["type"].as_str().unwrap_or_default();
        let version = event["schema_version"].as_u64().unwrap_or_default();
        match validator(event_type, version) {
            Ok(v) => {
                for error in v.iter_errors(&event["data"]) {
                    failures.push(format!(
                        "event {} ({event_type} v{version}) at {}: {error}",
                        event["position"],
                        error.instance_path()
                    ));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Ok(events.len())
    } else {
        Err(failures.join("\n"))
    }
}

/// The events to check: the log of a running server, in its default organization and `orgs`.
pub struct Check {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// A server key.
    pub api_key: String,
    /// Organizations besides the default one.
    pub orgs: Vec<String>,
}

impl Check {
    /// Reads every event (NDJSON to the head) of each organization and checks them.
    pub async fn run(self) -> Result<usize, String> {
        let mut checked = 0;
        for org in std::iter::once(None).chain(self.orgs.iter().map(Some)) {
            checked += check(&self.read(org).await?)?;
        }
        Ok(checked)
    }

    async fn read(&self, org: Option<&String>) -> Result<Vec<Value>, String> {
        let mut request = reqwest::Client::new()
            .get(format!("{}/v1/events", self.address))
            .header("authorization", format!("Bearer {}", self.api_key))
            .header("accept", "application/x-ndjson");
        if let Some(org) = org {
            request = request.header("x-organization-id", org);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("reading the log: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("reading the log: {}", response.status()));
        }
        let body = response
            .text()
            .await
            .map_err(|e| format!("reading the log: {e}"))?;
        Ok(body
            .lines()
            .map(|line| serde_json::from_str(line).expect("NDJSON lines are JSON"))
            .collect())
    }
}

#[test]
fn an_event_its_schema_does_not_describe_is_reported() {
    let good = serde_json::json!({
        "position": 1, "type": "EmailChanged", "schema_version": 1,
        "data": {"email": "a@example.com"}
    });
    assert_eq!(check(std::slice::from_ref(&good)), Ok(1));
    let mut wrong = good.clone();
    wrong["data"]["email"] = serde_json::json!(42);
    let report = check(&[good, wrong]).unwrap_err();
    assert!(report.contains("event 1 (EmailChanged v1) at "), "{report}");
    assert_eq!(report.lines().count(), 1, "only the wrong one: {report}");
    let unknown =
        serde_json::json!({"position": 3, "type": "Nope", "schema_version": 1, "data": {}});
    assert!(
        check(&[unknown])
            .unwrap_err()
            .contains("no schema for Nope")
    );
}
