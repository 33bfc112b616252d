//! The plumbing every shop binary shares, services and gateway alike, each piece once:
//!
//! - [`logs`]: `tracing` to stderr through a non-blocking writer (a request never waits for a
//!   log write), filtered by a directive such as `info,access=info`;
//! - [`request_id`]: the `x-request-id` header, what a client may send in it, and fresh ids;
//! - [`stop`]: the future that completes on SIGTERM or SIGINT.

pub mod logs;
pub mod request_id;
pub mod stop;
