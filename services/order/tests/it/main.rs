//! End-to-end tests of the order service: real user, product and order binaries, a real Consul
//! agent, fresh SQLite files, called over gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod crashes;
mod orders;
mod races;
mod reflection;
mod support;
