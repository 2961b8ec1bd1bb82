//! `/v1/settings`: the organization's settings (docs/contract.md §3).

use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roster_domain::settings::{
    OrgSettings, SETTINGS_CHANGED, SETTINGS_STREAM, SettingsChanged, UniqueUsernames,
};
use roster_eventlog::{
    AppendError, ExpectedVersion, NewEvent, StreamAppend, StreamId, Transaction,
};
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
    let stream = StreamId::new(ctx.org.as_str(), SETTINGS_STREAM);
    // Settings change rarely: a conflict is retried a few times rather than reported.
    for _ in 0..5 {
        let version = app.log().stream_version(&stream).await?;
        let current = app.models().settings(ctx.org.as_str())?;
        let mut next = current.clone();
        if let Some(v) = body.value.enforce_unique_usernames {
            next.enforce_unique_usernames = v;
        }
        if next == current {
            // Nothing changes: answer with where the settings last changed (0 = never).
            let position = match version {
                Some(v) => app
                    .log()
                    .read_stream(&stream, v, 1)
                    .await?
                    .first()
                    .map_or(0, |r| r.position),
                None => 0,
            };
            return Ok(write_response(
                StatusCode::OK,
                SettingsResponse {
                    settings: current,
                    position,
                },
                position,
            ));
        }
        let data = serde_json::to_vec(&SettingsChanged {
            settings: next.clone(),
        })
        .expect("settings serialize");
        let meta = serde_json::to_vec(&ctx.meta).expect("metadata serializes");
        let tx = Transaction {
            appends: vec![StreamAppend {
                stream: stream.clone(),
                expected: version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
                events: vec![NewEvent {
                    id: ulid::Ulid::new(),
                    event_type: SETTINGS_CHANGED.into(),
                    schema_version: 1,
                    data: data.into(),
                    // Settings events carry no personal data: keep only the public metadata.
                    metadata: strip_personal(meta).into(),
                }],
            }],
            reservations: vec![],
        };
        match app.log().append(tx).await {
            Ok(c) => {
                // Commands read settings from the read model: wait until it has them.
                app.wait_for(c.last_position, Duration::from_secs(5)).await;
                return Ok(write_response(
                    StatusCode::OK,
                    SettingsResponse {
                        settings: next,
                        position: c.last_position,
                    },
                    c.last_position,
                ));
            }
            Err(AppendError::WrongExpectedVersion { .. }) => continue,
            Err(AppendError::Log(e)) => return Err(e.into()),
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    Err(ApiError::new(
        Code::Conflict,
        "Settings are changing concurrently; retry.",
    ))
}

fn strip_personal(meta: Vec<u8>) -> Vec<u8> {
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&meta).unwrap_or_default();
    value.remove("ip");
    value.remove("user_agent");
    serde_json::to_vec(&value).expect("JSON serializes")
}
