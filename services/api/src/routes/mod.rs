//! Every route, merged in one place, and the OpenAPI document they make.
//!
//! Each module registers its routes with aide's `api_route`, describing each operation next to
//! it; [`build`] assembles the axum router and the document in one pass, so a route cannot be
//! served without being documented (a test below refuses plain `.route(` registrations).

use std::sync::{Arc, OnceLock};

use aide::axum::ApiRouter;
use aide::openapi::OpenApi;
use axum::Router;

use crate::state::AppState;

mod account;
pub(crate) mod common;
pub mod console;
mod events;
mod fields;
mod guests;
mod health;
mod history;
mod identities;
mod import;
pub(crate) mod lifecycle;
pub mod openapi;
mod presence;
mod projections;
mod recovery;
mod self_service;
pub use guests::sweep_expired_guests;
pub use recovery::sweep_token_keys;
mod sessions;
mod settings;
mod tasks;
mod teams;
mod tokens;
pub mod users;
mod wallet;
mod webhooks;

/// Paths that answer without credentials (docs/contract.md §7).
pub const PUBLIC_PATHS: &[&str] = &[
    health::HEALTHZ,
    health::READYZ,
    health::METRICS,
    openapi::OPENAPI_PATH,
    openapi::DOCS_PATH,
    console::CONSOLE_PATH,
];

/// All routes of the API.
pub fn router() -> Router<AppState> {
    build().0
}

/// The OpenAPI 3.1 document of every route (what `GET /openapi.json` serves).
pub fn openapi() -> Arc<serde_json::Value> {
    build().1
}

/// The router and its OpenAPI document (as served), built together.
pub fn build() -> (Router<AppState>, Arc<serde_json::Value>) {
    openapi::prepare();
    let document = Arc::new(OnceLock::new());
    let routes = ApiRouter::new()
        .merge(users::router())
        .merge(fields::router())
        .merge(wallet::router())
        .merge(lifecycle::router())
        .merge(history::router())
        .merge(tasks::router())
        .merge(import::router())
        .merge(sessions::router())
        .merge(tokens::router())
        .merge(account::router())
        .merge(recovery::router())
        .merge(self_service::router())
        .merge(settings::router())
        .merge(webhooks::router())
        .merge(teams::router())
        .merge(identities::router())
        .merge(guests::router())
        .merge(presence::router())
        .merge(events::router())
        .merge(projections::router())
        .merge(health::router())
        .merge(console::router())
        .merge(openapi::router(document.clone()));
    let mut api = OpenApi::default();
    let router = routes.finish_api_with(&mut api, openapi::finish);
    let mut value = serde_json::to_value(&api).expect("the OpenAPI document serializes");
    openapi::bound_integers(&mut value);
    let bytes = serde_json::to_vec(&value).expect("the OpenAPI document serializes");
    let _ = document.set(bytes.into());
    (router, Arc::new(value))
}

/// Schemas of the request bodies (`schemas/commands/`), by name.
pub fn command_schemas(out: &mut crate::schemas::SchemaSet) {
    users::command_schemas(out);
    fields::command_schemas(out);
    wallet::command_schemas(out);
    lifecycle::command_schemas(out);
    import::command_schemas(out);
    tasks::command_schemas(out);
    sessions::command_schemas(out);
    tokens::command_schemas(out);
    account::command_schemas(out);
    recovery::command_schemas(out);
    self_service::command_schemas(out);
    settings::command_schemas(out);
    webhooks::command_schemas(out);
    teams::command_schemas(out);
    identities::command_schemas(out);
    guests::command_schemas(out);
    presence::command_schemas(out);
}

/// Schemas of what queries answer (`schemas/read_models/`), by name.
pub fn read_model_schemas(out: &mut crate::schemas::SchemaSet) {
    users::read_model_schemas(out);
    wallet::read_model_schemas(out);
    history::read_model_schemas(out);
    tasks::read_model_schemas(out);
    sessions::read_model_schemas(out);
    account::read_model_schemas(out);
    settings::read_model_schemas(out);
    webhooks::read_model_schemas(out);
    teams::read_model_schemas(out);
    guests::read_model_schemas(out);
    presence::read_model_schemas(out);
    events::read_model_schemas(out);
    projections::read_model_schemas(out);
}

#[cfg(test)]
mod tests {
    /// A route added with axum's `.route(` (or a plain `Router`) would be served but missing
    /// from the OpenAPI document: every module must use `api_route`.
    #[test]
    fn every_route_is_registered_through_the_openapi_generator() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("routes directory") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("mod.rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("readable source");
            for needle in [".route(", ".route_service(", "Router::new()", ".nest("] {
                let plain = source
                    .match_indices(needle)
                    .filter(|(i, _)| !source[..*i].ends_with("Api"))
                    .count();
                assert_eq!(
                    plain,
                    0,
                    "{} registers a route with `{needle}`: use `api_route` (and describe the \
                     operation) so it appears in /openapi.json",
                    path.display()
                );
            }
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} route modules found");
    }
}
