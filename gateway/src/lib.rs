//! The shop's declarative API gateway: REST to gRPC, routed by `gateway.toml`.
//!
//! Built so far: [`config`] (the file's schema and its full validation against the proto
//! descriptors, which `gateway check` reports) and [`router`] (method + path templates, literal
//! over parameter, 404/405, collisions). The serving pipeline (transcoding, upstream calls,
//! auth, policies) comes next; see ARCHITECTURE.md.

pub mod config;
pub mod router;
