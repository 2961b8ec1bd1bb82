//! Every route, merged in one place.

use axum::Router;

use crate::state::AppState;

mod events;
mod fields;
mod health;
mod history;
pub(crate) mod lifecycle;
mod settings;
mod tasks;
pub mod users;
mod wallet;

/// Paths that answer without credentials (API.md §7).
pub const PUBLIC_PATHS: &[&str] = health::PATHS;

/// All routes of the API.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(users::router())
        .merge(settings::router())
        .merge(fields::router())
        .merge(wallet::router())
        .merge(lifecycle::router())
        .merge(history::router())
        .merge(tasks::router())
        .merge(events::router())
}
