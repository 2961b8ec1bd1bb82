//! One delivery attempt: a signed `POST` over a fresh connection to the checked address, no
//! redirect followed, no proxy, 10 s for the whole attempt, the receiver's body never read.

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

    /// One attempt: `Ok` on a 2xx answer, else the status or the network error.
    pub async fn send(&self, attempt: Attempt<'_>) -> Result<(), String> {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.exchange(attempt)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("HTTP {status}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
        }
    }

    async fn exchange(&self, attempt: Attempt<'_>) -> Result<u16, String> {
        let target = attempt.target;
        let tcp = address::connect(target, self.allow_private, ATTEMPT_TIMEOUT).await?;
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
            .body(Full::new(attempt.body))
            .map_err(|e| format!("building the request: {e}"))?;
        if target.tls {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("TLS name {}: {e}", target.host))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            post(TokioIo::new(tls), request).await
        } else {
            post(TokioIo::new(tcp), request).await
        }
    }
}

async fn post<IO>(io: IO, request: http::Request<Full<Bytes>>) -> Result<u16, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let connection = tokio::spawn(connection);
    let answer = send.send_request(request).await;
    // The body is never read: the connection goes with the answer.
    connection.abort();
    answer
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("HTTP: {e}"))
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
