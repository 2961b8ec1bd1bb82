//! A user's history (docs/contract.md §3, §6): activity log, raw events, `as_of`, export.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const AGENT: &str = "HistoryAgent/2.1";

/// Sends a write with a recognisable User-Agent; returns its position.
async fn write(app: &TestApp, method: Method, path: &str, body: Value) -> u64 {
    let response = app
        .request(method.clone(), path)
        .header("user-agent", AGENT)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{method} {path}: {}",
        response.status()
    );
    position(&response)
}

/// A user with one event of many kinds, and another user's events interleaved. Returns the
/// positions of the user's writes, in order.
async fn busy_user(app: &TestApp) -> Vec<u64> {
    let mut positions = Vec::new();
    let steps: Vec<(Method, &str, Value)> = vec![
        (
            Method::POST,
            "/v1/users",
            json!({"id": "hist", "name": "First", "email": "h@example.com"}),
        ),
        (
            Method::PATCH,
            "/v1/users/hist",
            json!({"set": {"name": "Second"}}),
        ),
        (
            Method::PATCH,
            "/v1/users/hist/email",
            json!({"email": "h2@example.com"}),
        ),
        (
            Method::POST,
            "/v1/users/hist/wallet",
            json!({"changeset": {"coins": 3}, "update_ledger": true, "metadata": {"k": 1}}),
        ),
        (
            Method::PATCH,
            "/v1/users/hist/prefs",
            json!({"prefs": {"a": 1}}),
        ),
        (
            Method::PATCH,
            "/v1/users/hist/status",
            json!({"status": false}),
        ),
        (
            Method::PATCH,
            "/v1/users/hist/status",
            json!({"status": true}),
        ),
        (Method::POST, "/v1/users/hist/deactivate", json!({})),
        (Method::POST, "/v1/users/hist/reactivate", json!({})),
        (
            Method::PATCH,
            "/v1/users/hist/name",
            json!({"name": "Third"}),
        ),
        (
            Method::PATCH,
            "/v1/users/hist/phone",
            json!({"number": "+14155550100"}),
        ),
    ];
    for (i, (method, path, body)) in steps.into_iter().enumerate() {
        positions.push(write(app, method, path, body).await);
        let other = if i == 0 {
            write(app, Method::POST, "/v1/users", json!({"id": "noise"})).await
        } else {
            write(
                app,
                Method::PATCH,
                "/v1/users/noise",
                json!({"set": {"custom.i": i}}),
            )
            .await
        };
        assert!(other > *positions.last().unwrap());
    }
    positions
}

const TYPES: &[&str] = &[
    "UserCreated",
    "UserPartiallyUpdated",
    "EmailChanged",
    "WalletAdjusted",
    "PrefsUpdated",
    "StatusChanged",
    "StatusChanged",
    "UserDeactivated",
    "UserReactivated",
    "NameChanged",
    "PhoneChanged",
];

#[tokio::test]
async fn logs_list_every_event_newest_first_and_page_through_all() {
    let app = spawn_app().await;
    let positions = busy_user(&app).await;
    let response = app.get("/v1/users/hist/logs?limit=100").await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = json(response).await;
    assert_eq!(page["next_cursor"], Value::Null);
    let items = page["items"].as_array().unwrap().clone();
    let types: Vec<&str> = items.iter().map(|i| i["event"].as_str().unwrap()).collect();
    let expected: Vec<&str> = TYPES.iter().rev().copied().collect();
    assert_eq!(types, expected, "one entry per event, newest first");
    let item_positions: Vec<u64> = items
        .iter()
        .map(|i| i["position"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = positions.iter().rev().copied().collect();
    assert_eq!(item_positions, expected);
    let events = app.events_of("hist").await;
    for (item, event) in items.iter().zip(events.iter().rev()) {
        assert_eq!(item["time"], event["time"]);
        assert!(item["time"].as_str().unwrap().ends_with('Z'));
        let actor = item["actor"].as_str().unwrap();
        assert!(actor.starts_with("server:") && actor.len() > 7, "{actor}");
        assert_eq!(item["ip"], "127.0.0.1");
        assert_eq!(item["user_agent"], AGENT);
    }
    let times: Vec<&str> = items.iter().map(|i| i["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // Default page size and paging with a cursor: every entry exactly once, in order.
    let default = json(app.get("/v1/users/hist/logs").await).await;
    assert_eq!(
        default["items"].as_array().unwrap().len(),
        items.len().min(25)
    );
    for limit in [1, 2, 4, 11, 12] {
        let mut seen = Vec::new();
        let mut path = format!("/v1/users/hist/logs?limit={limit}");
        loop {
            let response = app.get(&path).await;
            assert_eq!(response.status(), StatusCode::OK);
            let page = json(response).await;
            let got = page["items"].as_array().unwrap();
            assert!(
                !got.is_empty() && got.len() <= limit,
                "limit {limit}: {page}"
            );
            seen.extend(got.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => path = format!("/v1/users/hist/logs?limit={limit}&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen, items, "limit {limit}");
    }
    for query in ["limit=0", "limit=101", "cursor=zzz"] {
        assert_problem(
            app.get(&format!("/v1/users/hist/logs?{query}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    assert_problem(
        app.get("/v1/users/nobody/logs").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn events_come_in_order_with_next_after() {
    let app = spawn_app().await;
    let positions = busy_user(&app).await;
    let all = json(app.get("/v1/users/hist/events").await).await;
    assert_eq!(all["next_after"], Value::Null);
    let events = all["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), TYPES.len());
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["type"], TYPES[i]);
        assert_eq!(event["version"], i + 1);
        assert_eq!(event["position"], positions[i]);
        assert_eq!(event["stream"], "user-hist");
        assert_eq!(event["organization_id"], "default");
        assert_eq!(
            event["schema_version"],
            <roster_domain::UserEvent as roster_domain::EventSet>::version_of(TYPES[i]).unwrap()
        );
        assert_eq!(event["id"].as_str().unwrap().len(), 26, "ULID");
        assert!(event["time"].as_str().unwrap().ends_with('Z'));
        assert!(event["data"].is_object());
        let meta = &event["metadata"];
        assert!(
            meta["actor"].as_str().unwrap().starts_with("server:"),
            "{meta}"
        );
        assert!(meta["correlation_id"].is_string(), "{meta}");
        assert_eq!(meta["user_agent"], AGENT);
    }
    assert_eq!(events[0]["data"]["profile"]["name"], "First");
    assert_eq!(events[1]["data"]["set"], json!({"name": "Second"}));
    assert_eq!(events[2]["data"]["email"], "h2@example.com");
    assert_eq!(events[3]["data"]["changeset"], json!({"coins": 3}));
    assert_eq!(events[5]["data"], json!({"status": "blocked"}));

    // Paging by `after` (a stream version) and `limit`.
    for limit in [1, 3, 5, 11] {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = json(
                app.get(&format!(
                    "/v1/users/hist/events?after={after}&limit={limit}"
                ))
                .await,
            )
            .await;
            let got = page["events"].as_array().unwrap();
            assert!(got.len() <= limit);
            seen.extend(got.iter().cloned());
            match page["next_after"].as_u64() {
                Some(next) => {
                    assert_eq!(next, got.last().unwrap()["version"].as_u64().unwrap());
                    after = next;
                }
                None => break,
            }
        }
        assert_eq!(seen, events, "limit {limit}");
    }
    let tail = json(app.get("/v1/users/hist/events?after=9").await).await;
    let types: Vec<&str> = tail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["NameChanged", "PhoneChanged"]);
    let beyond = json(app.get("/v1/users/hist/events?after=100").await).await;
    assert_eq!(beyond, json!({"events": [], "next_after": null}));
    for query in ["limit=0", "limit=1001", "after=-1", "after=x"] {
        assert_problem(
            app.get(&format!("/v1/users/hist/events?{query}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    assert_problem(
        app.get("/v1/users/nobody/events").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn as_of_a_position_or_a_time_gives_the_user_as_it_was() {
    let app = spawn_app().await;
    let positions = busy_user(&app).await;
    let events = app.events_of("hist").await;
    let now = app.user("hist").await.unwrap();
    assert_eq!(now["name"], "Third");

    let at = |p: u64| format!("/v1/users/hist?as_of={p}");
    // Just before the rename, and at it.
    let before = json(app.get(&at(positions[1] - 1)).await).await;
    assert_eq!(
        (before["name"].as_str(), before["version"].as_u64()),
        (Some("First"), Some(1))
    );
    let renamed = app.get(&at(positions[1])).await;
    assert_eq!(etag(&renamed), "\"2\"");
    let renamed = json(renamed).await;
    assert_eq!(
        (renamed["name"].as_str(), renamed["email"].as_str()),
        (Some("Second"), Some("h@example.com"))
    );
    // Blocked, then deactivated, as it was.
    assert_eq!(
        json(app.get(&at(positions[5])).await).await["status"],
        "blocked"
    );
    let deactivated = json(app.get(&at(positions[7])).await).await;
    assert_eq!(deactivated["status"], "deactivated");
    assert_eq!(deactivated["wallet"], json!({"coins": 3}));
    assert_eq!(deactivated["prefs"], json!({"a": 1}));
    // The last position is the user now.
    let latest = json(app.get(&at(*positions.last().unwrap())).await).await;
    assert_eq!(latest, now);
    assert_eq!(json(app.get(&at(u64::MAX)).await).await, now);
    // Before the user existed: 404.
    assert_problem(
        app.get(&at(positions[0] - 1)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // By time: each event's own time shows the user right after it.
    for (i, event) in events.iter().enumerate() {
        let time = event["time"].as_str().unwrap();
        let user = json(app.get(&format!("/v1/users/hist?as_of={time}")).await).await;
        assert_eq!(user["version"], i + 1, "as_of={time}");
    }
    let created: chrono_free::Micros = events[0]["time"].as_str().unwrap().parse().unwrap();
    let earlier = created.minus_one();
    assert_problem(
        app.get(&format!("/v1/users/hist?as_of={earlier}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Offsets other than Z are times too.
    let renamed_time = events[1]["time"].as_str().unwrap();
    let shifted = chrono_free::shift_to_plus_two(renamed_time);
    let user = json(
        app.get(&format!(
            "/v1/users/hist?as_of={}",
            shifted.replace('+', "%2B")
        ))
        .await,
    )
    .await;
    assert_eq!(user["name"], "Second", "{shifted}");
    for bad in ["yesterday", "2024-13-01T00:00:00Z", "-5"] {
        let response = app.get(&format!("/v1/users/hist?as_of={bad}")).await;
        let problem = assert_invalid(response).await;
        assert_eq!(fields(&problem), ["as_of"]);
    }
}

/// Tiny RFC 3339 helpers, so the tests need no date crate.
mod chrono_free {
    /// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` kept as text with its fraction in microseconds.
    pub struct Micros {
        prefix: String,
        micros: u32,
    }

    impl std::str::FromStr for Micros {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let s = s.strip_suffix('Z').ok_or("UTC only")?;
            let (prefix, frac) = s.split_once('.').unwrap_or((s, "0"));
            let digits = format!("{frac:0<6}");
            Ok(Micros {
                prefix: prefix.to_owned(),
                micros: digits[..6].parse().map_err(|_| "fraction")?,
            })
        }
    }

    impl Micros {
        /// One microsecond earlier (events are never at a whole second with 0 µs in practice;
        /// if one is, this gives the previous second's end).
        pub fn minus_one(&self) -> String {
            if self.micros > 0 {
                return format!("{}.{:06}Z", self.prefix, self.micros - 1);
            }
            let seconds: u32 = self.prefix[17..19].parse().unwrap();
            assert!(seconds > 0, "edge case not handled: {}", self.prefix);
            format!("{}{:02}.999999Z", &self.prefix[..17], seconds - 1)
        }
    }

    /// The same instant written with a `+02:00` offset (hour + 2, same day assumed < 22h).
    pub fn shift_to_plus_two(utc: &str) -> String {
        let hour: u32 = utc[11..13].parse().unwrap();
        if hour >= 22 {
            // Crossing midnight needs a calendar; the Z form is as good a test then.
            return utc.to_owned();
        }
        format!(
            "{}{:02}{}+02:00",
            &utc[..11],
            hour + 2,
            utc[13..].trim_end_matches('Z')
        )
    }
}

#[tokio::test]
async fn export_holds_profile_ledger_logs_and_events() {
    let app = spawn_app().await;
    busy_user(&app).await;
    let head = app.head().await;
    let response = app.get_at("/v1/users/hist/export", head).await;
    assert_eq!(response.status(), StatusCode::OK);
    let export = json(response).await;
    let now = app.user("hist").await.unwrap();
    assert_eq!(export["user"], now, "the profile as it is now");
    let ledger = export["wallet_ledger"].as_array().unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["metadata"], json!({"k": 1}));
    assert_eq!(ledger[0]["changeset"], json!({"coins": 3}));
    let events = app.events_of("hist").await;
    assert_eq!(export["events"], json!(events));
    let logs = json(app.get("/v1/users/hist/logs?limit=100").await).await;
    assert_eq!(export["logs"], logs["items"]);
    assert_eq!(export["sessions"], json!([]));
    assert_problem(
        app.get("/v1/users/nobody/export").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        app.get("/v1/users/hist/export?full=1").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

/// After a hard deletion the id may be taken again; the new user's history (logs, events,
/// export) is its own: it starts at the event that took the id again, and holds nothing of
/// the earlier holder. The deleted holder's history stays readable (erased) until then.
#[tokio::test]
async fn a_re_created_id_has_a_history_of_its_own() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "reused", "name": "Earlier Holder"}))
        .await;
    app.patch(
        "/v1/users/reused",
        &json!({"set": {"name": "Still Earlier"}}),
    )
    .await;
    let response = app.delete("/v1/users/reused?mode=hard").await;
    assert_eq!(response.status(), StatusCode::OK);
    let before = json(app.get("/v1/users/reused/events").await).await;
    let types: Vec<&str> = before["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["UserCreated", "UserPartiallyUpdated", "UserDeleted"]
    );

    let created = app
        .create_user(&json!({"id": "reused", "name": "New Holder"}))
        .await;
    let position = created["position"].as_u64().unwrap();
    app.patch(
        "/v1/users/reused",
        &json!({"set": {"name": "New Holder 2"}}),
    )
    .await;
    let events = json(app.get("/v1/users/reused/events").await).await;
    let events = events["events"].as_array().unwrap().clone();
    let summary: Vec<(&str, u64)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["version"].as_u64().unwrap()))
        .collect();
    assert_eq!(summary, [("UserCreated", 4), ("UserPartiallyUpdated", 5)]);
    assert!(events[0]["position"].as_u64().unwrap() >= position);
    // Paging with `after` below the new beginning still starts there.
    let page = json(app.get("/v1/users/reused/events?after=1&limit=1").await).await;
    assert_eq!(page["events"][0]["version"], 4);
    assert_eq!(page["next_after"], 4);

    let logs = json(app.get("/v1/users/reused/logs?limit=1").await).await;
    assert_eq!(logs["items"][0]["event"], "UserPartiallyUpdated");
    let cursor = logs["next_cursor"].as_str().unwrap().to_owned();
    let older = json(
        app.get(&format!("/v1/users/reused/logs?limit=10&cursor={cursor}"))
            .await,
    )
    .await;
    let items = older["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{older}");
    assert_eq!(items[0]["event"], "UserCreated");
    assert_eq!(older["next_cursor"], Value::Null);

    let head = app.head().await;
    let export = json(app.get_at("/v1/users/reused/export", head).await).await;
    assert_eq!(export["events"], json!(events));
    assert_eq!(export["logs"].as_array().unwrap().len(), 2);
    assert!(!export.to_string().contains("Earlier"), "{export}");
}
