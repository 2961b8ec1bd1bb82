//! `GET /v1/users`: search, exact filters, status and role, limits, cursors, order, total.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn app_with_people() -> TestApp {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/users/upsert",
            &json!({"users": [
                {"id": "alice1", "username": "wonder_alice", "name": "Alice Liddell", "display_name": "Ally", "email": "al@example.com"},
                {"id": "bob", "username": "bobby", "name": "Robert Alder", "email": "rob@corp.test", "role": "admin"},
                {"id": "carol", "username": "caz", "display_name": "Carol Singer", "email": "carol@example.com"},
                {"id": "dave", "username": "dave", "name": "Dave", "email": "d@zed.test", "role": "admin"},
            ]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    app
}

#[tokio::test]
async fn search_is_a_case_insensitive_prefix_over_id_username_names_and_email() {
    let app = app_with_people().await;
    for (search, expected) in [
        ("ali", vec!["alice1"]),
        ("ALICE1", vec!["alice1"]),
        ("lidd", vec!["alice1"]),
        ("wonder", vec!["alice1"]),
        ("ally", vec!["alice1"]),
        ("bo", vec!["bob"]),
        ("ROB", vec!["bob"]),
        ("rob%40corp", vec!["bob"]),
        ("carol%40ex", vec!["carol"]),
        ("sing", vec!["carol"]),
        ("al", vec!["alice1", "bob"]),
        ("alice%20lid", vec!["alice1"]),
        ("alice%20rob", vec![]),
        ("example", vec![]),
        ("zzz", vec![]),
        ("", vec!["alice1", "bob", "carol", "dave"]),
    ] {
        let page = app.list(&format!("search={search}")).await;
        assert_eq!(ids(&page), expected, "search={search}");
        assert_eq!(page["total"], expected.len(), "search={search}");
    }
    // The search follows changes.
    let at = position(
        &app.patch("/v1/users/dave", &json!({"set": {"name": "Zebulon"}}))
            .await,
    );
    let page = json(app.get_at("/v1/users?search=zeb", at).await).await;
    assert_eq!(ids(&page), ["dave"]);
    assert_eq!(
        app.list_ids("search=dave").await,
        ["dave"],
        "the id and username still match"
    );
    assert_eq!(
        app.list_ids("search=dav&search=zzz").await,
        Vec::<String>::new(),
        "the last search wins"
    );
}

#[tokio::test]
async fn exact_filters_are_repeatable_and_combine() {
    let app = app_with_people().await;
    for (query, expected) in [
        ("ids=bob&ids=dave", vec!["bob", "dave"]),
        ("ids=nobody", vec![]),
        ("usernames=BOBBY&usernames=d.a.v.e", vec!["bob", "dave"]),
        ("usernames=Wonder-Alice", vec!["alice1"]),
        ("emails=CAROL%40EXAMPLE.COM", vec!["carol"]),
        (
            "emails=al%40example.com&emails=d%40zed.test",
            vec!["alice1", "dave"],
        ),
        ("ids=bob&usernames=dave", vec![]),
        ("ids=bob&ids=dave&role=admin", vec!["bob", "dave"]),
        ("role=admin", vec!["bob", "dave"]),
        ("role=user", vec!["alice1", "carol"]),
        ("role=owner", vec![]),
        ("status=active", vec!["alice1", "bob", "carol", "dave"]),
        ("status=blocked", vec![]),
        ("status=deactivated", vec![]),
        ("status=deleted", vec![]),
        ("status=active&role=admin&search=rob", vec!["bob"]),
    ] {
        let page = app.list(query).await;
        assert_eq!(ids(&page), expected, "{query}");
        assert_eq!(page["total"], expected.len(), "{query}");
    }
}

#[tokio::test]
async fn listed_users_are_whole_user_objects() {
    let app = app_with_people().await;
    let page = app.list("ids=bob").await;
    let listed = &page["users"][0];
    let mut fetched = app.user("bob").await.unwrap();
    fetched.as_object_mut().unwrap().remove("position");
    assert_eq!(listed, &fetched);
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(page["prev_cursor"], Value::Null);
}

/// Creates `n` users `u00`, `u01`, … in that order (one batch of at most 100).
async fn app_with_numbered_users(n: usize) -> (TestApp, Vec<String>) {
    let app = spawn_app().await;
    let ids: Vec<String> = (0..n).map(|i| format!("u{i:02}")).collect();
    let users: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "role": if i % 3 == 0 { "admin" } else { "user" }}))
        .collect();
    let response = app.post("/v1/users/upsert", &json!({"users": users})).await;
    assert_eq!(response.status(), StatusCode::OK);
    (app, ids)
}

/// Follows cursors from `first` in `direction` until there is none; returns every page's ids.
async fn walk(
    app: &TestApp,
    query: &str,
    cursor_field: &str,
    direction: &str,
    first: Value,
) -> Vec<Vec<String>> {
    let mut pages = vec![ids(&first)];
    let mut page = first;
    while let Some(cursor) = page[cursor_field].as_str() {
        page = app
            .list(&format!("{query}&cursor={cursor}&direction={direction}"))
            .await;
        assert!(
            !ids(&page).is_empty(),
            "a cursor never leads to an empty page: {page}"
        );
        pages.push(ids(&page));
        assert!(pages.len() < 50, "paging does not end");
    }
    pages
}

#[tokio::test]
async fn limit_defaults_to_25_and_accepts_1_to_100() {
    let (app, all) = app_with_numbered_users(30).await;
    let page = app.list("").await;
    assert_eq!(ids(&page), all[..25]);
    assert_eq!(page["total"], 30);
    assert!(page["next_cursor"].is_string());
    assert_eq!(app.list_ids("limit=100").await, all);
    assert_eq!(app.list_ids("limit=1").await, all[..1]);
}

#[tokio::test]
async fn cursors_page_forward_through_everything_and_back() {
    let (app, all) = app_with_numbered_users(23).await;
    let first = app.list("limit=7").await;
    assert_eq!(
        first["prev_cursor"],
        Value::Null,
        "nothing before the first page"
    );
    assert_eq!(first["total"], 23);
    let pages = walk(&app, "limit=7", "next_cursor", "after", first).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [7, 7, 7, 2]);
    assert_eq!(pages.concat(), all);

    // Back from the last page with its prev_cursor.
    let last_cursor = {
        let mut page = app.list("limit=7").await;
        while let Some(c) = page["next_cursor"].as_str().map(str::to_owned) {
            page = app.list(&format!("limit=7&cursor={c}")).await;
        }
        assert_eq!(page["next_cursor"], Value::Null);
        assert_eq!(page["total"], 23);
        page
    };
    let back = walk(&app, "limit=7", "prev_cursor", "before", last_cursor).await;
    assert_eq!(back.iter().map(Vec::len).collect::<Vec<_>>(), [2, 7, 7, 7]);
    let mut rebuilt: Vec<String> = Vec::new();
    for page in back.iter().rev() {
        rebuilt.extend(page.iter().cloned());
    }
    assert_eq!(
        rebuilt, all,
        "each page backwards is still in ascending order"
    );
    back_from_the_second_page_is_the_first(&app).await;
}

/// The second page's `prev_cursor` leads back to the first page, which offers a way forward.
async fn back_from_the_second_page_is_the_first(app: &TestApp) {
    let first = app.list("limit=7").await;
    let second = app
        .list(&format!(
            "limit=7&cursor={}",
            first["next_cursor"].as_str().unwrap()
        ))
        .await;
    let back = app
        .list(&format!(
            "limit=7&cursor={}&direction=before",
            second["prev_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ids(&back), ids(&first));
    assert_eq!(back["prev_cursor"], Value::Null);
    let forward = app
        .list(&format!(
            "limit=7&cursor={}",
            back["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ids(&forward), ids(&second));
}

#[tokio::test]
async fn descending_order_pages_newest_first() {
    let (app, all) = app_with_numbered_users(12).await;
    let mut newest_first = all.clone();
    newest_first.reverse();
    let first = app.list("limit=5&order=desc").await;
    assert_eq!(first["prev_cursor"], Value::Null);
    let pages = walk(&app, "limit=5&order=desc", "next_cursor", "after", first).await;
    assert_eq!(pages.concat(), newest_first);
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 2]);
    // And back.
    let mut page = app.list("limit=5&order=desc").await;
    while let Some(c) = page["next_cursor"].as_str().map(str::to_owned) {
        page = app.list(&format!("limit=5&order=desc&cursor={c}")).await;
    }
    let back = walk(&app, "limit=5&order=desc", "prev_cursor", "before", page).await;
    let mut rebuilt: Vec<String> = Vec::new();
    for page in back.iter().rev() {
        rebuilt.extend(page.iter().cloned());
    }
    assert_eq!(rebuilt, newest_first);
}

#[tokio::test]
async fn paging_a_filtered_list_counts_only_matches() {
    let (app, all) = app_with_numbered_users(20).await;
    let admins: Vec<String> = all.iter().step_by(3).cloned().collect();
    let first = app.list("limit=3&role=admin").await;
    assert_eq!(first["total"], admins.len());
    let pages = walk(&app, "limit=3&role=admin", "next_cursor", "after", first).await;
    assert_eq!(pages.concat(), admins);
    let page = app.list("limit=2&search=u1").await;
    assert_eq!(page["total"], 10, "u1, u10 … u19");
    assert_eq!(ids(&page), ["u10", "u11"]);
}

#[tokio::test]
async fn new_users_appear_after_existing_cursors() {
    let (app, all) = app_with_numbered_users(4).await;
    let first = app.list("limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    app.create_user(&json!({"id": "a-late-one"})).await;
    let rest = walk(
        &app,
        "limit=2",
        "next_cursor",
        "after",
        app.list(&format!("limit=2&cursor={cursor}")).await,
    )
    .await;
    let mut expected = all[2..].to_vec();
    expected.push("a-late-one".into());
    assert_eq!(rest.concat(), expected);
    assert_eq!(app.list("").await["total"], 5);
}
