//! The plumbing every shop binary shares, services and gateway alike, each piece once:
//!
//! - [`logs`]: `tracing` to stderr through a non-blocking writer (a request never waits for a
//!   log write), filtered by a directive such as `info,access=info`;
//! - [`metadata`]: the names of the headers that travel with a request, once;
//! - [`request_id`]: the `x-request-id` header, what a client may send in it, and fresh ids;
//! - [`stop`]: the future that completes on SIGTERM or SIGINT;
//! - [`duration`]: `250ms`, `30s`, `5m`, `24h`, `7d`, read one way everywhere;
//! - [`trace`]: W3C trace context (`traceparent`): read, continue, start;
//! - [`spans`]: spans sent to an OTLP/HTTP collector when one is configured (off by default);
//! - [`env_refs`]: `${NAME}` and `${NAME:-default}` in settings files, replaced from the
//!   environment (pure; the caller passes the lookup).

pub mod duration;
pub mod env_refs;
pub mod logs;
pub mod metadata;
pub mod request_id;
pub mod spans;
pub mod stop;
pub mod trace;
