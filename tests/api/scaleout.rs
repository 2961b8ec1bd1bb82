//! Several servers, one truth (issue 7): servers on one NATS JetStream store, driven
//! concurrently, behave as one server would — uniqueness holds across them, no write is lost,
//! a read on one server waits for a write made on another, and a task's result can be fetched
//! from any of them.

use futures::StreamExt;
use reqwest::StatusCode;
use roster_testsupport::NatsServer;
use serde_json::{Value, json};

use crate::helpers::position;
use crate::nats_helpers::*;

/// Of many concurrent creates of colliding usernames (and emails), spread over two servers,
/// exactly one of each group succeeds: the blind-index secret is the same on both (it comes
/// from the shared store) and the claim is one atomic step of the shared log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_usernames_across_servers_have_one_winner() {
    let nats = NatsServer::shared();
    let ns = namespace("collide");
    let a = spawn_nats_app(&nats.url(), &ns).await;
    let b = spawn_nats_app(&nats.url(), &ns).await;
    let servers = [&a, &b];
    const GROUPS: usize = 12;
    let spellings = [
        "John.Doe{g}",
        "john.doe{g}",
        "JOHN_DOE{g}",
        "johndoe{g}",
        "J-O-H-N-doe{g}",
        "John_Doe_{g}",
    ];
    // (group, server, body): each username group spelled six ways, each email group twice.
    let mut requests = Vec::new();
    for g in 0..GROUPS {
        for (i, spelling) in spellings.iter().enumerate() {
            let username = spelling.replace("{g}", &g.to_string());
            requests.push((g, (g + i) % 2, json!({"username": username})));
        }
        for (i, email) in [
            format!("Mail{g}@Example.com"),
            format!("mail{g}@example.COM"),
        ]
        .into_iter()
        .enumerate()
        {
            requests.push((GROUPS + g, i, json!({"email": email})));
        }
    }
    let outcomes: Vec<_> = futures::stream::iter(requests)
        .map(|(group, server, body)| {
            let server = servers[server];
            async move {
                let r = server.post("/v1/users", &body).await;
                (group, r.status(), r.json::<Value>().await.expect("JSON"))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut winners = vec![0; 2 * GROUPS];
    let mut last = 0;
    for (group, status, body) in &outcomes {
        match *status {
            StatusCode::CREATED => {
                winners[*group] += 1;
                last = last.max(body["position"].as_u64().expect("position"));
            }
            StatusCode::CONFLICT => {
                let code = body["code"].as_str().unwrap_or_default();
                assert!(code == "username_taken" || code == "email_taken", "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        winners.iter().all(|w| *w == 1),
        "one winner per group: {winners:?}"
    );
    // Both servers see every winner through their own read models, by username and email.
    for server in servers {
        let page = server.get_at("/v1/users?limit=100", last).await;
        assert_eq!(page["total"], 2 * GROUPS as u64, "{page}");
        for query in ["usernames=johndoe3", "emails=MAIL5@example.com"] {
            let found = server.get_at(&format!("/v1/users?{query}"), last).await;
            assert_eq!(found["total"], 1, "{query}: {found}");
        }
    }
}

/// Wallet adjustments spread over two servers, all on one user: every acknowledged
/// adjustment is in the final balance, on both servers, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_adjustments_across_servers_lose_nothing() {
    let nats = NatsServer::shared();
    let ns = namespace("wallet");
    let a = spawn_nats_app(&nats.url(), &ns).await;
    let b = spawn_nats_app(&nats.url(), &ns).await;
    let created = a.post("/v1/users", &json!({"id": "spender"})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    // A write on one server is seen on the other once it has caught up to its position
    // (docs/contract.md §1): with JetStream fsyncing before every acknowledgement that takes a
    // moment.
    b.get_at("/v1/users/spender", position(&created)).await;
    const ADJUSTMENTS: usize = 120;
    let outcomes: Vec<(i64, StatusCode, u64)> = futures::stream::iter(0..ADJUSTMENTS)
        .map(|i| {
            let server = if i % 2 == 0 { &a } else { &b };
            let coins = (i % 7) as i64 + 1;
            async move {
                let r = server
                    .post(
                        "/v1/users/spender/wallet",
                        &json!({"changeset": {"coins": coins}, "update_ledger": true}),
                    )
                    .await;
                let status = r.status();
                let at = if status.is_success() { position(&r) } else { 0 };
                (coins, status, at)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let acked: Vec<_> = outcomes.iter().filter(|o| o.1 == StatusCode::OK).collect();
    for (_, status, _) in &outcomes {
        // Losing the optimistic race too often for 10 s is the only allowed failure.
        assert!(
            *status == StatusCode::OK || *status == StatusCode::CONFLICT,
            "{status}"
        );
    }
    assert!(
        acked.len() >= ADJUSTMENTS * 9 / 10,
        "most adjustments succeed: {}",
        acked.len()
    );
    let expected: i64 = acked.iter().map(|o| o.0).sum();
    let last = acked.iter().map(|o| o.2).max().unwrap();
    for server in [&a, &b] {
        let user = server.get_at("/v1/users/spender", last).await;
        assert_eq!(user["wallet"]["coins"], expected, "{user}");
        assert_eq!(user["version"], 1 + acked.len() as u64);
        let ledger = server
            .get_at("/v1/users/spender/wallet/ledger?limit=100", last)
            .await;
        assert!(!ledger["items"].as_array().unwrap().is_empty());
    }
}

/// A read on server B with the position of a write on server A sees that write; a command on
/// B decides on A's latest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_one_server_sees_a_write_on_another() {
    let nats = NatsServer::shared();
    let ns = namespace("ryw");
    let a = spawn_nats_app(&nats.url(), &ns).await;
    let b = spawn_nats_app(&nats.url(), &ns).await;
    for round in 0..20 {
        let id = format!("reader{round}");
        let r = a
            .post(
                "/v1/users",
                &json!({"id": id, "name": format!("Round {round}"), "email": format!("r{round}@example.com")}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let at = position(&r);
        let seen = b.get_at(&format!("/v1/users/{id}"), at).await;
        assert_eq!(seen["name"], format!("Round {round}"));
        assert_eq!(seen["email"], format!("r{round}@example.com"));
        // B changes it at once (its log follows A's write before deciding), A reads it back.
        let r = b
            .request(reqwest::Method::PATCH, &format!("/v1/users/{id}/name"))
            .header("if-match", "\"1\"")
            .json(&json!({"name": format!("Renamed {round}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let at = position(&r);
        let seen = a.get_at(&format!("/v1/users/{id}"), at).await;
        assert_eq!(seen["name"], format!("Renamed {round}"));
        assert_eq!(seen["version"], 2);
    }
}

/// A command on server B right after a create on server A (no read between) finds the user:
/// B syncs its view of the log before it answers "not found" (or any refusal) from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_one_server_finds_a_user_just_created_on_another() {
    let nats = NatsServer::shared();
    let ns = namespace("fresh");
    let a = spawn_nats_app(&nats.url(), &ns).await;
    let b = spawn_nats_app(&nats.url(), &ns).await;
    for round in 0..30 {
        let id = format!("fresh{round}");
        let r = a.post("/v1/users", &json!({"id": id})).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = b
            .request(reqwest::Method::PATCH, &format!("/v1/users/{id}/name"))
            .json(&json!({"name": format!("Named {round}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "round {round}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["version"], 2, "round {round}: {body}");
    }
    // A user that exists nowhere is still not found.
    let r = b
        .request(reqwest::Method::PATCH, "/v1/users/nobody/name")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// An export run by whichever server's worker claims it is fetched from the other server: the
/// file lives in the shared object store, sealed per user as on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_fetched_from_any_server() {
    let nats = NatsServer::shared();
    let ns = namespace("export");
    let a = spawn_nats_app(&nats.url(), &ns).await;
    let b = spawn_nats_app(&nats.url(), &ns).await;
    let users: Vec<Value> = (0..150)
        .map(|i| json!({"id": format!("ex{i:03}"), "name": format!("Exported {i}")}))
        .collect();
    for batch in users.chunks(75) {
        let r = a.post("/v1/users/upsert", &json!({"users": batch})).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = a.post("/v1/users/export", &json!({})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let task_id = r.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = b.wait_task(&task_id).await;
    assert_eq!(task["status"], "completed", "{task}");
    for server in [&b, &a] {
        let r = server.get(&format!("/v1/tasks/{task_id}/result")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON"))
            .collect();
        assert_eq!(lines.len(), 150);
        assert!(
            lines.iter().any(|u| u["name"] == "Exported 42"),
            "{}",
            lines[0]
        );
    }
    // The scratch file is gone from both servers' data directories.
    for server in [&a, &b] {
        let files = crate::helpers::all_files(server.data_dir.path());
        assert!(
            files
                .iter()
                .all(|f| !f.to_string_lossy().contains("ndjson")),
            "{files:?}"
        );
    }
}

/// A session started on one server works on the other: the token signing key comes from the
/// shared store, and the session is in the shared log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_one_server_is_honoured_by_another() {
    let nats = NatsServer::shared();
    let ns = namespace("sessions");
    let a = spawn_nats_app(&nats.url(), &ns).await;
    let b = spawn_nats_app(&nats.url(), &ns).await;
    let r = a
        .post(
            "/v1/users",
            &json!({"id": "roamer", "username": "roamer", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = a
        .client
        .post(format!("{}/v1/sessions", a.address))
        .json(&json!({"username": "roamer", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let at = position(&r);
    let session: Value = r.json().await.unwrap();
    let token = session["access_token"].as_str().expect("access token");
    let r = b
        .client
        .get(format!("{}/v1/account?min_position={at}", b.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "roamer");
}
