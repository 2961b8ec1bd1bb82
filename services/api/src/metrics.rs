//! `GET /metrics` (docs/contract.md §7): Prometheus text format. Each server keeps its own registry
//! (in [`crate::AppState`]), so several servers in one process — the tests — do not mix counts.
//!
//! - `roster_http_requests_total` and `roster_http_request_duration_seconds`, labelled by
//!   method, route template (`/v1/users/{id}`, never the raw path) and status class (`2xx`).
//! - `roster_log_appends_total` (by outcome), `roster_log_appended_events_total`, and the
//!   histograms `roster_log_append_events` (events per append: the batch size) and
//!   `roster_log_append_duration_seconds` — every append of the server, counted by wrapping
//!   the [`EventLog`] ([`MeteredLog`]).
//! - Read at scrape time: `roster_log_head_position`, `roster_projection_position`,
//!   `roster_projection_lag_events` (head − checkpoint), `roster_tasks` (by status and kind),
//!   `roster_webhook_lag_events` (head − a webhook's recorded position, by organization,
//!   webhook and status), and the aggregate cache's `roster_aggregate_cache_lookups_total` (by `result`: `hit` or
//!   `miss`), `roster_aggregate_cache_bytes` and `roster_aggregate_cache_budget_bytes`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use roster_domain::task::{TaskKind, TaskStatus};
use roster_eventlog::{
    AppendError, Committed, EventLog, LogError, Position, RecordedEvent, ReservationInfo, StreamId,
    Submitted, Transaction, Version,
};

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label of requests that matched no route (their raw paths would be unbounded).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// One server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    appends: IntCounterVec,
    appended_events: IntCounter,
    append_events: Histogram,
    append_latency: Histogram,
    log_head: IntGauge,
    projection_position: IntGauge,
    projection_lag: IntGauge,
    tasks: IntGaugeVec,
    webhook_lag: IntGaugeVec,
    cache_lookups: IntCounterVec,
    cache_bytes: IntGauge,
    cache_budget: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("roster_http_requests_total", "HTTP requests answered."),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "roster_http_request_duration_seconds",
                "Time from receiving a request to its response head.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let appends = IntCounterVec::new(
            Opts::new(
                "roster_log_appends_total",
                "Event-log appends (transactions), by outcome: committed, conflict (an \
                 expected version or a reservation refused it), error.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let appended_events = IntCounter::new(
            "roster_log_appended_events_total",
            "Events written by committed appends.",
        )
        .expect("valid metric");
        let append_events = Histogram::with_opts(
            HistogramOpts::new(
                "roster_log_append_events",
                "Events per committed append (the batch size).",
            )
            .buckets(vec![
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
            ]),
        )
        .expect("valid metric");
        let append_latency = Histogram::with_opts(
            HistogramOpts::new(
                "roster_log_append_duration_seconds",
                "Time an append takes until it is durable (or refused).",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ]),
        )
        .expect("valid metric");
        let log_head = IntGauge::new(
            "roster_log_head_position",
            "Position of the last durable event.",
        )
        .expect("valid metric");
        let projection_position = IntGauge::new(
            "roster_projection_position",
            "Position the read models have applied (their checkpoint).",
        )
        .expect("valid metric");
        let projection_lag = IntGauge::new(
            "roster_projection_lag_events",
            "Events written but not yet applied by the read models (head - checkpoint).",
        )
        .expect("valid metric");
        let tasks = IntGaugeVec::new(
            Opts::new("roster_tasks", "Bulk tasks known to the read models."),
            &["status", "kind"],
        )
        .expect("valid metric");
        let webhook_lag = IntGaugeVec::new(
            Opts::new(
                "roster_webhook_lag_events",
                "Log positions between the head and a webhook's recorded delivery position.",
            ),
            &["organization", "webhook", "status"],
        )
        .expect("valid metric");
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "roster_aggregate_cache_lookups_total",
                "Aggregate states looked up in the cache, by result (hit or miss).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let cache_bytes = IntGauge::new(
            "roster_aggregate_cache_bytes",
            "Estimated bytes of aggregate states held by the cache.",
        )
        .expect("valid metric");
        let cache_budget = IntGauge::new(
            "roster_aggregate_cache_budget_bytes",
            "The aggregate cache's byte budget.",
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(appends.clone()),
            Box::new(appended_events.clone()),
            Box::new(append_events.clone()),
            Box::new(append_latency.clone()),
            Box::new(log_head.clone()),
            Box::new(projection_position.clone()),
            Box::new(projection_lag.clone()),
            Box::new(tasks.clone()),
            Box::new(webhook_lag.clone()),
            Box::new(cache_lookups.clone()),
            Box::new(cache_bytes.clone()),
            Box::new(cache_budget.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        // Show every outcome from the start, so a rate over them is defined.
        for outcome in ["committed", "conflict", "error"] {
            appends.with_label_values(&[outcome]);
        }
        Self {
            registry,
            requests,
            latency,
            appends,
            appended_events,
            append_events,
            append_latency,
            log_head,
            projection_position,
            projection_lag,
            tasks,
            webhook_lag,
            cache_lookups,
            cache_bytes,
            cache_budget,
        }
    }

    /// Records one answered request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let class = status_class(status);
        let labels = [method, route, class];
        self.requests.with_label_values(&labels).inc();
        self.latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Records one append of `events` events.
    pub fn observe_append(
        &self,
        events: usize,
        result: Result<&Committed, &AppendError>,
        elapsed: Duration,
    ) {
        let outcome = match result {
            Ok(_) => {
                self.appended_events.inc_by(events as u64);
                self.append_events.observe(events as f64);
                "committed"
            }
            Err(AppendError::Log(_)) => "error",
            Err(_) => "conflict",
        };
        self.appends.with_label_values(&[outcome]).inc();
        self.append_latency.observe(elapsed.as_secs_f64());
    }

    /// Sets the gauges read at scrape time and renders everything in the text format.
    pub fn render(&self, scrape: &Scrape) -> String {
        self.log_head.set(gauge(scrape.head));
        self.projection_position.set(gauge(scrape.checkpoint));
        self.projection_lag
            .set(gauge(scrape.head.saturating_sub(scrape.checkpoint)));
        self.tasks.reset();
        for status in TASK_STATUSES {
            for kind in TASK_KINDS {
                let count = scrape
                    .tasks
                    .iter()
                    .find(|(s, k, _)| s == status && k == kind)
                    .map_or(0, |(_, _, n)| *n);
                self.tasks
                    .with_label_values(&[wire_name(status).as_str(), wire_name(kind).as_str()])
                    .set(gauge(count));
            }
        }
        self.webhook_lag.reset();
        for hook in &scrape.webhooks {
            self.webhook_lag
                .with_label_values(&[
                    hook.organization_id.as_str(),
                    hook.id.as_str(),
                    hook.status_name(),
                ])
                .set(gauge(scrape.head.saturating_sub(hook.position)));
        }
        for (result, total) in [("hit", scrape.cache.hits), ("miss", scrape.cache.misses)] {
            let counter = self.cache_lookups.with_label_values(&[result]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.cache_bytes.set(gauge(scrape.cache.bytes));
        self.cache_budget.set(gauge(scrape.cache.budget));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What `/metrics` reads from the server at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// The log's head.
    pub head: Position,
    /// The read models' checkpoint.
    pub checkpoint: Position,
    /// Tasks per status and kind.
    pub tasks: Vec<(TaskStatus, TaskKind, u64)>,
    /// The aggregate cache's counts since start.
    pub cache: CacheStats,
    /// Every webhook, as the read models show it.
    pub webhooks: Vec<roster_domain::webhook::Webhook>,
}

/// The aggregate cache's lookups since start, and its size.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    /// Lookups that found a state.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Bytes held (estimated).
    pub bytes: u64,
    /// The byte budget.
    pub budget: u64,
}

const TASK_STATUSES: &[TaskStatus] = &[
    TaskStatus::Pending,
    TaskStatus::Running,
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Canceled,
];

const TASK_KINDS: &[TaskKind] = &[
    TaskKind::DeactivateUsers,
    TaskKind::ReactivateUsers,
    TaskKind::DeleteUsers,
    TaskKind::ExportUsers,
    TaskKind::RebuildProjection,
];

/// The wire name of an enum value (`running`, `export_users`).
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_owned(),
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `2xx`, `4xx`, …
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// The event log, with every append counted in [`Metrics`]. Reads pass straight through.
pub struct MeteredLog {
    inner: Arc<dyn EventLog>,
    metrics: Arc<Metrics>,
}

impl MeteredLog {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EventLog>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl EventLog for MeteredLog {
    async fn append(&self, tx: Transaction) -> Result<Committed, AppendError> {
        self.submit(tx).await?.outcome.await
    }

    async fn submit(&self, tx: Transaction) -> Result<Submitted, AppendError> {
        let events = tx.appends.iter().map(|a| a.events.len()).sum();
        let started = Instant::now();
        let submitted = self.inner.submit(tx).await.inspect_err(|e| {
            self.metrics
                .observe_append(events, Err(e), started.elapsed())
        })?;
        let metrics = self.metrics.clone();
        let outcome = submitted.outcome;
        Ok(Submitted {
            time: submitted.time,
            outcome: Box::pin(async move {
                let result = outcome.await;
                metrics.observe_append(events, result.as_ref(), started.elapsed());
                result
            }),
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.read_all(after, limit).await
    }

    fn subscribe(&self, after: Position) -> BoxStream<'static, Result<RecordedEvent, LogError>> {
        self.inner.subscribe(after)
    }

    fn head(&self) -> Position {
        self.inner.head()
    }

    async fn sync(&self) -> Result<bool, LogError> {
        self.inner.sync().await
    }

    fn writable(&self) -> Result<(), String> {
        self.inner.writable()
    }

    fn watch_head(&self) -> tokio::sync::watch::Receiver<Position> {
        self.inner.watch_head()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>, LogError> {
        self.inner.stream_version(stream).await
    }

    async fn reservation(&self, key: &str) -> Result<Option<ReservationInfo>, LogError> {
        self.inner.reservation(key).await
    }

    async fn close(&self) -> Result<(), LogError> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_by_route_template_and_status_class() {
        let metrics = Metrics::new();
        metrics.observe_request("GET", "/v1/users/{id}", 200, Duration::from_millis(3));
        metrics.observe_request("GET", "/v1/users/{id}", 404, Duration::from_millis(1));
        let text = metrics.render(&Scrape {
            head: 10,
            checkpoint: 7,
            tasks: vec![(TaskStatus::Running, TaskKind::ExportUsers, 2)],
            cache: CacheStats {
                hits: 9,
                misses: 3,
                bytes: 4096,
                budget: 65536,
            },
            webhooks: vec![],
        });
        assert!(text.contains(
            r#"roster_http_requests_total{method="GET",route="/v1/users/{id}",status="2xx"} 1"#
        ));
        assert!(text.contains(
            r#"roster_http_requests_total{method="GET",route="/v1/users/{id}",status="4xx"} 1"#
        ));
        assert!(text.contains("roster_projection_lag_events 3"), "{text}");
        assert!(text.contains(r#"roster_tasks{kind="export_users",status="running"} 2"#));
        assert!(text.contains(r#"roster_tasks{kind="delete_users",status="pending"} 0"#));
        assert!(text.contains(r#"roster_log_appends_total{outcome="committed"} 0"#));
        assert!(text.contains(r#"roster_aggregate_cache_lookups_total{result="hit"} 9"#));
        assert!(text.contains(r#"roster_aggregate_cache_lookups_total{result="miss"} 3"#));
        assert!(
            text.contains("roster_aggregate_cache_budget_bytes 65536"),
            "{text}"
        );
    }
}
