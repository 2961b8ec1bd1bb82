//! The `webhooks` job (issue 16): a receiver in this process that acknowledges every delivery
//! at once and counts the events it got; the job (in `main.rs`) measures W1 creates without
//! and with an active webhook to it, then a drain — the webhook paused while users are
//! loaded, resumed, timed until the receiver has the last of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::client::{Target, call_json};

/// Counts what was delivered.
#[derive(Clone, Default)]
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    events: Arc<AtomicU64>,
    last_marker: Arc<AtomicU64>,
}

#[derive(Deserialize)]
struct Delivery {
    events: Vec<Position>,
}

#[derive(Deserialize)]
struct Position {
    stream: String,
}

/// Marker users are `whmark-<n>`: the receiver remembers the highest `n` it got.
const MARKER: &str = "user-whmark-";

impl Receiver {
    /// Listens on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let receiver = Receiver {
            url: format!("http://{}/hook", listener.local_addr()?),
            ..Default::default()
        };
        let counts = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: bytes::Bytes| {
                let counts = counts.clone();
                async move {
                    if let Ok(d) = serde_json::from_slice::<Delivery>(&body) {
                        counts
                            .events
                            .fetch_add(d.events.len() as u64, Ordering::Relaxed);
                        for e in &d.events {
                            if let Some(n) = e.stream.strip_prefix(MARKER)
                                && let Ok(n) = n.parse()
                            {
                                counts.last_marker.fetch_max(n, Ordering::Relaxed);
                            }
                        }
                    }
                    StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(receiver)
    }

    /// Events received so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Waits until marker `n` (or a later one) has arrived; the seconds it took.
    pub async fn wait_for(&self, n: u64, timeout: Duration) -> anyhow::Result<f64> {
        let started = Instant::now();
        while self.last_marker.load(Ordering::Relaxed) < n {
            if started.elapsed() > timeout {
                bail!("marker {n} not delivered after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(started.elapsed().as_secs_f64())
    }
}

/// Creates a webhook of every event type to `url`; its id.
pub async fn subscribe(target: &Arc<Target>, url: &str) -> anyhow::Result<String> {
    let hook = call_json(
        target,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"url": url})),
        StatusCode::CREATED,
    )
    .await?;
    Ok(hook["id"].as_str().context("no webhook id")?.to_owned())
}

/// Pauses or resumes it.
pub async fn set_status(target: &Arc<Target>, id: &str, status: &str) -> anyhow::Result<()> {
    call_json(
        target,
        Method::PATCH,
        &format!("/v1/webhooks/{id}"),
        Some(json!({"status": status})),
        StatusCode::OK,
    )
    .await?;
    Ok(())
}

/// Creates marker user `n`, for [`Receiver::wait_for`].
pub async fn marker(target: &Arc<Target>, n: u64) -> anyhow::Result<()> {
    call_json(
        target,
        Method::POST,
        "/v1/users",
        Some(json!({"id": format!("whmark-{n}")})),
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}
