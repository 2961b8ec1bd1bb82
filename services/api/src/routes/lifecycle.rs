//! Deactivation, deletion in three modes, and restore (API.md §3).

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use roster_domain::{Command, DeleteMode, UserId};
use serde::{Deserialize, Serialize};

use crate::commands::{Intent, Item};
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, Json, MaybeJson, QueryParams};
use crate::resource::write_response;
use crate::routes::users::{parse_user_id, single};
use crate::state::AppState;

/// How long a pruning or hard deletion waits for the erasure to finish before it answers.
const ERASURE_WAIT: Duration = Duration::from_secs(5);

/// The routes of this module (`DELETE /v1/users/{id}` is served by the users module's route).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{id}/deactivate", post(deactivate))
        .route("/v1/users/{id}/reactivate", post(reactivate))
        .route("/v1/users/restore", post(restore))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeactivateBody {
    created_by_id: Option<String>,
}

async fn deactivate(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: MaybeJson<DeactivateBody>,
) -> ApiResult<Response> {
    let item = Item {
        user_id: parse_user_id(&id)?,
        intent: Intent::Other(Command::Deactivate {
            created_by_id: body.value.created_by_id.clone(),
        }),
        field_prefix: None,
    };
    let outcome = app
        .execute(&ctx, vec![item], &ctx.digest_with(Some(&body.digest)))
        .await?;
    single(StatusCode::OK, outcome)
}

async fn reactivate(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: MaybeJson<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    if !body.value.is_empty() {
        return Err(ApiError::invalid_field("", "reactivation takes no body"));
    }
    let item = Item {
        user_id: parse_user_id(&id)?,
        intent: Intent::Other(Command::Reactivate),
        field_prefix: None,
    };
    let outcome = app
        .execute(&ctx, vec![item], &ctx.digest_with(Some(&body.digest)))
        .await?;
    single(StatusCode::OK, outcome)
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

#[derive(Serialize)]
struct Deleted {
    deleted: String,
    mode: DeleteMode,
    position: u64,
}

/// `DELETE /v1/users/{id}?mode=soft|pruning|hard`.
pub(crate) async fn delete(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(&["mode"])?;
    let mode = parse_mode("mode", query.get("mode"))?;
    let user_id = parse_user_id(&id)?;
    let item = Item {
        user_id: user_id.clone(),
        intent: Intent::Other(Command::Delete(mode)),
        field_prefix: None,
    };
    let outcome = app
        .execute(&ctx, vec![item], &ctx.digest_with(None))
        .await?;
    if mode != DeleteMode::Soft {
        // The projector destroys the key and purges the read models as it applies the
        // deletion; answer once that is done, so "200" means "erased".
        if !app.models().wait_for(outcome.position, ERASURE_WAIT).await {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    user_ids: Vec<String>,
}

async fn restore(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<RestoreBody>,
) -> ApiResult<Response> {
    let ids = &body.value.user_ids;
    if ids.is_empty() || ids.len() > crate::routes::users::MAX_BATCH {
        return Err(ApiError::invalid_field(
            "user_ids",
            format!("must hold 1 to {} ids", crate::routes::users::MAX_BATCH),
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
            intent: Intent::Restore,
            field_prefix: Some(format!("user_ids[{i}]")),
        });
    }
    let outcome = app
        .execute(&ctx, items, &ctx.digest_with(Some(&body.digest)))
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
    Ok(crate::routes::users::users_by_id(outcome))
}
