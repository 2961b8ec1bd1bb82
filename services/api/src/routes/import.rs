//! `POST /v1/users/import` (docs/import.md): an NDJSON body of any length, streamed to the
//! task's file with flat memory, or `{"users": […]}` of at most 1 000; then an `import_users`
//! task (202) that imports the lines chunk by chunk ([`roster_worker::import`]).

use aide::OperationInput;
use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use aide::generate::GenContext;
use aide::openapi::{MediaType, Operation, ReferenceOr, RequestBody, SchemaObject};
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::response::Response;
use indexmap::IndexMap;
use roster_domain::task::{OnConflict, TaskCreated, TaskKind};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, QueryParams, body_bytes, parse_json, query_params};
use crate::routes::common::OperationDoc;
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// Most users in a JSON (not NDJSON) import body.
pub const MAX_JSON_USERS: usize = 1000;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        "/v1/users/import",
        post_with(import, |op| {
            op.doc("importUsers", "tasks", "Import users")
                .describe(
                    "Users from another system, with their password hashes: an NDJSON body \
                     (`application/x-ndjson`, one user a line, lines ≤ 1 MiB, any number of \
                     lines, streamed) or `{\"users\": […]}` (≤ 1 000). Answers 202 with an \
                     `import_users` task; each line that cannot be imported is a failure of the \
                     task (`line`, `user_id`, `code`, `detail`), the others are imported. The \
                     line format and the hash algorithms are in docs/import.md.",
                )
                .query::<ImportQuery>()
                .written::<roster_core::tasks::TaskAccepted>(
                    202,
                    "The task is recorded and will run.",
                )
        }),
    )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<ImportUsers>();
}

query_params! {
    /// Query of `POST /v1/users/import`.
    pub(crate) struct ImportQuery {
        /// What a line whose `id` exists does: `fail` (default; the line fails, `id_taken`),
        /// `skip` (the existing user stays) or `replace` (replaced whole by the line).
        on_conflict: Option<OnConflict>,
    }
}

/// `POST /v1/users/import` as JSON.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportUsers {
    /// 1 to 1 000 import lines (user objects; see docs/import.md). Not atomic: each succeeds
    /// or fails alone.
    #[schemars(length(min = 1, max = 1000))]
    users: Vec<serde_json::Map<String, Value>>,
}

/// The body of an import, not yet read: NDJSON or JSON, by its `Content-Type`.
pub(crate) struct ImportBody {
    request: Request,
    ndjson: bool,
}

impl<S: Send + Sync> FromRequest<S> for ImportBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let kind = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        let ndjson = match kind.as_deref() {
            Some("application/x-ndjson") => true,
            Some("application/json") => false,
            _ => {
                return Err(ApiError::new(
                    Code::UnsupportedMediaType,
                    "Send application/x-ndjson (one user a line) or application/json \
                     ({\"users\": […]}).",
                ));
            }
        };
        Ok(ImportBody { request, ndjson })
    }
}

impl OperationInput for ImportBody {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let json_schema = ctx.schema.subschema_for::<ImportUsers>();
        let object = |schema: schemars::Schema| SchemaObject {
            json_schema: schema,
            external_docs: None,
            example: None,
        };
        operation.request_body = Some(ReferenceOr::Item(RequestBody {
            description: Some(
                "NDJSON of any length (one import line a line), or JSON of at most 1 000.".into(),
            ),
            content: IndexMap::from_iter([
                (
                    "application/x-ndjson".to_owned(),
                    MediaType {
                        schema: Some(object(schemars::json_schema!({"type": "string"}))),
                        ..MediaType::default()
                    },
                ),
                (
                    "application/json".to_owned(),
                    MediaType {
                        schema: Some(object(json_schema)),
                        ..MediaType::default()
                    },
                ),
            ]),
            required: true,
            extensions: IndexMap::new(),
        }));
        for status in [400, 408, 413, 415, 422] {
            super::openapi::add_problem(operation, status);
        }
    }
}

async fn import(
    State(app): State<AppState>,
    ctx: Ctx,
    query: QueryParams,
    body: ImportBody,
) -> ApiResult<Response> {
    query.only(ImportQuery::NAMES)?;
    let on_conflict = match query.get("on_conflict") {
        None => OnConflict::Fail,
        Some("fail") => OnConflict::Fail,
        Some("skip") => OnConflict::Skip,
        Some("replace") => OnConflict::Replace,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "on_conflict",
                "must be fail, skip or replace",
            ));
        }
    };
    let org = ctx.org.to_string();
    let task_id = ulid::Ulid::new().to_string();
    let stored = if body.ndjson {
        let stream = body.request.into_body().into_data_stream();
        roster_worker::import::store_lines(app.core(), app.exports(), &org, &task_id, stream).await
    } else {
        let bytes = body_bytes(body.request, &()).await?;
        let users: ImportUsers = parse_json(&bytes)?;
        if users.users.is_empty() || users.users.len() > MAX_JSON_USERS {
            return Err(ApiError::invalid_field(
                "users",
                format!("must hold 1 to {MAX_JSON_USERS} users (NDJSON takes any number)"),
            ));
        }
        let mut lines = Vec::with_capacity(bytes.len());
        for user in &users.users {
            serde_json::to_writer(&mut lines, user).map_err(ApiError::internal)?;
            lines.push(b'\n');
        }
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(lines))]);
        roster_worker::import::store_lines(app.core(), app.exports(), &org, &task_id, stream)
            .await
            .map(|mut s| {
                use sha2::Digest;
                s.digest = sha2::Sha256::digest(&bytes).into();
                s
            })
    };
    let stored = stored.map_err(|e| match e {
        roster_worker::import::StoreLinesError::LineTooLong(line) => ApiError::new(
            Code::PayloadTooLarge,
            format!("Line {line} is longer than 1 MiB; nothing was imported."),
        ),
        roster_worker::import::StoreLinesError::Body(m) => ApiError::malformed(m),
        roster_worker::import::StoreLinesError::Io(e) => {
            ApiError::internal(format!("storing the import's lines: {e}"))
        }
    })?;
    if stored.lines == 0 {
        roster_worker::import::discard_lines(app.exports(), &org, &task_id).await;
        return Err(ApiError::invalid_field("", "the body holds no line"));
    }
    let created = TaskCreated {
        kind: TaskKind::ImportUsers,
        user_ids: Vec::new(),
        mode: None,
        created_by_id: None,
        projection: None,
        server: None,
        total: stored.lines,
        on_conflict: Some(on_conflict),
        include_password_hashes: false,
    };
    let request = app.request(&ctx, Some(&stored.digest));
    let accepted =
        match roster_core::tasks::record_with_id(app.core(), &request, &task_id, created).await {
            Ok(accepted) => accepted,
            Err(e) => {
                roster_worker::import::discard_lines(app.exports(), &org, &task_id).await;
                return Err(e);
            }
        };
    if accepted.task_id != task_id {
        // A repeated request (same Idempotency-Key): the first one's task is the answer.
        roster_worker::import::discard_lines(app.exports(), &org, &task_id).await;
    }
    Ok(super::common::accepted(accepted))
}
