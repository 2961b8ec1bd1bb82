//! The response helpers every write shares (the user object itself is
//! [`roster_core::resource::UserResource`]).

pub use roster_core::resource::UserResource;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use roster_domain::User;
use roster_eventlog::Position;
use serde::Serialize;

use crate::state::AppState;

/// `x-roster-position: <n>`.
pub fn position_header(headers: &mut HeaderMap, position: Position) {
    headers.insert("x-roster-position", HeaderValue::from(position));
}

/// `ETag: "<version>"`.
pub fn etag(headers: &mut HeaderMap, version: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(header::ETAG, v);
    }
}

/// The user object, with the user's presence as others see it.
pub fn user_resource(app: &AppState, user: User, position: Option<Position>) -> UserResource {
    let shown = app.presence_of(&user);
    UserResource::new(user, position).with_presence(shown.online, shown.message, shown.last_seen_at)
}

/// A single-user response: body, ETag, and the position header for writes.
pub fn user_response(
    app: &AppState,
    status: StatusCode,
    user: User,
    position: Option<Position>,
) -> Response {
    let version = user.public.version;
    let resource = user_resource(app, user, position);
    let location = (status == StatusCode::CREATED).then(|| format!("/v1/users/{}", resource.id));
    let mut response = (status, axum::Json(resource)).into_response();
    let headers = response.headers_mut();
    etag(headers, version);
    if let Some(p) = position {
        position_header(headers, p);
    }
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, loc);
    }
    response
}

/// A JSON body with the position header.
pub fn write_response<T: Serialize>(status: StatusCode, body: T, position: Position) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    position_header(response.headers_mut(), position);
    response
}
