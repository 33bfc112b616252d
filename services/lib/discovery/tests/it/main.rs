//! Integration tests of shop-discovery: the blocking-query rules against a scripted stub, and
//! registration, watching, balancing and the session lock against a real `consul agent -dev`,
//! with ACLs on and off.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod acl;
mod agent;
mod lock;
mod rules;
mod stub;
