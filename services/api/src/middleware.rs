//! Layers every request passes: a request id and its log line, request metrics, panics as 500
//! problems, the body limit and body read timeout, the stream gate, parameters checked before
//! read-your-writes waits (`min_position`), and problem+json for every error — unknown routes
//! and methods, and whatever axum or tower answer by themselves.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use tokio::time::Sleep;
use tracing::Instrument;

use crate::auth::Caller;
use crate::error::{ApiError, Code, Problem};
use crate::extract::RequestId;
use crate::params::ParamRules;
use crate::state::AppState;
use crate::streams::{StreamGate, StreamLimits};

/// How long a GET waits for the read models to reach `min_position` (docs/contract.md §1).
const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);

/// The request-level limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub body: usize,
    /// Longest wait for the next bytes of a body being read.
    pub body_timeout: Duration,
    /// Concurrent streams per credential.
    pub streams: StreamLimits,
}

/// Wraps the routes in every layer.
pub fn wrap(
    routes: Router<AppState>,
    document: &serde_json::Value,
    state: AppState,
    limits: Limits,
) -> Router {
    let params = Arc::new(ParamRules::from_document(document));
    routes
        .fallback(|| async { ApiError::not_found("No such route.") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "This route does not accept that method.",
            )
        })
        // Only on matched routes: an unknown path is 404 without waiting.
        .route_layer(from_fn_with_state((state.clone(), params), check_then_wait))
        .layer(DefaultBodyLimit::max(limits.body))
        .layer(from_fn_with_state(limits.body_timeout, body_timeout))
        .layer(Extension(StreamGate::new(limits.streams)))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(from_fn(problems))
        // `layer` wraps each route (and the fallbacks) after routing, so the matched route
        // template is known here.
        .layer(from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

/// Gives each request an id (a ULID): recorded as the events' correlation id, put on the
/// request's span (so every log line of the request carries it) and on the request's own log
/// line, and returned as `x-request-id`. Also counts the request in the metrics, by route
/// template, method and status class.
async fn request_id(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = ulid::Ulid::new().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(crate::metrics::UNMATCHED_ROUTE, |m| m.as_str())
        .to_owned();
    let method = method_label(req.method());
    let span = tracing::info_span!("request", request_id = %id, method, path = %req.uri().path());
    let started = std::time::Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics()
        .observe_request(method, &route, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            request_id = %id,
            route,
            status,
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "request"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// The method as a metric label: the standard ones by name, anything else as `OTHER` (so a
/// client cannot grow the label set without bound).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Checks the request's query and header parameters against its operation in the OpenAPI
/// document, then — for `min_position=<n>` or `x-roster-min-position: <n>` on a GET — waits
/// until the read models have applied position n, at most five seconds, then 503
/// `projection_lagging`. Bad parameters are answered at once, never after a wait; a caller
/// without valid credentials gets its 401 first.
async fn check_then_wait(
    State((state, params)): State<(AppState, Arc<ParamRules>)>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let public = crate::routes::PUBLIC_PATHS.contains(&parts.uri.path());
    let authenticated =
        || async { public || matches!(Caller::authenticate(&parts, &state).await, Ok(Some(_))) };
    // The operational routes (health, metrics, docs) take whatever a prober sends.
    let api = parts.uri.path().starts_with("/v1/");
    let checked = if !api {
        Ok(())
    } else {
        crate::extract::check_headers(&parts.headers)
    }
    .and_then(|()| {
        if !api {
            return Ok(());
        }
        match parts.extensions.get::<MatchedPath>() {
            Some(template) => params.check(
                &parts.method,
                template.as_str(),
                parts.uri.query(),
                &parts.headers,
            ),
            None => Ok(()),
        }
    });
    if let Err(e) = checked {
        // Without valid credentials the handler answers 401 (it authenticates first).
        if authenticated().await {
            return e.into_response();
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    if parts.method != Method::GET {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let from_query = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "min_position")
            .map(|(_, v)| v.into_owned())
    });
    let from_header = parts
        .headers
        .get("x-roster-min-position")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(raw) = from_query.or(from_header) else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    // A caller without valid credentials gets its 401 at once, not after waiting (up to 5 s)
    // for a position: only the operational routes (health, metrics, docs) answer without a key.
    if !authenticated().await {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let req = Request::from_parts(parts, body);
    let Ok(position) = raw.trim().parse::<u64>() else {
        return ApiError::invalid_field("min_position", "must be a log position (a whole number)")
            .into_response();
    };
    if !state.wait_for(position, MIN_POSITION_WAIT).await {
        let mut e = ApiError::new(
            Code::ProjectionLagging,
            format!("The read models have not reached position {position} within 5 s."),
        );
        e.retry_after = Some(1);
        return e.into_response();
    }
    next.run(req).await
}

/// Times the reading of every request body: a body whose next bytes do not arrive within
/// `timeout` while a handler waits for them fails with [`BodyTimedOut`] (answered 408).
async fn body_timeout(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let req = req.map(|body| axum::body::Body::new(TimedBody::new(body, timeout)));
    next.run(req).await
}

/// The error a body gets when its bytes stop arriving; see [`body_timeout`].
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

struct TimedBody {
    body: axum::body::Body,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(body: axum::body::Body, timeout: Duration) -> Self {
        Self {
            body,
            timeout,
            timer: None,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether `error` (or one of its sources) is a body timeout.
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Every error answer is problem+json: those of axum's extractors and tower's layers (a
/// path that does not decode, a body limit), which are plain text or empty, are rewritten
/// with their status, a stable code and, for 4xx, their text as the detail; their headers
/// (`Allow`, `Retry-After`) stay.
///
/// A 413 or 408 leaves the rest of the body unread, so the server closes that connection;
/// it says so (`Connection: close`), or a client would reuse it and lose its next request.
async fn problems(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    if matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // Problems, and the JSON bodies a route answers on purpose (`/readyz` when not ready).
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/") && ct.contains("json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let code = code_for(status);
    let detail = if status.is_client_error() {
        let text = axum::body::to_bytes(body, 4096)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .filter(|t| !t.trim().is_empty());
        text.unwrap_or_else(|| code.title().to_owned())
    } else {
        tracing::error!(status = status.as_u16(), "an error answer without details");
        "The server could not complete the request.".to_owned()
    };
    let problem = Problem {
        type_: format!("https://roster.dev/errors/{}", code.as_str()),
        title: code.title(),
        status: status.as_u16(),
        detail,
        code: code.as_str(),
        errors: Vec::new(),
    };
    let bytes = serde_json::to_vec(&problem).expect("problem serializes");
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// The stable code of an error status nobody gave a code to.
fn code_for(status: StatusCode) -> Code {
    match status {
        StatusCode::UNAUTHORIZED => Code::Unauthorized,
        StatusCode::FORBIDDEN => Code::Forbidden,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::NOT_ACCEPTABLE => Code::NotAcceptable,
        StatusCode::REQUEST_TIMEOUT => Code::RequestTimeout,
        StatusCode::CONFLICT => Code::Conflict,
        StatusCode::PRECONDITION_FAILED => Code::VersionMismatch,
        StatusCode::GONE => Code::Gone,
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::URI_TOO_LONG => Code::UriTooLong,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidRequest,
        StatusCode::TOO_MANY_REQUESTS => Code::RateLimited,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Code::HeadersTooLarge,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        s if s.is_client_error() => Code::MalformedRequest,
        _ => Code::Internal,
    }
}
