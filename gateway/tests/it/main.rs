//! Integration tests of the gateway binary: `gateway check` on the default file and on broken
//! copies of it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod check;
