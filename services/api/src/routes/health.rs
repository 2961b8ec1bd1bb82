//! `/healthz` and `/readyz` (API.md §7): no credentials.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::state::AppState;

/// The paths of this module.
pub const PATHS: &[&str] = &["/healthz", "/readyz"];

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(PATHS[0], get(healthz))
        .route(PATHS[1], get(readyz))
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready when the log answers and the read models are following it.
async fn readyz(State(app): State<AppState>) -> Response {
    let head = app.log().head();
    let log_ok = app.log().read_all(head.saturating_sub(1), 1).await.is_ok();
    let applied = app.models().checkpoint();
    let body = json!({
        "status": if log_ok { "ready" } else { "unavailable" },
        "log_position": head,
        "projection_position": applied,
        "projection_lag": head.saturating_sub(applied),
    });
    let status = if log_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
