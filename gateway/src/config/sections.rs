//! The tables of `gateway.toml` other than routes, each validated on its own: `[gateway]`,
//! `[auth]`, `[[listener]]` (with TLS and CORS), `[upstream.*]`, `[limit.*]`, `[breaker.*]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shop_discovery::Policy;

use super::raw::{RawAuth, RawBreaker, RawCors, RawGateway, RawLimit, RawListener, RawUpstream};
use super::{
    Auth, Breaker, Cors, DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, Discovery, Limit, LimitKey, Listener, Problems,
    Tls, Upstream, duration,
};
use crate::client::Cidr;

/// What `[gateway]` says.
pub(super) struct Settings {
    pub(super) consul: String,
    pub(super) max_body_bytes: u64,
    pub(super) trusted_proxies: Vec<Cidr>,
    pub(super) header_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) body_timeout: Duration,
    pub(super) max_header_bytes: usize,
    pub(super) max_connections: usize,
}

pub(super) fn gateway(raw: &RawGateway, p: &mut Problems) -> Settings {
    let consul = raw
        .consul
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:8500".to_owned());
    if !consul.is_empty() && !consul.starts_with("http://") {
        p.add(
            "gateway",
            "consul",
            "expected http://host:port, or \"\" to run without Consul",
        );
    }
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    if !(1024..=16 * 1024 * 1024).contains(&max_body_bytes) {
        p.add("gateway", "max_body_bytes", "expected from 1024 to 16777216");
    }
    let mut timeout = |key: &str, text: &Option<String>, default: u64| {
        let d = duration(p, "gateway", key, text.as_deref(), Duration::from_secs(default));
        if d > Duration::from_secs(3600) {
            p.add("gateway", key, "expected at most 1h");
        }
        d
    };
    let header_timeout = timeout("header_timeout", &raw.header_timeout, 10);
    let idle_timeout = timeout("idle_timeout", &raw.idle_timeout, 60);
    let body_timeout = timeout("body_timeout", &raw.body_timeout, 10);
    let max_header_bytes = raw.max_header_bytes.unwrap_or(16 * 1024);
    if !(8192..=1024 * 1024).contains(&max_header_bytes) {
        p.add("gateway", "max_header_bytes", "expected from 8192 to 1048576");
    }
    let max_connections = raw.max_connections.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&max_connections) {
        p.add("gateway", "max_connections", "expected from 1 to 1000000");
    }
    let mut trusted_proxies = Vec::new();
    for text in raw.trusted_proxies.iter().flatten() {
        match Cidr::parse(text) {
            Some(c) => trusted_proxies.push(c),
            None => p.add(
                "gateway",
                "trusted_proxies",
                format!("expected an address or a block like 10.0.0.0/8, got {text:?}"),
            ),
        }
    }
    Settings {
        consul,
        max_body_bytes,
        trusted_proxies,
        header_timeout,
        idle_timeout,
        body_timeout,
        max_header_bytes,
        max_connections,
    }
}

pub(super) fn auth(raw: &RawAuth, base: &Path, p: &mut Problems) -> Auth {
    Auth {
        public_key: base.join(
            raw.public_key
                .clone()
                .unwrap_or_else(|| PathBuf::from(".run/data/keys/token-signing.pub.pem")),
        ),
        issuer: raw
            .issuer
            .clone()
            .unwrap_or_else(|| "shop-user-service".to_owned()),
        audience: raw.audience.clone().unwrap_or_else(|| "shop".to_owned()),
        leeway: duration(
            p,
            "auth",
            "leeway",
            raw.leeway.as_deref(),
            Duration::from_secs(30),
        ),
        revocations: raw.revocations.clone(),
    }
}

pub(super) fn listeners(raw: &[RawListener], base: &Path, p: &mut Problems) -> Vec<Listener> {
    let mut listeners = Vec::new();
    if raw.is_empty() {
        p.add(
            "listener",
            "",
            "at least one [[listener]] with an address is needed",
        );
    }
    for (i, l) in raw.iter().enumerate() {
        let place = format!("listener {}", i + 1);
        let tls = l.tls.as_ref().and_then(|t| {
            let (cert, key) = (base.join(&t.cert), base.join(&t.key));
            match crate::tls::server_config(&cert, &key) {
                Ok(server) => Some(Tls {
                    cert,
                    key,
                    server: Arc::new(server),
                }),
                Err(e) => {
                    p.add(&place, e.key(), e.to_string());
                    None
                }
            }
        });
        let cors = l.cors.as_ref().map(|c| cors(c, &format!("{place} cors"), p));
        match l.address.parse::<SocketAddr>() {
            Ok(address) => {
                if address.port() != 0 && listeners.iter().any(|o: &Listener| o.address == address) {
                    p.add(&place, "address", format!("{address} is listed twice"));
                }
                listeners.push(Listener { address, tls, cors });
            }
            Err(_) => p.add(
                &place,
                "address",
                format!("expected ip:port, got {:?}", l.address),
            ),
        }
    }
    listeners
}

fn discovery(place: &str, u: &RawUpstream, consul: &str, p: &mut Problems) -> Discovery {
    match (&u.service, &u.addresses) {
        (Some(s), None) => {
            if consul.is_empty() {
                p.add(
                    place,
                    "service",
                    "names a Consul service, but gateway.consul is empty",
                );
            }
            Discovery::Consul(s.clone())
        }
        (None, Some(a)) if !a.is_empty() => {
            for addr in a {
                if addr.parse::<SocketAddr>().is_err() {
                    p.add(place, "addresses", format!("expected ip:port, got {addr:?}"));
                }
            }
            Discovery::Static(a.clone())
        }
        (Some(_), Some(_)) => {
            p.add(
                place,
                "service",
                "give either service (Consul) or addresses (static), not both",
            );
            Discovery::Static(Vec::new())
        }
        _ => {
            p.add(
                place,
                "service",
                "give service (a Consul service name) or addresses (a static list)",
            );
            Discovery::Static(Vec::new())
        }
    }
}

pub(super) fn upstreams(
    raw: &BTreeMap<String, RawUpstream>,
    consul: &str,
    p: &mut Problems,
) -> BTreeMap<String, Upstream> {
    let mut upstreams = BTreeMap::new();
    for (name, u) in raw {
        let place = format!("upstream {name:?}");
        let discovery = discovery(&place, u, consul, p);
        let balancer = Policy::parse(u.balancer.as_deref().unwrap_or("p2c")).unwrap_or_else(|| {
            p.add(&place, "balancer", "expected \"p2c\" or \"round_robin\"");
            Policy::PowerOfTwo
        });
        let timeout = duration(p, &place, "timeout", u.timeout.as_deref(), DEFAULT_TIMEOUT);
        upstreams.insert(
            name.clone(),
            Upstream {
                name: name.clone(),
                discovery,
                balancer,
                timeout,
            },
        );
    }
    upstreams
}

pub(super) fn limits(raw: &BTreeMap<String, RawLimit>, p: &mut Problems) -> BTreeMap<String, Limit> {
    let mut limits = BTreeMap::new();
    for (name, l) in raw {
        let place = format!("limit {name:?}");
        if l.rate == 0 {
            p.add(&place, "rate", "must be at least 1");
        }
        let key = match l.key.as_deref().unwrap_or("ip") {
            "ip" => LimitKey::Ip,
            "user" => LimitKey::User,
            "route" => LimitKey::Route,
            "global" => LimitKey::Global,
            other => {
                p.add(
                    &place,
                    "key",
                    format!("expected ip, user, route or global, got {other:?}"),
                );
                LimitKey::Ip
            }
        };
        limits.insert(
            name.clone(),
            Limit {
                rate: l.rate,
                per: duration(p, &place, "per", l.per.as_deref(), Duration::from_secs(1)),
                burst: l.burst.unwrap_or(l.rate).max(1),
                key,
            },
        );
    }
    limits
}

pub(super) fn breakers(raw: &BTreeMap<String, RawBreaker>, p: &mut Problems) -> BTreeMap<String, Breaker> {
    let mut breakers = BTreeMap::new();
    for (name, b) in raw {
        let place = format!("breaker {name:?}");
        let ratio = b.failure_ratio.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&ratio) || ratio == 0.0 {
            p.add(&place, "failure_ratio", "expected a number above 0 and at most 1");
        }
        breakers.insert(
            name.clone(),
            Breaker {
                consecutive_failures: b.consecutive_failures.unwrap_or(5).max(1),
                failure_ratio: ratio,
                min_calls: b.min_calls.unwrap_or(20).max(1),
                window: duration(p, &place, "window", b.window.as_deref(), Duration::from_secs(10)),
                open_for: duration(
                    p,
                    &place,
                    "open_for",
                    b.open_for.as_deref(),
                    Duration::from_secs(5),
                ),
            },
        );
    }
    breakers
}

/// Methods a browser may use unless `allow_methods` says otherwise: the REST contract's.
const CORS_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
/// Request headers a browser may send unless `allow_headers` says otherwise.
const CORS_HEADERS: [&str; 4] = ["authorization", "content-type", "idempotency-key", "x-request-id"];
/// Response headers a page may read unless `expose_headers` says otherwise.
const CORS_EXPOSE: [&str; 5] = [
    "x-request-id",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

/// A listener's `[listener.cors]`, with the header values ready.
fn cors(raw: &RawCors, place: &str, p: &mut Problems) -> Cors {
    let mut any_origin = false;
    let mut origins = Vec::new();
    if raw.allow_origins.is_empty() {
        p.add(place, "allow_origins", "list at least one origin, or \"*\"");
    }
    for o in &raw.allow_origins {
        if o == "*" {
            any_origin = true;
            continue;
        }
        let valid = o.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains(['/', '?', '#', ' '])
        });
        if valid {
            origins.push(o.to_ascii_lowercase());
        } else {
            p.add(
                place,
                "allow_origins",
                format!("expected \"*\" or an origin like \"https://shop.example\" (no path), got {o:?}"),
            );
        }
    }
    let allow_credentials = raw.allow_credentials.unwrap_or(false);
    if any_origin && allow_credentials {
        p.add(
            place,
            "allow_credentials",
            "cannot be true with allow_origins = [\"*\"]: name the origins",
        );
    }
    let token_list =
        |key: &str, given: &Option<Vec<String>>, default: &[&str], p: &mut Problems, upper: bool| {
            let items: Vec<String> = match given {
                Some(v) => v.clone(),
                None => default.iter().map(|s| (*s).to_owned()).collect(),
            };
            for i in &items {
                if i.is_empty()
                    || !i
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    p.add(place, key, format!("expected header or method names, got {i:?}"));
                }
            }
            let items: Vec<String> = items
                .iter()
                .map(|i| {
                    if upper {
                        i.to_ascii_uppercase()
                    } else {
                        i.to_ascii_lowercase()
                    }
                })
                .collect();
            items.join(", ")
        };
    Cors {
        any_origin,
        origins,
        allow_methods: token_list("allow_methods", &raw.allow_methods, &CORS_METHODS, p, true),
        allow_headers: token_list("allow_headers", &raw.allow_headers, &CORS_HEADERS, p, false),
        expose_headers: token_list("expose_headers", &raw.expose_headers, &CORS_EXPOSE, p, false),
        max_age_secs: duration(
            p,
            place,
            "max_age",
            raw.max_age.as_deref(),
            Duration::from_secs(600),
        )
        .as_secs(),
        allow_credentials,
    }
}
