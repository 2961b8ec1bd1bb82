//! Tests specific to the JetStream backend: several processes on one stream, JetStream's
//! de-duplication and concurrency headers as the writer relies on them, restarts, a server
//! crash, unavailability, and a 3-node cluster. One binary, so it links once.

mod cluster;
mod common;
mod failures;
mod jetstream;
mod multi;
