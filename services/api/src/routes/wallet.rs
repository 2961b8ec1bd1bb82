//! The virtual wallet (Nakama semantics) and its ledger (docs/contract.md §3).

use std::collections::BTreeMap;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roster_core::users::Item;
use roster_core::{AsOf, Loaded};
use roster_domain::user::{UserCommand, WalletChange};
use roster_domain::{FieldError, User};
use roster_projections::ledger::LedgerItem;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, QueryParams};
use crate::resource::write_response;
use crate::routes::common::{
    OperationDoc, PageQuery, decode_cursor, encode_cursor, execute, parse_user_id,
};
use crate::schemas::SchemaSet;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/users/{id}/wallet",
            post_with(adjust, |op| {
                op.doc("adjustWallet", "wallet", "Change balances")
                    .describe(
                        "The whole changeset applies or none of it: if any balance would go \
                         below 0, 409 `wallet_negative` and nothing changes.",
                    )
                    .written::<WalletAdjustment>(200, "The balances after and before.")
                    .if_match()
                    .errors(&[404, 409])
            }),
        )
        .api_route(
            "/v1/users/{id}/wallet/ledger",
            get_with(ledger, |op| {
                op.doc("getWalletLedger", "wallet", "The wallet's ledger")
                    .describe("One item per change recorded with `update_ledger`, newest first.")
                    .query::<PageQuery>()
                    .json::<LedgerPage>(200, "A page of ledger items.")
                    .errors(&[404])
            }),
        )
}

/// Schemas of this module's request bodies.
pub(crate) fn command_schemas(out: &mut SchemaSet) {
    out.add::<AdjustWallet>();
}

/// Schemas of this module's answers.
pub(crate) fn read_model_schemas(out: &mut SchemaSet) {
    out.add::<LedgerItem>();
    out.add::<LedgerPage>();
    out.add::<WalletAdjustment>();
}

/// `POST /v1/users/{id}/wallet`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdjustWallet {
    /// Change per currency; the whole changeset applies or none of it.
    changeset: BTreeMap<String, i64>,
    /// Recorded with the ledger item.
    #[serde(default)]
    metadata: Map<String, Value>,
    /// Whether to record a ledger item.
    #[serde(default)]
    update_ledger: bool,
}

/// What a wallet change answers.
#[derive(Serialize, JsonSchema)]
pub(crate) struct WalletAdjustment {
    /// Balances after the change.
    updated: BTreeMap<String, i64>,
    /// Balances before it.
    previous: BTreeMap<String, i64>,
    /// Log position of the change.
    position: u64,
}

/// The changeset as the domain takes it: 1 to 100 currencies named by 1 to 64 characters
/// without spaces, and metadata within its size.
fn valid_change(body: &AdjustWallet) -> ApiResult<WalletChange> {
    let mut errors: Vec<FieldError> = body
        .changeset
        .keys()
        .filter(|c| {
            c.is_empty()
                || c.chars().count() > 64
                || c.chars().any(|ch| ch.is_control() || ch.is_whitespace())
        })
        .map(|c| {
            FieldError::new(
                format!("changeset.{c}"),
                "currency names are 1 to 64 characters without spaces",
            )
        })
        .collect();
    if body.changeset.len() > 100 {
        errors.push(FieldError::new(
            "changeset",
            "at most 100 currencies per changeset",
        ));
    }
    if let Err(e) = roster_domain::input::check_object("metadata", &body.metadata) {
        errors.push(e);
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    Ok(WalletChange {
        changeset: body.changeset.clone(),
        metadata: body.metadata.clone(),
        update_ledger: body.update_ledger,
    })
}

async fn adjust(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Json<AdjustWallet>,
) -> ApiResult<Response> {
    let change = valid_change(&body.value)?;
    let changeset = change.changeset.clone();
    let item = Item {
        user_id: parse_user_id(&id)?,
        command: UserCommand::AdjustWallet(change),
        field_prefix: None,
    };
    // Concurrent adjustments of one wallet are serialized and retried inside `execute`:
    // plain contention never reaches the client as a conflict.
    let outcome = execute(&app, &ctx, Some(&body.digest), vec![item]).await?;
    let Some((_, Some(user))) = outcome.users.into_iter().next() else {
        return Err(ApiError::not_found("No user with this id."));
    };
    let previous = previous_wallet(&app, &ctx, &user, &changeset).await?;
    let body = WalletAdjustment {
        updated: user.public.wallet,
        previous,
        position: outcome.position,
    };
    Ok(write_response(StatusCode::OK, body, outcome.position))
}

/// The balances before the adjustment that left `user` as it is. The changeset applied
/// atomically, so they are the balances after minus the changeset — except that a changed
/// currency whose balance before comes out as 0 may or may not have been held before; only then
/// is the wallet read as of the version before.
async fn previous_wallet(
    app: &AppState,
    ctx: &Ctx,
    user: &roster_domain::User,
    changeset: &BTreeMap<String, i64>,
) -> ApiResult<BTreeMap<String, i64>> {
    let wallet = &user.public.wallet;
    if changeset.values().all(|d| *d == 0) {
        // Nothing changed, and nothing was appended.
        return Ok(wallet.clone());
    }
    let unsure = changeset
        .iter()
        .any(|(c, d)| *d != 0 && wallet.get(c).copied() == Some(*d));
    if unsure && user.public.version > 1 {
        let before: Loaded<User> = app
            .core()
            .repo()
            .load_as_of(
                &ctx.org,
                user.id().as_str(),
                AsOf::Version(user.public.version - 1),
            )
            .await?;
        return Ok(before.state.map(|u| u.public.wallet).unwrap_or_default());
    }
    Ok(wallet
        .iter()
        .map(|(c, b)| (c.clone(), b - changeset.get(c).copied().unwrap_or(0)))
        .collect())
}

/// A page of ledger items, newest first.
#[derive(Serialize, JsonSchema)]
pub(crate) struct LedgerPage {
    /// The items.
    items: Vec<LedgerItem>,
    /// Pass as `cursor` for the next (older) page.
    next_cursor: Option<String>,
}

async fn ledger(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.only(PageQuery::NAMES)?;
    let user_id = parse_user_id(&id)?;
    let limit = query.number("limit", 1, 100)?.unwrap_or(25) as usize;
    let cursor = query
        .get("cursor")
        .map(|c| decode_cursor::<u64>('l', c))
        .transpose()?;
    if app
        .models()
        .get(ctx.org.as_str(), user_id.as_str())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("No user with this id."));
    }
    let page = app
        .models()
        .ledger(ctx.org.as_str(), user_id.as_str(), limit, cursor)
        .await?;
    let next_cursor = page.next_cursor.map(|p| encode_cursor('l', p));
    Ok(axum::Json(LedgerPage {
        items: page.items,
        next_cursor,
    })
    .into_response())
}
