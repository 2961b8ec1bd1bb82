//! Linked identities (docs/identities.md): `(provider, subject)` pairs unique per organization,
//! each a reservation claimed in the same append as the user's `IdentityLinked`.

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, post_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use roster_core::users::Item;
use roster_domain::user::UserCommand;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json};
use crate::resource::UserResource;
use crate::routes::common::{OperationDoc, checked_identity, execute, parse_user_id, single};
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/users/{id}/identities",
            post_with(link, |op| {
                op.doc("linkIdentity", "identities", "Link an identity to a user")
                    .describe(
                        "An identity belongs to at most one user of the organization \
                         (`identity_taken` otherwise); linking one the user holds changes \
                         nothing. At most 20 per user.",
                    )
                    .written::<UserResource>(201, "The user.")
                    .errors(&[404, 409])
            }),
        )
        .api_route(
            "/v1/users/{id}/identities/{provider}/{subject}",
            delete_with(unlink, |op| {
                op.doc("unlinkIdentity", "identities", "Unlink an identity")
                    .describe("The identity is free for another user at once.")
                    .written::<UserResource>(200, "The user.")
                    .errors(&[404])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<LinkIdentity>();
}

/// `POST /v1/users/{id}/identities`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkIdentity {
    /// 1–32 of `a-z 0-9 _` (`device`, `facebook`, `google`, …).
    #[schemars(length(min = 1, max = 32), regex(pattern = "^[a-z0-9_]+$"))]
    provider: String,
    /// The provider's id of the user: 1–256 printable characters.
    #[schemars(length(min = 1, max = 256))]
    subject: String,
}

async fn link(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<LinkIdentity>,
) -> ApiResult<Response> {
    let identity = checked_identity(&body.value.provider, &body.value.subject)
        .map_err(|m| ApiError::invalid_field("identity", m))?;
    let item = Item {
        user_id: parse_user_id(&id)?,
        command: UserCommand::LinkIdentity(identity),
        field_prefix: None,
    };
    let outcome = execute(&app, &ctx, Some(&body.digest), vec![item]).await?;
    single(&app, StatusCode::CREATED, outcome)
}

async fn unlink(
    State(app): State<AppState>,
    ctx: Ctx,
    Path((id, provider, subject)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    // One that cannot be linked is not linked; the user's decision refuses any other it
    // does not hold (404).
    let identity = checked_identity(&provider, &subject).map_err(|_| not_linked())?;
    let item = Item {
        user_id: parse_user_id(&id)?,
        command: UserCommand::UnlinkIdentity(identity),
        field_prefix: None,
    };
    single(
        &app,
        StatusCode::OK,
        execute(&app, &ctx, None, vec![item]).await?,
    )
}

fn not_linked() -> ApiError {
    ApiError::not_found("The user has no such identity.")
}
