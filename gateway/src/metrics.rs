//! The gateway's counters, and `GET /metrics` in the Prometheus text format (version 0.0.4):
//! requests by route, method and status; latency histograms by route; rate-limit refusals by
//! policy; retries by upstream. Breaker states, instance counts and the loaded configuration
//! are read at scrape time from where they live.
//!
//! Every label value comes from the configuration or a closed set (methods outside the usual
//! ones count as `OTHER`), so a client cannot grow the number of series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, &'static str, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    limited: BTreeMap<String, u64>,
    retries: BTreeMap<String, u64>,
}

/// Counters shared by every request.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// One request, as the metrics count it.
pub struct Seen<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub limited_by: Option<&'a str>,
    pub retried_upstream: Option<&'a str>,
}

impl Metrics {
    pub fn record(&self, seen: Seen<'_>) {
        let Ok(mut m) = self.inner.lock() else {
            return;
        };
        *m.requests
            .entry((seen.route.to_owned(), method_label(seen.method), seen.status))
            .or_default() += 1;
        let h = m.latency.entry(seen.route.to_owned()).or_default();
        let secs = seen.latency.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
        if let Some(policy) = seen.limited_by {
            *m.limited.entry(policy.to_owned()).or_default() += 1;
        }
        if let Some(upstream) = seen.retried_upstream {
            *m.retries.entry(upstream.to_owned()).or_default() += 1;
        }
    }

    /// The counters in the text format; `extra` is appended (gauges read at scrape time).
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::with_capacity(4096);
        let Ok(m) = self.inner.lock() else {
            return out;
        };
        header(
            &mut out,
            "gateway_requests_total",
            "counter",
            "Requests answered, by route, method and status.",
        );
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "gateway_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        header(
            &mut out,
            "gateway_request_duration_seconds",
            "histogram",
            "Time from request to response, by route.",
        );
        for (route, h) in &m.latency {
            let route = escape(route);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "gateway_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "gateway_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "gateway_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "gateway_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        header(
            &mut out,
            "gateway_ratelimit_rejections_total",
            "counter",
            "Requests refused with 429, by limit policy.",
        );
        for (policy, n) in &m.limited {
            let _ = writeln!(
                out,
                "gateway_ratelimit_rejections_total{{policy=\"{}\"}} {n}",
                escape(policy)
            );
        }
        header(
            &mut out,
            "gateway_retries_total",
            "counter",
            "Calls run a second time on another instance, by upstream.",
        );
        for (upstream, n) in &m.retries {
            let _ = writeln!(
                out,
                "gateway_retries_total{{upstream=\"{}\"}} {n}",
                escape(upstream)
            );
        }
        out.push_str(extra);
        out
    }
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

fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
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
        for (status, ms) in [(200, 3), (200, 30), (404, 1)] {
            m.record(Seen {
                route: "get-product",
                method: "GET",
                status,
                latency: Duration::from_millis(ms),
                limited_by: None,
                retried_upstream: None,
            });
        }
        m.record(Seen {
            route: "login",
            method: "BREW",
            status: 429,
            latency: Duration::from_millis(1),
            limited_by: Some("login"),
            retried_upstream: Some("users"),
        });
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
