//! `bench-ceiling`: the ceiling. A minimal axum JSON service on the same paths as Roster: a
//! write parses its JSON body, merges it into an answer shaped like Roster's (a user, a
//! session, a wallet) and serializes that; a read serializes a canned user or list page. No
//! storage, no auth: what the HTTP stack, JSON and the load generator cost on this machine.
//!
//! `bench-ceiling --listen 127.0.0.1:PORT`

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use roster_bench::fixtures;
use serde_json::{Map, Value};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

struct Canned {
    user: Map<String, Value>,
    page: Value,
    session: Map<String, Value>,
    wallet: Map<String, Value>,
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn answer(
    State(canned): State<Arc<Canned>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if path == "/readyz" || path == "/healthz" {
        return json(StatusCode::OK, &serde_json::json!({"status": "ok"}));
    }
    if method == Method::GET {
        if path == "/v1/users" {
            return json(StatusCode::OK, &canned.page);
        }
        let mut user = canned.user.clone();
        if let Some(id) = path.strip_prefix("/v1/users/") {
            user.insert("id".into(), Value::String(id.to_owned()));
        }
        return json(StatusCode::OK, &user);
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not a JSON object").into_response();
    };
    let (status, mut out) = if path == "/v1/sessions" {
        (StatusCode::CREATED, canned.session.clone())
    } else if path.ends_with("/wallet") {
        (StatusCode::OK, canned.wallet.clone())
    } else if path == "/v1/users" && method == Method::POST {
        (StatusCode::CREATED, canned.user.clone())
    } else {
        (StatusCode::OK, canned.user.clone())
    };
    if let Some(id) = path
        .strip_prefix("/v1/users/")
        .filter(|_| method == Method::PATCH)
    {
        out.insert("id".into(), Value::String(id.to_owned()));
    }
    for (k, v) in fields {
        out.insert(k, v);
    }
    json(status, &out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let canned = Arc::new(Canned {
        user: object(fixtures::canned_user("u0000000")),
        page: fixtures::canned_page(),
        session: object(fixtures::canned_session()),
        wallet: object(fixtures::canned_wallet()),
    });
    let app = Router::new().fallback(answer).with_state(canned);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        })
        .await?;
    Ok(())
}
