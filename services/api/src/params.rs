//! Query and header parameters checked against the OpenAPI document before a handler runs —
//! and so before any wait (`min_position`). The document is generated from the same
//! declarations the handlers use (`query_params!` structs, the shared header components), so
//! what it promises and what is refused cannot drift apart: a value the document rules out is
//! refused here, at once, whatever the handler would do with it.

use std::collections::HashMap;

use axum::http::{HeaderMap, Method};
use regex::Regex;
use serde_json::Value;

use crate::error::ApiError;

/// Query parameters every GET accepts besides its own (docs/contract.md §1).
const ANY_GET: &[&str] = &["min_position"];

/// The parameters of every operation, by method and path template.
#[derive(Default)]
pub struct ParamRules {
    operations: HashMap<(Method, String), Operation>,
}

#[derive(Default)]
struct Operation {
    query: Vec<Param>,
    headers: Vec<Param>,
}

struct Param {
    name: String,
    required: bool,
    schema: Rule,
}

/// A compiled schema, for values that arrive as strings.
#[derive(Default, Clone)]
struct Rule {
    /// Allowed JSON types (empty: any).
    types: Vec<String>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<Regex>,
    one_of: Option<Vec<String>>,
    items: Option<Box<Rule>>,
    any_of: Vec<Rule>,
}

impl ParamRules {
    /// Compiles the parameters of every `/v1` operation of `document` (an OpenAPI document
    /// as served).
    pub fn from_document(document: &Value) -> Self {
        let mut operations = HashMap::new();
        let components = &document["components"];
        let Some(paths) = document["paths"].as_object() else {
            return Self::default();
        };
        for (path, item) in paths {
            if !path.starts_with("/v1/") {
                continue;
            }
            let methods = [
                (Method::GET, "get"),
                (Method::POST, "post"),
                (Method::PUT, "put"),
                (Method::PATCH, "patch"),
                (Method::DELETE, "delete"),
            ];
            for (method, name) in methods {
                let Some(parameters) = item[name]["parameters"].as_array() else {
                    continue;
                };
                let mut compiled = Operation::default();
                for parameter in parameters {
                    let parameter = match parameter["$ref"].as_str() {
                        Some(reference) => reference
                            .strip_prefix("#/components/")
                            .map(|p| p.split('/').fold(components, |v, key| &v[key]))
                            .unwrap_or(&Value::Null),
                        None => parameter,
                    };
                    let list = match parameter["in"].as_str() {
                        Some("query") => &mut compiled.query,
                        Some("header") => &mut compiled.headers,
                        _ => continue,
                    };
                    let Some(name) = parameter["name"].as_str() else {
                        continue;
                    };
                    list.push(Param {
                        name: name.to_owned(),
                        required: parameter["required"].as_bool().unwrap_or(false),
                        schema: compile(&parameter["schema"], components, 0),
                    });
                }
                operations.insert((method, path.clone()), compiled);
            }
        }
        Self { operations }
    }

    /// Checks a request to `template` (its route) against the operation's parameters:
    /// unknown or missing query parameters are 400, values outside their schema 422; header
    /// values outside theirs are 400 (as malformed headers are everywhere).
    pub fn check(
        &self,
        method: &Method,
        template: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        let Some(operation) = self.operations.get(&(method.clone(), template.to_owned())) else {
            return Ok(());
        };
        for header in &operation.headers {
            let Some(value) = headers.get(header.name.as_str()) else {
                continue;
            };
            let value = value.to_str().map_err(|_| {
                ApiError::malformed(format!("{} must be printable ASCII", header.name))
            })?;
            header
                .schema
                .check(value.trim())
                .map_err(|m| ApiError::malformed(format!("{} {m}", header.name)))?;
        }
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let unknown: Vec<&str> = pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| {
                let declared = operation.query.iter().any(|p| p.name == *k);
                let everywhere = method == Method::GET && ANY_GET.contains(k);
                !(declared || everywhere)
            })
            .collect();
        if !unknown.is_empty() {
            let mut allowed: Vec<&str> = operation.query.iter().map(|p| p.name.as_str()).collect();
            allowed.retain(|n| !ANY_GET.contains(n));
            return Err(ApiError::malformed(format!(
                "unknown query parameter(s): {}; allowed: {}",
                unknown.join(", "),
                allowed.join(", ")
            )));
        }
        for param in &operation.query {
            let values: Vec<&str> = pairs
                .iter()
                .filter(|(k, _)| *k == param.name)
                .map(|(_, v)| v.as_str())
                .collect();
            if values.is_empty() {
                if param.required {
                    return Err(ApiError::malformed(format!(
                        "the query parameter {} is required",
                        param.name
                    )));
                }
                continue;
            }
            let rule = match &param.schema.items {
                // A repeatable parameter: each occurrence is one item.
                Some(items) if param.schema.allows("array") => items.as_ref(),
                _ => &param.schema,
            };
            for value in values {
                rule.check(value)
                    .map_err(|m| ApiError::invalid_field(param.name.clone(), m))?;
            }
        }
        Ok(())
    }
}

/// Compiles `schema`, resolving `$ref`s into `components` (to a small depth: parameter
/// schemas are flat).
fn compile(schema: &Value, components: &Value, depth: u8) -> Rule {
    let Some(object) = schema.as_object() else {
        return Rule::default();
    };
    if let Some(reference) = object.get("$ref").and_then(Value::as_str)
        && depth < 8
    {
        let target = reference
            .strip_prefix("#/components/")
            .map(|p| p.split('/').fold(components, |v, key| &v[key]))
            .unwrap_or(&Value::Null);
        return compile(target, components, depth + 1);
    }
    let number = |key: &str| object.get(key).and_then(Value::as_f64);
    let length = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
    };
    let mut rule = Rule {
        types: match object.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        },
        minimum: number("minimum"),
        maximum: number("maximum"),
        min_length: length("minLength"),
        max_length: length("maxLength"),
        pattern: object
            .get("pattern")
            .and_then(Value::as_str)
            .and_then(|p| Regex::new(p).ok()),
        one_of: None,
        items: object
            .get("items")
            .map(|items| Box::new(compile(items, components, depth + 1))),
        any_of: Vec::new(),
    };
    // Integer formats bound the value too (`uint32`: `limit`).
    match object.get("format").and_then(Value::as_str) {
        Some("uint32") => {
            rule.maximum = Some(rule.maximum.unwrap_or(f64::MAX).min(u32::MAX as f64))
        }
        Some("uint64" | "uint") => rule.minimum = Some(rule.minimum.unwrap_or(0.0).max(0.0)),
        _ => {}
    }
    let constants = |values: &Vec<Value>| -> Option<Vec<String>> {
        values
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect()
    };
    if let Some(Value::Array(values)) = object.get("enum") {
        rule.one_of = constants(values);
    }
    if let Some(Value::String(c)) = object.get("const") {
        rule.one_of = Some(vec![c.clone()]);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = object.get(key) {
            rule.any_of = branches
                .iter()
                .map(|b| compile(b, components, depth + 1))
                .collect();
        }
    }
    rule
}

impl Rule {
    fn allows(&self, ty: &str) -> bool {
        self.types.iter().any(|t| t == ty)
    }

    /// Checks one value as it arrived (a string); the error says what it must be.
    fn check(&self, value: &str) -> Result<(), String> {
        if !self.any_of.is_empty() {
            let mut first_error = None;
            for branch in &self.any_of {
                match branch.check(value) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            // `null` branches of optional parameters never match a value: say what the
            // other branch wants.
            return Err(self
                .any_of
                .iter()
                .filter(|b| !(b.types.len() == 1 && b.allows("null")))
                .find_map(|b| b.check(value).err())
                .or(first_error)
                .unwrap_or_else(|| "has the wrong form".into()));
        }
        let types: Vec<&str> = self
            .types
            .iter()
            .map(String::as_str)
            .filter(|t| *t != "null")
            .collect();
        if types.is_empty() && !self.types.is_empty() {
            // Only `null`: a value that arrived is never null.
            return Err("has the wrong type".into());
        }
        if types.contains(&"integer") || types.contains(&"number") {
            let integer = types.contains(&"integer") && !types.contains(&"number");
            let parsed = if integer {
                value.parse::<i128>().ok().map(|n| n as f64)
            } else {
                value.parse::<f64>().ok().filter(|n| n.is_finite())
            };
            match parsed {
                Some(n) if self.in_range(n) => return Ok(()),
                _ if types.contains(&"string") => {}
                _ => return Err(self.range_message(integer)),
            }
        }
        if types.contains(&"boolean") && matches!(value, "true" | "false") {
            return Ok(());
        }
        if !types.is_empty() && !types.contains(&"string") {
            return Err(if types.contains(&"boolean") {
                "must be true or false".into()
            } else {
                "has the wrong type".into()
            });
        }
        if let Some(allowed) = &self.one_of
            && !allowed.iter().any(|a| a == value)
        {
            return Err(format!("must be one of {}", allowed.join(", ")));
        }
        let chars = value.chars().count();
        if let Some(min) = self.min_length
            && chars < min
        {
            return Err(format!("must be at least {min} characters"));
        }
        if let Some(max) = self.max_length
            && chars > max
        {
            return Err(format!("must be at most {max} characters"));
        }
        if let Some(pattern) = &self.pattern
            && !pattern.is_match(value)
        {
            return Err(format!("must match {}", pattern.as_str()));
        }
        Ok(())
    }

    fn in_range(&self, n: f64) -> bool {
        self.minimum.is_none_or(|m| n >= m) && self.maximum.is_none_or(|m| n <= m)
    }

    fn range_message(&self, integer: bool) -> String {
        let what = if integer {
            "a whole number"
        } else {
            "a number"
        };
        match (self.minimum, self.maximum) {
            (Some(lo), Some(hi)) => format!("must be {what} from {lo} to {hi}"),
            (Some(lo), None) => format!("must be {what} of at least {lo}"),
            (None, Some(hi)) => format!("must be {what} of at most {hi}"),
            (None, None) => format!("must be {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(schema: Value) -> Rule {
        compile(&schema, &Value::Null, 0)
    }

    #[test]
    fn values_are_checked_as_the_schema_says() {
        let limit = rule(serde_json::json!({
            "type": ["integer", "null"], "format": "uint32", "minimum": 1, "maximum": 100
        }));
        assert!(limit.check("5").is_ok());
        assert_eq!(
            limit.check("-5").unwrap_err(),
            "must be a whole number from 1 to 100"
        );
        assert!(limit.check("1.5").is_err());
        assert!(limit.check("").is_err());
        let id =
            rule(serde_json::json!({"type": "string", "maxLength": 36, "pattern": "^[a-z]+$"}));
        assert!(id.check("abc").is_ok());
        assert!(id.check("ab1").is_err());
        assert!(id.check(&"a".repeat(37)).is_err());
        let status = rule(serde_json::json!({"oneOf": [
            {"type": "string", "const": "active"}, {"type": "string", "enum": ["blocked"]}
        ]}));
        assert!(status.check("blocked").is_ok());
        assert!(status.check("gone").is_err());
        let optional = rule(
            serde_json::json!({"anyOf": [{"type": "string", "enum": ["a"]}, {"type": "null"}]}),
        );
        assert_eq!(optional.check("b").unwrap_err(), "must be one of a");
    }
}
