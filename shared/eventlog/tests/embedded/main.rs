//! Tests specific to the embedded backend: crashes, torn writes, durability order, restart,
//! and a model-based property test. One binary, so it links once.

mod common;
mod crash;
mod durability;
mod model;
mod restart;
mod torn;
