//! End-to-end tests: each starts the real server on a random port over its own temporary data
//! directory and talks HTTP to it. One binary, so linking happens once.

mod auth;
mod batches;
mod concurrency;
mod erasure;
mod events;
mod fields;
mod helpers;
mod history;
mod idempotency;
mod lifecycle;
mod listing;
mod organizations;
mod privacy;
mod restart;
mod settings;
mod tasks;
mod uniqueness;
mod users;
mod validation;
mod wallet;
