//! The read-only admin view, served only on `[admin] address` (never on a public listener):
//! `GET /config` (the configuration in effect, with its file's hash, when it was loaded and the
//! last refused reload), `GET /upstreams` (instances per upstream, each with its breakers'
//! states and why they last opened), `GET /metrics` (the Prometheus text), and `/health` and
//! `/ready` with names where the public answers give only counts.
//!
//! `/config` is written field by field from the validated configuration, not serialised
//! wholesale, so a key added to the file later shows here only once someone decides it may:
//! nothing secret leaks by default. Paths (the token key, TLS files) are shown; credentials in
//! the Consul address are not.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::config::{Access, Body, Config, Discovery, LimitKey};
use crate::live::Gateway;
use crate::loaded::Loaded;
use crate::reply::{self, Refusal, Reply};

impl Gateway {
    /// Answers one request to the admin listener: GET (or HEAD) of one of its paths; 404 for
    /// any other path, 405 for any other method.
    pub fn admin(&self, method: &Method, path: &str) -> Reply {
        const PATHS: [&str; 5] = ["/config", "/upstreams", "/metrics", "/health", "/ready"];
        if !PATHS.contains(&path) {
            return Refusal::NoRoute {
                method: method.as_str().to_owned(),
                path: path.to_owned(),
            }
            .reply();
        }
        if method != Method::GET && method != Method::HEAD {
            return Refusal::MethodNotAllowed {
                method: method.as_str().to_owned(),
                path: path.to_owned(),
                allow: vec!["GET".into(), "HEAD".into()],
            }
            .reply();
        }
        let loaded = self.current();
        match path {
            "/config" => json_reply(&self.config_view(&loaded)),
            "/upstreams" => json_reply(&upstreams_view(&loaded, Instant::now())),
            "/metrics" => self.metrics_reply(&loaded),
            "/health" => loaded.health(false),
            _ => self.ready(&loaded, false),
        }
    }

    /// `GET /config`: the file (path, SHA-256, FNV-1a, when loaded), reloads (counts, the last
    /// refused one and why), and every table as it is in effect, defaults filled in.
    fn config_view(&self, loaded: &Loaded) -> Value {
        let c = loaded.config();
        let (ok, refused) = self.reloads();
        let last_refused = self
            .last_refused()
            .map(|r| json!({ "at": rfc3339(r.at), "cause": r.cause.as_str(), "error": r.error }));
        json!({
            "file": {
                "path": c.path.display().to_string(),
                "sha256": c.sha256,
                "fnv1a": format!("{:016x}", c.fingerprint),
                "loaded_at": rfc3339(loaded.loaded_at()),
            },
            "reloads": { "ok": ok, "refused": refused, "last_refused": last_refused },
            "gateway": gateway_view(c),
            "auth": {
                "public_key": c.auth.public_key.display().to_string(),
                "issuer": c.auth.issuer,
                "audience": c.auth.audience,
                "leeway": span(c.auth.leeway),
                "revocations": c.auth.revocations,
            },
            "listeners": c.listeners.iter().map(|l| json!({
                "address": l.address.to_string(),
                "tls": l.tls.as_ref().map(|t| json!({
                    "cert": t.cert.display().to_string(),
                    "key": t.key.display().to_string(),
                })),
                "cors": l.cors.as_ref().map(|c| json!({
                    "allow_origins": if c.any_origin { vec!["*".to_owned()] } else { c.origins.clone() },
                    "allow_methods": c.allow_methods,
                    "allow_headers": c.allow_headers,
                    "expose_headers": c.expose_headers,
                    "max_age": span(Duration::from_secs(c.max_age_secs)),
                    "allow_credentials": c.allow_credentials,
                })),
            })).collect::<Vec<_>>(),
            "admin": c.admin.map(|a| json!({ "address": a.address.to_string() })),
            "access_log": {
                "format": c.access_log.format.as_str(),
                "fields": c.access_log.fields.iter().map(|f| f.name()).collect::<Vec<_>>(),
                "file": c.access_log.file.as_ref().map(|f| f.display().to_string()),
            },
            "upstreams": upstream_config(c),
            "limits": limits_view(c),
            "breakers": breakers_view(c),
            "routes": c.routes.iter().map(route_view).collect::<Vec<_>>(),
        })
    }
}

/// `[gateway]` as in effect.
fn gateway_view(c: &Config) -> Value {
    json!({
        "consul": redact_userinfo(&c.consul),
        "max_body_bytes": c.max_body_bytes,
        "trusted_proxies": c.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "header_timeout": span(c.header_timeout),
        "idle_timeout": span(c.idle_timeout),
        "body_timeout": span(c.body_timeout),
        "max_header_bytes": c.max_header_bytes,
        "max_connections": c.max_connections,
        "drain": span(c.drain),
    })
}

/// `[upstream.NAME]` tables as in effect.
fn upstream_config(c: &Config) -> Value {
    let mut out = Map::new();
    for (name, u) in &c.upstreams {
        let mut v = json!({
            "balancer": balancer_name(u.balancer),
            "timeout": span(u.timeout),
        });
        match &u.discovery {
            Discovery::Consul(service) => v["service"] = json!(service),
            Discovery::Static(addresses) => v["addresses"] = json!(addresses),
        }
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}

/// `[limit.NAME]` tables as in effect.
fn limits_view(c: &Config) -> Value {
    let limits: Map<String, Value> = c
        .limits
        .iter()
        .map(|(name, l)| {
            let key = match l.key {
                LimitKey::Ip => "ip",
                LimitKey::User => "user",
                LimitKey::Route => "route",
                LimitKey::Global => "global",
            };
            let v = json!({ "rate": l.rate, "per": span(l.per), "burst": l.burst, "key": key });
            (name.clone(), v)
        })
        .collect();
    Value::Object(limits)
}

/// `[breaker.NAME]` tables as in effect.
fn breakers_view(c: &Config) -> Value {
    let breakers: Map<String, Value> = c
        .breakers
        .iter()
        .map(|(name, b)| {
            let v = json!({
                "consecutive_failures": b.consecutive_failures,
                "failure_ratio": b.failure_ratio,
                "min_calls": b.min_calls,
                "window": span(b.window),
                "open_for": span(b.open_for),
            });
            (name.clone(), v)
        })
        .collect();
    Value::Object(breakers)
}

/// One `[[route]]` as in effect (its upstream's timeout filled in when it has none of its own).
fn route_view(r: &crate::config::Route) -> Value {
    let (body, raw_body) = match &r.body {
        Body::None => (None, None),
        Body::Whole => (Some("*"), None),
        Body::Field(f) => (Some(f.as_str()), None),
        Body::Raw(f) => (None, Some(f.as_str())),
    };
    let headers: Map<String, Value> = r
        .headers
        .iter()
        .map(|h| (h.header.as_str().to_owned(), json!(h.field.name())))
        .collect();
    json!({
        "name": r.name,
        "method": r.method,
        "path": r.template.as_str(),
        "upstream": r.upstream,
        "rpc": format!("{}/{}", r.rpc.parent_service().full_name(), r.rpc.name()),
        "body": body,
        "raw_body": raw_body,
        "headers": headers,
        "status": r.status,
        "auth": match r.access {
            Access::Public => "public",
            Access::User => "user",
            Access::Admin => "admin",
        },
        "timeout": span(r.timeout),
        "limit": r.limit,
        "breaker": r.breaker,
        "idempotent": r.idempotent,
    })
}

/// `GET /upstreams`: for each upstream, how it finds instances, and each healthy instance with
/// its calls in flight and, under each breaker policy its routes use, the breaker's state, trips,
/// why it last opened and how long until a probe.
fn upstreams_view(loaded: &Loaded, now: Instant) -> Value {
    let c = loaded.config();
    let mut out = Map::new();
    for (name, u) in loaded.upstreams().iter() {
        // The breaker policies the routes on this upstream use (breakers are kept per policy).
        let mut policies: Vec<&str> = c
            .routes
            .iter()
            .filter(|r| r.upstream == name)
            .filter_map(|r| r.breaker.as_deref())
            .collect();
        policies.sort_unstable();
        policies.dedup();
        let instances: Vec<Value> = u
            .balancer
            .instances()
            .iter()
            .map(|i| {
                let breakers: Map<String, Value> = policies
                    .iter()
                    .filter_map(|p| Some((*p, loaded.breakers().get(*p)?)))
                    .map(|(p, b)| (p.to_owned(), breaker_view(b.detail(&i.authority, now))))
                    .collect();
                json!({
                    "id": i.id,
                    "address": i.authority,
                    "in_flight": i.in_flight(),
                    "breakers": breakers,
                })
            })
            .collect();
        let source = match c.upstreams.get(name).map(|u| &u.discovery) {
            Some(Discovery::Consul(service)) => json!({ "consul": service }),
            Some(Discovery::Static(addresses)) => json!({ "static": addresses }),
            None => Value::Null,
        };
        let routed = loaded.routed_upstreams().iter().any(|r| r == name);
        out.insert(
            name.to_owned(),
            json!({ "discovery": source, "routed": routed, "instances": instances }),
        );
    }
    Value::Object(out)
}

/// One breaker; an instance no call under the policy has reached yet is `closed`.
fn breaker_view(detail: Option<crate::breaker::Detail>) -> Value {
    let Some(d) = detail else {
        return json!({ "state": "closed", "trips": 0 });
    };
    let mut v = json!({ "state": d.state.as_str(), "trips": d.trips });
    if let Some((why, failure)) = d.last_trip {
        v["last_trip"] = json!({ "reason": why.as_str(), "failure": failure });
    }
    if let Some(left) = d.probe_in {
        v["probe_in_ms"] = json!(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
    }
    v
}

fn json_reply(v: &Value) -> Reply {
    reply::json(StatusCode::OK, Bytes::from(v.to_string()))
}

fn balancer_name(p: shop_discovery::Policy) -> &'static str {
    match p {
        shop_discovery::Policy::RoundRobin => "round_robin",
        shop_discovery::Policy::PowerOfTwo => "p2c",
    }
}

/// A duration as the file writes it: `"3s"`, or `"500ms"` when not whole seconds.
fn span(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `http://user:secret@host:8500` as `http://***@host:8500`: the address without credentials.
fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// A time as RFC 3339 in UTC, to the second.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (y, m, d) = shop_base::logs::civil(i64::try_from(secs / 86_400).unwrap_or(0));
    let rest = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_consul_address_are_not_shown() {
        assert_eq!(redact_userinfo("http://127.0.0.1:8500"), "http://127.0.0.1:8500");
        assert_eq!(
            redact_userinfo("http://u:p@consul:8500/x@y"),
            "http://***@consul:8500/x@y"
        );
        assert_eq!(redact_userinfo(""), "");
    }

    #[test]
    fn durations_and_times_read_as_in_the_file() {
        assert_eq!(span(Duration::from_secs(3)), "3s");
        assert_eq!(span(Duration::from_millis(1500)), "1500ms");
        assert_eq!(span(Duration::ZERO), "0s");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
    }
}
