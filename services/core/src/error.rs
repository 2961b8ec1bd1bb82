//! One error type for every command, query and task, rendered as RFC 9457 problem details
//! (docs/contract.md §1) by the HTTP layer and recorded by code in task failures. All stable codes
//! live in the one table below, as meilisearch keeps its error codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use roster_domain::{DomainError, FieldError};
use serde::Serialize;

/// Declares each error code once: its status, its stable code and its title.
macro_rules! error_codes {
    ($($variant:ident => $status:ident, $code:literal, $title:literal;)*) => {
        /// Every stable error code of the API.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Code { $($variant,)* }

        impl Code {
            /// Every code, in the order of the table.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The HTTP status of this code.
            pub fn status(self) -> StatusCode {
                match self { $(Code::$variant => StatusCode::$status,)* }
            }
            /// The machine-readable code.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }
            /// A short human title.
            pub fn title(self) -> &'static str {
                match self { $(Code::$variant => $title,)* }
            }
        }
    };
}

error_codes! {
    MalformedRequest => BAD_REQUEST, "invalid_request", "The request is malformed";
    InvalidRequest => UNPROCESSABLE_ENTITY, "invalid_request", "The request is invalid";
    Unauthorized => UNAUTHORIZED, "unauthorized", "Authentication required";
    Forbidden => FORBIDDEN, "forbidden", "Not allowed";
    NotFound => NOT_FOUND, "not_found", "Not found";
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed";
    NotAcceptable => NOT_ACCEPTABLE, "not_acceptable", "Not acceptable";
    RequestTimeout => REQUEST_TIMEOUT, "request_timeout", "The request did not arrive in time";
    Conflict => CONFLICT, "conflict", "Conflict";
    VersionMismatch => PRECONDITION_FAILED, "version_mismatch", "Version mismatch";
    UsernameTaken => CONFLICT, "username_taken", "Username taken";
    EmailTaken => CONFLICT, "email_taken", "Email taken";
    IdTaken => CONFLICT, "id_taken", "Id taken";
    IdentityTaken => CONFLICT, "identity_taken", "Identity taken";
    WalletNegative => CONFLICT, "wallet_negative", "Wallet balance would be negative";
    UserDeactivated => FORBIDDEN, "user_deactivated", "User deactivated";
    UserBlocked => FORBIDDEN, "user_blocked", "User blocked";
    Gone => GONE, "gone", "Gone";
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large";
    UriTooLong => URI_TOO_LONG, "uri_too_long", "URI too long";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "invalid_request", "Unsupported media type";
    RateLimited => TOO_MANY_REQUESTS, "rate_limited", "Too many requests";
    HeadersTooLarge => REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", "Request header fields too large";
    IdempotencyMismatch => UNPROCESSABLE_ENTITY, "idempotency_mismatch", "Idempotency key reused with a different request";
    ProjectionLagging => SERVICE_UNAVAILABLE, "projection_lagging", "Read models are behind";
    Unavailable => SERVICE_UNAVAILABLE, "unavailable", "Service unavailable";
    Internal => INTERNAL_SERVER_ERROR, "internal", "Internal error";
}

/// An error a command, query or task returns; becomes a problem+json response, or a task
/// failure's `code` and `detail`.
#[derive(Debug)]
pub struct ApiError {
    /// The stable code (decides the status).
    pub code: Code,
    /// What happened, for a person.
    pub detail: String,
    /// Field-level problems, if any.
    pub errors: Vec<FieldError>,
    /// Seconds to wait, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code and a detail.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 422 with field errors.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Self {
            errors,
            ..Self::new(Code::InvalidRequest, detail)
        }
    }

    /// 422 about one field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(field, message)])
    }

    /// 400 for a request that cannot be parsed.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(Code::MalformedRequest, detail)
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(Code::NotFound, what)
    }

    /// 500; the cause is logged, never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Code::Internal, "The server could not complete the request.")
    }

    /// Attaches field errors.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }
}

/// An RFC 9457 problem details body (`application/problem+json`): every error of the API.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Problem {
    /// `https://roster.dev/errors/<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short title of the code.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What happened.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Field-level problems (`users[3].email`), when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    /// The problem details body.
    fn body(&self) -> Vec<u8> {
        let body = Problem {
            type_: format!("https://roster.dev/errors/{}", self.code.as_str()),
            title: self.code.title(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str(),
            errors: self.errors.clone(),
        };
        serde_json::to_vec(&body).expect("problem serializes")
    }

    /// The whole HTTP/1.1 response as bytes, for answers written below hyper (a refused
    /// request head); the connection closes after it.
    pub fn raw_response(&self) -> Vec<u8> {
        let status = self.code.status();
        let body = self.body();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes();
        if let Some(secs) = self.retry_after {
            out.extend_from_slice(format!("retry-after: {secs}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let mut response = (status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == Code::RequestTimeout {
            // The rest of the request may still arrive: it cannot be told from a next one.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(errors) => ApiError::invalid(errors),
            DomainError::Conflict(what) => ApiError::new(Code::Conflict, what),
            DomainError::NotFound => ApiError::not_found("No user with this id."),
            DomainError::NotHeld(what) => ApiError::not_found(what),
            DomainError::IdTaken => {
                ApiError::new(Code::IdTaken, "A user with this id already exists.")
            }
            DomainError::UserDeleted => ApiError::new(
                Code::Conflict,
                "The user is deleted; restore it before changing it.",
            ),
            e @ DomainError::WalletNegative { .. } => {
                ApiError::new(Code::WalletNegative, e.to_string())
            }
            e @ DomainError::WalletOverflow { .. } => ApiError::new(Code::Conflict, e.to_string()),
            DomainError::TokenInvalid => ApiError::new(
                Code::Unauthorized,
                "The token is not valid: it is wrong, used, superseded or expired.",
            ),
        }
    }
}

impl From<roster_projections::StoreError> for ApiError {
    fn from(e: roster_projections::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<roster_eventlog::LogError> for ApiError {
    fn from(e: roster_eventlog::LogError) -> Self {
        match e {
            roster_eventlog::LogError::Unavailable(_) | roster_eventlog::LogError::Closed => {
                tracing::warn!(error = %e, "event log unavailable");
                let mut err = ApiError::new(
                    Code::Unavailable,
                    "The event log is unavailable; retry shortly.",
                );
                err.retry_after = Some(1);
                err
            }
            e => ApiError::internal(e),
        }
    }
}

impl From<roster_projections::CodecError> for ApiError {
    fn from(e: roster_projections::CodecError) -> Self {
        match e {
            roster_projections::CodecError::Vault(v) => v.into(),
            e => ApiError::internal(e),
        }
    }
}

impl From<roster_vault::VaultError> for ApiError {
    fn from(e: roster_vault::VaultError) -> Self {
        match e {
            // A shared key store (JetStream) without quorum: as for the log, retry shortly.
            roster_vault::VaultError::Unavailable(_) | roster_vault::VaultError::Closed => {
                tracing::warn!(error = %e, "key store unavailable");
                let mut err = ApiError::new(
                    Code::Unavailable,
                    "The key store is unavailable; retry shortly.",
                );
                err.retry_after = Some(1);
                err
            }
            e => ApiError::internal(e),
        }
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

/// Errors are documented per operation, as shared problem responses.
impl aide::OperationOutput for ApiError {
    type Inner = Problem;
}
