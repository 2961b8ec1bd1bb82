//! Every route, merged in one place.

use axum::Router;

use crate::state::AppState;

mod health;
mod settings;
pub mod users;

/// All routes of the API.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(users::router())
        .merge(settings::router())
}
