//! roster-worker
