//! `bench-baseline`: the baseline. A minimal axum + PostgreSQL CRUD service on the same paths
//! as Roster: one table `users (id text primary key, doc jsonb, version int)`, create =
//! INSERT, partial update = `UPDATE … SET doc = doc || patch`, get = SELECT, list = keyset
//! pagination by id, upsert = one multi-row INSERT … ON CONFLICT. Every write commits with
//! `synchronous_commit = on` (durable when answered, as Roster's writes are). No uniqueness
//! of usernames or emails, no encryption, no history: a plain CRUD service.
//!
//! It creates a fresh database `roster_bench_<pid>` on start (dropping those left by runs
//! that no longer exist) and drops it on SIGTERM.
//!
//! `bench-baseline --listen 127.0.0.1:PORT --pg "host=127.0.0.1 port=5432 user=postgres"`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// PostgreSQL connection settings (libpq style), without `dbname`.
    #[arg(long, default_value = "host=127.0.0.1 port=5432 user=postgres")]
    pg: String,
    /// Connections in the pool (each is one PostgreSQL backend).
    #[arg(long, default_value_t = 32)]
    pool: usize,
}

struct Conn {
    client: Client,
    insert: Statement,
    upsert: Statement,
    patch: Statement,
    get: Statement,
    list: Statement,
}

struct Db {
    conns: Vec<Conn>,
    next: AtomicUsize,
    info: Value,
}

impl Db {
    /// Round-robin over the pool; tokio-postgres pipelines queries on a shared connection.
    fn conn(&self) -> &Conn {
        &self.conns[self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len()]
    }
}

type Shared = Arc<Db>;

fn ok(status: StatusCode, value: &Value) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

fn with_version(mut doc: Value, version: i32) -> Value {
    if let Value::Object(m) = &mut doc {
        m.insert("version".into(), json!(version));
    }
    doc
}

async fn create(State(db): State<Shared>, axum::Json(doc): axum::Json<Value>) -> Response {
    let Some(id) = doc.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "id is required").into_response();
    };
    let c = db.conn();
    match c.client.query_opt(&c.insert, &[&id, &doc]).await {
        Ok(Some(_)) => ok(StatusCode::CREATED, &with_version(doc, 1)),
        Ok(None) => (StatusCode::CONFLICT, "id taken").into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
struct Batch {
    users: Vec<Value>,
}

async fn upsert(State(db): State<Shared>, axum::Json(batch): axum::Json<Batch>) -> Response {
    if batch.users.iter().any(|u| !u["id"].is_string()) {
        return (StatusCode::UNPROCESSABLE_ENTITY, "every user needs an id").into_response();
    }
    let ids: Vec<Value> = batch.users.iter().map(|u| u["id"].clone()).collect();
    let docs = Value::Array(batch.users);
    let c = db.conn();
    match c.client.execute(&c.upsert, &[&docs]).await {
        Ok(n) => {
            let users: Map<String, Value> = ids
                .into_iter()
                .filter_map(|id| Some((id.as_str()?.to_owned(), json!({"id": id}))))
                .collect();
            ok(StatusCode::OK, &json!({"users": users, "count": n}))
        }
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
struct Patch {
    #[serde(default)]
    set: Map<String, Value>,
    #[serde(default)]
    unset: Vec<String>,
}

async fn patch(
    State(db): State<Shared>,
    Path(id): Path<String>,
    axum::Json(p): axum::Json<Patch>,
) -> Response {
    let set = Value::Object(p.set);
    let c = db.conn();
    match c.client.query_opt(&c.patch, &[&id, &set, &p.unset]).await {
        Ok(Some(row)) => ok(StatusCode::OK, &with_version(row.get(0), row.get(1))),
        Ok(None) => (StatusCode::NOT_FOUND, "no such user").into_response(),
        Err(e) => fail(e),
    }
}

async fn get_one(State(db): State<Shared>, Path(id): Path<String>) -> Response {
    let c = db.conn();
    match c.client.query_opt(&c.get, &[&id]).await {
        Ok(Some(row)) => ok(StatusCode::OK, &with_version(row.get(0), row.get(1))),
        Ok(None) => (StatusCode::NOT_FOUND, "no such user").into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(State(db): State<Shared>, Query(q): Query<ListParams>) -> Response {
    let limit = q.limit.unwrap_or(25).clamp(1, 100);
    let after = q.cursor.unwrap_or_default();
    let c = db.conn();
    match c.client.query(&c.list, &[&after, &limit]).await {
        Ok(rows) => {
            let next = (rows.len() as i64 == limit)
                .then(|| rows.last().map(|r| r.get::<_, String>(2)))
                .flatten();
            let users: Vec<Value> = rows
                .into_iter()
                .map(|r| with_version(r.get(0), r.get(1)))
                .collect();
            ok(
                StatusCode::OK,
                &json!({"users": users, "next_cursor": next}),
            )
        }
        Err(e) => fail(e),
    }
}

async fn info(State(db): State<Shared>) -> Response {
    ok(StatusCode::OK, &db.info)
}

async fn connect(settings: &str, dbname: &str) -> anyhow::Result<Client> {
    let (client, connection) =
        tokio_postgres::connect(&format!("{settings} dbname={dbname}"), NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL ({settings} dbname={dbname})"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection: {e}");
        }
    });
    Ok(client)
}

/// Drops the databases of earlier runs whose process is gone (a run killed before its cleanup).
async fn drop_stale(admin: &Client) -> anyhow::Result<()> {
    let rows = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'roster_bench_%'",
            &[],
        )
        .await?;
    for row in rows {
        let name: String = row.get(0);
        let alive = name
            .strip_prefix("roster_bench_")
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await?;
        }
    }
    Ok(())
}

async fn open_pool(args: &Args, dbname: &str) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(args.pool);
    for i in 0..args.pool.max(1) {
        let client = connect(&args.pg, dbname).await?;
        client.batch_execute("SET synchronous_commit = on").await?;
        if i == 0 {
            client
                .batch_execute(
                    "CREATE TABLE users (id text PRIMARY KEY, doc jsonb NOT NULL, version int NOT NULL)",
                )
                .await?;
        }
        let conn = Conn {
            insert: client
                .prepare_typed(
                    "INSERT INTO users (id, doc, version) VALUES ($1, $2, 1) \
                     ON CONFLICT (id) DO NOTHING RETURNING version",
                    &[Type::TEXT, Type::JSONB],
                )
                .await?,
            upsert: client
                .prepare_typed(
                    "INSERT INTO users (id, doc, version) \
                     SELECT e->>'id', e, 1 FROM jsonb_array_elements($1) AS e \
                     ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc, version = users.version + 1",
                    &[Type::JSONB],
                )
                .await?,
            patch: client
                .prepare_typed(
                    "UPDATE users SET doc = (doc || $2) - $3::text[], version = version + 1 \
                     WHERE id = $1 RETURNING doc, version",
                    &[Type::TEXT, Type::JSONB, Type::TEXT_ARRAY],
                )
                .await?,
            get: client
                .prepare_typed(
                    "SELECT doc, version FROM users WHERE id = $1",
                    &[Type::TEXT],
                )
                .await?,
            list: client
                .prepare_typed(
                    "SELECT doc, version, id FROM users WHERE id > $1 ORDER BY id LIMIT $2",
                    &[Type::TEXT, Type::INT8],
                )
                .await?,
            client,
        };
        conns.push(conn);
    }
    Ok(conns)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let admin = connect(&args.pg, "postgres").await?;
    drop_stale(&admin).await?;
    let dbname = format!("roster_bench_{}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE {dbname}"))
        .await
        .context("creating the bench database")?;
    let served = serve(&args, &dbname).await;
    // Whatever happened, the database goes.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
        .await
        .context("dropping the bench database")?;
    served
}

async fn serve(args: &Args, dbname: &str) -> anyhow::Result<()> {
    let conns = open_pool(args, dbname).await?;
    let version: String = conns[0]
        .client
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);
    let sync: String = conns[0]
        .client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0);
    let fsync: String = conns[0].client.query_one("SHOW fsync", &[]).await?.get(0);
    let db = Arc::new(Db {
        info: json!({
            "server_version": version, "synchronous_commit": sync, "fsync": fsync,
            "pool": conns.len(), "database": dbname,
        }),
        conns,
        next: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/readyz", get(|| async { "ok" }))
        .route("/info", get(info))
        .route("/v1/users", post(create).get(list))
        .route("/v1/users/upsert", post(upsert))
        .route("/v1/users/{id}", get(get_one).patch(patch))
        .with_state(db);
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
