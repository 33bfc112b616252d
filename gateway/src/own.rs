//! The gateway's own endpoints, answered before any route: `GET /health` (alive, and whether
//! every upstream has an instance) and `GET /metrics` (the counters, and gauges read at scrape
//! time from where they live: instances, breakers, buckets, the file in use, connections,
//! revocations).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, StatusCode};

use crate::breaker;
use crate::live::Gateway;
use crate::loaded::Loaded;
use crate::metrics;
use crate::reply::{self, Refusal, Reply};

impl Gateway {
    /// `/health` and `/metrics`, the gateway's own endpoints; `None` for any other path.
    pub(crate) fn own_endpoint(
        &self,
        loaded: &Loaded,
        method: &Method,
        path: &str,
    ) -> Option<Result<Reply, Refusal>> {
        if path != "/health" && path != "/metrics" {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            return Some(Err(Refusal::MethodNotAllowed {
                method: method.as_str().to_owned(),
                path: path.to_owned(),
                allow: vec!["GET".into(), "HEAD".into()],
            }));
        }
        Some(Ok(if path == "/health" {
            loaded.health()
        } else {
            self.metrics_reply(loaded)
        }))
    }

    /// `GET /metrics`: the counters, then gauges read now from where they live.
    fn metrics_reply(&self, loaded: &Loaded) -> Reply {
        use std::fmt::Write;
        let mut extra = loaded.gauges();
        metrics::header(
            &mut extra,
            "gateway_config_reloads_total",
            "counter",
            "Reloads of the configuration file, by result (ok or refused).",
        );
        let (ok, refused) = self.reloads();
        for (result, n) in [("ok", ok), ("refused", refused)] {
            let _ = writeln!(extra, "gateway_config_reloads_total{{result=\"{result}\"}} {n}");
        }
        metrics::header(
            &mut extra,
            "gateway_connections_open",
            "gauge",
            "Client connections open now.",
        );
        let connections = self.connections();
        let _ = writeln!(extra, "gateway_connections_open {}", connections.open());
        metrics::header(
            &mut extra,
            "gateway_revoked_users",
            "gauge",
            "Users with revoked tokens the gateway refuses (learned from the user service).",
        );
        let revocations = self.revocations();
        let _ = writeln!(extra, "gateway_revoked_users {}", revocations.len());
        metrics::header(
            &mut extra,
            "gateway_revocations_age_seconds",
            "gauge",
            "Seconds since the revocation feed last answered (-1: never).",
        );
        let age = revocations.age().map_or(-1.0, |a| a.as_secs_f64());
        let _ = writeln!(extra, "gateway_revocations_age_seconds {age:.3}");
        metrics::header(
            &mut extra,
            "gateway_connections_closed_total",
            "counter",
            "Client connections the gateway closed, by reason (header_timeout, idle, evicted).",
        );
        for (cut, n) in connections.cuts() {
            let _ = writeln!(
                extra,
                "gateway_connections_closed_total{{reason=\"{}\"}} {n}",
                cut.label()
            );
        }
        let mut r = reply::empty(StatusCode::OK);
        *r.body_mut() = http_body_util::Full::new(Bytes::from(self.metrics().render(&extra)));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }
}

impl Loaded {
    /// The gauges `/metrics` reads from this configuration: instances per upstream, breaker
    /// states and trips, buckets held per limit policy, and which file is loaded.
    fn gauges(&self) -> String {
        use std::fmt::Write;
        let mut extra = String::new();
        metrics::header(
            &mut extra,
            "gateway_upstream_instances",
            "gauge",
            "Healthy instances the balancer holds, by upstream.",
        );
        for (name, n) in self.upstreams().counts() {
            let _ = writeln!(
                extra,
                "gateway_upstream_instances{{upstream=\"{}\"}} {n}",
                metrics::escape(&name)
            );
        }
        metrics::header(
            &mut extra,
            "gateway_breaker_state",
            "gauge",
            "Circuit breaker per policy and instance address: 0 closed, 1 open, 2 half-open.",
        );
        let mut trips = String::new();
        metrics::header(
            &mut trips,
            "gateway_breaker_trips_total",
            "counter",
            "Times a breaker opened, by policy and instance.",
        );
        for (policy, b) in self.breakers() {
            for (instance, state, n) in b.states() {
                let labels = format!(
                    "policy=\"{}\",instance=\"{}\"",
                    metrics::escape(policy),
                    metrics::escape(&instance)
                );
                let code = match state {
                    breaker::State::Closed => 0,
                    breaker::State::Open => 1,
                    breaker::State::HalfOpen => 2,
                };
                let _ = writeln!(extra, "gateway_breaker_state{{{labels}}} {code}");
                let _ = writeln!(trips, "gateway_breaker_trips_total{{{labels}}} {n}");
            }
        }
        extra.push_str(&trips);
        metrics::header(
            &mut extra,
            "gateway_config_info",
            "gauge",
            "The loaded gateway.toml: its path and a fingerprint of its text.",
        );
        let _ = writeln!(
            extra,
            "gateway_config_info{{path=\"{}\",hash=\"{:016x}\"}} 1",
            metrics::escape(&self.config().path.display().to_string()),
            self.config().fingerprint
        );
        metrics::header(
            &mut extra,
            "gateway_ratelimit_buckets",
            "gauge",
            "Token buckets held, by limit policy (idle ones are forgotten).",
        );
        for (name, policy) in self.limits() {
            let _ = writeln!(
                extra,
                "gateway_ratelimit_buckets{{policy=\"{}\"}} {}",
                metrics::escape(name),
                policy.buckets()
            );
        }
        extra
    }

    /// Liveness and readiness: answering at all means alive; 200 means every upstream has a
    /// healthy instance, 503 that one has none (the body says which).
    fn health(&self) -> Reply {
        let counts = self.upstreams().counts();
        let ready = counts.iter().all(|(_, n)| *n > 0);
        let upstreams: serde_json::Map<String, serde_json::Value> = counts
            .into_iter()
            .map(|(name, n)| (name, serde_json::json!({ "instances": n })))
            .collect();
        let body = serde_json::json!({
            "status": if ready { "ok" } else { "degraded" },
            "config": self.config().path.display().to_string(),
            "routes": self.config().routes.len(),
            "upstreams": upstreams,
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        reply::json(status, Bytes::from(body.to_string()))
    }
}
