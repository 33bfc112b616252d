//! Integration tests of the user service: the real binary on port 0, a fresh SQLite file and key
//! pair per test, called over gRPC like the gateway and the order service will call it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod accounts;
mod discovery;
mod lifecycle;
mod memory;
mod support;
mod tokens;
