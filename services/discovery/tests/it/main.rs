//! Integration tests of shop-discovery: the blocking-query rules against a scripted stub, and
//! registration, watching and balancing against a real `consul agent -dev`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod agent;
mod lock;
mod rules;
mod stub;
