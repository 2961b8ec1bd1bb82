//! `/healthz`, `/readyz` and `/metrics` (docs/contract.md §7): no credentials.

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

use crate::routes::common::OperationDoc;
use crate::state::AppState;

/// Process up.
pub const HEALTHZ: &str = "/healthz";
/// Log and read models usable.
pub const READYZ: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            HEALTHZ,
            get_with(healthz, |op| {
                op.doc("getHealth", "operations", "Whether the process is up")
                    .json::<Health>(200, "The process is up.")
            }),
        )
        .api_route(
            READYZ,
            get_with(readyz, |op| {
                op.doc(
                    "getReadiness",
                    "operations",
                    "Whether the log and the read models are usable",
                )
                .json::<Readiness>(200, "Ready.")
                .json::<Readiness>(
                    503,
                    "The event log does not answer, or cannot write (a full disk): appends get \
                     503 until it writes again.",
                )
            }),
        )
        .api_route(
            METRICS,
            get_with(metrics, |op| {
                op.doc("getMetrics", "operations", "Prometheus metrics")
                    .describe(
                        "Request counts and latency histograms per route template, method and \
                         status class; event-log appends and events per append; the log head, \
                         the read models' position and lag; tasks by status and kind.",
                    )
                    .content(
                        200,
                        "text/plain",
                        "The Prometheus text exposition format (0.0.4).",
                        Some(schemars::json_schema!({"type": "string"})),
                    )
            }),
        )
}

/// `GET /healthz`.
#[derive(Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// `GET /readyz`.
#[derive(Serialize, JsonSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// Position of the last durable event.
    pub log_position: u64,
    /// Position the read models have applied.
    pub projection_position: u64,
    /// `log_position - projection_position`.
    pub projection_lag: u64,
    /// Whether the log and the key store can write now (false while a full disk or an I/O
    /// error stops them; they resume by themselves).
    pub log_writable: bool,
}

async fn healthz() -> Response {
    axum::Json(Health { status: "ok" }).into_response()
}

/// Ready when the log answers and can write, and the read models are following it.
async fn readyz(State(app): State<AppState>) -> Response {
    let head = app.log().head();
    let readable = app.log().read_all(head.saturating_sub(1), 1).await.is_ok();
    // Both stores a write needs: the log, and the data keys sealed events are written under.
    let writable = match app
        .log()
        .writable()
        .and_then(|()| app.codec().keys().writable())
    {
        Ok(()) => true,
        Err(reason) => {
            tracing::warn!(reason, "not ready: the store cannot write");
            false
        }
    };
    let log_ok = readable && writable;
    let applied = app.models().checkpoint();
    let body = Readiness {
        status: if log_ok { "ready" } else { "unavailable" },
        log_position: head,
        projection_position: applied,
        projection_lag: head.saturating_sub(applied),
        log_writable: writable,
    };
    let status = if log_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// The metrics in the Prometheus text format; the gauges are read now.
async fn metrics(State(app): State<AppState>) -> Response {
    let tasks = app.models().task_counts().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "counting tasks for /metrics");
        Vec::new()
    });
    let webhooks = app.models().webhooks(None).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "listing webhooks for /metrics");
        Vec::new()
    });
    let (hits, misses, bytes, budget) = app.core().repo().cache_stats();
    let scrape = crate::metrics::Scrape {
        head: app.log().head(),
        checkpoint: app.models().checkpoint(),
        tasks,
        cache: crate::metrics::CacheStats {
            hits,
            misses,
            bytes,
            budget,
        },
        webhooks,
    };
    let mut response = app.metrics().render(&scrape).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}
