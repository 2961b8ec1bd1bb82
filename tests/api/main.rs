//! End-to-end tests: each starts the real server on a random port over its own temporary data
//! directory and talks HTTP to it. One binary, so linking happens once.

mod account;
mod auth;
mod batches;
mod concurrency;
mod disk;
mod erasure;
mod events;
mod fields;
mod files;
mod fixture_store;
mod hardening;
mod helpers;
mod history;
mod idempotency;
mod lifecycle;
mod listing;
mod metrics;
mod names;
mod nats_erasure;
mod nats_helpers;
mod openapi;
mod organizations;
mod privacy;
mod projections;
mod restart;
mod scaleout;
mod sessions;
mod settings;
mod tasks;
mod tokens;
mod uniqueness;
mod upcasting;
mod users;
mod validation;
mod wallet;
