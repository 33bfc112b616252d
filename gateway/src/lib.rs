//! The shop's declarative API gateway: REST to gRPC, routed by `gateway.toml`.
//!
//! - [`config`]: the file's schema and its full validation against the proto descriptors
//!   (what `gateway check` reports);
//! - [`router`]: method + path templates, literal over parameter, 404/405, collisions;
//! - [`transcode`]: JSON to protobuf and back, driven by the descriptors;
//! - [`wire_json`]: a reply's protobuf bytes straight to JSON, without decoding a message;
//! - [`breaker`]: circuit breakers per upstream instance, the retry budget;
//! - [`limit`]: token buckets per policy and client key;
//! - [`client`]: the client's address (behind trusted proxies) and address blocks;
//! - [`metrics`]: counters and `/metrics` in the Prometheus text format;
//! - [`admin`]: the read-only admin view on its own listener (`/config`, `/upstreams`,
//!   `/metrics`);
//! - [`access`]: the access log line, text or JSON, to stderr or a file;
//! - [`openapi`]: the OpenAPI 3.1 document generated from the routes and descriptors;
//! - [`upstream`]: balancers over Consul-watched or static instances, dynamic gRPC calls;
//! - [`grpc`]: unary gRPC over HTTP/2 with `h2` directly, an instance's connections;
//! - [`pipeline`]: one request from start to access log;
//! - [`reply`]: the gateway's refusals and the one gRPC-to-HTTP status table;
//! - [`cors`]: per-listener CORS (preflights and `Access-Control-*` headers);
//! - [`reload`]: watching `gateway.toml` (and SIGHUP) to swap in a new configuration;
//! - [`revocations`]: following the user service's feed of revoked tokens;
//! - [`server`]: listeners (HTTP/1.1 and h2c, or TLS) and the graceful stop;
//! - [`conn`]: each connection's clock (header timeout from accept, idle timeout) and room at
//!   the connection cap (the longest-idle connection closes);
//! - [`tls`]: certificates into rustls.

pub mod access;
pub mod admin;
pub mod breaker;
pub mod client;
pub mod config;
pub mod conn;
pub mod cors;
pub mod grpc;
pub mod limit;
pub mod live;
pub mod loaded;
pub mod metrics;
pub mod openapi;
pub mod own;
pub mod pipeline;
pub mod reload;
pub mod reply;
pub mod revocations;
pub mod router;
pub mod server;
pub mod tls;
pub mod transcode;
pub mod upstream;
pub mod wire_json;
