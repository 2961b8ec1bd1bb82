//! The HTTP client: one keep-alive HTTP/1.1 connection per generator worker (hyper's
//! connection API, no pool, no locks), plus one-shot helpers for the orchestration calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A server under test.
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    host: HeaderValue,
    api_key: Option<HeaderValue>,
}

impl Target {
    /// A server at `addr`, sent `x-api-key` on every request when given.
    pub fn new(addr: SocketAddr, api_key: Option<&str>) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            api_key: api_key.map(HeaderValue::from_str).transpose()?,
        }))
    }
}

/// One open connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    target: Arc<Target>,
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Conn {
    /// Connects (TCP_NODELAY, HTTP/1.1 keep-alive).
    pub async fn open(target: Arc<Target>) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender, target })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.target.host);
        if let Some(key) = &self.target.api_key {
            builder = builder.header("x-api-key", key);
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, &JSON);
        }
        Ok(builder.body(Full::new(body.unwrap_or_default()))?)
    }

    /// POSTs an NDJSON body and reads the whole answer.
    pub async fn send_ndjson(
        &mut self,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = self.request(Method::POST, path, Some(body))?;
        request.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let request = self.request(method, path, body)?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Sends a request and hands each chunk of the answer to `on_chunk` as it arrives (for
    /// answers too large to hold, such as an export of a million users).
    pub async fn send_streamed(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        mut on_chunk: impl FnMut(&[u8]),
    ) -> anyhow::Result<StatusCode> {
        let request = self.request(method, path, body)?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                on_chunk(data);
            }
        }
        Ok(status)
    }
}

/// One request on a fresh connection.
pub async fn call(
    target: &Arc<Target>,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    Conn::open(target.clone())
        .await?
        .send(method, path, body)
        .await
}

/// One request whose answer must have status `expect` and be JSON.
pub async fn call_json(
    target: &Arc<Target>,
    method: Method,
    path: &str,
    body: Option<Value>,
    expect: StatusCode,
) -> anyhow::Result<Value> {
    let body = body.map(|b| Bytes::from(b.to_string()));
    let (status, answer) = call(target, method.clone(), path, body).await?;
    if status != expect {
        bail!(
            "{method} {path}: {status} (expected {expect}): {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    serde_json::from_slice(&answer).with_context(|| format!("{method} {path}: answer is not JSON"))
}

/// Polls `path` until it answers 200, or fails after `timeout`.
pub async fn wait_until_up(target: &Arc<Target>, path: &str, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if let Ok((StatusCode::OK, _)) = call(target, Method::GET, path, None).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// `/readyz`: (log position, projection lag).
pub async fn readyz(target: &Arc<Target>) -> anyhow::Result<(u64, u64)> {
    let v = call_json(target, Method::GET, "/readyz", None, StatusCode::OK).await?;
    Ok((
        v["log_position"].as_u64().unwrap_or(0),
        v["projection_lag"].as_u64().unwrap_or(u64::MAX),
    ))
}

/// Waits until the read models have applied the whole log; returns how long that took.
pub async fn caught_up(target: &Arc<Target>, timeout: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    loop {
        if let Ok((_, 0)) = readyz(target).await {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > timeout {
            bail!("read models still lagging after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a task until it has ended; returns it.
pub async fn wait_task(target: &Arc<Target>, id: &str, timeout: Duration) -> anyhow::Result<Value> {
    let started = Instant::now();
    let path = format!("/v1/tasks/{id}");
    loop {
        let task = call_json(target, Method::GET, &path, None, StatusCode::OK).await?;
        if matches!(
            task["status"].as_str(),
            Some("completed" | "failed" | "canceled")
        ) {
            return Ok(task);
        }
        if started.elapsed() > timeout {
            bail!("task {id} still {} after {timeout:?}", task["status"]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
