//! Every route, merged in one place.

use axum::Router;

use crate::state::AppState;

mod health;
mod settings;
pub mod users;

/// Paths that answer without credentials (API.md §7).
pub const PUBLIC_PATHS: &[&str] = health::PATHS;

/// All routes of the API.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(users::router())
        .merge(settings::router())
}
