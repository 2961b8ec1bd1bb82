//! Extractors: every way a request can be malformed ends here as a problem+json error.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, Method, header, request::Parts};
use bytes::Bytes;
use roster_domain::{OrgId, UserId};
use roster_projections::EventMeta;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::state::AppState;

/// The request id given to every request (also sent back as `x-request-id`).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What a cursor this server hands out looks like (URL-safe base64), for the OpenAPI
/// document's query parameters: anything else is refused before a handler (or a wait) runs.
pub(crate) const CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]{1,128}$";
/// A user id (docs/contract.md §2): 1–36 of `a-z A-Z 0-9 . - _`, not starting with `.`, `-` or `_`.
pub(crate) const ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,35}$";
/// `as_of`: a log position, or an RFC 3339 time.
pub(crate) const AS_OF_PATTERN: &str = "^([0-9]{1,20}|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2}))$";

/// What every command needs to know about its request.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The organization (`x-organization-id`, default `default`).
    pub org: OrgId,
    /// Who is calling.
    pub caller: Caller,
    /// The metadata recorded on the events this request causes.
    pub meta: EventMeta,
    /// `Idempotency-Key`, if sent.
    pub idempotency_key: Option<String>,
    /// `If-Match` as a stream version, if sent.
    pub if_match: Option<u64>,
    /// Hash of method, path, query and organization (the body is added by [`Json`]).
    pub request_digest: [u8; 32],
}

impl Ctx {
    /// The digest identifying this request for idempotency, including its body's digest.
    pub fn digest_with(&self, body: Option<&[u8; 32]>) -> String {
        let mut hash = Sha256::new();
        hash.update(self.request_digest);
        if let Some(body) = body {
            hash.update(body);
        }
        hex::encode(&hash.finalize()[..16])
    }
}

/// The organization of a request.
pub fn org_of(headers: &HeaderMap) -> Result<OrgId, ApiError> {
    match headers.get("x-organization-id") {
        None => Ok(OrgId::default_org()),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::malformed("x-organization-id must be ASCII"))?;
            OrgId::parse(s).map_err(|m| ApiError::malformed(format!("x-organization-id {m}")))
        }
    }
}

fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = value.to_str().unwrap_or_default().trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s.trim_matches('"');
    s.parse::<u64>().map(Some).map_err(|_| {
        ApiError::malformed("If-Match must be a version in quotes, as sent in ETag, e.g. \"3\"")
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| ApiError::malformed("Idempotency-Key must be ASCII"))?;
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(ApiError::malformed(
                    "Idempotency-Key must be 1 to 255 characters",
                ));
            }
            Ok(Some(key.to_owned()))
        }
    }
}

/// The header checks every request's context makes (organization, `Idempotency-Key`,
/// `If-Match`), for the middleware to make before any wait.
pub fn check_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    org_of(headers)?;
    idempotency_key(headers)?;
    if_match(headers)?;
    Ok(())
}

impl Ctx {
    /// The context of a request by `caller` in `org`.
    fn build(parts: &Parts, org: OrgId, caller: Caller) -> Result<Self, ApiError> {
        let idempotency_key = idempotency_key(&parts.headers)?;
        let ip = client_ip(parts).map(|ip| ip.to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect());
        let correlation_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        let mut digest = Sha256::new();
        digest.update(parts.method.as_str());
        digest.update([0]);
        digest.update(parts.uri.path());
        digest.update([0]);
        digest.update(parts.uri.query().unwrap_or_default());
        digest.update([0]);
        digest.update(org.as_str());
        if let Caller::Client { user_id, .. } = &caller {
            // Two users sending the same request with the same key are two requests.
            digest.update([0]);
            digest.update(user_id.as_str());
        }
        Ok(Ctx {
            meta: EventMeta {
                actor: caller.actor(),
                causation_id: None,
                correlation_id,
                idempotency_key: idempotency_key.clone(),
                ip,
                user_agent,
            },
            org,
            caller,
            idempotency_key,
            if_match: if_match(&parts.headers)?,
            request_digest: digest.finalize().into(),
        })
    }

    /// What an `Idempotency-Key` is unique within: the organization for servers, the user for
    /// clients (so one client's key can never answer another's request).
    pub fn idempotency_scope(&self) -> String {
        match &self.caller {
            Caller::Client { user_id, .. } => format!("{}/user:{user_id}", self.org),
            _ => self.org.to_string(),
        }
    }
}

/// The address of the client (the TCP peer).
pub fn client_ip(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// 403 for a client token on a server endpoint.
fn server_only() -> ApiError {
    ApiError::new(
        Code::Forbidden,
        "This endpoint is for servers; a client token may call only /v1/account, /v1/profiles and /v1/sessions.",
    )
}

fn no_credentials() -> ApiError {
    ApiError::new(
        Code::Unauthorized,
        "Send the API key as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
    )
}

/// [`Ctx`] is the server's context: without a valid API key 401, with a client token 403.
impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = match Caller::authenticate(parts, state).await? {
            None => return Err(no_credentials()),
            Some(Caller::Client { .. } | Caller::AnonymousToken { .. }) => {
                return Err(server_only());
            }
            Some(caller) => caller,
        };
        let org = org_of(&parts.headers)?;
        Ctx::build(parts, org, caller)
    }
}

/// A client's context (docs/contract.md §5 client endpoints): a valid access token, acting on its
/// own user only. A server key gets 403: a server has no account of its own.
pub struct ClientCtx {
    /// The context (its organization is the token's).
    pub ctx: Ctx,
    /// The token's user.
    pub user_id: UserId,
    /// The token's session.
    pub session_id: String,
}

impl FromRequestParts<AppState> for ClientCtx {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Caller::authenticate(parts, state).await? {
            None => Err(ApiError::new(
                Code::Unauthorized,
                "Send an access token as 'Authorization: Bearer <token>'.",
            )),
            Some(Caller::Client {
                user_id,
                session_id,
                org,
            }) => {
                let caller = Caller::Client {
                    user_id: user_id.clone(),
                    session_id: session_id.clone(),
                    org: org.clone(),
                };
                Ok(ClientCtx {
                    ctx: Ctx::build(parts, org, caller)?,
                    user_id,
                    session_id,
                })
            }
            Some(_) => Err(ApiError::new(
                Code::Forbidden,
                "This endpoint acts on the signed-in user: call it with a client access token (servers use /v1/users/{id}).",
            )),
        }
    }
}

/// The context of an endpoint both servers and clients may call (`GET /v1/profiles`).
pub struct AnyCtx(pub Ctx);

impl FromRequestParts<AppState> for AnyCtx {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::authenticate(parts, state)
            .await?
            .ok_or_else(no_credentials)?;
        let org = match &caller {
            Caller::Client { org, .. } | Caller::AnonymousToken { org } => org.clone(),
            _ => org_of(&parts.headers)?,
        };
        Ok(AnyCtx(Ctx::build(parts, org, caller)?))
    }
}

/// The context of an endpoint anyone may call (signing in): credentials are not looked at.
pub struct PublicCtx(pub Ctx);

impl<S: Send + Sync> FromRequestParts<S> for PublicCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let org = org_of(&parts.headers)?;
        Ok(PublicCtx(Ctx::build(parts, org, Caller::Anonymous)?))
    }
}

/// A JSON body with its digest. Syntax errors are 400, wrong types and unknown fields 422
/// (naming the field), a body over the limit 413.
pub struct Json<T> {
    /// The parsed body.
    pub value: T,
    /// SHA-256 of the body bytes.
    pub digest: [u8; 32],
}

/// Reads the body bytes, mapping the limit to 413.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                Code::PayloadTooLarge,
                "The request body is larger than the server accepts.",
            )
        } else if crate::middleware::is_body_timeout(&e) {
            ApiError::new(
                Code::RequestTimeout,
                "The request body stopped arriving before it was complete.",
            )
        } else {
            ApiError::malformed(format!("could not read the request body: {e}"))
        }
    })
}

/// Parses JSON bytes into `T`, classifying errors like [`Json`] does. Structs are read from
/// JSON objects only, at any depth ([`crate::strict`]): an array where an object is meant is
/// 422, not its items taken as fields.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(crate::strict::Strict(&mut *de)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { String::new() } else { path };
                ApiError::invalid_field(field, strip_position(&inner.to_string()))
            }
            // serde_json reports some wrong types (e.g. `true` where an enum is expected) as
            // syntax errors; if the body is valid JSON, it is the shape that is wrong: 422.
            serde_json::error::Category::Syntax
                if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() =>
            {
                let field = if path == "." { String::new() } else { path };
                ApiError::invalid_field(field, "has the wrong type or an unknown value")
            }
            _ => ApiError::malformed(format!("malformed JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::malformed(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// serde's data errors end with "at line 1 column 20", which says nothing useful once the
/// field path is known.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(req.headers(), req.method())?;
        let bytes = body_bytes(req, state).await?;
        let value = parse_json(&bytes)?;
        Ok(Json {
            value,
            digest: Sha256::digest(&bytes).into(),
        })
    }
}

/// Like [`Json`], but an empty body reads as `T::default()` (for commands whose body is
/// optional, such as deactivation).
pub struct MaybeJson<T> {
    /// The parsed body, or the default.
    pub value: T,
    /// SHA-256 of the body bytes.
    pub digest: [u8; 32],
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let method = req.method().clone();
        let headers = req.headers().clone();
        let bytes = body_bytes(req, state).await?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            T::default()
        } else {
            check_json_content_type(&headers, &method)?;
            parse_json(&bytes)?
        };
        Ok(MaybeJson {
            value,
            digest: Sha256::digest(&bytes).into(),
        })
    }
}

fn check_json_content_type(headers: &HeaderMap, method: &Method) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        // curl -d sends a form content type; a missing one is accepted as JSON.
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or_default().trim();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::new(
        Code::UnsupportedMediaType,
        format!("{method} bodies must be application/json, not {essence}"),
    ))
}

/// Declares an endpoint's query parameters once: a struct whose schema documents them in the
/// OpenAPI document ([`crate::routes::openapi::OperationDoc::query`]), and its `NAMES`, the
/// list the handler passes to [`QueryParams::only`] — so the two cannot disagree.
macro_rules! query_params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(schemars::JsonSchema)]
        #[schemars(inline)]
        #[allow(dead_code)]
        $vis struct $name {
            $( $(#[$field_meta])* $field: $ty, )*
        }

        impl $name {
            /// The parameter names this endpoint accepts.
            $vis const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}
pub(crate) use query_params;

query_params! {
    /// No query parameters.
    pub(crate) struct NoQuery {}
}

/// Query parameters as ordered pairs, repeatable; unknown names are refused so typos show.
pub struct QueryParams(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(QueryParams(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .filter(|(k, _)| k != "min_position")
                .collect(),
        ))
    }
}

impl QueryParams {
    /// Refuses any parameter not in `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let unknown: Vec<&str> = self
            .0
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !allowed.contains(k))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(ApiError::malformed(format!(
                "unknown query parameter(s): {}; allowed: {}",
                unknown.join(", "),
                allowed.join(", ")
            )))
        }
    }

    /// The single value of a parameter (the last one wins if repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A parameter parsed as a number within bounds.
    pub fn number(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::invalid_field(
                    name,
                    format!("must be a whole number from {min} to {max}"),
                )),
            },
        }
    }
}
