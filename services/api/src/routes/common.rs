//! What several route modules share: parsing ids and cursors, running user commands, and
//! the answers they give. Route modules import this, the domain and the core — never each
//! other.

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use roster_core::AsOf;
use roster_core::users::{Item, Outcome};
use roster_domain::user::UserCommand;
use roster_domain::{Status, UserId};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Ctx;
use crate::resource::{UserResource, user_resource, user_response, write_response};
use crate::state::AppState;

pub(crate) use crate::routes::openapi::OperationDoc;

/// Most users in one upsert, batch update or restore (docs/contract.md §3).
pub const MAX_BATCH: usize = 100;

/// A user id from a path: one that cannot exist is simply not found.
pub(crate) fn parse_user_id(id: &str) -> ApiResult<UserId> {
    UserId::parse(id).map_err(|m| ApiError::not_found(format!("No user with this id (ids {m}).")))
}

/// Runs user commands for a request whose body has digest `body`.
pub(crate) async fn execute(
    app: &AppState,
    ctx: &Ctx,
    body: Option<&[u8; 32]>,
    items: Vec<Item>,
) -> ApiResult<Outcome> {
    roster_core::users::execute(app.core(), &app.request(ctx, body), items).await
}

/// Runs one command on one user (named by a path) and answers with the user.
pub(crate) async fn run_one(
    app: &AppState,
    ctx: &Ctx,
    id: &str,
    body: Option<&[u8; 32]>,
    command: UserCommand,
) -> ApiResult<Response> {
    let item = Item {
        user_id: parse_user_id(id)?,
        command,
        field_prefix: None,
    };
    single(
        app,
        StatusCode::OK,
        execute(app, ctx, body, vec![item]).await?,
    )
}

/// The first user of an outcome as a single-user response.
pub(crate) fn single(app: &AppState, status: StatusCode, outcome: Outcome) -> ApiResult<Response> {
    match outcome.users.into_iter().next() {
        Some((_, Some(user))) => Ok(user_response(app, status, user, Some(outcome.position))),
        _ => Err(ApiError::not_found("No user with this id.")),
    }
}

/// `{"users": {"<id>": user}, "position": n}`.
#[derive(Serialize, JsonSchema)]
pub(crate) struct UsersById {
    /// Each user by its id.
    #[schemars(with = "std::collections::BTreeMap<String, UserResource>")]
    users: Map<String, Value>,
    /// Log position of the write.
    position: u64,
}

/// The users of an outcome by id.
pub(crate) fn users_by_id(app: &AppState, outcome: Outcome) -> Response {
    let users = outcome
        .users
        .into_iter()
        .filter_map(|(id, u)| {
            u.map(|u| {
                (
                    id,
                    serde_json::to_value(user_resource(app, u, None)).unwrap_or_default(),
                )
            })
        })
        .collect();
    write_response(
        StatusCode::OK,
        UsersById {
            users,
            position: outcome.position,
        },
        outcome.position,
    )
}

/// What a deletion answers.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Deleted {
    /// The deleted user's id.
    pub(crate) deleted: String,
    /// How it was deleted.
    pub(crate) mode: roster_domain::DeleteMode,
    /// Log position of the deletion.
    pub(crate) position: u64,
}

crate::extract::query_params! {
    /// A page of a list, newest first.
    pub(crate) struct PageQuery {
        /// Page size, 1 to 100 (default 25; 100 for sessions).
        #[schemars(range(min = 1, max = 100))]
        limit: Option<u32>,
        /// `next_cursor` of the previous page.
        #[schemars(pattern(crate::extract::CURSOR_PATTERN))]
        cursor: Option<String>,
    }
}

/// A cursor the client passes back: `tag` and a value, base64url.
pub(crate) fn encode_cursor(tag: char, value: impl std::fmt::Display) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{tag}{value}"))
}

/// The value of a cursor this server returned with `tag`.
pub(crate) fn decode_cursor<T: std::str::FromStr>(tag: char, cursor: &str) -> ApiResult<T> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix(tag).and_then(|v| v.parse().ok()))
        .ok_or_else(|| ApiError::invalid_field("cursor", "is not a cursor this server returned"))
}

/// The one answer for a wrong password, an unknown account, or an account without a password.
pub(crate) fn bad_credentials() -> ApiError {
    ApiError::new(
        Code::Unauthorized,
        "The email, username or password is not correct.",
    )
}

/// A user who cannot sign in because of its status: blocked and deactivated users are told so
/// (only after their password was right), deleted ones look unknown.
pub(crate) fn refuse_status(status: Status) -> ApiResult<()> {
    match status {
        Status::Active => Ok(()),
        Status::Blocked => Err(ApiError::new(Code::UserBlocked, "This user is blocked.")),
        Status::Deactivated => Err(ApiError::new(
            Code::UserDeactivated,
            "This user is deactivated.",
        )),
        Status::Deleted => Err(bad_credentials()),
    }
}

/// One try at a credential (a password, a purpose token), counted by the sign-in limiter
/// against a budget `key` and the caller's address.
pub(crate) struct Attempt {
    key: String,
    address: Option<std::net::IpAddr>,
}

impl Attempt {
    /// Takes a try from `key`'s budget, or answers 429 (`what`: "sign-in attempts").
    pub(crate) fn take(app: &AppState, ctx: &Ctx, key: String, what: &str) -> ApiResult<Self> {
        let address = ctx.meta.ip.as_deref().and_then(|ip| ip.parse().ok());
        app.login_limiter()
            .attempt(&key, address)
            .map_err(|seconds| rate_limited(what, seconds))?;
        Ok(Self { key, address })
    }

    /// The credential was right: the budget starts afresh and the address gets its try back.
    pub(crate) fn succeeded(&self, app: &AppState) {
        app.login_limiter().succeeded(&self.key, self.address);
    }
}

/// A 429 for too many attempts at a credential, with `Retry-After`.
fn rate_limited(what: &str, seconds: u64) -> ApiError {
    let mut e = ApiError::new(
        Code::RateLimited,
        format!("Too many {what}; retry in {seconds} s."),
    );
    e.retry_after = Some(seconds);
    e
}

/// Longest password accepted (docs/contract.md §2).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// A new password as the request gave it: 1 to 256 characters.
pub(crate) fn new_password(password: &str) -> ApiResult<roster_domain::Password> {
    let chars = password.chars().count();
    if chars == 0 || chars > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid_field(
            "password",
            format!("must be 1 to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    roster_domain::Password::parse(password).map_err(|m| ApiError::invalid_field("password", m))
}

/// A 503 for a password pool that is full, else a 500.
pub(crate) fn busy(e: roster_core::password::HashError) -> ApiError {
    match e {
        roster_core::password::HashError::Busy => {
            let mut e = ApiError::new(
                Code::Unavailable,
                "The server is busy checking passwords; retry shortly.",
            );
            e.retry_after = Some(1);
            e
        }
        e => ApiError::internal(e),
    }
}

/// The 202 of a task request.
pub(crate) fn accepted(accepted: roster_core::tasks::TaskAccepted) -> Response {
    let position = accepted.position;
    write_response(StatusCode::ACCEPTED, accepted, position)
}

/// Parses `as_of`: a log position, or an RFC 3339 time.
pub(crate) fn parse_as_of(value: &str) -> ApiResult<AsOf> {
    if let Ok(position) = value.parse::<u64>() {
        return Ok(AsOf::Position(position));
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| AsOf::Time(t.timestamp_micros()))
        .map_err(|_| ApiError::invalid_field("as_of", "must be a log position or an RFC 3339 time"))
}

/// The holders of the `identity=provider:subject` values of a query (`None` when it names
/// none), from the log's reservations: exact the moment a link is acknowledged.
pub(crate) async fn identity_holders(
    app: &AppState,
    org: &roster_domain::OrgId,
    query: &crate::extract::QueryParams,
) -> ApiResult<Option<Vec<String>>> {
    let wanted = query.all("identity");
    if wanted.is_empty() {
        return Ok(None);
    }
    let mut holders = Vec::with_capacity(wanted.len());
    for value in wanted {
        let identity = parse_identity_param(&value)?;
        if let Some(holder) =
            roster_core::users::identity_holder(app.core(), org, &identity).await?
        {
            holders.push(holder);
        }
    }
    Ok(Some(holders))
}

/// `provider:subject`, checked as a link's identity is.
pub(crate) fn parse_identity_param(value: &str) -> ApiResult<roster_domain::user::Identity> {
    let (provider, subject) = value
        .split_once(':')
        .ok_or_else(|| ApiError::invalid_field("identity", "must be provider:subject"))?;
    checked_identity(provider, subject).map_err(|m| ApiError::invalid_field("identity", m))
}

/// An identity whose provider is 1–32 of `a-z 0-9 _` and whose subject is 1–256 printable
/// characters.
pub(crate) fn checked_identity(
    provider: &str,
    subject: &str,
) -> Result<roster_domain::user::Identity, String> {
    let provider_ok = (1..=32).contains(&provider.len())
        && provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !provider_ok {
        return Err("provider must be 1 to 32 of a-z, 0-9 and _".into());
    }
    let chars = subject.chars().count();
    if !(1..=256).contains(&chars) || subject.chars().any(char::is_control) {
        return Err("subject must be 1 to 256 printable characters".into());
    }
    Ok(roster_domain::user::Identity {
        provider: provider.to_owned(),
        subject: subject.to_owned(),
    })
}
