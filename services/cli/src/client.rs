//! How the operator commands reach a running server.

use anyhow::{Context, bail};
use serde_json::Value;

/// Where the server is and how to authenticate.
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "ROSTER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// A server API key (default: the one `roster serve` created in the data directory).
    #[arg(long, global = true, env = "ROSTER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The data directory holding `api_key`, when no key is given.
    #[arg(long, global = true, env = "ROSTER_STORE", default_value = "./data")]
    pub store: String,
    /// Organization.
    #[arg(long, global = true, env = "ROSTER_ORG", default_value = "default")]
    pub org: String,
}

/// A small JSON client for the server.
pub struct Client {
    http: reqwest::Client,
    args: ServerArgs,
    key: String,
}

impl Client {
    /// A client from the arguments (reads the stored API key if none was given).
    pub fn new(args: ServerArgs) -> anyhow::Result<Self> {
        let key = match &args.api_key {
            Some(k) => k.clone(),
            None => std::fs::read_to_string(std::path::Path::new(&args.store).join("api_key"))
                .with_context(|| {
                    format!("no --api-key given and no {}/api_key to read", args.store)
                })?
                .trim()
                .to_owned(),
        };
        Ok(Self {
            http: reqwest::Client::new(),
            args,
            key,
        })
    }

    /// GET a path as a byte stream (`accept` is the media type asked for), with extra headers.
    pub async fn get_stream(
        &self,
        path: &str,
        accept: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{}", self.args.url.trim_end_matches('/'), path);
        let mut request = self
            .http
            .get(&url)
            .header("x-api-key", &self.key)
            .header("x-organization-id", &self.args.org)
            .header("accept", accept);
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            bail!(
                "{status}: {}",
                body.get("detail")
                    .and_then(Value::as_str)
                    .unwrap_or("no detail")
            );
        }
        Ok(response)
    }

    /// POST JSON; fails with the server's problem detail on an error status.
    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.post_body(
            path,
            "application/json",
            reqwest::Body::from(body.to_string()),
        )
        .await
    }

    /// POST a body of `content_type` (a stream, for files); the JSON answer, or the server's
    /// problem detail on an error status.
    pub async fn post_body(
        &self,
        path: &str,
        content_type: &str,
        body: reqwest::Body,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.args.url.trim_end_matches('/'), path);
        let response = self
            .http
            .post(&url)
            .header("x-api-key", &self.key)
            .header("x-organization-id", &self.args.org)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body
                .get("detail")
                .and_then(Value::as_str)
                .unwrap_or("no detail");
            bail!("{status}: {detail}");
        }
        Ok(body)
    }

    /// GET a path; fails with the server's problem detail on an error status.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.args.url.trim_end_matches('/'), path);
        let response = self
            .http
            .get(&url)
            .header("x-api-key", &self.key)
            .header("x-organization-id", &self.args.org)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body
                .get("detail")
                .and_then(Value::as_str)
                .unwrap_or("no detail");
            bail!("{status}: {detail}");
        }
        Ok(body)
    }
}
