//! The access log: one line per request under the target `access` (so `RUST_LOG=access=info,warn`
//! keeps only these), in the shape of the other log lines, formatted straight into one buffer
//! and handed to the log writer thread: no `tracing` event to build and format per request.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

/// What the access log says about one request.
pub struct Entry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub upstream: &'a str,
    pub retried: bool,
    pub request_id: &'a str,
    pub peer: SocketAddr,
}

/// Whether access lines are wanted (the log filter's answer; no work is done when not).
pub fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// Writes `entry` as one line:
/// `<time>  INFO access: method=GET path=/api/products/1 route="get-product" status=200 latency_ms=1.21 upstream="127.0.0.1:5003" retried=false request_id=... peer=...`.
pub fn log(entry: &Entry<'_>) {
    if !enabled() {
        return;
    }
    let mut line = Vec::with_capacity(256);
    shop_base::logs::timestamp(&mut line);
    let _ = writeln!(
        line,
        "  INFO access: method={} path={} route={:?} status={} latency_ms={:.2} upstream={:?} retried={} request_id={} peer={}",
        entry.method,
        entry.path,
        entry.route,
        entry.status,
        entry.latency.as_secs_f64() * 1000.0,
        entry.upstream,
        entry.retried,
        entry.request_id,
        entry.peer,
    );
    shop_base::logs::emit(line);
}
