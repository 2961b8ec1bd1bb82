//! Roster's performance suite. `roster-bench` drives a real `roster serve`, a minimal axum
//! JSON echo (`bench-ceiling`, the ceiling) and a minimal axum + PostgreSQL CRUD service
//! (`bench-baseline`, the baseline) with the same fixed-concurrency HTTP workloads, and
//! writes `results.json`, `chart.svg` and a table. See `docs/bench.md`.

pub mod chart;
pub mod client;
pub mod fixtures;
pub mod import;
pub mod load;
pub mod machine;
pub mod proc;
pub mod report;
pub mod webhooks;
pub mod workloads;
