//! The names of the headers a request carries from the client through the gateway to the
//! services and between services (HTTP headers and gRPC metadata keys alike), each written once.

/// The bearer token.
pub const AUTHORIZATION: &str = "authorization";
/// A client's `Idempotency-Key`, on creates, payments and checkouts.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The request id ([`crate::request_id`]).
pub const REQUEST_ID: &str = crate::request_id::HEADER;
/// The W3C trace context ([`crate::trace`]).
pub const TRACEPARENT: &str = crate::trace::HEADER;
