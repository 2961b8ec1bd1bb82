//! The user object of API.md §2 and the response helpers every write shares.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use roster_domain::{Status, User};
use roster_eventlog::Position;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

/// A user as the API shows it to a server (API.md §2).
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[schemars(rename = "User")]
pub struct UserResource {
    /// User id.
    pub id: String,
    /// Organization.
    pub organization_id: String,
    /// Username.
    pub username: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Whether the email is verified.
    pub email_verified: bool,
    /// Phone (E.164).
    pub phone: Option<String>,
    /// Whether the phone is verified.
    pub phone_verified: bool,
    /// Picture URL.
    pub avatar_url: Option<String>,
    /// Language tag.
    pub lang_tag: Option<String>,
    /// Location.
    pub location: Option<String>,
    /// Time zone.
    pub timezone: Option<String>,
    /// Role.
    pub role: String,
    /// Lifecycle status.
    pub status: Status,
    /// Application fields.
    pub custom: Map<String, Value>,
    /// Server metadata.
    pub metadata: Map<String, Value>,
    /// Preferences.
    pub prefs: Map<String, Value>,
    /// Balances.
    pub wallet: BTreeMap<String, i64>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Deactivation time.
    pub deactivated_at: Option<DateTime<Utc>>,
    /// Deletion time.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Stream version (as in the ETag).
    pub version: u64,
    /// Present and true when personal data has been erased.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
    /// Log position of the write that produced this response (writes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

impl UserResource {
    /// The API view of a user.
    pub fn new(user: User, position: Option<Position>) -> Self {
        let status = user.status();
        let p = user.profile;
        Self {
            id: user.id,
            organization_id: user.organization_id,
            username: p.username,
            display_name: p.display_name,
            name: p.name,
            email: p.email,
            email_verified: user.email_verified,
            phone: p.phone,
            phone_verified: user.phone_verified,
            avatar_url: p.avatar_url,
            lang_tag: p.lang_tag,
            location: p.location,
            timezone: p.timezone,
            role: p.role,
            status,
            custom: p.custom,
            metadata: p.metadata,
            prefs: p.prefs,
            wallet: user.wallet,
            created_at: user.created_at,
            updated_at: user.updated_at,
            deactivated_at: user.deactivated_at,
            deleted_at: user.deleted_at,
            version: user.version,
            erased: user.erased,
            position,
        }
    }
}

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

/// A single-user response: body, ETag, and the position header for writes.
pub fn user_response(status: StatusCode, user: User, position: Option<Position>) -> Response {
    let version = user.version;
    let resource = UserResource::new(user, position);
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
