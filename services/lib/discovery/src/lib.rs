//! Service discovery for the shop, and the only code that speaks to Consul.
//!
//! - [`consul`]: the agent's HTTP API over a plain hyper client (register, deregister, lookups,
//!   blocking health reads), with the ACL token on every call and ACL refusals as typed errors;
//!   the only place that builds a Consul URL (with [`session`]).
//! - [`register`]: an instance announces itself, stays announced when the agent forgets it, and
//!   leaves on graceful shutdown.
//! - [`watch`]: the healthy instances of a service as always-fresh snapshots, from Consul
//!   blocking queries or from a fixed list.
//! - [`balance`]: calls spread over those instances, one reused HTTP/2 connection each, with a
//!   deadline on every call and one retry elsewhere when the first attempt was not sent.
//! - [`call`]: what became of a failed call (not sent, broken, late, answered) and whether a
//!   retry is safe, classified once from the error's types.
//! - [`session`]: a Consul session lock, so one instance at a time does a job (the order
//!   service's recovery), tied to the instance's health check;
//! - [`pace`]: token bucket, backoff and randomness for the loops above.
//!
//! Nothing on a request path talks to Consul: the balancer reads the latest snapshot in memory.

pub mod balance;
pub mod call;
pub mod consul;
pub mod pace;
pub mod register;
pub mod session;
pub mod watch;

pub use balance::{Balancer, Policy};
pub use call::CallError;
pub use consul::{ConsulClient, Endpoint, Registration};
pub use register::Registrar;
pub use watch::{EndpointSet, Endpoints, WatchConfig};
