//! `/v1/users`: create, upsert, partial update (one and batch), get, list (docs/contract.md §3).

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roster_core::imported_hash::ImportedHash;
use roster_core::users::Item;
use roster_core::{AsOf, Loaded};
use roster_domain::settings::UniqueUsernames;
use roster_domain::user::{CreateUser, PatchUser, UserCommand};
use roster_domain::{FieldError, PatchInput, Status, User, UserId, UserInput};
use roster_projections::{ListOrder, ListQuery};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, QueryParams, query_params};
use crate::resource::{UserResource, etag};
use crate::routes::common::{
    Deleted, MAX_BATCH, OperationDoc, UsersById, decode_cursor, encode_cursor, execute,
    parse_as_of, parse_user_id, single, users_by_id,
};
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// Longest search string.
const MAX_SEARCH_CHARS: usize = 256;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/users",
            post_with(create, |op| {
                op.doc("createUser", "users", "Create a user")
                    .describe(
                        "Omit `id` (or send `\"unique()\"`) to get a generated ULID. The \
                         password is stored only as an argon2id hash.",
                    )
                    .user(201, "The created user.", true)
                    .errors(&[409])
            })
            .patch_with(patch_many, |op| {
                op.doc("patchUsers", "users", "Change several users by path")
                    .describe(
                        "Up to 100 items, atomic: if any item is invalid nothing changes and \
                         the error lists every failing item by index (`users[3].set.email`).",
                    )
                    .written::<UsersById>(200, "The users as they are now, by id.")
                    .errors(&[404, 409])
            })
            .get_with(list, |op| {
                op.doc("listUsers", "users", "List and search users")
                    .query::<ListUsersQuery>()
                    .json::<UserPage>(200, "A page of users.")
            }),
        )
        .api_route(
            "/v1/users/upsert",
            post_with(upsert, |op| {
                op.doc("upsertUsers", "users", "Create or replace users whole")
                    .describe(
                        "Up to 100 users, atomic. An existing user is replaced whole: fields \
                         left out are removed (the password is kept unless given).",
                    )
                    .written::<UsersById>(200, "The users as they are now, by id.")
                    .errors(&[409])
            })
            .get_with(get_user_named_upsert, |op| {
                op.doc(
                    "getUserNamedUpsert",
                    "users",
                    "Get the user whose id is `upsert`",
                )
                .describe("`GET /v1/users/{id}` for the id `upsert`, which this path shadows.")
                .query::<GetUserQuery>()
                .user(200, "The user.", false)
                .errors(&[404])
            })
            .patch_with(patch_user_named_upsert, |op| {
                op.doc(
                    "patchUserNamedUpsert",
                    "users",
                    "Change the user whose id is `upsert`",
                )
                .describe("`PATCH /v1/users/{id}` for the id `upsert`, which this path shadows.")
                .user(200, "The user as it is now.", true)
                .if_match()
                .errors(&[404, 409])
            }),
        )
        .api_route(
            "/v1/users/{id}",
            get_with(get_one, |op| {
                op.doc("getUser", "users", "Get a user")
                    .describe("With `as_of`, the user as it was at that log position or time.")
                    .query::<GetUserQuery>()
                    .user(200, "The user.", false)
                    .errors(&[404])
            })
            .patch_with(patch_one, |op| {
                op.doc("patchUser", "users", "Change a user by path")
                    .describe(
                        "`set` maps paths (`name`, `custom.a.b`) to values, `unset` lists paths. \
                         `id`, `wallet`, `status`, `version`, the times and the verification \
                         flags cannot be set this way (422).",
                    )
                    .user(200, "The user as it is now.", true)
                    .if_match()
                    .errors(&[404, 409])
            })
            .delete_with(super::lifecycle::delete, |op| {
                op.doc("deleteUser", "lifecycle", "Delete a user")
                    .describe(
                        "`soft` keeps everything (restorable); `pruning` erases personal data \
                         everywhere, the event log included (restorable without it); `hard` \
                         erases the user and releases its id, username and email.",
                    )
                    .query::<super::lifecycle::DeleteQuery>()
                    .written::<Deleted>(200, "The user is deleted.")
                    .if_match()
                    .errors(&[404])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<UserInput>();
    out.add::<UpsertUsers>();
    out.add::<PatchInput>();
    out.add::<PatchUsers>();
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<UserResource>();
    out.add::<UserPage>();
    out.add::<UsersById>();
}

query_params! {
    /// Query of `GET /v1/users/{id}`.
    pub(crate) struct GetUserQuery {
        /// A log position (a number) or an RFC 3339 time: the user as it was then.
        #[schemars(pattern(crate::extract::AS_OF_PATTERN))]
        as_of: Option<String>,
    }
}

query_params! {
    /// Query of `GET /v1/users`. Different parameters combine with AND, repeated values of one
    /// with OR.
    pub(crate) struct ListUsersQuery {
        /// Up to 256 characters: a prefix of the id, username or email, the whole name or
        /// display name, or any word of them; several words must all match.
        #[schemars(length(max = 256))]
        search: Option<String>,
        /// User ids (repeatable).
        ids: Option<Vec<String>>,
        /// Usernames, compared by normalized form (repeatable).
        usernames: Option<Vec<String>>,
        /// Emails, case-insensitively (repeatable).
        emails: Option<Vec<String>>,
        /// Only users of this status (deleted users are listed only when asked for).
        status: Option<Status>,
        /// Only users of this role.
        role: Option<String>,
        /// Only members of this team (repeatable: of any of them).
        team: Option<Vec<String>>,
        /// Only the holder of this identity, `provider:subject` (repeatable).
        identity: Option<Vec<String>>,
        /// Page size, 1 to 100 (default 25).
        #[schemars(range(min = 1, max = 100))]
        limit: Option<u32>,
        /// A cursor from `next_cursor` or `prev_cursor`.
        #[schemars(pattern(crate::extract::CURSOR_PATTERN))]
        cursor: Option<String>,
        /// `after` (default) or `before` the cursor.
        direction: Option<Direction>,
        /// By creation: `asc` (default) or `desc`.
        order: Option<Order>,
    }
}

/// Which side of the cursor a page is on.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum Direction {
    /// After the cursor.
    After,
    /// Before the cursor.
    Before,
}

/// Order by creation.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

/// `upsert` is a valid user id, but its path is taken by the static route, which would
/// otherwise answer GET and PATCH with 405: serve that user there.
async fn get_user_named_upsert(
    app: State<AppState>,
    ctx: Ctx,
    query: QueryParams,
) -> ApiResult<Response> {
    get_one(app, ctx, Path("upsert".to_owned()), query).await
}

async fn patch_user_named_upsert(
    app: State<AppState>,
    ctx: Ctx,
    body: Json<PatchInput>,
) -> ApiResult<Response> {
    patch_one(app, ctx, Path("upsert".to_owned()), body).await
}

async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<UserInput>,
) -> ApiResult<Response> {
    let valid = body.value.validate().map_err(ApiError::invalid)?;
    let item = create_item(&app, &ctx, valid, false, None).await?;
    let outcome = execute(&app, &ctx, Some(&body.digest), vec![item]).await?;
    single(&app, StatusCode::CREATED, outcome)
}

/// The item that creates (`upsert`: or replaces) a validated user, its password hashed.
async fn create_item(
    app: &AppState,
    ctx: &Ctx,
    valid: roster_domain::ValidUser,
    upsert: bool,
    field_prefix: Option<String>,
) -> ApiResult<Item> {
    let password_hash = match (valid.password, valid.password_hash) {
        (Some(p), _) => Some(
            app.core()
                .hasher()
                .hash(p)
                .await
                .map_err(ApiError::internal)?,
        ),
        // Another system's hash: checked here, verified by its algorithm at sign-in.
        (None, Some(object)) => {
            let field = match &field_prefix {
                Some(prefix) => format!("{prefix}.password_hash"),
                None => "password_hash".to_owned(),
            };
            let hash = ImportedHash::parse(&serde_json::Value::Object(object))
                .map_err(|m| ApiError::invalid_field(field, m))?;
            Some(hash.to_stored())
        }
        (None, None) => None,
    };
    let id = valid.id.unwrap_or_else(UserId::generate);
    let create = CreateUser {
        id: id.clone(),
        org: ctx.org.clone(),
        profile: valid.profile,
        password_hash,
        // The organization's rule is applied when the command runs.
        usernames: UniqueUsernames::App,
    };
    Ok(Item {
        user_id: id,
        command: match upsert {
            true => UserCommand::Upsert(create),
            false => UserCommand::Create(create),
        },
        field_prefix,
    })
}

/// `POST /v1/users/upsert`: users to create or replace whole.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpsertUsers {
    /// 1 to 100 users (each item is parsed on its own, so every bad item is reported).
    #[schemars(with = "Vec<UserInput>", length(min = 1, max = 100))]
    users: Vec<Value>,
}

/// `PATCH /v1/users`: partial updates of several users.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchUsers {
    /// 1 to 100 items (each item is parsed on its own, so every bad item is reported).
    #[schemars(with = "Vec<PatchItem>", length(min = 1, max = 100))]
    users: Vec<Value>,
}

/// Each item of a batch parsed on its own, with its field prefix (`users[3]`): a malformed item
/// does not hide the problems of the others, so every failing item is reported at once.
type BatchItems<T> = Vec<(String, Result<T, FieldError>)>;

fn batch_items<T: serde::de::DeserializeOwned>(users: Vec<Value>) -> ApiResult<BatchItems<T>> {
    let n = users.len();
    if n == 0 || n > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "users",
            format!("must hold 1 to {MAX_BATCH} users, not {n}"),
        ));
    }
    Ok(users
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let prefix = format!("users[{i}]");
            // Objects only, as every body (`crate::strict`).
            let parsed = serde_path_to_error::deserialize::<_, T>(crate::strict::Strict(value))
                .map_err(|e| {
                    let path = e.path().to_string();
                    let field = if path == "." {
                        prefix.clone()
                    } else {
                        format!("{prefix}.{path}")
                    };
                    FieldError::new(field, e.into_inner().to_string())
                });
            (prefix, parsed)
        })
        .collect())
}

async fn upsert(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<UpsertUsers>,
) -> ApiResult<Response> {
    let inputs: BatchItems<UserInput> = batch_items(body.value.users)?;
    let mut errors = Vec::new();
    let mut valid = Vec::with_capacity(inputs.len());
    for (prefix, input) in inputs {
        match input.map(UserInput::validate) {
            Ok(Ok(v)) => valid.push((prefix, v)),
            Ok(Err(es)) => errors.extend(es.into_iter().map(|e| e.prefixed(&prefix))),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let mut items = Vec::with_capacity(valid.len());
    for (prefix, v) in valid {
        items.push(create_item(&app, &ctx, v, true, Some(prefix)).await?);
    }
    let outcome = execute(&app, &ctx, Some(&body.digest), items).await?;
    Ok(users_by_id(&app, outcome))
}

/// One item of `PATCH /v1/users`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchItem {
    /// The user.
    id: String,
    /// Paths to values.
    #[serde(default)]
    set: Map<String, Value>,
    /// Paths to remove.
    #[serde(default)]
    unset: Vec<String>,
}

async fn patch_many(
    State(app): State<AppState>,
    ctx: Ctx,
    body: Json<PatchUsers>,
) -> ApiResult<Response> {
    let inputs: BatchItems<PatchItem> = batch_items(body.value.users)?;
    let mut errors = Vec::new();
    let mut items = Vec::with_capacity(inputs.len());
    for (prefix, input) in inputs {
        let input = match input {
            Ok(input) => input,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let id = UserId::parse(&input.id).map_err(|m| FieldError::new(format!("{prefix}.id"), m));
        let patch = PatchInput {
            set: input.set,
            unset: input.unset,
        }
        .validate();
        match (id, patch) {
            (Ok(user_id), Ok(patch)) => items.push(Item {
                user_id,
                command: patch_command(patch),
                field_prefix: Some(prefix),
            }),
            (id, patch) => {
                errors.extend(id.err());
                errors.extend(
                    patch
                        .err()
                        .into_iter()
                        .flatten()
                        .map(|e| e.prefixed(&prefix)),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let outcome = execute(&app, &ctx, Some(&body.digest), items).await?;
    Ok(users_by_id(&app, outcome))
}

fn patch_command(patch: roster_domain::Patch) -> UserCommand {
    UserCommand::Patch(PatchUser {
        patch,
        // The organization's rule is applied when the command runs.
        usernames: UniqueUsernames::App,
    })
}

async fn patch_one(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<PatchInput>,
) -> ApiResult<Response> {
    let user_id = parse_user_id(&id)?;
    let patch = body.value.validate().map_err(ApiError::invalid)?;
    let item = Item {
        user_id,
        command: patch_command(patch),
        field_prefix: None,
    };
    let outcome = execute(&app, &ctx, Some(&body.digest), vec![item]).await?;
    single(&app, StatusCode::OK, outcome)
}

async fn get_one(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(GetUserQuery::NAMES)?;
    let org = ctx.org;
    let user_id = parse_user_id(&id)?;
    let user = match query.get("as_of") {
        Some(as_of) => as_of_user(&app, &org, &user_id, parse_as_of(as_of)?).await?,
        None => app
            .models()
            .get(org.as_str(), user_id.as_str())
            .await?
            .map(|row| row.user.clone()),
    };
    let user = user.ok_or_else(|| ApiError::not_found("No user with this id."))?;
    let version = user.public.version;
    let mut response = axum::Json(crate::resource::user_resource(&app, user, None)).into_response();
    etag(response.headers_mut(), version);
    Ok(response)
}

/// The user as it was at `limit` — unless that incarnation was hard-deleted since: its
/// history is erased, and it is not found.
async fn as_of_user(
    app: &AppState,
    org: &roster_domain::OrgId,
    user_id: &UserId,
    limit: AsOf,
) -> ApiResult<Option<User>> {
    let repo = app.core().repo();
    let then: Loaded<User> = repo.load_as_of(org, user_id.as_str(), limit).await?;
    if then.state.is_none() {
        return Ok(None);
    }
    let now: Loaded<User> = repo.load(org, user_id.as_str()).await?;
    // The same incarnation still exists when it began where the one found then did.
    let same_incarnation = now.state.is_some() && now.since == then.since;
    Ok(then.state.filter(|_| same_incarnation))
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    field: &str,
    value: &str,
    allowed: &str,
) -> ApiResult<T> {
    serde_json::from_value(Value::String(value.to_owned()))
        .map_err(|_| ApiError::invalid_field(field, format!("must be one of {allowed}")))
}

/// A page of users.
#[derive(Serialize, JsonSchema)]
pub(crate) struct UserPage {
    /// The users of the page.
    users: Vec<UserResource>,
    /// Pass as `cursor` (with `direction=after`) for the next page.
    next_cursor: Option<String>,
    /// Pass as `cursor` with `direction=before` for the previous page.
    prev_cursor: Option<String>,
    /// Every match, over all pages.
    total: u64,
}

async fn list(State(app): State<AppState>, ctx: Ctx, query: QueryParams) -> ApiResult<Response> {
    query.only(ListUsersQuery::NAMES)?;
    let org = ctx.org;
    let search = query.get("search").map(str::to_owned);
    if search
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS)
    {
        return Err(ApiError::invalid_field(
            "search",
            format!("must be at most {MAX_SEARCH_CHARS} characters"),
        ));
    }
    let status: Option<Status> = match query.get("status") {
        Some(s) => Some(parse_enum(
            "status",
            s,
            "active, blocked, deactivated, deleted",
        )?),
        None => None,
    };
    let before = match query.get("direction") {
        None | Some("after") => false,
        Some("before") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "direction",
                "must be after or before",
            ));
        }
    };
    let order = match query.get("order") {
        None | Some("asc") => ListOrder::Asc,
        Some("desc") => ListOrder::Desc,
        Some(_) => return Err(ApiError::invalid_field("order", "must be asc or desc")),
    };
    let list_query = ListQuery {
        search,
        ids: query.all("ids"),
        usernames: query.all("usernames"),
        emails: query.all("emails"),
        teams: query.all("team"),
        identity_holders: crate::routes::common::identity_holders(&app, &org, &query).await?,
        status,
        role: query.get("role").map(str::to_owned),
        limit: query.number("limit", 1, 100)?.unwrap_or(25) as usize,
        cursor: query
            .get("cursor")
            .map(|c| decode_cursor::<u64>('c', c))
            .transpose()?,
        before,
        order,
    };
    let page = app.models().list(org.as_str(), &list_query).await?;
    Ok(axum::Json(UserPage {
        users: page
            .users
            .into_iter()
            .map(|r| crate::resource::user_resource(&app, r.user.clone(), None))
            .collect(),
        next_cursor: page.next_cursor.map(|c| encode_cursor('c', c)),
        prev_cursor: page.prev_cursor.map(|c| encode_cursor('c', c)),
        total: page.total,
    })
    .into_response())
}
