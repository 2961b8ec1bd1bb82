//! The client's own account (docs/contract.md §5, Nakama style) and public profiles:
//! `GET`/`PUT`/`DELETE /v1/account`, `GET /v1/profiles`.
//!
//! A client acts only on the user of its token, and may change only the fields a user owns
//! (`username`, `display_name`, `avatar_url`, `lang_tag`, `location`, `timezone`) — never its
//! role, metadata, wallet, status or verification flags (403).

use std::borrow::Cow;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use roster_domain::settings::UniqueUsernames;
use roster_domain::user::PatchUser;
use roster_domain::{DeleteMode, PatchInput, Status, User};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{AnyCtx, ClientCtx, Json, NoQuery, QueryParams, query_params};
use crate::resource::{etag, write_response};
use crate::routes::common::{Deleted, OperationDoc, execute, single};
use crate::schemas::SchemaSet;
use crate::state::AppState;
use roster_core::users::Item;
use roster_domain::user::UserCommand;

/// The fields a client may change on its own account.
pub const CLIENT_FIELDS: &[&str] = &[
    "username",
    "display_name",
    "avatar_url",
    "lang_tag",
    "location",
    "timezone",
];
/// Most ids and usernames in one profiles request.
const MAX_PROFILES: usize = 100;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/account",
            get_with(get_account, |op| {
                op.doc("getAccount", "account", "The signed-in user")
                    .query::<NoQuery>()
                    .user(200, "The client's own user object.", false)
                    .errors(&[404])
            })
            .put_with(put_account, |op| {
                op.doc("updateAccount", "account", "Change the signed-in user")
                    .describe(
                        "Only `username`, `display_name`, `avatar_url`, `lang_tag`, `location` and \
                         `timezone`; `null` removes one, fields left out stay. Any other field is \
                         403 and nothing changes.",
                    )
                    .user(200, "The client's own user object, as it is now.", true)
                    .if_match()
                    .errors(&[404, 409])
            })
            .delete_with(delete_account, |op| {
                op.doc("deleteAccount", "account", "Delete the signed-in user")
                    .describe("A soft deletion (a server can restore it); the tokens stop working.")
                    .written::<Deleted>(200, "The user is deleted.")
                    .if_match()
                    .errors(&[404, 409])
            }),
        )
        .api_route(
            "/v1/profiles",
            get_with(profiles, |op| {
                op.doc("getProfiles", "account", "Public profiles")
                    .describe(
                        "In the order asked, each user once; unknown and deleted users are left \
                         out. Never email, phone, wallet, prefs, custom or status.",
                    )
                    .query::<ProfilesQuery>()
                    .json::<Profiles>(200, "The public profiles.")
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<AccountChanges>();
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<PublicProfile>();
    out.add::<Profiles>();
}

query_params! {
    /// Query of `GET /v1/profiles`: up to 100 ids and usernames together.
    pub(crate) struct ProfilesQuery {
        /// User ids (repeatable).
        ids: Option<Vec<String>>,
        /// Usernames, by normalized form (repeatable).
        usernames: Option<Vec<String>>,
        /// Identities, `provider:subject` (repeatable).
        identity: Option<Vec<String>>,
    }
}

/// `PUT /v1/account`: the fields a client may change on its own account. `null` removes one;
/// fields left out stay; any other field is refused (403).
#[derive(JsonSchema)]
#[allow(dead_code)]
struct UpdateAccount {
    /// 1–128 characters without whitespace; unique by normalized form.
    username: Option<String>,
    /// Shown to other users (≤ 128 characters).
    display_name: Option<String>,
    /// Picture URL (≤ 2048 characters).
    avatar_url: Option<String>,
    /// Language tag (≤ 35 characters).
    lang_tag: Option<String>,
    /// Free-text location (≤ 255 characters).
    location: Option<String>,
    /// IANA time zone (≤ 64 characters).
    timezone: Option<String>,
}

/// The body of `PUT /v1/account` as sent: any object, so that fields a client may not change
/// get 403 rather than the 422 of an unknown field. Documented as [`UpdateAccount`].
#[derive(Deserialize)]
#[serde(transparent)]
struct AccountChanges(Map<String, Value>);

impl JsonSchema for AccountChanges {
    fn schema_name() -> Cow<'static, str> {
        "UpdateAccount".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        UpdateAccount::json_schema(generator)
    }
}

/// `GET /v1/account`: the signed-in user's own user object.
async fn get_account(
    State(app): State<AppState>,
    client: ClientCtx,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(NoQuery::NAMES)?;
    let row = app
        .models()
        .get(client.ctx.org.as_str(), client.user_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("No user with this id."))?;
    let version = row.user.public.version;
    let mut response =
        axum::Json(crate::resource::user_resource(&app, row.user.clone(), None)).into_response();
    etag(response.headers_mut(), version);
    Ok(response)
}

/// `PUT /v1/account`: changes the given fields (`null` removes one); any other field → 403.
async fn put_account(
    State(app): State<AppState>,
    client: ClientCtx,
    body: Json<AccountChanges>,
) -> ApiResult<Response> {
    let mut refused: Vec<&str> = body
        .value
        .0
        .keys()
        .map(String::as_str)
        .filter(|k| !CLIENT_FIELDS.contains(k))
        .collect();
    if !refused.is_empty() {
        refused.sort_unstable();
        let errors = refused
            .iter()
            .map(|f| roster_domain::FieldError::new(*f, "a client cannot change this field"))
            .collect();
        return Err(ApiError::new(
            Code::Forbidden,
            format!(
                "A client may change only {}; not {}.",
                CLIENT_FIELDS.join(", "),
                refused.join(", ")
            ),
        )
        .with_errors(errors));
    }
    let patch = PatchInput {
        set: body.value.0.clone(),
        unset: Vec::new(),
    }
    .validate()
    .map_err(|errors| {
        ApiError::invalid(
            errors
                .into_iter()
                .map(|mut e| {
                    if let Some(f) = e.field.strip_prefix("set.") {
                        e.field = f.to_owned();
                    }
                    e
                })
                .collect(),
        )
    })?;
    let ctx = &client.ctx;
    let item = Item {
        user_id: client.user_id.clone(),
        command: UserCommand::Patch(PatchUser {
            patch,
            usernames: UniqueUsernames::App,
        }),
        field_prefix: None,
    };
    let outcome = execute(&app, ctx, Some(&body.digest), vec![item]).await?;
    single(&app, StatusCode::OK, outcome)
}

/// `DELETE /v1/account`: soft-deletes the signed-in user; its tokens stop working.
async fn delete_account(State(app): State<AppState>, client: ClientCtx) -> ApiResult<Response> {
    let ctx = &client.ctx;
    let item = Item {
        user_id: client.user_id.clone(),
        command: UserCommand::Delete(DeleteMode::Soft),
        field_prefix: None,
    };
    let outcome = execute(&app, ctx, None, vec![item]).await?;
    let body = Deleted {
        deleted: client.user_id.to_string(),
        mode: DeleteMode::Soft,
        position: outcome.position,
    };
    Ok(write_response(StatusCode::OK, body, outcome.position))
}

/// What one user may see of another (docs/contract.md §2 "Public profile").
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct PublicProfile {
    /// User id.
    pub id: String,
    /// Username.
    pub username: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Picture URL.
    pub avatar_url: Option<String>,
    /// Language tag.
    pub lang_tag: Option<String>,
    /// Location.
    pub location: Option<String>,
    /// Time zone.
    pub timezone: Option<String>,
    /// Server metadata (public by design).
    pub metadata: Map<String, Value>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Online (heartbeat within a minute; `false` while the user hides).
    pub online: bool,
    /// The custom status (`null` while hidden).
    pub presence_message: Option<String>,
    /// The last heartbeat, to the minute (`null` while hidden).
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl PublicProfile {
    /// What others see of `user`, its presence included.
    fn of(app: &AppState, user: &User) -> Self {
        let p = &user.personal.profile;
        let shown = app.presence_of(user);
        Self {
            id: user.id().to_string(),
            username: p.username.clone(),
            display_name: p.display_name.clone(),
            avatar_url: p.avatar_url.clone(),
            lang_tag: user.public.profile.lang_tag.clone(),
            location: p.location.clone(),
            timezone: user.public.profile.timezone.clone(),
            metadata: p.metadata.clone(),
            created_at: user.public.created_at,
            online: shown.online,
            presence_message: shown.message,
            last_seen_at: shown.last_seen_at,
        }
    }
}

/// Public profiles, in the order asked.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Profiles {
    /// The profiles.
    users: Vec<PublicProfile>,
}

/// `GET /v1/profiles?ids=&usernames=` (client or server): public profiles, in the order asked,
/// each user once; unknown and deleted users are left out.
async fn profiles(
    State(app): State<AppState>,
    AnyCtx(ctx): AnyCtx,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(ProfilesQuery::NAMES)?;
    let ids = query.all("ids");
    let usernames = query.all("usernames");
    if ids.len() + usernames.len() + query.all("identity").len() > MAX_PROFILES {
        return Err(ApiError::invalid_field(
            "ids",
            format!("at most {MAX_PROFILES} ids, usernames and identities together"),
        ));
    }
    let holders = crate::routes::common::identity_holders(&app, &ctx.org, &query).await?;
    let org = ctx.org.as_str();
    let mut wanted: Vec<String> = ids;
    wanted.extend(holders.into_iter().flatten());
    for name in &usernames {
        wanted.extend(app.models().ids_by_username(org, name)?);
    }
    let mut seen = std::collections::HashSet::new();
    let mut users = Vec::new();
    for id in wanted {
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(row) = app.models().get(org, &id).await?
            && row.user.status() != Status::Deleted
        {
            users.push(PublicProfile::of(&app, &row.user));
        }
    }
    Ok(axum::Json(Profiles { users }).into_response())
}
