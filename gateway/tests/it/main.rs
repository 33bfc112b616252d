//! Integration tests of the gateway binary: `gateway check` on the default file and on broken
//! copies of it, and the REST API end to end through a real gateway, real services, a real
//! Consul agent and fresh SQLite files.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod breakers;
mod cart;
mod check;
mod docs;
mod events;
mod expiry;
mod failover;
mod gateway;
mod limits;
mod listener;
mod openapi;
mod operations;
mod orders_ha;
mod payments;
mod reload;
mod rest;
mod revocation;
mod support;
mod tls;
mod tracing;
