//! One delivery attempt: a signed `POST` over the webhook's kept-alive connection, opened to a
//! checked address; no redirect followed, no proxy, 10 s for the whole attempt, the receiver's
//! body never shown (read, up to 64 KiB, only to keep the connection).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use sha2::Sha256;

use super::address::{self, Target};

/// The longest one attempt may take, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." ‖ body)>` (Stripe's scheme).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What an attempt sends.
pub struct Attempt<'a> {
    /// Where.
    pub target: &'a Target,
    /// `x-roster-webhook-id`.
    pub webhook_id: &'a str,
    /// `x-roster-delivery-id` (the same on every retry of one delivery).
    pub delivery_id: &'a str,
    /// The signing secret.
    pub secret: &'a str,
    /// `{"events": […]}`.
    pub body: Bytes,
}

/// Sends deliveries.
#[derive(Clone)]
pub struct Sender {
    allow_private: bool,
    tls: tokio_rustls::TlsConnector,
}

impl Sender {
    /// A sender; `allow_private` lifts the address rule (tests, private networks).
    pub fn new(allow_private: bool) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            allow_private,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// Whether private addresses are allowed.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// One attempt: `Ok` on a 2xx answer, else the status or the network error. `conn` is
    /// the webhook's kept-alive connection: used if still open, else replaced by a new one;
    /// dropped after any failure. A request that fails on a kept-alive connection before any
    /// answer (the receiver closed it meanwhile) is sent once more on a new one.
    pub async fn send(
        &self,
        conn: &mut Option<Connection>,
        attempt: Attempt<'_>,
    ) -> Result<(), String> {
        let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let reused = conn.as_ref().is_some_and(|c| !c.send.is_closed());
            match self.exchange(conn, &attempt).await {
                Err(Failure::Unanswered(_)) if reused => {
                    *conn = None;
                    self.exchange(conn, &attempt).await
                }
                other => other,
            }
        })
        .await;
        let result = match outcome {
            Ok(Ok(status)) if (200..300).contains(&status) => return Ok(()),
            Ok(Ok(status)) => format!("HTTP {status}"),
            Ok(Err(Failure::Unanswered(e) | Failure::Other(e))) => e,
            Err(_) => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
        };
        *conn = None;
        Err(result)
    }

    async fn exchange(
        &self,
        conn: &mut Option<Connection>,
        attempt: &Attempt<'_>,
    ) -> Result<u16, Failure> {
        let target = attempt.target;
        if conn.as_ref().is_none_or(|c| c.send.is_closed()) {
            *conn = Some(self.connect(target).await.map_err(Failure::Other)?);
        }
        let c = conn.as_mut().expect("connected above");
        let t = chrono::Utc::now().timestamp();
        let request = http::Request::post(&target.path)
            .header(http::header::HOST, &target.authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, attempt.body.len())
            .header(http::header::USER_AGENT, "roster-webhooks/1")
            .header("x-roster-webhook-id", attempt.webhook_id)
            .header("x-roster-delivery-id", attempt.delivery_id)
            .header(
                "x-roster-signature",
                signature(attempt.secret, t, &attempt.body),
            )
            .body(Full::new(attempt.body.clone()))
            .map_err(|e| Failure::Other(format!("building the request: {e}")))?;
        c.send
            .ready()
            .await
            .map_err(|e| Failure::Unanswered(format!("HTTP: {e}")))?;
        let answer = c
            .send
            .send_request(request)
            .await
            .map_err(|e| Failure::Unanswered(format!("HTTP: {e}")))?;
        let status = answer.status().as_u16();
        // The body is read only to keep the connection; never shown, never kept, at most
        // MAX_ANSWER bytes (a longer answer closes the connection).
        let body = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER);
        if http_body_util::BodyExt::collect(body).await.is_err() {
            *conn = None;
        }
        Ok(status)
    }

    /// A new connection to the checked address (TLS for `https`).
    async fn connect(&self, target: &Target) -> Result<Connection, String> {
        let tcp = address::connect(target, self.allow_private, ATTEMPT_TIMEOUT).await?;
        if target.tls {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("TLS name {}: {e}", target.host))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Connection::over(TokioIo::new(tls)).await
        } else {
            Connection::over(TokioIo::new(tcp)).await
        }
    }
}

/// The most of a receiver's answer body read (and thrown away) to keep its connection.
const MAX_ANSWER: usize = 64 * 1024;

/// Why an exchange failed.
enum Failure {
    /// Before any answer: the request may not have reached the receiver.
    Unanswered(String),
    /// Anything else.
    Other(String),
}

/// A webhook's HTTP/1.1 connection, kept alive between deliveries.
pub struct Connection {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Connection {
    async fn over<IO>(io: IO) -> Result<Self, String>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (send, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { send, task })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_stripes_scheme() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed with Python's hmac module.
        assert_eq!(
            signature("secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
