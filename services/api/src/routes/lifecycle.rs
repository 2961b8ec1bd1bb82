//! Deactivation, deletion in three modes, and restore (docs/contract.md §3).

use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use roster_domain::{DeleteMode, UserId};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, Json, MaybeJson, QueryParams, query_params};
use crate::resource::write_response;
use crate::routes::common::OperationDoc;
use crate::routes::common::{Deleted, MAX_BATCH, execute, parse_user_id, single};
use crate::schemas::SchemaSet;
use crate::state::AppState;
use roster_core::users::Item;
use roster_domain::user::UserCommand;

/// How long a pruning or hard deletion waits for the erasure to finish before it answers.
const ERASURE_WAIT: Duration = Duration::from_secs(5);

/// The routes of this module (`DELETE /v1/users/{id}` is served by the users module's route).
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/users/{id}/deactivate",
            post_with(deactivate, |op| {
                op.doc("deactivateUser", "lifecycle", "Deactivate a user")
                    .describe("A deactivated user cannot sign in; its sessions end at once.")
                    .user(200, "The user as it is now.", true)
                    .if_match()
                    .errors(&[404, 409])
            }),
        )
        .api_route(
            "/v1/users/{id}/reactivate",
            post_with(reactivate, |op| {
                op.doc("reactivateUser", "lifecycle", "Reactivate a user")
                    .describe("Takes no body. Old sessions do not come back.")
                    .user(200, "The user as it is now.", true)
                    .if_match()
                    .errors(&[404, 409])
            }),
        )
        .api_route(
            "/v1/users/restore",
            post_with(restore, |op| {
                op.doc("restoreUsers", "lifecycle", "Restore deleted users")
                    .describe(
                        "Soft-deleted users come back whole, pruned ones without their personal \
                         data; hard-deleted users cannot be restored (404).",
                    )
                    .written::<crate::routes::common::UsersById>(200, "The restored users, by id.")
                    .errors(&[404])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<DeactivateUser>();
    out.add::<RestoreUsers>();
}

/// `POST /v1/users/{id}/deactivate` (the body is optional).
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeactivateUser {
    /// Who asks for it, recorded with the event.
    created_by_id: Option<String>,
}

/// An empty body (reactivation takes none).
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

query_params! {
    /// Query of `DELETE /v1/users/{id}`.
    pub(crate) struct DeleteQuery {
        /// `soft` (default), `pruning` or `hard`.
        mode: Option<DeleteMode>,
    }
}

async fn deactivate(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: MaybeJson<DeactivateUser>,
) -> ApiResult<Response> {
    let item = Item {
        user_id: parse_user_id(&id)?,
        command: UserCommand::Deactivate {
            created_by_id: body.value.created_by_id.clone(),
        },
        field_prefix: None,
    };
    let outcome = execute(&app, &ctx, Some(&body.digest), vec![item]).await?;
    single(&app, StatusCode::OK, outcome)
}

async fn reactivate(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: MaybeJson<Empty>,
) -> ApiResult<Response> {
    let item = Item {
        user_id: parse_user_id(&id)?,
        command: UserCommand::Reactivate,
        field_prefix: None,
    };
    let outcome = execute(&app, &ctx, Some(&body.digest), vec![item]).await?;
    single(&app, StatusCode::OK, outcome)
}

/// Parses a deletion mode.
pub(crate) fn parse_mode(field: &str, value: Option<&str>) -> ApiResult<DeleteMode> {
    match value {
        None | Some("soft") => Ok(DeleteMode::Soft),
        Some("pruning") => Ok(DeleteMode::Pruning),
        Some("hard") => Ok(DeleteMode::Hard),
        Some(_) => Err(ApiError::invalid_field(
            field,
            "must be soft, pruning or hard",
        )),
    }
}

/// `DELETE /v1/users/{id}?mode=soft|pruning|hard`.
pub(crate) async fn delete(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(DeleteQuery::NAMES)?;
    let mode = parse_mode("mode", query.get("mode"))?;
    let user_id = parse_user_id(&id)?;
    let item = Item {
        user_id: user_id.clone(),
        command: UserCommand::Delete(mode),
        field_prefix: None,
    };
    let outcome = execute(&app, &ctx, None, vec![item]).await?;
    if mode != DeleteMode::Soft {
        // The projector destroys the key and purges the read models as it applies the
        // deletion; answer once that is done, so "200" means "erased".
        if !app.wait_for(outcome.position, ERASURE_WAIT).await {
            tracing::warn!(
                position = outcome.position,
                "erasure is taking longer than expected"
            );
        }
    }
    let body = Deleted {
        deleted: user_id.to_string(),
        mode,
        position: outcome.position,
    };
    Ok(write_response(StatusCode::OK, body, outcome.position))
}

/// `POST /v1/users/restore`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreUsers {
    /// 1 to 100 ids of soft- or pruning-deleted users.
    #[schemars(length(min = 1, max = 100))]
    user_ids: Vec<String>,
}

async fn restore(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<RestoreUsers>,
) -> ApiResult<Response> {
    let ids = &body.value.user_ids;
    if ids.is_empty() || ids.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "user_ids",
            format!("must hold 1 to {} ids", MAX_BATCH),
        ));
    }
    let mut items = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let user_id = UserId::parse(id).map_err(|_| {
            ApiError::new(Code::NotFound, "No user with these ids.").with_errors(vec![
                roster_domain::FieldError::new(format!("user_ids[{i}]"), "no user with this id"),
            ])
        })?;
        items.push(Item {
            user_id,
            command: UserCommand::Restore,
            field_prefix: Some(format!("user_ids[{i}]")),
        });
    }
    let outcome = execute(&app, &ctx, Some(&body.digest), items)
        .await
        .map_err(|mut e| {
            // An item of `user_ids` is an id, not an object with one: name the item itself.
            for error in &mut e.errors {
                if let Some(item) = error.field.strip_suffix(".id") {
                    error.field = item.to_owned();
                }
            }
            e
        })?;
    Ok(crate::routes::common::users_by_id(&app, outcome))
}
