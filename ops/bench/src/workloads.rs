//! The request streams of the workloads. The same jobs drive Roster, the ceiling and the
//! baseline: all three serve the same paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;

use crate::fixtures;
use crate::load::{Job, Req, Rng, check_default};

/// The HTTP workloads run at fixed concurrency for a fixed time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    /// W1: `POST /v1/users`, each a new user.
    Create,
    /// W2: `PATCH /v1/users/{id}` over the preloaded users.
    Patch,
    /// W3: `POST /v1/users/{id}/wallet` over the first `hot` preloaded users.
    Wallet {
        /// How many distinct users the adjustments spread over.
        hot: u64,
    },
    /// W4: `GET /v1/users/{id}`.
    Get,
    /// W5: `GET /v1/users?limit=25`, following `next_cursor`.
    List,
    /// W9: `POST /v1/sessions` with a password.
    Login,
    /// `POST /v1/teams/{id}/memberships`: each preloaded user joins teams `bt0`…, spread so
    /// that concurrent joins go to different teams, each (user, team) once.
    Join {
        /// How many teams there are.
        teams: u64,
    },
}

impl Http {
    /// Short id (`W3-1` is the one-hot-user variant).
    pub fn id(self) -> String {
        match self {
            Http::Create => "W1".into(),
            Http::Patch => "W2".into(),
            Http::Wallet { hot: 100 } => "W3".into(),
            Http::Wallet { hot } => format!("W3-{}", short_count(hot)),
            Http::Get => "W4".into(),
            Http::List => "W5".into(),
            Http::Login => "W9".into(),
            Http::Join { .. } => "TJ".into(),
        }
    }

    /// What it does.
    pub fn name(self, users: u64) -> String {
        match self {
            Http::Create => "create users (durable)".into(),
            Http::Patch => format!("partial updates over {} users", short_count(users)),
            Http::Wallet { hot: 1 } => "wallet adjust, 1 hot user".into(),
            Http::Wallet { hot } => format!("wallet adjust, {} users", short_count(hot)),
            Http::Get => format!("get user by id ({} users)", short_count(users)),
            Http::List => "list pages (limit 25) by cursor".into(),
            Http::Login => "logins (argon2id)".into(),
            Http::Join { teams } => format!("team joins ({teams} teams)"),
        }
    }

    /// The job of worker `worker`; `users` preloaded users exist (`u0000000`…).
    pub fn job(self, worker: usize, users: u64) -> Box<dyn Job> {
        let rng = Rng::new(worker as u64 + 1);
        match self {
            Http::Create => Box::new(Create { worker, seq: 0 }),
            Http::Patch => Box::new(Patch {
                rng,
                users,
                bodies: fixtures::patch_bodies(),
            }),
            Http::Wallet { hot } => Box::new(Wallet {
                rng,
                hot: hot.min(users).max(1),
                body: fixtures::wallet_body(),
            }),
            Http::Get => Box::new(Get { rng, users }),
            Http::List => Box::new(List { cursor: None }),
            Http::Join { teams } => Box::new(Join {
                worker,
                seq: 0,
                users: users.max(1),
                teams: teams.max(1),
            }),
            Http::Login => Box::new(Login {
                bodies: (0..LOGIN_USERS)
                    .map(|i| {
                        let (username, password) = fixtures::login_user(i);
                        Bytes::from(
                            serde_json::json!({"username": username, "password": password})
                                .to_string(),
                        )
                    })
                    .collect(),
                next: worker,
            }),
        }
    }
}

/// Users created (with passwords) for W9.
pub const LOGIN_USERS: usize = 64;

/// `100000` → `100k`.
pub fn short_count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

struct Create {
    worker: usize,
    seq: u64,
}

impl Job for Create {
    fn next(&mut self) -> Option<Req> {
        self.seq += 1;
        let id = format!("c{}x{}", self.worker, self.seq);
        let body = fixtures::user_json(&id, self.seq);
        Some(Req {
            method: Method::POST,
            path: "/v1/users".into(),
            body: Some(Bytes::from(body)),
            expect: StatusCode::CREATED,
            must_contain: Some(format!(r#""id":"{id}""#)),
        })
    }
}

/// Most generator workers [`Join`] keeps apart (the n-th request of worker w is number
/// `n * JOIN_STRIDE + w`).
const JOIN_STRIDE: u64 = 1024;

struct Join {
    worker: usize,
    seq: u64,
    users: u64,
    teams: u64,
}

impl Job for Join {
    fn next(&mut self) -> Option<Req> {
        let n = self.seq * JOIN_STRIDE + self.worker as u64;
        self.seq += 1;
        // Round r over the users joins user i to team (i + r) mod teams: consecutive users go
        // to different teams, and no pair comes twice while r < teams.
        let (i, round) = (n % self.users, n / self.users);
        if round >= self.teams {
            return None;
        }
        let team = (i + round) % self.teams;
        let id = fixtures::loaded_id(i);
        Some(Req {
            method: Method::POST,
            path: format!("/v1/teams/bt{team}/memberships"),
            body: Some(Bytes::from(format!(r#"{{"user_id":"{id}"}}"#))),
            expect: StatusCode::CREATED,
            must_contain: Some(format!(r#""user_id":"{id}""#)),
        })
    }
}

struct Patch {
    rng: Rng,
    users: u64,
    bodies: Vec<Bytes>,
}

impl Job for Patch {
    fn next(&mut self) -> Option<Req> {
        let id = fixtures::loaded_id(self.rng.below(self.users));
        let body = self.bodies[self.rng.below(self.bodies.len() as u64) as usize].clone();
        Some(Req {
            method: Method::PATCH,
            path: format!("/v1/users/{id}"),
            body: Some(body),
            expect: StatusCode::OK,
            must_contain: Some(format!(r#""id":"{id}""#)),
        })
    }
}

struct Wallet {
    rng: Rng,
    hot: u64,
    body: Bytes,
}

impl Job for Wallet {
    fn next(&mut self) -> Option<Req> {
        let id = fixtures::loaded_id(self.rng.below(self.hot));
        Some(Req {
            method: Method::POST,
            path: format!("/v1/users/{id}/wallet"),
            body: Some(self.body.clone()),
            expect: StatusCode::OK,
            must_contain: Some(r#""updated""#.into()),
        })
    }
}

struct Get {
    rng: Rng,
    users: u64,
}

impl Job for Get {
    fn next(&mut self) -> Option<Req> {
        let id = fixtures::loaded_id(self.rng.below(self.users));
        Some(Req {
            method: Method::GET,
            path: format!("/v1/users/{id}"),
            body: None,
            expect: StatusCode::OK,
            must_contain: Some(format!(r#""id":"{id}""#)),
        })
    }
}

/// Each worker walks the whole list page by page, then starts over.
struct List {
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    users: Vec<serde::de::IgnoredAny>,
    next_cursor: Option<String>,
}

impl Job for List {
    fn next(&mut self) -> Option<Req> {
        let path = match &self.cursor {
            Some(c) => format!("/v1/users?limit=25&cursor={c}"),
            None => "/v1/users?limit=25".into(),
        };
        Some(Req {
            method: Method::GET,
            path,
            body: None,
            expect: StatusCode::OK,
            must_contain: None,
        })
    }

    fn check(&mut self, req: &Req, status: StatusCode, body: &[u8]) -> Result<(), String> {
        check_default(req, status, body)?;
        let page: Page =
            serde_json::from_slice(body).map_err(|_| "page is not a page".to_owned())?;
        if page.users.is_empty() {
            return Err("empty page".into());
        }
        // Cursors are URL-safe (base64url or plain ids) in all three systems.
        self.cursor = page.next_cursor;
        Ok(())
    }
}

struct Login {
    bodies: Vec<Bytes>,
    next: usize,
}

impl Job for Login {
    fn next(&mut self) -> Option<Req> {
        self.next = (self.next + 1) % self.bodies.len();
        Some(Req {
            method: Method::POST,
            path: "/v1/sessions".into(),
            body: Some(self.bodies[self.next].clone()),
            expect: StatusCode::CREATED,
            must_contain: Some(r#""access_token""#.into()),
        })
    }
}

/// Preloading: batches of 100 users through `POST /v1/users/upsert`, taken from a shared
/// counter until `to` is reached.
pub struct Upsert {
    next_batch: Arc<AtomicU64>,
    to: u64,
}

/// Users per upsert request (the API's maximum).
pub const UPSERT_BATCH: u64 = 100;

impl Upsert {
    /// Jobs that together load users `from..to`.
    pub fn shared(from: u64, to: u64) -> impl FnMut(usize) -> Box<dyn Job> {
        let next_batch = Arc::new(AtomicU64::new(from));
        move |_| {
            Box::new(Upsert {
                next_batch: next_batch.clone(),
                to,
            })
        }
    }
}

impl Job for Upsert {
    fn next(&mut self) -> Option<Req> {
        let from = self.next_batch.fetch_add(UPSERT_BATCH, Ordering::Relaxed);
        if from >= self.to {
            return None;
        }
        let to = (from + UPSERT_BATCH).min(self.to);
        Some(Req {
            method: Method::POST,
            path: "/v1/users/upsert".into(),
            body: Some(fixtures::upsert_batch(from, to)),
            expect: StatusCode::OK,
            must_contain: Some(format!(r#""{}""#, fixtures::loaded_id(to - 1))),
        })
    }
}

/// Creates the W9 users, each with a password (argon2id on the server).
pub struct CreateLoginUsers {
    next: Arc<AtomicU64>,
}

impl CreateLoginUsers {
    /// Jobs that together create the [`LOGIN_USERS`] users.
    pub fn shared() -> impl FnMut(usize) -> Box<dyn Job> {
        let next = Arc::new(AtomicU64::new(0));
        move |_| Box::new(CreateLoginUsers { next: next.clone() })
    }
}

impl Job for CreateLoginUsers {
    fn next(&mut self) -> Option<Req> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        if i >= LOGIN_USERS {
            return None;
        }
        let (username, password) = fixtures::login_user(i);
        let body = serde_json::json!({"id": username, "username": username, "password": password});
        Some(Req {
            method: Method::POST,
            path: "/v1/users".into(),
            body: Some(Bytes::from(body.to_string())),
            expect: StatusCode::CREATED,
            must_contain: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_counts() {
        assert_eq!(Http::Wallet { hot: 100 }.id(), "W3");
        assert_eq!(Http::Wallet { hot: 1 }.id(), "W3-1");
        assert_eq!(Http::Wallet { hot: 10_000 }.id(), "W3-10k");
        assert_eq!(short_count(1_000_000), "1M");
        assert_eq!(short_count(1234), "1234");
    }

    #[test]
    fn upsert_jobs_split_the_range_without_overlap() {
        let mut make = Upsert::shared(0, 250);
        let mut a = make(0);
        let mut b = make(1);
        let mut paths = Vec::new();
        while let Some(r) = a.next().or_else(|| b.next()) {
            paths.push(r.must_contain.unwrap());
        }
        assert_eq!(
            paths,
            vec![r#""u0000099""#, r#""u0000199""#, r#""u0000249""#]
        );
    }

    #[test]
    fn list_follows_cursors_and_starts_over() {
        let mut job = Http::List.job(0, 10);
        let first = job.next().unwrap();
        assert_eq!(first.path, "/v1/users?limit=25");
        job.check(
            &first,
            StatusCode::OK,
            br#"{"users":[{}],"next_cursor":"YzI1"}"#,
        )
        .unwrap();
        let second = job.next().unwrap();
        assert_eq!(second.path, "/v1/users?limit=25&cursor=YzI1");
        job.check(
            &second,
            StatusCode::OK,
            br#"{"users":[{}],"next_cursor":null}"#,
        )
        .unwrap();
        assert_eq!(job.next().unwrap().path, "/v1/users?limit=25");
        assert!(
            job.check(&second, StatusCode::OK, br#"{"users":[]}"#)
                .is_err()
        );
    }
}
