//! The gateway's counters, and `GET /metrics` in the Prometheus text format (version 0.0.4):
//! requests by route, method and status; latency histograms by route; rate-limit refusals by
//! policy; retries by upstream. Breaker states, instance counts and the loaded configuration
//! are read at scrape time from where they live.
//!
//! Every counter is registered once, by name, when a configuration is built (a route's plan
//! holds its [`RouteCounters`]), and kept across reloads; a request only adds to atomics: no
//! lock, no allocation. Every label value comes from the configuration or a closed set (methods
//! outside the usual ones count as `OTHER`), so a client cannot grow the number of series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Methods with a series of their own; anything else is `OTHER`.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];

/// HTTP statuses 100 to 599, one counter each.
const STATUSES: usize = 500;

/// Counts for one method: one counter per status.
type ByStatus = Box<[AtomicU64]>;

/// The counters of one route (or of one of the gateway's own answers: `-`, `preflight`,
/// `health`, `metrics`).
#[derive(Debug)]
pub struct RouteCounters {
    /// Requests by method slot and status, made on a method's first request.
    requests: [OnceLock<ByStatus>; METHODS.len()],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Total latency, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Default for RouteCounters {
    fn default() -> Self {
        RouteCounters {
            requests: Default::default(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

fn method_slot(m: &str) -> usize {
    METHODS.iter().position(|x| *x == m).unwrap_or(METHODS.len() - 1)
}

impl RouteCounters {
    /// One answered request.
    pub fn record(&self, method: &str, status: u16, latency: Duration) {
        let by_status = self.requests[method_slot(method)]
            .get_or_init(|| (0..STATUSES).map(|_| AtomicU64::new(0)).collect());
        let i = usize::from(status.clamp(100, 599) - 100);
        if let Some(c) = by_status.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = latency.as_secs_f64();
        if let Some(b) = BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Every counter, by the names they are shown under.
#[derive(Debug, Default)]
pub struct Metrics {
    routes: RwLock<BTreeMap<String, Arc<RouteCounters>>>,
    limited: RwLock<BTreeMap<String, Arc<AtomicU64>>>,
    retries: RwLock<BTreeMap<String, Arc<AtomicU64>>>,
}

/// The counter named `name` in `map`, made when missing.
fn counter<T: Default>(map: &RwLock<BTreeMap<String, Arc<T>>>, name: &str) -> Arc<T> {
    if let Some(c) = map.read().unwrap_or_else(|p| p.into_inner()).get(name) {
        return Arc::clone(c);
    }
    let mut map = map.write().unwrap_or_else(|p| p.into_inner());
    Arc::clone(map.entry(name.to_owned()).or_default())
}

impl Metrics {
    /// The counters of route (or own answer) `name`: the same ones on every call.
    pub fn route(&self, name: &str) -> Arc<RouteCounters> {
        counter(&self.routes, name)
    }

    /// Requests refused by limit policy `name`.
    pub fn limited(&self, name: &str) -> Arc<AtomicU64> {
        counter(&self.limited, name)
    }

    /// Calls run a second time on another instance of upstream `name`.
    pub fn retries(&self, name: &str) -> Arc<AtomicU64> {
        counter(&self.retries, name)
    }

    /// The counters in the text format; `extra` is appended (gauges read at scrape time).
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::with_capacity(4096);
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        header(
            &mut out,
            "gateway_requests_total",
            "counter",
            "Requests answered, by route, method and status.",
        );
        for (route, c) in routes.iter() {
            let route = escape(route);
            for (slot, by_status) in c.requests.iter().enumerate() {
                let Some(by_status) = by_status.get() else {
                    continue;
                };
                for (i, n) in by_status.iter().enumerate() {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        let (method, status) = (METHODS[slot], i + 100);
                        let _ = writeln!(
                            out,
                            "gateway_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                        );
                    }
                }
            }
        }
        header(
            &mut out,
            "gateway_request_duration_seconds",
            "histogram",
            "Time from request to response, by route.",
        );
        for (route, c) in routes.iter() {
            histogram(&mut out, &escape(route), c);
        }
        drop(routes);
        for (name, help, label, map) in [
            (
                "gateway_ratelimit_rejections_total",
                "Requests refused with 429, by limit policy.",
                "policy",
                &self.limited,
            ),
            (
                "gateway_retries_total",
                "Calls run a second time on another instance, by upstream.",
                "upstream",
                &self.retries,
            ),
        ] {
            header(&mut out, name, "counter", help);
            for (key, n) in map.read().unwrap_or_else(|p| p.into_inner()).iter() {
                let n = n.load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(key));
            }
        }
        out.push_str(extra);
        out
    }
}

fn histogram(out: &mut String, route: &str, c: &RouteCounters) {
    let count = c.count.load(Ordering::Relaxed);
    if count == 0 {
        return;
    }
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += c.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "gateway_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "gateway_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
    );
    let sum = c.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(
        out,
        "gateway_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
    );
    let _ = writeln!(
        out,
        "gateway_request_duration_seconds_count{{route=\"{route}\"}} {count}"
    );
}

/// `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// FNV-1a, 64 bits: a stable fingerprint of the loaded file for `gateway_config_info`.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_in_the_text_format() {
        let m = Metrics::default();
        let product = m.route("get-product");
        for (status, ms) in [(200, 3), (200, 30), (404, 1)] {
            product.record("GET", status, Duration::from_millis(ms));
        }
        assert!(Arc::ptr_eq(&product, &m.route("get-product")), "registered once");
        m.route("login").record("BREW", 429, Duration::from_millis(1));
        m.limited("login").fetch_add(1, Ordering::Relaxed);
        m.retries("users").fetch_add(1, Ordering::Relaxed);
        let text = m.render("");
        for line in [
            "gateway_requests_total{route=\"get-product\",method=\"GET\",status=\"200\"} 2",
            "gateway_requests_total{route=\"get-product\",method=\"GET\",status=\"404\"} 1",
            "gateway_requests_total{route=\"login\",method=\"OTHER\",status=\"429\"} 1",
            "gateway_request_duration_seconds_bucket{route=\"get-product\",le=\"0.005\"} 2",
            "gateway_request_duration_seconds_bucket{route=\"get-product\",le=\"0.05\"} 3",
            "gateway_request_duration_seconds_bucket{route=\"get-product\",le=\"+Inf\"} 3",
            "gateway_request_duration_seconds_count{route=\"get-product\"} 3",
            "gateway_ratelimit_rejections_total{policy=\"login\"} 1",
            "gateway_retries_total{upstream=\"users\"} 1",
            "# TYPE gateway_request_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
    }
}
