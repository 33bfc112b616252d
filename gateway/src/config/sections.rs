//! The tables of `gateway.toml` other than routes, each validated on its own: `[gateway]`,
//! `[auth]`, `[[listener]]` (with TLS and CORS), `[upstream.*]`, `[limit.*]`, `[breaker.*]`,
//! `[access_log]`, `[admin]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shop_discovery::Policy;

use super::raw::{
    RawAccessLog, RawAdmin, RawAuth, RawBreaker, RawCors, RawGateway, RawLimit, RawListener, RawUpstream,
};
use super::{
    AccessLog, Admin, Auth, Breaker, Cors, DEFAULT_DRAIN, DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, Discovery,
    Limit, LimitKey, Listener, Problems, Secret, Tls, Upstream, duration, span,
};
use crate::access::{Field, Format};
use crate::client::Cidr;

/// What `[gateway]` says.
pub(super) struct Settings {
    pub(super) consul: String,
    pub(super) consul_token: Option<Secret>,
    pub(super) otlp_traces: Option<shop_base::spans::Endpoint>,
    pub(super) max_body_bytes: u64,
    pub(super) trusted_proxies: Vec<Cidr>,
    pub(super) header_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) body_timeout: Duration,
    pub(super) max_header_bytes: usize,
    pub(super) max_connections: usize,
    pub(super) drain: Duration,
}

/// `consul_token`, else `CONSUL_HTTP_TOKEN`; empty (`"${CONSUL_TOKEN:-}"` with the variable
/// unset) means none.
fn consul_token(raw: &RawGateway, p: &mut Problems) -> Option<Secret> {
    let token = raw
        .consul_token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| std::env::var("CONSUL_HTTP_TOKEN").ok().filter(|t| !t.is_empty()))
        .map(Secret);
    if token
        .as_ref()
        .is_some_and(|t| t.0.bytes().any(|b| !b.is_ascii_graphic()))
    {
        p.add(
            "gateway",
            "consul_token",
            "expected printable ASCII without spaces",
        );
    }
    token
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
    let consul_token = consul_token(raw, p);
    let otlp_traces = match raw.otlp_traces.as_deref() {
        None | Some("") => None,
        Some(url) => shop_base::spans::Endpoint::parse(url)
            .map_err(|e| p.add("gateway", "otlp_traces", e))
            .ok(),
    };
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
    // Past a few minutes an orchestrator has long since killed the process.
    let drain = span(
        p,
        "gateway",
        "drain",
        raw.drain.as_deref(),
        (DEFAULT_DRAIN, Duration::from_secs(300)),
    );
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
        consul_token,
        otlp_traces,
        max_body_bytes,
        trusted_proxies,
        header_timeout,
        idle_timeout,
        body_timeout,
        max_header_bytes,
        max_connections,
        drain,
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

/// `[access_log]`: a known format, known fields each named once, and a file (relative to this
/// file's folder) in a folder that exists. The file itself is opened when the configuration is
/// built, so `check` creates nothing.
pub(super) fn access_log(raw: &RawAccessLog, base: &Path, p: &mut Problems) -> AccessLog {
    let format = match raw.format.as_deref() {
        None => Format::Text,
        Some(f) => Format::parse(f).unwrap_or_else(|| {
            p.add(
                "access_log",
                "format",
                format!("expected \"text\" or \"json\", got {f:?}"),
            );
            Format::Text
        }),
    };
    let fields = match &raw.fields {
        None => Field::DEFAULT.to_vec(),
        Some(names) => {
            let mut fields = Vec::new();
            for name in names {
                match Field::parse(name) {
                    Some(f) if fields.contains(&f) => {
                        p.add("access_log", "fields", format!("{name:?} is listed twice"));
                    }
                    Some(f) => fields.push(f),
                    None => {
                        let known: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
                        p.add(
                            "access_log",
                            "fields",
                            format!("unknown field {name:?} (known: {})", known.join(", ")),
                        );
                    }
                }
            }
            if names.is_empty() {
                p.add("access_log", "fields", "list at least one field");
            }
            fields
        }
    };
    let file = raw.file.as_ref().map(|f| base.join(f));
    if let Some(path) = &file {
        let folder = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if path.is_dir() {
            p.add("access_log", "file", format!("{} is a folder", path.display()));
        } else if !folder.is_dir() {
            p.add(
                "access_log",
                "file",
                format!("no folder {} to write it in", folder.display()),
            );
        }
    }
    AccessLog { format, fields, file }
}

/// `[admin]`: an address no public listener uses (the admin view is never served publicly).
pub(super) fn admin(raw: &RawAdmin, listeners: &[Listener], p: &mut Problems) -> Option<Admin> {
    let Ok(address) = raw.address.parse::<SocketAddr>() else {
        p.add(
            "admin",
            "address",
            format!("expected ip:port, got {:?}", raw.address),
        );
        return None;
    };
    // The same port on the same address, or on an address that takes every interface.
    let clash = listeners.iter().position(|l| {
        address.port() != 0
            && l.address.port() == address.port()
            && (l.address.ip() == address.ip()
                || l.address.ip().is_unspecified()
                || address.ip().is_unspecified())
    });
    if let Some(i) = clash {
        p.add(
            "admin",
            "address",
            format!(
                "{address} is listener {}'s address; the admin view needs one of its own, never a public listener",
                i + 1
            ),
        );
        return None;
    }
    Some(Admin { address })
}
