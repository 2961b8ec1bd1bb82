//! The wallet (docs/contract.md §3): atomic changesets, never below zero, no overflow, the ledger,
//! and concurrent adjustments that lose nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn adjust(app: &TestApp, id: &str, body: Value) -> (u64, Value) {
    let response = app.post(&format!("/v1/users/{id}/wallet"), &body).await;
    assert_eq!(response.status(), StatusCode::OK, "{body}");
    let at = position(&response);
    let body = json(response).await;
    assert_eq!(body["position"], at);
    (at, body)
}

#[tokio::test]
async fn a_changeset_applies_whole_or_not_at_all() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "w"})).await;
    let (_, first) = adjust(&app, "w", json!({"changeset": {"coins": 10, "gems": 5}})).await;
    assert_eq!(first["updated"], json!({"coins": 10, "gems": 5}));
    assert_eq!(first["previous"], json!({}));
    let (at, second) = adjust(&app, "w", json!({"changeset": {"coins": -3, "gems": 2}})).await;
    assert_eq!(second["updated"], json!({"coins": 7, "gems": 7}));
    assert_eq!(second["previous"], json!({"coins": 10, "gems": 5}));
    let user = json(app.get_at("/v1/users/w", at).await).await;
    assert_eq!(user["wallet"], json!({"coins": 7, "gems": 7}));
    assert_eq!(user["version"], 3);

    let head = app.head().await;
    // One currency would go below zero: nothing changes, not even the other one.
    let problem = assert_problem(
        app.post(
            "/v1/users/w/wallet",
            &json!({"changeset": {"coins": 100, "gems": -8}}),
        )
        .await,
        StatusCode::CONFLICT,
        "wallet_negative",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("gems"),
        "{problem}"
    );
    // A currency the user does not hold cannot go below zero either.
    assert_problem(
        app.post("/v1/users/w/wallet", &json!({"changeset": {"tokens": -1}}))
            .await,
        StatusCode::CONFLICT,
        "wallet_negative",
    )
    .await;
    // Overflow of an i64 balance is refused whole too.
    for changeset in [
        json!({"coins": i64::MAX}),
        json!({"gems": 1, "coins": i64::MAX - 6}),
    ] {
        let response = app
            .post("/v1/users/w/wallet", &json!({"changeset": changeset}))
            .await;
        assert!(
            response.status().is_client_error(),
            "{changeset}: {}",
            response.status()
        );
        let problem = json(response).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("overflow"),
            "{problem}"
        );
    }
    // A value beyond i64 is not a number the wallet takes.
    let response = app
        .request(reqwest::Method::POST, "/v1/users/w/wallet")
        .header("content-type", "application/json")
        .body(r#"{"changeset": {"coins": 9223372036854775808}}"#)
        .send()
        .await
        .unwrap();
    assert_invalid(response).await;
    assert_eq!(
        app.head().await,
        head,
        "no refused change appended an event"
    );
    assert_eq!(
        app.user("w").await.unwrap()["wallet"],
        json!({"coins": 7, "gems": 7})
    );

    // Down to exactly zero is fine; the currency stays with 0.
    let (_, zero) = adjust(&app, "w", json!({"changeset": {"coins": -7}})).await;
    assert_eq!(zero["updated"], json!({"coins": 0, "gems": 7}));
    assert_eq!(zero["previous"], json!({"coins": 7, "gems": 7}));
    // A currency held at 0 is still held: `previous` is the last `updated`.
    let (_, from_zero) = adjust(&app, "w", json!({"changeset": {"coins": 2, "gems": -2}})).await;
    assert_eq!(from_zero["previous"], json!({"coins": 0, "gems": 7}));
    assert_eq!(from_zero["updated"], json!({"coins": 2, "gems": 5}));
    let (_, back) = adjust(&app, "w", json!({"changeset": {"coins": -2, "gems": 2}})).await;
    assert_eq!(back["previous"], from_zero["updated"]);
    // A changeset of zeros changes nothing and appends nothing.
    let head = app.head().await;
    let (at, same) = adjust(
        &app,
        "w",
        json!({"changeset": {"gems": 0, "coins": 0, "new": 0}}),
    )
    .await;
    assert_eq!(same["updated"], json!({"coins": 0, "gems": 7}));
    assert_eq!(same["previous"], same["updated"]);
    assert_eq!(at, head);
    assert_eq!(app.head().await, head);
    // Up to exactly i64::MAX is fine.
    let (_, max) = adjust(&app, "w", json!({"changeset": {"gems": i64::MAX - 7}})).await;
    assert_eq!(max["updated"]["gems"], i64::MAX);
}

#[tokio::test]
async fn bad_wallet_requests_are_refused() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "w"})).await;
    let head = app.head().await;
    for body in [
        json!({}),
        json!({"changeset": []}),
        json!({"changeset": {"coins": 1.5}}),
        json!({"changeset": {"coins": "1"}}),
        json!({"changeset": {"coins": 1}, "extra": true}),
        json!({"changeset": {"coins": 1}, "update_ledger": "yes"}),
        json!({"changeset": {"coins": 1}, "metadata": [1]}),
        json!({"changeset": {"two words": 1}}),
        json!({"changeset": {"": 1}}),
        json!({"changeset": {"coins": 1}, "metadata": {"big": "x".repeat(17 * 1024)}}),
    ] {
        let response = app.post("/v1/users/w/wallet", &body).await;
        assert_invalid(response).await;
    }
    assert_problem(
        app.post(
            "/v1/users/nobody/wallet",
            &json!({"changeset": {"coins": 1}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        app.get("/v1/users/nobody/wallet/ledger").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for query in ["limit=0", "limit=101", "cursor=nonsense", "limit=x"] {
        assert_problem(
            app.get(&format!("/v1/users/w/wallet/ledger?{query}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    assert_problem(
        app.get("/v1/users/w/wallet/ledger?page=2").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_eq!(app.head().await, head);
    // A deleted user's wallet cannot change.
    assert_eq!(app.delete("/v1/users/w").await.status(), StatusCode::OK);
    assert_problem(
        app.post("/v1/users/w/wallet", &json!({"changeset": {"coins": 1}}))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
}

#[tokio::test]
async fn the_ledger_records_only_when_asked_and_pages_newest_first() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "l"})).await;
    app.create_user(&json!({"id": "other"})).await;
    let mut last = 0;
    let mut recorded = Vec::new();
    for i in 0..11i64 {
        let ledger = i % 3 != 2;
        let (at, _) = adjust(
            &app,
            "l",
            json!({"changeset": {"coins": i + 1}, "metadata": {"n": i, "reason": format!("r{i}")}, "update_ledger": ledger}),
        )
        .await;
        if ledger {
            recorded.push(i);
        }
        // Another user's ledger items never show.
        adjust(
            &app,
            "other",
            json!({"changeset": {"coins": 1}, "update_ledger": true}),
        )
        .await;
        last = at;
    }
    // `update_ledger` defaults to false.
    let (at, _) = adjust(
        &app,
        "l",
        json!({"changeset": {"coins": 1}, "metadata": {"n": 99}}),
    )
    .await;
    assert!(at > last);

    let everything = json(app.get_at("/v1/users/l/wallet/ledger?limit=100", at).await).await;
    let items = everything["items"].as_array().unwrap();
    assert_eq!(everything["next_cursor"], Value::Null);
    let ns: Vec<i64> = items
        .iter()
        .map(|i| i["metadata"]["n"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = recorded.iter().rev().copied().collect();
    assert_eq!(ns, expected, "only update_ledger items, newest first");
    for item in items {
        let n = item["metadata"]["n"].as_i64().unwrap();
        assert_eq!(item["changeset"], json!({"coins": n + 1}));
        assert_eq!(item["metadata"]["reason"], format!("r{n}"));
        assert_eq!(item["id"].as_str().unwrap().len(), 26, "a ULID: {item}");
        assert!(item["create_time"].as_str().unwrap().ends_with('Z'));
    }
    let times: Vec<&str> = items
        .iter()
        .map(|i| i["create_time"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    // The ledger item ids are the events' ids.
    let event_ids: Vec<Value> = app
        .events_of("l")
        .await
        .into_iter()
        .filter(|e| e["type"] == "WalletAdjusted" && e["data"]["update_ledger"] == true)
        .map(|e| e["id"].clone())
        .rev()
        .collect();
    let item_ids: Vec<Value> = items.iter().map(|i| i["id"].clone()).collect();
    assert_eq!(item_ids, event_ids);

    // Paging with limit and cursor reaches every item exactly once, in order.
    for limit in [1, 3, 7, 8] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/users/l/wallet/ledger?limit={limit}&cursor={c}"),
                None => format!("/v1/users/l/wallet/ledger?limit={limit}"),
            };
            let response = app.get(&path).await;
            assert_eq!(response.status(), StatusCode::OK);
            let page = json(response).await;
            let page_items = page["items"].as_array().unwrap();
            assert!(page_items.len() <= limit);
            seen.extend(page_items.iter().cloned());
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, *items, "limit {limit}");
        assert_eq!(
            pages,
            items.len().div_ceil(limit),
            "limit {limit}: no empty last page"
        );
    }
    // Default page size is 25.
    let default = json(app.get("/v1/users/other/wallet/ledger").await).await;
    assert_eq!(default["items"].as_array().unwrap().len(), 11);
}

#[tokio::test]
async fn concurrent_adjustments_of_one_wallet_lose_nothing() {
    const N: usize = 100;
    let app = spawn_app().await;
    app.create_user(&json!({"id": "hot"})).await;
    let (seeded, _) = adjust(&app, "hot", json!({"changeset": {"coins": 50}})).await;
    // Every fifth request takes one away: at most 20 of them, so never below 30 — safe in any
    // order.
    let change = |i: usize| if i % 5 == 4 { -1i64 } else { 1 };
    let requests = (0..N).map(|i| {
        let app = &app;
        async move {
            let response = app
                .post(
                    "/v1/users/hot/wallet",
                    &json!({"changeset": {"coins": change(i)}, "update_ledger": i % 2 == 0}),
                )
                .await;
            let status = response.status();
            let body = json(response).await;
            (i, status, body)
        }
    });
    let results = futures::future::join_all(requests).await;
    let mut transitions = Vec::new();
    for (i, status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "request {i}: {body}");
        let before = body["previous"]["coins"].as_i64().unwrap();
        let after = body["updated"]["coins"].as_i64().unwrap();
        assert_eq!(after - before, change(*i), "request {i}: {body}");
        transitions.push((body["position"].as_u64().unwrap(), before, after));
    }
    // Serialized: in log order, each request starts where the one before ended.
    transitions.sort();
    let mut balance = 50;
    for (at, before, after) in &transitions {
        assert_eq!(*before, balance, "at {at}");
        balance = *after;
    }
    let expected = 50 + (0..N).map(change).sum::<i64>();
    assert_eq!(balance, expected);
    assert_eq!(app.user("hot").await.unwrap()["wallet"]["coins"], expected);
    let adjusted = app
        .events_of("hot")
        .await
        .into_iter()
        .filter(|e| e["type"] == "WalletAdjusted" && e["position"].as_u64().unwrap() > seeded)
        .count();
    assert_eq!(adjusted, N, "exactly one event per request");
    let ledger = json(app.get("/v1/users/hot/wallet/ledger?limit=100").await).await;
    assert_eq!(ledger["items"].as_array().unwrap().len(), N / 2);
}

#[tokio::test]
async fn concurrent_debits_past_zero_are_refused_exactly_when_they_would_go_negative() {
    const N: usize = 60;
    const FUNDS: i64 = 20;
    let app = spawn_app().await;
    app.create_user(&json!({"id": "thin"})).await;
    adjust(&app, "thin", json!({"changeset": {"coins": FUNDS}})).await;
    let requests = (0..N).map(|_| {
        let app = &app;
        async move {
            let response = app
                .post(
                    "/v1/users/thin/wallet",
                    &json!({"changeset": {"coins": -1}}),
                )
                .await;
            let status = response.status();
            (status, json(response).await)
        }
    });
    let results = futures::future::join_all(requests).await;
    let mut balances = Vec::new();
    for (status, body) in &results {
        match *status {
            StatusCode::OK => balances.push(body["updated"]["coins"].as_i64().unwrap()),
            StatusCode::CONFLICT => assert_eq!(body["code"], "wallet_negative", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    // Each debit that landed took the balance one lower; every other one found it at zero.
    balances.sort_unstable();
    assert_eq!(balances, (0..FUNDS).collect::<Vec<_>>());
    assert_eq!(app.user("thin").await.unwrap()["wallet"]["coins"], 0);
    let adjusted = app
        .events_of("thin")
        .await
        .into_iter()
        .filter(|e| e["type"] == "WalletAdjusted")
        .count();
    assert_eq!(
        adjusted,
        FUNDS as usize + 1,
        "the funding and one event per debit"
    );
}
