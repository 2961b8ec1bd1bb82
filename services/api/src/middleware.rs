//! Layers every request passes: a request id and its log line, request metrics, panics as 500
//! problems, the body limit, read-your-writes waits (`min_position`), and problem+json for
//! unknown routes.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::extract::RequestId;
use crate::state::AppState;

/// How long a GET waits for the read models to reach `min_position` (API.md §1).
const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);

/// Wraps the routes in every layer.
pub fn wrap(routes: Router<AppState>, state: AppState, body_limit: usize) -> Router {
    routes
        .fallback(|| async { ApiError::not_found("No such route.") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "This route does not accept that method.",
            )
        })
        // Only on matched routes: an unknown path is 404 without waiting.
        .route_layer(from_fn_with_state(state.clone(), min_position))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
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

/// `min_position=<n>` or `x-roster-min-position: <n>` on a GET waits until the read models
/// have applied position n, at most five seconds, then 503 `projection_lagging`.
async fn min_position(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET {
        return next.run(req).await;
    }
    let from_query = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "min_position")
            .map(|(_, v)| v.into_owned())
    });
    let from_header = req
        .headers()
        .get("x-roster-min-position")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(raw) = from_query.or(from_header) else {
        return next.run(req).await;
    };
    // A caller without valid credentials gets its 401 at once, not after waiting (up to 5 s)
    // for a position: only the operational routes (health, metrics, docs) answer without a key.
    let (parts, body) = req.into_parts();
    let public = crate::routes::PUBLIC_PATHS.contains(&parts.uri.path());
    if !public && !matches!(Caller::authenticate(&parts, &state).await, Ok(Some(_))) {
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
