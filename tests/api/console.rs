//! The console (docs/console.md): served from the binary with a strict policy, and used in a real
//! headless Chromium — sign in, search and open a user, step back in its history, block it,
//! bulk tasks with live progress, the live event log, projections, settings, organizations, a
//! 375 px phone and the keyboard alone.
//!
//! `ROSTER_CONSOLE_SCREENSHOTS=docs/console` saves a screenshot of each page (`make
//! console-screenshots`).

mod browser;

use fantoccini::key::Key;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use browser::Browser;

/// Every page of the console over [`seed_people`] and one finished export: its fragment, what
/// shows once it has loaded, and its name (for screenshots).
const PAGES: [(&str, &str, &str); 6] = [
    ("#/users", "#users-results td", "users"),
    (
        "#/users/alice",
        "#history-list button[aria-current]",
        "user",
    ),
    ("#/tasks", "#tasks td", "tasks"),
    ("#/events", "#event-log li", "events"),
    ("#/projections", "td[data-label=Name]", "projections"),
    ("#/settings", "#settings-form", "settings"),
];

/// A few users who look like an organization's, some with a history.
async fn seed_people(app: &TestApp) {
    let people = [
        ("alice", "Alice Liddell", "alice@example.com", "admin"),
        ("bob", "Bob Marley", "bob@example.com", "user"),
        ("carol", "Carol Danvers", "carol@example.org", "user"),
        ("dave", "Dave Bowman", "dave@discovery.one", "user"),
        ("erin", "Erin Brockovich", "erin@example.net", "user"),
        ("frank", "Frank Poole", "frank@discovery.one", "user"),
    ];
    for (id, name, email, role) in people {
        app.create_user(&json!({
            "id": id, "username": id, "name": name, "email": email, "role": role,
            "display_name": name.split(' ').next(), "password": "correct horse battery",
            "custom": {"team": "blue", "level": 3}, "metadata": {"plan": "pro"},
        }))
        .await;
    }
    let patch = app
        .patch(
            "/v1/users/alice",
            &json!({"set": {"name": "Alice Pleasance Liddell", "custom.level": 4}}),
        )
        .await;
    assert_eq!(patch.status(), StatusCode::OK);
    let wallet = app
        .post(
            "/v1/users/alice/wallet",
            &json!({"changeset": {"coins": 120, "gems": 5}, "metadata": {"reason": "welcome"}, "update_ledger": true}),
        )
        .await;
    assert_eq!(wallet.status(), StatusCode::OK);
    let session = app
        .post(
            "/v1/sessions",
            &json!({"username": "alice", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(session.status(), StatusCode::CREATED);
    let blocked = app
        .patch("/v1/users/erin/status", &json!({"status": false}))
        .await;
    assert_eq!(blocked.status(), StatusCode::OK);
}

/// The console as a plain HTTP client sees it: the page and its assets from the binary, no
/// credentials needed, a policy without inline scripts or other origins.
#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;
    let page = app.anonymous(Method::GET, "/console").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let etag = page.headers()["etag"].to_str().unwrap().to_owned();
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");

    // Everything the page and its modules load, followed from the page.
    let mut weight = html.len();
    let mut pending: Vec<String> = ["console/console.css", "console/app.js"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for reference in &pending {
        assert!(
            html.contains(reference.as_str()),
            "the page loads {reference}"
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = pending.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let response = app
            .anonymous(Method::GET, &format!("/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.text().await.unwrap();
        weight += body.len();
        if path.ends_with(".js") {
            assert!(content_type.starts_with("text/javascript"), "{path}");
            for import in body.split("from './").skip(1) {
                let name = import.split('\'').next().unwrap();
                pending.push(format!("console/{name}"));
            }
        } else {
            assert!(content_type.starts_with("text/css"), "{path}");
        }
    }
    assert!(seen.len() >= 7, "{seen:?}");
    assert_eq!(weight, roster_api::routes::console::page_weight());
    println!(
        "console page weight: {weight} bytes in {} files",
        seen.len() + 1
    );

    // Revalidation instead of stale scripts; unknown files are problems.
    let again = app
        .anonymous(Method::GET, "/console")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_problem(
        app.anonymous(Method::GET, "/console/secrets.js")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_asks_for_the_key_once_and_keeps_it_in_the_tab_only() {
    let app = spawn_app().await;
    let browser = Browser::open(&app.address).await;
    browser.goto("").await;
    browser.find("#signin").await;
    browser.screenshot("signin").await;

    // A wrong key: the server's problem is shown, and nothing is kept.
    let refused: Value = app
        .anonymous(Method::GET, "/v1/projections")
        .header("authorization", "Bearer not-the-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    browser.type_into("#api-key", "not-the-key").await;
    browser.click("#signin button[type=submit]").await;
    let shown = browser
        .wait_text("#signin .problem", refused["title"].as_str().unwrap())
        .await;
    assert!(
        shown.contains(refused["detail"].as_str().unwrap()),
        "{shown}"
    );
    assert_eq!(
        browser
            .js("return sessionStorage.getItem('roster.key')", vec![])
            .await,
        Value::Null
    );

    browser.type_into("#api-key", &app.api_key).await;
    browser.click("#signin button[type=submit]").await;
    browser.wait_text("#users-total", "0 users").await;
    let kept = browser
        .js(
            "return {session: sessionStorage.getItem('roster.key'), local: localStorage.length, \
             cookie: document.cookie, url: location.href, \
             requests: performance.getEntriesByType('resource').map((e) => e.name)}",
            vec![],
        )
        .await;
    assert_eq!(kept["session"], json!(app.api_key));
    assert_eq!(kept["local"], json!(0));
    assert_eq!(kept["cookie"], json!(""));
    let requests = kept["requests"].as_array().unwrap();
    assert!(
        requests
            .iter()
            .any(|r| r.as_str().unwrap().contains("/v1/users")),
        "{requests:?}"
    );
    for url in requests.iter().chain([&kept["url"]]) {
        assert!(
            !url.as_str().unwrap().contains(&app.api_key),
            "the key is in a URL: {url}"
        );
    }

    // Asked once: a reload of the tab keeps the session.
    browser.client.refresh().await.unwrap();
    browser.find("#users-total").await;
    assert!(browser.all("#signin").await.is_empty());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_open_a_user_step_back_in_its_history_and_block_it() {
    let app = spawn_app().await;
    seed_people(&app).await;
    // Alice is in a team: the user page lists the membership.
    let team = app
        .post("/v1/teams", &json!({"id": "red", "name": "Red"}))
        .await;
    assert_eq!(team.status(), StatusCode::CREATED);
    let joined = app
        .post(
            "/v1/teams/red/memberships",
            &json!({"user_id": "alice", "roles": ["captain"]}),
        )
        .await;
    assert_eq!(joined.status(), StatusCode::CREATED);
    let browser = Browser::open(&app.address).await;
    browser.sign_in(&app.api_key).await;
    browser.wait_text("#users-total", "6 users").await;
    browser.screenshot("users").await;

    // Search as you type.
    browser.type_into("input[name=search]", "ali").await;
    browser.wait_text("#users-total", "1 user").await;
    let rows = browser.all("#users-results tbody tr").await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].text().await.unwrap().contains("alice@example.com"));

    browser.click("a.user-link").await;
    browser.wait_text("h1", "Alice").await;
    browser
        .wait_text("#profile dd[data-field=name]", "Alice Pleasance Liddell")
        .await;
    browser.wait_text("#data pre", "\"level\": 4").await;
    browser.wait_text("#wallet td", "120").await;
    browser.wait_text("#wallet td", "welcome").await;
    browser.wait_text("#sessions td", "active").await;
    browser.wait_text("#memberships td", "captain").await;
    browser
        .wait_text("#activity td", "UserPartiallyUpdated")
        .await;

    // The history: every event of alice, newest selected; step back to the first.
    let events = app.events_of("alice").await;
    browser
        .wait_js(
            &format!(
                "return document.querySelectorAll('#history-list button').length === {}",
                events.len()
            ),
            "one history entry per event",
        )
        .await;
    let first = events[0]["position"].as_u64().unwrap();
    browser.click("#history-list button[data-index='0']").await;
    browser
        .wait_text("#history-position", &format!("As of position {first} "))
        .await;
    let then = browser
        .wait_text("#as-of dd[data-field=name]", "Alice Liddell")
        .await;
    assert!(then.contains("differs from now"), "{then}");
    assert!(!then.contains("Pleasance"));
    browser.screenshot("user").await;
    // One step later with the button: the rename.
    browser.click("#history-later").await;
    let second = events[1]["position"].as_u64().unwrap();
    browser
        .wait_text("#history-position", &format!("As of position {second} "))
        .await;
    browser
        .wait_text("#as-of dd[data-field=name]", "Alice Pleasance Liddell")
        .await;

    // Block: the status changes on the page and on the server, and the session ends.
    browser.click("#cmd-block").await;
    browser.wait_text("h1 .badge", "blocked").await;
    browser.find("#cmd-unblock").await;
    assert_eq!(app.user("alice").await.unwrap()["status"], "blocked");
    browser.wait_text("#activity td", "StatusChanged").await;
    browser
        .wait_text("#sessions td", "user_sessions_ended")
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_commands_change_the_user_and_a_stale_page_is_refused() {
    let app = spawn_app().await;
    seed_people(&app).await;
    let session = app
        .post(
            "/v1/sessions",
            &json!({"username": "dave", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(session.status(), StatusCode::CREATED);
    let browser = Browser::open(&app.address).await;
    browser.sign_in(&app.api_key).await;
    browser.navigate("#/users/dave").await;

    // A session, revoked from its row.
    browser.wait_text("#sessions td", "active").await;
    browser
        .click("#sessions button[aria-label^='Revoke session']")
        .await;
    browser.wait_text("#sessions td", "revoked").await;

    browser.click("#cmd-deactivate").await;
    browser.wait_text("h1 .badge", "deactivated").await;
    browser.click("#cmd-reactivate").await;
    browser.wait_text("h1 .badge", "active").await;
    browser.click("#cmd-email-verification").await;
    browser
        .wait_text("#profile dd[data-field=email_verified]", "true")
        .await;
    browser
        .wait_text("#cmd-email-verification", "Mark email unverified")
        .await;
    let dave = app.user("dave").await.unwrap();
    assert_eq!(dave["email_verified"], true);
    assert_eq!(dave["status"], "active");

    // Someone else changes dave meanwhile: the page's version is stale, the server refuses
    // the command (412) and the console says so instead of acting.
    let behind = app
        .patch("/v1/users/dave", &json!({"set": {"location": "Jupiter"}}))
        .await;
    assert_eq!(behind.status(), StatusCode::OK);
    browser.click("#cmd-block").await;
    browser
        .wait_text("#commands .problem", "version_mismatch")
        .await;
    assert_eq!(app.user("dave").await.unwrap()["status"], "active");

    // A hard delete, confirmed: the user is gone.
    browser.client.refresh().await.unwrap();
    browser
        .wait_text("#profile dd[data-field=location]", "Jupiter")
        .await;
    browser.select("#commands select[name=mode]", "hard").await;
    browser.click("#cmd-delete").await;
    let question = browser
        .wait_text("dialog.confirm[open]", "Delete dave?")
        .await;
    assert!(question.contains("cannot be undone"), "{question}");
    browser.click("dialog.confirm button.danger").await;
    browser.wait_text("h1", "User deleted").await;
    assert!(app.user("dave").await.is_none());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_page_filters_and_pages_both_ways() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("p", 25).await;
    for id in &ids[3..5] {
        app.patch(&format!("/v1/users/{id}/status"), &json!({"status": false}))
            .await;
    }
    app.post("/v1/teams", &json!({"id": "red", "name": "Red"}))
        .await;
    for id in &ids[6..9] {
        let joined = app
            .post("/v1/teams/red/memberships", &json!({"user_id": id}))
            .await;
        assert_eq!(joined.status(), StatusCode::CREATED);
    }
    let browser = Browser::open(&app.address).await;
    browser.sign_in(&app.api_key).await;
    browser.navigate("#/users?limit=10").await;
    browser.wait_text("#users-total", "25 users").await;

    let page_ids = || async {
        let mut out = Vec::new();
        for cell in browser.all("#users-results td[data-label=Id]").await {
            out.push(cell.text().await.unwrap());
        }
        out
    };
    let wait_first = |id: &'static str| {
        let browser = &browser;
        async move {
            browser
                .wait_js(
                    &format!(
                        "const c = document.querySelector('#users-results td[data-label=Id]'); \
                         return !!c && c.textContent === '{id}'"
                    ),
                    &format!("a page starting at {id}"),
                )
                .await
        }
    };
    wait_first("p00000").await;
    assert_eq!(page_ids().await, ids[0..10]);
    browser.click("#next-page").await;
    wait_first("p00010").await;
    assert_eq!(page_ids().await, ids[10..20]);
    browser.click("#next-page").await;
    wait_first("p00020").await;
    assert_eq!(page_ids().await, ids[20..25]);
    assert_eq!(
        browser
            .find("#next-page")
            .await
            .attr("disabled")
            .await
            .unwrap(),
        Some("true".into())
    );
    browser.click("#prev-page").await;
    wait_first("p00010").await;
    assert_eq!(page_ids().await, ids[10..20]);
    browser.click("#prev-page").await;
    wait_first("p00000").await;

    browser.select("select[name=status]", "blocked").await;
    browser.wait_text("#users-total", "2 users").await;
    assert_eq!(page_ids().await, ids[3..5]);
    browser.select("select[name=order]", "desc").await;
    wait_first("p00004").await;
    // The team filter lists the organization's teams and filters by one.
    browser.select("select[name=status]", "").await;
    browser.select("select[name=team]", "red").await;
    browser.wait_text("#users-total", "3 users").await;
    let mut in_team = page_ids().await;
    in_team.sort();
    assert_eq!(in_team, ids[6..9]);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_adjustment_below_zero_shows_the_wallet_negative_problem() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "wally", "name": "Wally"}))
        .await;
    app.post(
        "/v1/users/wally/wallet",
        &json!({"changeset": {"coins": 10}, "update_ledger": true}),
    )
    .await;
    let refused: Value = app
        .post(
            "/v1/users/wally/wallet",
            &json!({"changeset": {"coins": -50}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refused["code"], "wallet_negative");

    let browser = Browser::open(&app.address).await;
    browser.sign_in(&app.api_key).await;
    browser.navigate("#/users/wally").await;
    browser.wait_text("#wallet td", "10").await;
    browser
        .type_into("#wallet-form input[name=amount]", "-50")
        .await;
    browser.click("#wallet-form button[type=submit]").await;
    let shown = browser
        .wait_text("#wallet .problem", refused["title"].as_str().unwrap())
        .await;
    assert!(
        shown.contains(refused["detail"].as_str().unwrap()),
        "{shown}"
    );
    assert!(shown.contains("wallet_negative"), "{shown}");
    assert_eq!(app.user("wally").await.unwrap()["wallet"]["coins"], 10);

    browser
        .type_into("#wallet-form input[name=amount]", "5")
        .await;
    browser.click("#wallet-form button[type=submit]").await;
    browser
        .wait_text("#wallet td[data-label=Balance]", "15")
        .await;
    browser
        .wait_js(
            "return document.querySelectorAll('#wallet table')[1]?.querySelectorAll('tbody tr').length === 2",
            "two ledger items",
        )
        .await;
    assert!(
        browser
            .all("#wallet .problem:not([hidden])")
            .await
            .is_empty(),
        "the error is gone after a good adjustment"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_tasks_from_a_selection_show_live_progress_to_100_percent() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("b", 150).await;
    let browser = Browser::open(&app.address).await;
    browser.sign_in(&app.api_key).await;

    // Select the first page of 100 and deactivate them in bulk.
    browser.navigate("#/users?limit=100").await;
    browser.wait_text("#users-total", "150 users").await;
    browser.click("#select-page").await;
    browser.wait_text("#selected-count", "100 selected").await;
    browser.click("#bulk-deactivate").await;
    browser
        .wait_js(
            "const row = document.querySelector('#tasks tr.highlight'); const t = row?.textContent ?? ''; \
             return t.includes('deactivate_users') && t.includes('completed') && t.includes('100 %') \
               && t.includes('100 done, 0 failed of 100')",
            "the deactivation task at 100 %",
        )
        .await;
    for id in [&ids[0], &ids[99]] {
        assert_eq!(app.user(id).await.unwrap()["status"], "deactivated");
    }
    assert_eq!(app.user(&ids[100]).await.unwrap()["status"], "active");

    // An export started here: its progress comes from the event stream (the row names the
    // last task event it applied), then the file downloads.
    browser.wait_text(".live", "Live").await;
    browser.click("#export-all").await;
    browser
        .wait_js(
            "return [...document.querySelectorAll('#tasks tr[data-task]')].some((row) => { \
               const t = row.textContent; \
               return t.includes('export_users') && t.includes('completed') && t.includes('100 %') \
                 && t.includes('150 done, 0 failed of 150') && t.includes('live: TaskCompleted'); })",
            "the export at 100 %, its last step applied from the event stream",
        )
        .await;
    browser.click("#tasks button[aria-label^='Download']").await;
    browser
        .wait_text("#tasks td[data-label=Actions]", "Downloaded 150 users")
        .await;
    browser.close().await;
}

/// A task that takes a while (a rebuild paced at 200 events a second over 1500 events): the
/// tasks page, opened before it started, shows it appear and move between 0 and 100 % from the
/// event stream alone, and cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_moves_live_and_can_be_canceled() {
    let app = spawn_app_with(tempfile::tempdir().unwrap(), |config| {
        config.rebuild_rate = Some(200)
    })
    .await;
    app.seed_users("r", 1500).await;
    let browser = Browser::open(&app.address).await;
    browser.sign_in(&app.api_key).await;
    browser.navigate("#/tasks").await;
    browser.wait_text(".live", "Live").await;
    let task_id = app
        .start_task("/v1/projections/read_models/rebuild", &json!({}))
        .await;
    let row = format!("#tasks tr[data-task='{task_id}']");
    browser
        .wait_js(
            &format!(
                "const row = document.querySelector(\"{row}\"); \
                 const pct = parseInt(row?.querySelector('.pct')?.textContent ?? '', 10); \
                 return !!row && row.textContent.includes('live: TaskProgressed') && pct > 0 && pct < 100"
            ),
            "the rebuild part way, from a TaskProgressed event",
        )
        .await;
    browser.screenshot("tasks").await;
    browser
        .click(&format!("{row} button[aria-label^='Cancel']"))
        .await;
    browser.wait_text(&row, "canceled").await;
    let task = app.wait_task(&task_id).await;
    assert_eq!(task["status"], "canceled", "{task}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_shows_events_as_they_are_written() {
    let app = spawn_app().await;
    seed_people(&app).await;
    app.create_user(&json!({"id": "early", "name": "Early Bird"}))
        .await;
    let browser = Browser::open(&app.address).await;
    browser.sign_in(&app.api_key).await;
    browser.navigate("#/events").await;
    browser.wait_text(".live", "Live").await;
    // What was written before the page opened is there; what is written now arrives.
    browser.wait_text("#event-log li", "user-early").await;
    app.create_user(&json!({"id": "zed", "name": "Zed"})).await;
    let shown = browser
        .wait_text("#event-log li[data-type=UserCreated]", "user-zed")
        .await;
    assert!(shown.starts_with('#'), "{shown}");
    browser.screenshot("events").await;

    // Only status changes: a new user does not show, a block does.
    browser
        .click("#event-filters input[value=StatusChanged]")
        .await;
    browser.click("#event-filters button[type=submit]").await;
    browser.wait_text(".live", "Live").await;
    app.create_user(&json!({"id": "yan"})).await;
    app.patch("/v1/users/zed/status", &json!({"status": false}))
        .await;
    browser
        .wait_text("#event-log li[data-type=StatusChanged]", "user-zed")
        .await;
    let shown = browser
        .js(
            "return [...document.querySelectorAll('#event-log li')].map((li) => li.dataset.type + ' ' + li.textContent)",
            vec![],
        )
        .await;
    let shown: Vec<&str> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        shown.iter().all(|t| t.starts_with("StatusChanged "))
            && !shown.iter().any(|t| t.contains("user-yan")),
        "only the filtered type: {shown:?}"
    );
    // An entry opens to its data.
    browser
        .click("#event-log li[data-type=StatusChanged] summary")
        .await;
    browser
        .wait_text("#event-log li[data-type=StatusChanged] pre", "\"data\"")
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_settings_and_organizations() {
    let app = spawn_app().await;
    seed_people(&app).await;
    let acme = app
        .in_org("acme", Method::POST, "/v1/users")
        .json(&json!({"id": "wile", "name": "Wile E. Coyote"}))
        .send()
        .await
        .unwrap();
    assert_eq!(acme.status(), StatusCode::CREATED);
    let browser = Browser::open(&app.address).await;
    browser.sign_in(&app.api_key).await;

    // Projections: position, lag, and a rebuild that runs to completion.
    browser.navigate("#/projections").await;
    browser
        .wait_text("td[data-label=Name]", "read_models")
        .await;
    browser.wait_text("td[data-label=Lag]", "0").await;
    browser.click("button[data-rebuild=read_models]").await;
    browser.click("dialog.confirm button.danger").await;
    browser.wait_text("#rebuilds", "100 %").await;
    browser.wait_text("#rebuilds", "completed").await;
    browser.screenshot("projections").await;

    // Settings of the organization.
    browser.navigate("#/settings").await;
    browser
        .select("select[name=enforce_unique_usernames]", "no")
        .await;
    browser.click("#settings-form button[type=submit]").await;
    browser.wait_text("#settings-saved", "Saved").await;
    browser.screenshot("settings").await;
    let settings = json(app.get("/v1/settings").await).await;
    assert_eq!(settings["enforce_unique_usernames"], "no");

    // Another organization: its own users.
    browser.navigate("#/users").await;
    browser.wait_text("#users-total", "6 users").await;
    browser.type_into("#org-input", "acme").await;
    browser.click("#org-form button").await;
    browser.wait_text("#users-total", "1 user").await;
    browser.wait_text("#users-results", "wile").await;
    let settings = json(
        app.in_org("acme", Method::GET, "/v1/settings")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        settings["enforce_unique_usernames"], "app",
        "the change was the default organization's only"
    );

    // A user that is not there: the problem, not a blank page.
    browser.navigate("#/users/nobody-here").await;
    browser.wait_text("h1", "No such user").await;
    browser.wait_text(".problem", "Not found").await;

    // Signing out forgets the key.
    browser.navigate("#/settings").await;
    browser.click("#sign-out").await;
    browser.find("#signin").await;
    assert_eq!(
        browser
            .js("return sessionStorage.getItem('roster.key')", vec![])
            .await,
        Value::Null
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_a_375_px_phone() {
    let app = spawn_app().await;
    seed_people(&app).await;
    let export = app.start_task("/v1/users/export", &json!({})).await;
    app.wait_task(&export).await;
    let browser = Browser::open(&app.address).await;
    browser.resize(375, 812).await;
    browser.goto("").await;
    browser.find("#signin").await;
    browser.assert_fits("the sign-in page", 375).await;
    browser.sign_in(&app.api_key).await;
    for (fragment, ready, name) in PAGES {
        browser.navigate(fragment).await;
        browser.find(ready).await;
        browser.assert_fits(fragment, 375).await;
        browser.screenshot(&format!("phone-{name}")).await;
    }
    // With a selection, the bulk bar and a confirmation dialog fit too.
    browser.navigate("#/users").await;
    browser.click("#select-page").await;
    browser.find("#bulk-delete").await;
    browser
        .assert_fits("the users page with a selection", 375)
        .await;
    browser.click("#bulk-delete").await;
    browser.find("dialog.confirm[open]").await;
    browser.assert_fits("the delete confirmation", 375).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_alone_reaches_every_action() {
    let app = spawn_app().await;
    seed_people(&app).await;
    let export = app.start_task("/v1/users/export", &json!({})).await;
    app.wait_task(&export).await;
    let browser = Browser::open(&app.address).await;
    browser.sign_in(&app.api_key).await;

    // Tab visits every control of each page.
    for (fragment, ready, _) in PAGES {
        browser.navigate(fragment).await;
        browser.find(ready).await;
        let count = browser.mark_focusable().await;
        let seen = browser.tab_through(count + 3).await;
        let missed: Vec<usize> = (0..count).filter(|i| !seen.contains(i)).collect();
        assert!(
            missed.is_empty(),
            "{fragment}: Tab never reaches {}",
            browser.describe(&missed).await
        );
    }

    // Search, open, block and delete with Tab and Enter only.
    browser.navigate("#/users").await;
    browser.find("#users-results td").await;
    browser.reset_focus().await;
    browser.tab_to("input[name=search]", 20).await;
    browser
        .client
        .active_element()
        .await
        .unwrap()
        .send_keys("bob")
        .await
        .unwrap();
    browser.wait_text("#users-total", "1 user").await;
    browser.tab_to("a.user-link", 30).await;
    browser.press(Key::Enter).await;
    browser.wait_text("h1", "Bob").await;
    browser.find("#history-list button[aria-current]").await;
    browser.tab_to("#cmd-block", 30).await;
    browser.press(Key::Enter).await;
    browser.wait_text("h1 .badge", "blocked").await;
    // The focus stays in place across the re-rendered commands; the deletion asks first.
    browser.tab_to("#cmd-delete", 30).await;
    browser.press(Key::Enter).await;
    browser.find("dialog.confirm[open]").await;
    browser.press(Key::Tab).await;
    browser.press(Key::Enter).await;
    browser.wait_text("h1 .badge", "deleted").await;
    assert_eq!(app.user("bob").await.unwrap()["status"], "deleted");

    // A checkbox answers Enter as well as Space: a user's selection on the list.
    browser.navigate("#/users").await;
    browser.find("#users-results td").await;
    browser.reset_focus().await;
    browser.tab_to("input[data-user=alice]", 40).await;
    browser.press(Key::Enter).await;
    browser.wait_text("#selected-count", "1 selected").await;
    browser.close().await;
}
