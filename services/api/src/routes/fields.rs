//! Appwrite-style field endpoints: one field per request (docs/contract.md §3).

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, patch_with};
use aide::transform::TransformOperation;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roster_core::users::Item;
use roster_domain::user::UserCommand;
use roster_domain::{Email, Password, Phone};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json};
use crate::resource::{etag, write_response};
use crate::routes::common::{OperationDoc, execute, parse_user_id, run_one};
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/users/{id}/email",
            patch_with(email, |op| {
                field(op, "changeEmail", "Change the email")
                    .describe("Clears `email_verified`. `null` removes the email.")
                    .errors(&[409])
            }),
        )
        .api_route(
            "/v1/users/{id}/name",
            patch_with(name, |op| field(op, "changeName", "Change the name")),
        )
        .api_route(
            "/v1/users/{id}/password",
            patch_with(password, |op| {
                field(op, "changePassword", "Change the password")
                    .describe("Stored only as an argon2id hash. Ends the user's sessions.")
            }),
        )
        .api_route(
            "/v1/users/{id}/phone",
            patch_with(phone, |op| {
                field(op, "changePhone", "Change the phone number")
                    .describe("E.164. Clears `phone_verified`. `null` removes the number.")
            }),
        )
        .api_route(
            "/v1/users/{id}/prefs",
            get_with(get_prefs, |op| {
                op.doc("getPrefs", "user fields", "Get the preferences")
                    .json::<Map<String, Value>>(200, "The preferences.")
                    .errors(&[404])
            })
            .patch_with(prefs, |op| {
                op.doc("replacePrefs", "user fields", "Replace the preferences")
                    .describe("Replaces the whole object (up to 64 KB).")
                    .written::<Map<String, Value>>(200, "The preferences as they are now.")
                    .if_match()
                    .errors(&[404, 409])
            }),
        )
        .api_route(
            "/v1/users/{id}/status",
            patch_with(status, |op| {
                field(op, "setStatus", "Block or unblock a user")
                    .describe("`false` blocks the user and ends all its sessions; `true` unblocks.")
            }),
        )
        .api_route(
            "/v1/users/{id}/verification",
            patch_with(email_verification, |op| {
                field(
                    op,
                    "setEmailVerification",
                    "Set the email verification flag",
                )
            }),
        )
        .api_route(
            "/v1/users/{id}/verification/phone",
            patch_with(phone_verification, |op| {
                field(
                    op,
                    "setPhoneVerification",
                    "Set the phone verification flag",
                )
            }),
        )
}

/// A single-field command on one user: it answers with the user.
fn field<'t>(op: TransformOperation<'t>, id: &str, summary: &str) -> TransformOperation<'t> {
    op.doc(id, "user fields", summary)
        .user(200, "The user as it is now.", true)
        .if_match()
        .errors(&[404, 409])
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<ChangeEmail>();
    out.add::<ChangeName>();
    out.add::<ChangePassword>();
    out.add::<ChangePhone>();
    out.add::<ReplacePrefs>();
    out.add::<SetStatus>();
    out.add::<SetEmailVerification>();
    out.add::<SetPhoneVerification>();
}

fn invalid(field: &str) -> impl Fn(String) -> ApiError + '_ {
    move |m| ApiError::invalid_field(field, m)
}

/// `PATCH /v1/users/{id}/email`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeEmail {
    /// The new email (≤ 254 characters); `null` removes it.
    email: Option<String>,
}

async fn email(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<ChangeEmail>,
) -> ApiResult<Response> {
    let email = body
        .value
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(invalid("email"))?;
    run_one(
        &app,
        &ctx,
        &id,
        Some(&body.digest),
        UserCommand::ChangeEmail(email),
    )
    .await
}

/// `PATCH /v1/users/{id}/name`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeName {
    /// The new name (≤ 128 characters); `null` removes it.
    name: Option<String>,
}

async fn name(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<ChangeName>,
) -> ApiResult<Response> {
    let name = body.value.name.clone();
    if let Some(n) = &name {
        roster_domain::input::check_scalar("name", n).map_err(|e| ApiError::invalid(vec![e]))?;
    }
    run_one(
        &app,
        &ctx,
        &id,
        Some(&body.digest),
        UserCommand::ChangeName(name),
    )
    .await
}

/// `PATCH /v1/users/{id}/password`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePassword {
    /// 8 to 256 characters.
    #[schemars(length(min = 8, max = 256))]
    password: String,
}

async fn password(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<ChangePassword>,
) -> ApiResult<Response> {
    let password = Password::parse(&body.value.password).map_err(invalid("password"))?;
    parse_user_id(&id)?;
    let hash = app
        .core()
        .hasher()
        .hash(password)
        .await
        .map_err(ApiError::internal)?;
    run_one(
        &app,
        &ctx,
        &id,
        Some(&body.digest),
        UserCommand::ChangePassword(hash),
    )
    .await
}

/// `PATCH /v1/users/{id}/phone`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePhone {
    /// The new number in E.164 (`+14155550100`); `null` removes it.
    number: Option<String>,
}

async fn phone(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<ChangePhone>,
) -> ApiResult<Response> {
    let phone = body
        .value
        .number
        .as_deref()
        .map(Phone::parse)
        .transpose()
        .map_err(invalid("number"))?;
    run_one(
        &app,
        &ctx,
        &id,
        Some(&body.digest),
        UserCommand::ChangePhone(phone),
    )
    .await
}

async fn get_prefs(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let user_id = parse_user_id(&id)?;
    let row = app.models().get(ctx.org.as_str(), user_id.as_str()).await?;
    let row = row.ok_or_else(|| ApiError::not_found("No user with this id."))?;
    let version = row.user.public.version;
    let mut response = axum::Json(&row.user.personal.profile.prefs).into_response();
    etag(response.headers_mut(), version);
    Ok(response)
}

/// `PATCH /v1/users/{id}/prefs`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplacePrefs {
    /// The new preferences (≤ 64 KB serialized).
    prefs: Map<String, Value>,
}

async fn prefs(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<ReplacePrefs>,
) -> ApiResult<Response> {
    roster_domain::input::check_object("prefs", &body.value.prefs)
        .map_err(|e| ApiError::invalid(vec![e]))?;
    let item = Item {
        user_id: parse_user_id(&id)?,
        command: UserCommand::ReplacePrefs(body.value.prefs.clone()),
        field_prefix: None,
    };
    let outcome = execute(&app, &ctx, Some(&body.digest), vec![item]).await?;
    let (prefs, version) = match outcome.users.into_iter().next() {
        Some((_, Some(user))) => (user.personal.profile.prefs, user.public.version),
        _ => return Err(ApiError::not_found("No user with this id.")),
    };
    // A single-user response: it carries the user's version as its ETag (docs/contract.md §1), so
    // the prefs can be changed with If-Match too.
    let mut response = write_response(StatusCode::OK, prefs, outcome.position);
    etag(response.headers_mut(), version);
    Ok(response)
}

/// `PATCH /v1/users/{id}/status`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetStatus {
    /// `false` blocks the user, `true` unblocks it.
    status: bool,
}

async fn status(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<SetStatus>,
) -> ApiResult<Response> {
    let blocked = !body.value.status;
    run_one(
        &app,
        &ctx,
        &id,
        Some(&body.digest),
        UserCommand::SetBlocked(blocked),
    )
    .await
}

/// `PATCH /v1/users/{id}/verification`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetEmailVerification {
    /// Whether the email is verified.
    email_verification: bool,
}

async fn email_verification(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<SetEmailVerification>,
) -> ApiResult<Response> {
    let verified = body.value.email_verification;
    run_one(
        &app,
        &ctx,
        &id,
        Some(&body.digest),
        UserCommand::SetEmailVerified(verified),
    )
    .await
}

/// `PATCH /v1/users/{id}/verification/phone`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPhoneVerification {
    /// Whether the phone is verified.
    phone_verification: bool,
}

async fn phone_verification(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<SetPhoneVerification>,
) -> ApiResult<Response> {
    let verified = body.value.phone_verification;
    run_one(
        &app,
        &ctx,
        &id,
        Some(&body.digest),
        UserCommand::SetPhoneVerified(verified),
    )
    .await
}
