//! The gateway's own endpoints, answered before any route: `GET /health` (alive, and whether
//! every upstream has an instance), `GET /ready` (whether to send it traffic: every upstream a
//! route calls has an instance, and no stop is under way) and `GET /metrics` (the counters, and
//! gauges read at scrape time from where they live: instances, breakers, buckets, the file in
//! use, connections, revocations; on the admin listener only, when there is one).

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
        if path == crate::openapi::PATH {
            // The API description, generated when this configuration loaded.
            return Some(match *method {
                Method::GET | Method::HEAD => Ok(reply::json(StatusCode::OK, loaded.openapi().clone())),
                _ => Err(Refusal::MethodNotAllowed {
                    method: method.as_str().to_owned(),
                    path: path.to_owned(),
                    allow: vec!["GET".into(), "HEAD".into()],
                }),
            });
        }
        // With an admin listener, the counters are the admin view's alone.
        let terse = loaded.config().admin.is_some();
        if path != "/health" && path != "/ready" && (path != "/metrics" || terse) {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            return Some(Err(Refusal::MethodNotAllowed {
                method: method.as_str().to_owned(),
                path: path.to_owned(),
                allow: vec!["GET".into(), "HEAD".into()],
            }));
        }
        Some(Ok(match path {
            "/health" => loaded.health(terse),
            "/ready" => self.ready(loaded, terse),
            _ => self.metrics_reply(loaded),
        }))
    }

    /// `GET /ready`: 200 while no stop is under way and every upstream a route calls has a
    /// healthy instance; else 503 saying which upstreams have none (how many, when `terse`:
    /// the public answer beside an admin listener, which names them).
    pub(crate) fn ready(&self, loaded: &Loaded, terse: bool) -> Reply {
        let missing: Vec<&str> = loaded
            .routed_upstreams()
            .iter()
            .filter(|name| {
                loaded
                    .upstream(name)
                    .is_none_or(|u| u.balancer.instances().is_empty())
            })
            .map(String::as_str)
            .collect();
        let status = if self.draining() {
            "draining"
        } else if missing.is_empty() {
            "ready"
        } else {
            "unready"
        };
        let mut body = serde_json::json!({ "status": status });
        if !missing.is_empty() {
            body["upstreams_without_instances"] = if terse {
                missing.len().into()
            } else {
                missing.into()
            };
        }
        let code = if status == "ready" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        reply::json(code, Bytes::from(body.to_string()))
    }

    /// `GET /metrics`: the counters, then gauges read now from where they live.
    pub(crate) fn metrics_reply(&self, loaded: &Loaded) -> Reply {
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

    /// Liveness, and whether every upstream has a healthy instance: answering at all means
    /// alive; 200 means every upstream has one, 503 that one has none (the body says which; when
    /// `terse`, only how many, without the file's path or upstream names).
    pub(crate) fn health(&self, terse: bool) -> Reply {
        let counts = self.upstreams().counts();
        let ready = counts.iter().all(|(_, n)| *n > 0);
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        if terse {
            let body = serde_json::json!({
                "status": if ready { "ok" } else { "degraded" },
                "routes": self.config().routes.len(),
                "upstreams": counts.len(),
                "upstreams_without_instances": counts.iter().filter(|(_, n)| *n == 0).count(),
                "instances": counts.iter().map(|(_, n)| n).sum::<usize>(),
            });
            return reply::json(status, Bytes::from(body.to_string()));
        }
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
        reply::json(status, Bytes::from(body.to_string()))
    }
}
