//! Appwrite-style field endpoints: one field per request (API.md §3).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use roster_domain::{Command, Email, Password, Phone};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::commands::{Intent, Item};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json};
use crate::resource::{etag, write_response};
use crate::routes::users::{parse_user_id, single};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{id}/email", patch(email))
        .route("/v1/users/{id}/name", patch(name))
        .route("/v1/users/{id}/password", patch(password))
        .route("/v1/users/{id}/phone", patch(phone))
        .route("/v1/users/{id}/prefs", get(get_prefs).patch(prefs))
        .route("/v1/users/{id}/status", patch(status))
        .route("/v1/users/{id}/verification", patch(email_verification))
        .route(
            "/v1/users/{id}/verification/phone",
            patch(phone_verification),
        )
}

/// Runs one command on one user and answers with the user.
async fn run(
    app: &AppState,
    ctx: &Ctx,
    id: &str,
    digest: &[u8; 32],
    command: Command,
) -> ApiResult<Response> {
    let item = Item {
        user_id: parse_user_id(id)?,
        intent: Intent::Other(command),
        field_prefix: None,
    };
    let outcome = app
        .execute(ctx, vec![item], &ctx.digest_with(Some(digest)))
        .await?;
    single(StatusCode::OK, outcome)
}

fn invalid(field: &str) -> impl Fn(String) -> ApiError + '_ {
    move |m| ApiError::invalid_field(field, m)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailBody {
    email: Option<String>,
}

async fn email(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<EmailBody>,
) -> ApiResult<Response> {
    let email = body
        .value
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(invalid("email"))?;
    run(&app, &ctx, &id, &body.digest, Command::ChangeEmail(email)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: Option<String>,
}

async fn name(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<NameBody>,
) -> ApiResult<Response> {
    let name = body.value.name.clone();
    run(&app, &ctx, &id, &body.digest, Command::ChangeName(name)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

async fn password(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<PasswordBody>,
) -> ApiResult<Response> {
    let password = Password::parse(&body.value.password).map_err(invalid("password"))?;
    parse_user_id(&id)?;
    let hash = app
        .0
        .hasher
        .hash(password)
        .await
        .map_err(ApiError::internal)?;
    run(&app, &ctx, &id, &body.digest, Command::ChangePassword(hash)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneBody {
    number: Option<String>,
}

async fn phone(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<PhoneBody>,
) -> ApiResult<Response> {
    let phone = body
        .value
        .number
        .as_deref()
        .map(Phone::parse)
        .transpose()
        .map_err(invalid("number"))?;
    run(&app, &ctx, &id, &body.digest, Command::ChangePhone(phone)).await
}

async fn get_prefs(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let user_id = parse_user_id(&id)?;
    let row = app.models().get(ctx.org.as_str(), user_id.as_str()).await?;
    let row = row.ok_or_else(|| ApiError::not_found("No user with this id."))?;
    let version = row.user.version;
    let mut response = axum::Json(row.user.profile.prefs).into_response();
    etag(response.headers_mut(), version);
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefsBody {
    prefs: Map<String, Value>,
}

async fn prefs(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<PrefsBody>,
) -> ApiResult<Response> {
    let item = Item {
        user_id: parse_user_id(&id)?,
        intent: Intent::Other(Command::ReplacePrefs(body.value.prefs.clone())),
        field_prefix: None,
    };
    let outcome = app
        .execute(&ctx, vec![item], &ctx.digest_with(Some(&body.digest)))
        .await?;
    let (prefs, version) = match outcome.users.into_iter().next() {
        Some((_, Some(user))) => (user.profile.prefs, user.version),
        _ => return Err(ApiError::not_found("No user with this id.")),
    };
    // A single-user response: it carries the user's version as its ETag (API.md §1), so
    // the prefs can be changed with If-Match too.
    let mut response = write_response(StatusCode::OK, prefs, outcome.position);
    etag(response.headers_mut(), version);
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: bool,
}

async fn status(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<StatusBody>,
) -> ApiResult<Response> {
    let blocked = !body.value.status;
    run(&app, &ctx, &id, &body.digest, Command::SetBlocked(blocked)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailVerificationBody {
    email_verification: bool,
}

async fn email_verification(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<EmailVerificationBody>,
) -> ApiResult<Response> {
    let verified = body.value.email_verification;
    run(
        &app,
        &ctx,
        &id,
        &body.digest,
        Command::SetEmailVerified(verified),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneVerificationBody {
    phone_verification: bool,
}

async fn phone_verification(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<PhoneVerificationBody>,
) -> ApiResult<Response> {
    let verified = body.value.phone_verification;
    run(
        &app,
        &ctx,
        &id,
        &body.digest,
        Command::SetPhoneVerified(verified),
    )
    .await
}
