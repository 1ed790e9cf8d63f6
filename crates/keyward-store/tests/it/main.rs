//! The store's one integration-test binary: the engine-independent contract suite
//! (`contract`), and one module per engine that instantiates it and adds engine-specific checks.
// The contract checks are plain functions (so every engine can call them), which clippy does not
// recognise as tests; a failed check should fail loudly, as in any test.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

mod contract;
mod fixtures;
mod postgres;
mod sqlite;
