//! `/v1/settings`: the organization's settings (docs/contract.md §3).

use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roster_core::CommitError;
use roster_domain::settings::{ChangeSettings, OrgSettings, Settings, UniqueUsernames};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Ctx, Json};
use crate::resource::write_response;
use crate::routes::common::OperationDoc;
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        "/v1/settings",
        get_with(show, |op| {
            op.doc("getSettings", "settings", "The organization's settings")
                .json::<OrgSettings>(200, "The settings.")
        })
        .patch_with(update, |op| {
            op.doc(
                "updateSettings",
                "settings",
                "Change the organization's settings",
            )
            .describe(
                "Answers once the read models have applied the change. Switching to `app` \
                     while duplicates exist keeps them and enforces from then on.",
            )
            .written::<SettingsResponse>(200, "The settings as they are now.")
            .errors(&[409])
        }),
    )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<UpdateSettings>();
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<OrgSettings>();
}

async fn show(State(app): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    Ok(axum::Json(app.models().settings(ctx.org.as_str())?).into_response())
}

/// `PATCH /v1/settings`: each field is optional; those left out stay.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateSettings {
    /// `app` (usernames unique by normalized form) or `no`.
    enforce_unique_usernames: Option<UniqueUsernames>,
    /// Whether `POST /v1/guests` creates guest users.
    allow_guests: Option<bool>,
    /// Whether `POST /v1/sessions/anonymous` hands out anonymous tokens.
    allow_anonymous: Option<bool>,
}

/// The settings after a change, with the change's log position.
#[derive(Serialize, JsonSchema)]
pub(crate) struct SettingsResponse {
    #[serde(flatten)]
    settings: OrgSettings,
    /// Log position of the change (of the last change if nothing changed; 0 if never).
    position: u64,
}

async fn update(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<UpdateSettings>,
) -> ApiResult<Response> {
    let repo = app.core().repo();
    // The organization's one settings stream (`settings`), through the one repository; its
    // events carry no personal data (there is no key to seal a request's ip under, so the
    // codec keeps only the public metadata).
    let outcome = roster_core::retrying(|| async {
        let loaded = repo.load::<Settings>(&ctx.org, "").await?;
        let mut next = loaded.state.clone().unwrap_or_default().0;
        if let Some(v) = body.value.enforce_unique_usernames {
            next.enforce_unique_usernames = v;
        }
        if let Some(v) = body.value.allow_guests {
            next.allow_guests = v;
        }
        if let Some(v) = body.value.allow_anonymous {
            next.allow_anonymous = v;
        }
        let command = ChangeSettings(next.clone());
        Ok(
            match repo
                .append(&ctx.org, "", &loaded, &command, ctx.meta.clone())
                .await?
            {
                Some((committed, _)) => (next, committed.last_position, true),
                // Nothing changes: where the settings last changed (0 = never).
                None => (next, loaded.last_position, false),
            },
        )
    })
    .await;
    let (settings, position, changed) = outcome.map_err(|e| match e {
        CommitError::Failed(e) => e,
        _ => ApiError::new(Code::Conflict, "Settings are changing concurrently; retry."),
    })?;
    if changed {
        // Commands read settings from the read model: answer once it has them.
        app.wait_for(position, Duration::from_secs(5)).await;
    }
    Ok(write_response(
        StatusCode::OK,
        SettingsResponse { settings, position },
        position,
    ))
}
