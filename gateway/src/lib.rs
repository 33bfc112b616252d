//! The shop's declarative API gateway: REST to gRPC, routed by `gateway.toml`.
//!
//! - [`config`]: the file's schema and its full validation against the proto descriptors
//!   (what `gateway check` reports);
//! - [`router`]: method + path templates, literal over parameter, 404/405, collisions;
//! - [`transcode`]: JSON to protobuf and back, driven by the descriptors;
//! - [`breaker`]: circuit breakers per upstream instance, the retry budget;
//! - [`limit`]: token buckets per policy and client key, the client's address;
//! - [`metrics`]: counters and `/metrics` in the Prometheus text format;
//! - [`upstream`]: balancers over Consul-watched or static instances, dynamic gRPC calls;
//! - [`pipeline`]: one request from start to access log;
//! - [`reply`]: the gateway's refusals and the one gRPC-to-HTTP status table;
//! - [`server`]: listeners (HTTP/1.1 and h2c) and the graceful stop.

pub mod breaker;
pub mod config;
pub mod limit;
pub mod metrics;
pub mod pipeline;
pub mod reply;
pub mod router;
pub mod server;
pub mod transcode;
pub mod upstream;
