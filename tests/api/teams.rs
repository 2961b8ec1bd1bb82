//! Teams and memberships (docs/teams.md), and team-level unique usernames under concurrency.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

impl TestApp {
    async fn create_team(&self, id: &str, name: &str) -> Value {
        let response = self
            .post("/v1/teams", &json!({"id": id, "name": name}))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        json(response).await
    }

    async fn join(&self, team: &str, user: &str) -> reqwest::Response {
        self.post(
            &format!("/v1/teams/{team}/memberships"),
            &json!({"user_id": user}),
        )
        .await
    }

    async fn set_usernames(&self, rule: &str) {
        let response = self
            .patch("/v1/settings", &json!({"enforce_unique_usernames": rule}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn teams_memberships_and_their_views() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "ann", "username": "ann"}))
        .await;
    app.create_user(&json!({"id": "ben", "username": "ben"}))
        .await;
    let team = app.create_team("red", "Red Team").await;
    assert_eq!(
        (team["total"].as_u64(), team["version"].as_u64()),
        (Some(0), Some(1))
    );
    let head = app.head().await;
    for bad in [
        json!({"name": ""}),
        json!({"name": "a\u{7}b"}),
        json!({"id": "-x", "name": "X"}),
        json!({"name": "x".repeat(129)}),
    ] {
        assert_invalid(app.post("/v1/teams", &bad).await).await;
    }
    assert_problem(
        app.post("/v1/teams", &json!({"id": "red", "name": "Again"}))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(app.head().await, head, "refused commands append nothing");

    let response = app
        .post(
            "/v1/teams/red/memberships",
            &json!({"user_id": "ann", "roles": ["owner", "owner", "admin"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let membership = json(response).await;
    assert_eq!(membership["roles"], json!(["owner", "admin"]));
    assert_eq!(membership["team_id"], "red");
    let membership_id = membership["id"].as_str().unwrap().to_owned();
    assert_problem(
        app.join("red", "ann").await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_problem(
        app.join("red", "nobody").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        app.join("blue", "ben").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let bad_roles = app
        .post(
            "/v1/teams/red/memberships",
            &json!({"user_id": "ben", "roles": ["a b"]}),
        )
        .await;
    assert_eq!(fields(&assert_invalid(bad_roles).await), ["roles[0]"]);
    assert_eq!(app.join("red", "ben").await.status(), StatusCode::CREATED);

    // Every view agrees.
    let ann = app.user("ann").await.unwrap();
    assert_eq!(ann["teams"], json!(["red"]));
    assert_eq!(app.list_ids("team=red").await, ["ann", "ben"]);
    assert_eq!(app.list("team=red").await["total"], 2);
    assert!(app.list_ids("team=blue").await.is_empty());
    let members = json(app.get("/v1/teams/red/memberships?limit=1").await).await;
    assert_eq!(
        (
            members["total"].as_u64(),
            members["memberships"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );
    let cursor = members["next_cursor"].as_str().unwrap();
    let rest = json(
        app.get(&format!("/v1/teams/red/memberships?cursor={cursor}"))
            .await,
    )
    .await;
    assert_eq!(rest["memberships"][0]["user_id"], "ben");
    assert!(rest["next_cursor"].is_null());
    let of_ann = json(app.get("/v1/users/ann/memberships").await).await;
    assert_eq!(
        (
            of_ann["total"].as_u64(),
            of_ann["memberships"][0]["id"].as_str()
        ),
        (Some(1), Some(membership_id.as_str()))
    );
    assert_eq!(json(app.get("/v1/teams/red").await).await["total"], 2);

    // Roles, rename, listing, history.
    let path = format!("/v1/teams/red/memberships/{membership_id}");
    let changed = json(app.patch(&path, &json!({"roles": ["member"]})).await).await;
    assert_eq!(changed["roles"], json!(["member"]));
    let before_rename = app.head().await;
    let renamed = app
        .patch("/v1/teams/red", &json!({"name": "Crimson Squad"}))
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let stale = app
        .request(Method::PATCH, "/v1/teams/red")
        .header("if-match", "\"1\"")
        .json(&json!({"name": "Stale"}))
        .send()
        .await
        .unwrap();
    assert_problem(stale, StatusCode::PRECONDITION_FAILED, "version_mismatch").await;
    let then = json(
        app.get(&format!("/v1/teams/red?as_of={before_rename}"))
            .await,
    )
    .await;
    assert_eq!(then["name"], "Red Team");
    app.create_team("blue", "Blue").await;
    let found = json(app.get("/v1/teams?search=squ").await).await;
    assert_eq!(
        (found["total"].as_u64(), found["teams"][0]["id"].as_str()),
        (Some(1), Some("red"))
    );
    let page = json(app.get("/v1/teams?limit=1").await).await;
    assert_eq!(
        (page["total"].as_u64(), page["teams"][0]["id"].as_str()),
        (Some(2), Some("blue"))
    );
    let events = json(app.get("/v1/teams/red/events").await).await;
    let types: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "TeamCreated",
            "MemberAdded",
            "MemberAdded",
            "MemberRolesChanged",
            "TeamRenamed"
        ]
    );

    // Ending one membership, then the team.
    let ended = app.delete(&path).await;
    assert_eq!(json(ended).await["deleted"], membership_id.as_str());
    assert_eq!(app.user("ann").await.unwrap()["teams"], json!([]));
    assert_problem(app.delete(&path).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(json(app.get("/v1/teams/red").await).await["total"], 1);
    let deleted = json(app.delete("/v1/teams/red").await).await;
    assert_eq!(deleted["deleted"], "red");
    assert_problem(
        app.get("/v1/teams/red").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(app.user("ben").await.unwrap()["teams"], json!([]));
    assert!(app.list_ids("team=red").await.is_empty());
    // The id may be taken again: a new team, without the old members.
    let again = app.create_team("red", "Red again").await;
    assert_eq!(again["total"], 0);
}

#[tokio::test]
async fn deleting_a_big_team_ends_every_membership_and_users_leave_when_pruned() {
    let app = spawn_app().await;
    let (ids, _) = app.seed_users("m", 230).await;
    app.create_team("big", "Big").await;
    for id in &ids {
        assert_eq!(app.join("big", id).await.status(), StatusCode::CREATED);
    }
    assert_eq!(json(app.get("/v1/teams/big").await).await["total"], 230);
    // A soft deletion keeps the membership; pruning ends it (and the team's count follows).
    assert_eq!(
        app.delete(&format!("/v1/users/{}?mode=soft", ids[0]))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(json(app.get("/v1/teams/big").await).await["total"], 230);
    assert_eq!(
        app.delete(&format!("/v1/users/{}?mode=pruning", ids[1]))
            .await
            .status(),
        StatusCode::OK
    );
    let hard = app.delete(&format!("/v1/users/{}?mode=hard", ids[2])).await;
    assert_eq!(hard.status(), StatusCode::OK);
    let team = json(app.get_at("/v1/teams/big", app.head().await).await).await;
    assert_eq!(team["total"], 228);
    assert_eq!(
        app.list("team=big&status=deleted").await["total"],
        1,
        "the soft-deleted one stays"
    );
    let deleted = app.delete("/v1/teams/big").await;
    assert_eq!(deleted.status(), StatusCode::OK);
    for id in &ids[3..] {
        assert_eq!(app.user(id).await.unwrap()["teams"], json!([]), "{id}");
    }
    let events = json(app.get("/v1/teams/big/events?after=0&limit=1000").await).await;
    let removed = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "MemberRemoved")
        .count();
    assert_eq!(removed, 230, "2 by the users' deletions, 228 by the team's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn team_usernames_collide_only_inside_a_common_team_under_concurrency() {
    let app = spawn_app().await;
    app.set_usernames("team").await;
    app.create_team("t1", "One").await;
    app.create_team("t2", "Two").await;
    // The same name twice in the organization is fine while no team holds both.
    app.create_user(&json!({"id": "a", "username": "Bob.Smith"}))
        .await;
    app.create_user(&json!({"id": "b", "username": "bob_smith"}))
        .await;
    assert_eq!(app.join("t1", "a").await.status(), StatusCode::CREATED);
    let head = app.head().await;
    let refused = assert_problem(
        app.join("t1", "b").await,
        StatusCode::CONFLICT,
        "username_taken",
    )
    .await;
    assert_eq!(fields(&refused), ["user_id"]);
    assert_eq!(app.head().await, head, "nothing appended");
    assert_eq!(app.join("t2", "b").await.status(), StatusCode::CREATED);
    // A rename into a teammate's name is refused; out of the team it is not.
    app.create_user(&json!({"id": "c", "username": "carl"}))
        .await;
    assert_eq!(app.join("t1", "c").await.status(), StatusCode::CREATED);
    let rename = app
        .patch("/v1/users/c", &json!({"set": {"username": "BOBSMITH"}}))
        .await;
    assert_eq!(
        fields(&assert_problem(rename, StatusCode::CONFLICT, "username_taken").await),
        ["username"]
    );
    // `a` leaves t1: its name is free there.
    let m = json(app.get("/v1/users/a/memberships").await).await["memberships"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.delete(&format!("/v1/teams/t1/memberships/{m}")).await;
    assert_eq!(
        app.patch("/v1/users/c", &json!({"set": {"username": "BOBSMITH"}}))
            .await
            .status(),
        StatusCode::OK
    );

    // N users of one name join one team at once: exactly one gets in.
    for i in 0..12 {
        app.create_user(
            &json!({"id": format!("r{i}"), "username": format!("Racer {i}").replace(' ', "")}),
        )
        .await;
        app.patch(
            &format!("/v1/users/r{i}"),
            &json!({"set": {"username": "same.name"}}),
        )
        .await;
    }
    let joins = join_all((0..12).map(|i| {
        let app = &app;
        async move { app.join("t2", &format!("r{i}")).await.status() }
    }))
    .await;
    let won = joins.iter().filter(|s| **s == StatusCode::CREATED).count();
    assert_eq!(won, 1, "{joins:?}");
    assert_eq!(
        joins.iter().filter(|s| **s == StatusCode::CONFLICT).count(),
        11
    );

    // Two members rename to one name at once, and a user joins while a member renames to its
    // name: each time exactly one wins.
    for round in 0..6 {
        let team = format!("race{round}");
        app.create_team(&team, "Race").await;
        let (x, y, z) = (
            format!("x{round}"),
            format!("y{round}"),
            format!("z{round}"),
        );
        app.create_user(&json!({"id": x, "username": format!("ex{round}")}))
            .await;
        app.create_user(&json!({"id": y, "username": format!("why{round}")}))
            .await;
        app.create_user(&json!({"id": z, "username": format!("zed{round}")}))
            .await;
        app.join(&team, &x).await;
        app.join(&team, &y).await;
        let name = format!("taken{round}");
        let body = json!({"set": {"username": name}});
        let (px, py) = (format!("/v1/users/{x}"), format!("/v1/users/{y}"));
        let (rx, ry) = tokio::join!(app.patch(&px, &body), app.patch(&py, &body));
        let statuses = [rx.status(), ry.status()];
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "{statuses:?}"
        );
        assert!(statuses.contains(&StatusCode::CONFLICT));
        // z is named as x's or y's new name would be... z renames to `later`, while a member
        // renames to `later` too, and z joins.
        let later = format!("later{round}");
        app.patch(
            &format!("/v1/users/{z}"),
            &json!({"set": {"username": later}}),
        )
        .await;
        let to_later = json!({"set": {"username": later}});
        let (rename, joined) = tokio::join!(app.patch(&px, &to_later), app.join(&team, &z));
        let outcomes = [rename.status(), joined.status()];
        let wins = outcomes
            .iter()
            .filter(|s| **s == StatusCode::OK || **s == StatusCode::CREATED)
            .count();
        assert_eq!(wins, 1, "{outcomes:?}");
        let members = app.list(&format!("team={team}")).await;
        let names: Vec<String> = members["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["username"].as_str().map(|n| n.to_lowercase()))
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            names.len(),
            "no two members share a name: {names:?}"
        );
    }
}

#[tokio::test]
async fn switching_to_team_keeps_duplicates_held_before() {
    let app = spawn_app().await;
    app.set_usernames("no").await;
    app.create_team("t", "T").await;
    app.create_user(&json!({"id": "p", "username": "dup"}))
        .await;
    app.create_user(&json!({"id": "q", "username": "DUP"}))
        .await;
    assert_eq!(app.join("t", "p").await.status(), StatusCode::CREATED);
    assert_eq!(app.join("t", "q").await.status(), StatusCode::CREATED);
    app.set_usernames("team").await;
    assert_eq!(app.list("team=t").await["total"], 2, "both stay members");
    app.create_user(&json!({"id": "r", "username": "d.u.p"}))
        .await;
    assert_problem(
        app.join("t", "r").await,
        StatusCode::CONFLICT,
        "username_taken",
    )
    .await;
    // One of the pair renames away: the other still holds the name in the team.
    assert_eq!(
        app.patch("/v1/users/p", &json!({"set": {"username": "other"}}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_problem(
        app.join("t", "r").await,
        StatusCode::CONFLICT,
        "username_taken",
    )
    .await;
    // Under `team`, the organization-wide rule is off: a user may take `other` outside t.
    app.create_user(&json!({"id": "s", "username": "other"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_usernames_and_identities_hold_across_servers() {
    use crate::nats_helpers::{namespace, spawn_nats_app};
    let nats = roster_testsupport::NatsServer::shared();
    let ns = namespace("teamnames");
    let a = spawn_nats_app(&nats.url(), &ns).await;
    let b = spawn_nats_app(&nats.url(), &ns).await;
    let servers = [&a, &b];
    let response = a
        .request(Method::PATCH, "/v1/settings")
        .json(&json!({"enforce_unique_usernames": "team"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let settled = position(&response);
    assert_eq!(
        a.post("/v1/teams", &json!({"id": "t", "name": "T"}))
            .await
            .status(),
        StatusCode::CREATED
    );
    let mut last = settled;
    for i in 0..10 {
        let r = a
            .post(
                "/v1/users",
                &json!({"id": format!("u{i}"), "username": format!("Same{}", ".".repeat(i))}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        last = position(&r);
    }
    let head = a.get_at("/v1/users?limit=1", last).await;
    assert_eq!(head["total"], 10);
    // Both servers must have the `team` setting before they decide.
    b.get_at("/v1/settings", last).await;
    let joins = join_all((0..10).map(|i| {
        let server = servers[i % 2];
        async move {
            server
                .post(
                    "/v1/teams/t/memberships",
                    &json!({"user_id": format!("u{i}")}),
                )
                .await
                .status()
        }
    }))
    .await;
    assert_eq!(
        joins.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{joins:?}"
    );
    assert_eq!(
        joins.iter().filter(|s| **s == StatusCode::CONFLICT).count(),
        9,
        "{joins:?}"
    );
    // One identity claimed from both servers at once: one holder.
    let links = join_all((0..6).map(|i| {
        let server = servers[i % 2];
        async move {
            server
                .post(
                    &format!("/v1/users/u{i}/identities"),
                    &json!({"provider": "steam", "subject": "42"}),
                )
                .await
                .status()
        }
    }))
    .await;
    assert_eq!(
        links.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{links:?}"
    );
}
