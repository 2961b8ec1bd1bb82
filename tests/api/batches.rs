//! `POST /v1/users/upsert` and `PATCH /v1/users`: whole-batch validation, atomicity, replies.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn upsert_creates_the_missing_and_replaces_the_existing_whole() {
    let app = spawn_app().await;
    app.create_user(&json!({
        "id": "old", "username": "old", "name": "Old Name", "location": "Paris", "role": "admin",
        "custom": {"a": 1}, "prefs": {"p": true}, "email": "old@example.com"
    }))
    .await;
    let response = app
        .post(
            "/v1/users/upsert",
            &json!({"users": [
                {"id": "old", "name": "New Name", "email": "OLD@example.com"},
                {"id": "fresh", "username": "fresh", "custom": {"b": 2}},
                {"username": "generated"}
            ]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let at = position(&response);
    let body = json(response).await;
    assert_eq!(body["position"], at);
    let users = body["users"].as_object().expect("users by id");
    assert_eq!(users.len(), 3, "{body}");
    let old = &users["old"];
    assert_eq!(old["name"], "New Name");
    assert_eq!(old["email"], "OLD@example.com");
    for gone in ["username", "location"] {
        assert_eq!(old[gone], Value::Null, "{gone} left out is removed");
    }
    assert_eq!(old["role"], "user");
    assert_eq!((&old["custom"], &old["prefs"]), (&json!({}), &json!({})));
    assert_eq!(old["version"], 2);
    assert_eq!(users["fresh"]["version"], 1);
    assert_eq!(users["fresh"]["custom"], json!({"b": 2}));
    let generated = users
        .keys()
        .find(|k| !["old", "fresh"].contains(&k.as_str()))
        .unwrap();
    assert_eq!(generated.len(), 26);
    assert_eq!(users[generated]["username"], "generated");
    assert_eq!(users[generated]["id"], generated.as_str());
    // The read models agree, and the freed username can be taken by someone else.
    let stored = app.user("old").await.unwrap();
    assert_eq!(
        (&stored["name"], &stored["username"], &stored["location"]),
        (&json!("New Name"), &Value::Null, &Value::Null)
    );
    assert_eq!(app.list("").await["total"], 3);
    app.create_user(&json!({"username": "old"})).await;
}

#[tokio::test]
async fn upsert_of_an_unchanged_user_appends_nothing() {
    let app = spawn_app().await;
    let user = json!({"id": "same", "name": "Same", "custom": {"a": 1}});
    app.create_user(&user).await;
    let head = app.head().await;
    let response = app
        .post("/v1/users/upsert", &json!({"users": [user]}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(position(&response), head);
    let body = json(response).await;
    assert_eq!(body["users"]["same"]["version"], 1);
    assert_eq!(app.head().await, head);
}

#[tokio::test]
async fn batches_of_more_than_100_or_of_none_are_422_and_create_nothing() {
    let app = spawn_app().await;
    let users: Vec<Value> = (0..101).map(|i| json!({"id": format!("u{i}")})).collect();
    let response = app.post("/v1/users/upsert", &json!({"users": users})).await;
    let problem = assert_invalid(response).await;
    assert_eq!(fields(&problem), ["users"]);
    let patches: Vec<Value> = (0..101)
        .map(|i| json!({"id": format!("u{i}"), "set": {"name": "x"}}))
        .collect();
    let response = app.patch("/v1/users", &json!({"users": patches})).await;
    assert_invalid(response).await;
    for path in ["/v1/users/upsert"] {
        let response = app.post(path, &json!({"users": []})).await;
        assert_invalid(response).await;
    }
    let response = app.patch("/v1/users", &json!({"users": []})).await;
    assert_invalid(response).await;
    let response = app.post("/v1/users/upsert", &json!({"people": []})).await;
    assert_invalid(response).await;
    assert_eq!(app.head().await, 0);
    assert_eq!(app.list("").await["total"], 0);
    // Exactly 100 is fine.
    let users: Vec<Value> = (0..100).map(|i| json!({"id": format!("u{i}")})).collect();
    let body = json(app.post("/v1/users/upsert", &json!({"users": users})).await).await;
    assert_eq!(body["users"].as_object().unwrap().len(), 100);
    assert_eq!(app.list("").await["total"], 100);
}

#[tokio::test]
async fn upsert_with_invalid_items_lists_every_one_by_index_and_applies_nothing() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "kept", "name": "Kept"}))
        .await;
    let head = app.head().await;
    let response = app
        .post(
            "/v1/users/upsert",
            &json!({"users": [
                {"id": "kept", "name": "Replaced"},
                {"id": "new1", "email": "not-an-email"},
                {"id": "new2"},
                {"id": "new3", "name": "n".repeat(129), "username": "has space"},
                {"id": "-bad"},
            ]}),
        )
        .await;
    let problem = assert_invalid(response).await;
    let mut got = fields(&problem);
    got.sort();
    assert_eq!(
        got,
        [
            "users[1].email",
            "users[3].name",
            "users[3].username",
            "users[4].id"
        ],
        "{problem}"
    );
    assert_eq!(app.head().await, head, "nothing was appended");
    assert_eq!(app.user("kept").await.unwrap()["name"], "Kept");
    assert_eq!(app.list_ids("").await, ["kept"]);
}

#[tokio::test]
async fn upsert_with_wrong_types_and_invalid_values_lists_both() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/users/upsert",
            &json!({"users": [
                {"id": "ok"},
                {"id": "typed", "name": 5},
                {"id": "unknown", "nickname": "x"},
                {"id": "invalid", "email": "nope"},
            ]}),
        )
        .await;
    let problem = assert_invalid(response).await;
    assert_eq!(
        fields(&problem),
        ["users[1].name", "users[2].nickname", "users[3].email"],
        "{problem}"
    );
    assert_eq!(app.head().await, 0);
    assert_eq!(app.list("").await["total"], 0);
}

#[tokio::test]
async fn upsert_refused_for_uniqueness_applies_nothing() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "holder", "username": "taken", "email": "taken@example.com"}))
        .await;
    let head = app.head().await;
    // Taken by a user outside the batch.
    let response = app
        .post(
            "/v1/users/upsert",
            &json!({"users": [{"id": "a", "username": "a"}, {"id": "b", "username": "TAKEN"}]}),
        )
        .await;
    let problem = assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    assert_eq!(fields(&problem), ["users[1].username"]);
    let response = app
        .post(
            "/v1/users/upsert",
            &json!({"users": [{"id": "a", "email": "Taken@Example.com"}, {"id": "b"}]}),
        )
        .await;
    let problem = assert_problem(response, StatusCode::CONFLICT, "email_taken").await;
    assert_eq!(fields(&problem), ["users[0].email"]);
    // Two items of the same batch colliding with each other.
    let response = app
        .post("/v1/users/upsert", &json!({"users": [{"id": "c", "username": "twin"}, {"id": "d", "username": "T.W.I.N"}]}))
        .await;
    assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    // The same user twice.
    let response = app
        .post(
            "/v1/users/upsert",
            &json!({"users": [{"id": "e"}, {"id": "e", "name": "again"}]}),
        )
        .await;
    let problem = assert_invalid(response).await;
    assert_eq!(fields(&problem), ["users[1].id"]);
    assert_eq!(app.head().await, head, "nothing was appended");
    assert_eq!(app.list_ids("").await, ["holder"]);
}

#[tokio::test]
async fn batch_patch_updates_every_listed_user() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "a", "name": "A", "custom": {"x": 1}}))
        .await;
    app.create_user(&json!({"id": "b", "name": "B"})).await;
    app.create_user(&json!({"id": "c", "name": "C"})).await;
    let response = app
        .patch(
            "/v1/users",
            &json!({"users": [
                {"id": "a", "set": {"custom.y.z": 2}, "unset": ["custom.x"]},
                {"id": "b", "set": {"name": "Bee", "role": "admin"}},
                {"id": "c", "set": {"name": "C"}}
            ]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let at = position(&response);
    let body = json(response).await;
    assert_eq!(body["position"], at);
    let users = &body["users"];
    assert_eq!(users["a"]["custom"], json!({"y": {"z": 2}}));
    assert_eq!(
        (&users["b"]["name"], &users["b"]["role"]),
        (&json!("Bee"), &json!("admin"))
    );
    assert_eq!(users["a"]["version"], 2);
    assert_eq!(
        users["c"]["version"], 1,
        "an unchanged user keeps its version"
    );
    assert_eq!(
        app.get_at("/v1/users/b", at)
            .await
            .json::<Value>()
            .await
            .unwrap()["name"],
        "Bee"
    );
    assert_eq!(app.list("role=admin").await["total"], 1);
}

#[tokio::test]
async fn batch_patch_with_invalid_items_lists_each_and_applies_nothing() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "a", "name": "A"})).await;
    app.create_user(&json!({"id": "b", "name": "B"})).await;
    let before = app.snapshot().await;
    let head = app.head().await;
    let response = app
        .patch(
            "/v1/users",
            &json!({"users": [
                {"id": "a", "set": {"name": "Changed"}},
                {"id": "b", "set": {"status": "blocked"}},
                {"id": "-bad", "set": {"name": "x"}},
                {"id": "a2", "set": {"name": "y"}, "unset": ["name"]},
                {"id": "b", "set": {"name": 5}},
                {"id": "a", "set": {"name": "z"}, "extra": true},
                {"set": {"name": "no id"}},
            ]}),
        )
        .await;
    let problem = assert_invalid(response).await;
    let mut got = fields(&problem);
    got.sort();
    assert_eq!(
        got,
        [
            "users[1].set.status",
            "users[2].id",
            "users[3].unset[0]",
            "users[4].set.name",
            "users[5].extra",
            "users[6]"
        ],
        "{problem}"
    );
    assert_eq!(app.head().await, head);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn batch_patch_of_an_unknown_user_applies_nothing() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "a", "name": "A"})).await;
    let head = app.head().await;
    let response = app
        .patch("/v1/users", &json!({"users": [{"id": "a", "set": {"name": "Changed"}}, {"id": "ghost", "set": {"name": "x"}}]}))
        .await;
    let status = response.status();
    let problem = json(response).await;
    assert!(
        status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::NOT_FOUND,
        "{status}: {problem}"
    );
    assert!(
        fields(&problem).iter().all(|f| f.starts_with("users[1]")) && !fields(&problem).is_empty(),
        "{problem}"
    );
    assert_eq!(app.head().await, head);
    assert_eq!(app.user("a").await.unwrap()["name"], "A");
    assert!(app.user("ghost").await.is_none());
}

#[tokio::test]
async fn batch_patch_can_swap_usernames_and_still_enforces_uniqueness() {
    let app = spawn_app().await;
    app.create_user(&json!({"id": "a", "username": "alpha"}))
        .await;
    app.create_user(&json!({"id": "b", "username": "beta"}))
        .await;
    app.create_user(&json!({"id": "c", "username": "gamma"}))
        .await;
    let body = json(
        app.patch(
            "/v1/users",
            &json!({"users": [{"id": "a", "set": {"username": "beta"}}, {"id": "b", "set": {"username": "alpha"}}]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (
            &body["users"]["a"]["username"],
            &body["users"]["b"]["username"]
        ),
        (&json!("beta"), &json!("alpha"))
    );
    let head = app.head().await;
    let response = app
        .patch("/v1/users", &json!({"users": [{"id": "a", "set": {"name": "A"}}, {"id": "c", "set": {"username": "Alpha"}}]}))
        .await;
    let problem = assert_problem(response, StatusCode::CONFLICT, "username_taken").await;
    assert_eq!(fields(&problem), ["users[1].username"]);
    assert_eq!(app.head().await, head);
    assert_eq!(app.user("a").await.unwrap()["name"], Value::Null);
    for (name, status) in [
        ("alpha", StatusCode::CONFLICT),
        ("beta", StatusCode::CONFLICT),
        ("gamma", StatusCode::CONFLICT),
    ] {
        assert_eq!(
            app.post("/v1/users", &json!({"username": name}))
                .await
                .status(),
            status,
            "{name}"
        );
    }
}
