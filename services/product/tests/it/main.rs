//! Integration tests of the product service: the real binary on port 0 with a fresh SQLite file
//! per test, called over gRPC with tokens from a test key pair.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod backup;
mod catalogue;
mod inventory;
mod search;
mod settings;
mod support;
