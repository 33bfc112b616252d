//! `gateway.toml`: read into serde structs that refuse unknown keys, then validated in full into
//! a typed [`Config`]: durations parsed, path templates compiled, RPCs resolved against the
//! proto descriptors, names of upstreams and policies checked. Every problem found is reported
//! (file, route or table, key, what is wrong), not just the first.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor, MethodDescriptor};
use serde::Deserialize;

use shop_discovery::Policy;

use crate::limit::Cidr;
use crate::router::{Template, conflicts};

// ---- The file as written -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    descriptors: RawDescriptors,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default, rename = "listener")]
    listeners: Vec<RawListener>,
    #[serde(default, rename = "upstream")]
    upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default, rename = "limit")]
    limits: BTreeMap<String, RawLimit>,
    #[serde(default, rename = "breaker")]
    breakers: BTreeMap<String, RawBreaker>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    consul: Option<String>,
    max_body_bytes: Option<u64>,
    trusted_proxies: Option<Vec<String>>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    body_timeout: Option<String>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptors {
    source: Option<String>,
    files: Option<Vec<PathBuf>>,
    includes: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    public_key: Option<PathBuf>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Option<String>,
    revocations: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: String,
    tls: Option<RawTls>,
    cors: Option<RawCors>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allow_origins: Vec<String>,
    allow_methods: Option<Vec<String>>,
    allow_headers: Option<Vec<String>>,
    expose_headers: Option<Vec<String>>,
    max_age: Option<String>,
    allow_credentials: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    service: Option<String>,
    addresses: Option<Vec<String>>,
    balancer: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    rate: u32,
    per: Option<String>,
    burst: Option<u32>,
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    consecutive_failures: Option<u32>,
    failure_ratio: Option<f64>,
    min_calls: Option<u32>,
    window: Option<String>,
    open_for: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    method: String,
    path: String,
    upstream: String,
    rpc: String,
    body: Option<String>,
    status: Option<u16>,
    auth: Option<String>,
    timeout: Option<String>,
    limit: Option<String>,
    breaker: Option<String>,
    idempotent: Option<bool>,
}

// ---- The validated config ------------------------------------------------------------------

/// The largest request body accepted unless `gateway.max_body_bytes` says otherwise.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;
/// Paths the gateway answers itself; no route may take them.
pub const RESERVED_PATHS: [&str; 2] = ["/health", "/metrics"];
/// The deadline of a call to an upstream unless the route or upstream says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// A fingerprint of the file's text (FNV-1a), shown by `/metrics`.
    pub fingerprint: u64,
    pub consul: String,
    pub max_body_bytes: u64,
    /// Peers whose `X-Forwarded-For` is believed (for the client address of `ip` limits).
    pub trusted_proxies: Vec<Cidr>,
    /// How long a new connection may take, from accept, to finish its first request head (TLS
    /// handshake included); a connection that sends nothing is closed then.
    pub header_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: Duration,
    /// How long a request's body may take to arrive (408 past it).
    pub body_timeout: Duration,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Connections served at once; at the cap the longest-idle one is closed to make room.
    pub max_connections: usize,
    pub descriptors: DescriptorPool,
    pub auth: Auth,
    pub listeners: Vec<Listener>,
    pub upstreams: BTreeMap<String, Upstream>,
    pub limits: BTreeMap<String, Limit>,
    pub breakers: BTreeMap<String, Breaker>,
    pub routes: Vec<Route>,
}

/// A `[[listener]]`: where to listen, and optionally TLS and CORS.
#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<Tls>,
    pub cors: Option<Cors>,
}

/// A listener's certificate: the files, and the rustls configuration built from them at load
/// (so a bad certificate is a problem of the file, found by `check`).
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
}

/// What browsers on other origins may do (`[listener.cors]`), with the header values ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `*` was given: any origin (never with credentials).
    pub any_origin: bool,
    /// Allowed origins, lower-case, as browsers send them (`https://shop.example:8443`).
    pub origins: Vec<String>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    pub max_age_secs: u64,
    pub allow_credentials: bool,
}

impl Config {
    /// The `[[listener]]` with this address.
    pub fn listener(&self, address: SocketAddr) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.address == address)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub public_key: PathBuf,
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    /// The upstream whose `ListRevocations` feed says which tokens were revoked (an account
    /// deleted, a role changed); `None`: such tokens stay valid until they expire.
    pub revocations: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    Consul(String),
    Static(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub discovery: Discovery,
    pub balancer: Policy,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    Ip,
    User,
    Route,
    Global,
}

/// A `[limit.NAME]` (the name is its key in [`Config::limits`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens added per `per`.
    pub rate: u32,
    pub per: Duration,
    pub burst: u32,
    pub key: LimitKey,
}

/// A `[breaker.NAME]` (the name is its key in [`Config::breakers`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Breaker {
    pub consecutive_failures: u32,
    pub failure_ratio: f64,
    pub min_calls: u32,
    pub window: Duration,
    pub open_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    User,
    Admin,
}

/// Where the JSON body goes in the request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body allowed.
    None,
    /// The whole body is the request message (path parameters are added to it).
    Whole,
    /// The body is one message field of the request.
    Field(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub method: String,
    pub template: Template,
    pub upstream: String,
    pub rpc: MethodDescriptor,
    pub body: Body,
    pub status: u16,
    pub access: Access,
    pub timeout: Duration,
    pub limit: Option<String>,
    pub breaker: Option<String>,
    pub idempotent: bool,
}

impl Route {
    pub fn input(&self) -> MessageDescriptor {
        self.rpc.input()
    }
}

// ---- Problems ------------------------------------------------------------------------------

/// One thing wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `route "register"`, `upstream "users"`, `descriptors`, ...
    pub place: String,
    pub key: String,
    pub message: String,
}

/// Why a file cannot be used: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            if p.key.is_empty() {
                writeln!(f, "  {}: {}", p.place, p.message)?;
            } else {
                writeln!(f, "  {}: {}: {}", p.place, p.key, p.message)?;
            }
        }
        Ok(())
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, place: impl Into<String>, key: &str, message: impl Into<String>) {
        self.0.push(Problem {
            place: place.into(),
            key: key.to_owned(),
            message: message.into(),
        });
    }
}

fn duration(p: &mut Problems, place: &str, key: &str, text: Option<&str>, default: Duration) -> Duration {
    match text {
        None => default,
        Some(t) => match parse_duration(t) {
            Some(d) if !d.is_zero() => d,
            _ => {
                p.add(
                    place,
                    key,
                    format!("expected a duration such as \"500ms\", \"3s\" or \"1m\", got {t:?}"),
                );
                default
            }
        },
    }
}

/// `<whole number><ms|s|m|h>`.
pub fn parse_duration(t: &str) -> Option<Duration> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

// ---- Loading -------------------------------------------------------------------------------

/// Reads and validates a gateway file. Relative paths in it are relative to the file's folder.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(path, &read(path)?)
}

/// The text of a gateway file, or the problem `check` reports when it cannot be read.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            place: "file".to_owned(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        }],
    })
}

/// Validates the text of a gateway file named `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            place: "file".to_owned(),
            key: String::new(),
            message: e.to_string().trim_end().replace('\n', "\n    "),
        }],
    })?;
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let mut p = Problems(Vec::new());

    let consul = raw
        .gateway
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
    let max_body_bytes = raw.gateway.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    if !(1024..=16 * 1024 * 1024).contains(&max_body_bytes) {
        p.add("gateway", "max_body_bytes", "expected from 1024 to 16777216");
    }

    let header_timeout = duration(
        &mut p,
        "gateway",
        "header_timeout",
        raw.gateway.header_timeout.as_deref(),
        Duration::from_secs(10),
    );
    let idle_timeout = duration(
        &mut p,
        "gateway",
        "idle_timeout",
        raw.gateway.idle_timeout.as_deref(),
        Duration::from_secs(60),
    );
    let body_timeout = duration(
        &mut p,
        "gateway",
        "body_timeout",
        raw.gateway.body_timeout.as_deref(),
        Duration::from_secs(10),
    );
    for (key, d) in [
        ("header_timeout", header_timeout),
        ("idle_timeout", idle_timeout),
        ("body_timeout", body_timeout),
    ] {
        if d > Duration::from_secs(3600) {
            p.add("gateway", key, "expected at most 1h");
        }
    }
    let max_header_bytes = raw.gateway.max_header_bytes.unwrap_or(16 * 1024);
    if !(8192..=1024 * 1024).contains(&max_header_bytes) {
        p.add("gateway", "max_header_bytes", "expected from 8192 to 1048576");
    }
    let max_connections = raw.gateway.max_connections.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&max_connections) {
        p.add("gateway", "max_connections", "expected from 1 to 1000000");
    }
    let mut trusted_proxies = Vec::new();
    for text in raw.gateway.trusted_proxies.iter().flatten() {
        match Cidr::parse(text) {
            Some(c) => trusted_proxies.push(c),
            None => p.add(
                "gateway",
                "trusted_proxies",
                format!("expected an address or a block like 10.0.0.0/8, got {text:?}"),
            ),
        }
    }

    let descriptors = descriptors(&raw.descriptors, &base, &mut p);

    let auth = Auth {
        public_key: base.join(
            raw.auth
                .public_key
                .clone()
                .unwrap_or_else(|| PathBuf::from(".run/data/keys/token-signing.pub.pem")),
        ),
        issuer: raw
            .auth
            .issuer
            .clone()
            .unwrap_or_else(|| "shop-user-service".to_owned()),
        audience: raw.auth.audience.clone().unwrap_or_else(|| "shop".to_owned()),
        leeway: duration(
            &mut p,
            "auth",
            "leeway",
            raw.auth.leeway.as_deref(),
            Duration::from_secs(30),
        ),
        revocations: raw.auth.revocations.clone(),
    };

    let mut listeners = Vec::new();
    if raw.listeners.is_empty() {
        p.add(
            "listener",
            "",
            "at least one [[listener]] with an address is needed",
        );
    }
    for (i, l) in raw.listeners.iter().enumerate() {
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
        let cors = l.cors.as_ref().map(|c| cors(c, &format!("{place} cors"), &mut p));
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

    let mut upstreams = BTreeMap::new();
    for (name, u) in &raw.upstreams {
        let place = format!("upstream {name:?}");
        let discovery = match (&u.service, &u.addresses) {
            (Some(s), None) => {
                if consul.is_empty() {
                    p.add(
                        &place,
                        "service",
                        "names a Consul service, but gateway.consul is empty",
                    );
                }
                Discovery::Consul(s.clone())
            }
            (None, Some(a)) if !a.is_empty() => {
                for addr in a {
                    if addr.parse::<SocketAddr>().is_err() {
                        p.add(&place, "addresses", format!("expected ip:port, got {addr:?}"));
                    }
                }
                Discovery::Static(a.clone())
            }
            (Some(_), Some(_)) => {
                p.add(
                    &place,
                    "service",
                    "give either service (Consul) or addresses (static), not both",
                );
                Discovery::Static(Vec::new())
            }
            _ => {
                p.add(
                    &place,
                    "service",
                    "give service (a Consul service name) or addresses (a static list)",
                );
                Discovery::Static(Vec::new())
            }
        };
        let balancer = Policy::parse(u.balancer.as_deref().unwrap_or("p2c")).unwrap_or_else(|| {
            p.add(&place, "balancer", "expected \"p2c\" or \"round_robin\"");
            Policy::PowerOfTwo
        });
        let timeout = duration(&mut p, &place, "timeout", u.timeout.as_deref(), DEFAULT_TIMEOUT);
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

    let mut limits = BTreeMap::new();
    for (name, l) in &raw.limits {
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
                per: duration(&mut p, &place, "per", l.per.as_deref(), Duration::from_secs(1)),
                burst: l.burst.unwrap_or(l.rate).max(1),
                key,
            },
        );
    }

    let mut breakers = BTreeMap::new();
    for (name, b) in &raw.breakers {
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
                window: duration(
                    &mut p,
                    &place,
                    "window",
                    b.window.as_deref(),
                    Duration::from_secs(10),
                ),
                open_for: duration(
                    &mut p,
                    &place,
                    "open_for",
                    b.open_for.as_deref(),
                    Duration::from_secs(5),
                ),
            },
        );
    }

    let mut routes: Vec<Route> = Vec::new();
    for r in &raw.routes {
        let name = r
            .name
            .clone()
            .unwrap_or_else(|| format!("{} {}", r.method, r.path));
        let place = format!("route {name:?}");
        if routes.iter().any(|o| o.name == name) {
            p.add(&place, "name", "another route has this name");
        }
        let method = r.method.to_ascii_uppercase();
        if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
            p.add(
                &place,
                "method",
                format!("expected GET, POST, PUT, PATCH or DELETE, got {:?}", r.method),
            );
        }
        if RESERVED_PATHS.contains(&r.path.as_str()) {
            p.add(
                &place,
                "path",
                format!("{} is the gateway's own endpoint", r.path),
            );
        }
        let template = match Template::parse(&r.path) {
            Ok(t) => Some(t),
            Err(e) => {
                p.add(&place, "path", e.to_string());
                None
            }
        };
        if !upstreams.contains_key(&r.upstream) {
            p.add(
                &place,
                "upstream",
                format!("no [upstream.{}] is defined", r.upstream),
            );
        }
        let rpc = match &descriptors {
            Some(pool) => resolve_rpc(pool, &r.rpc)
                .map_err(|m| p.add(&place, "rpc", m))
                .ok(),
            None => None,
        };
        let body = match r.body.as_deref() {
            None | Some("") => Body::None,
            Some("*") => Body::Whole,
            Some(f) => Body::Field(f.to_owned()),
        };
        if body != Body::None && matches!(method.as_str(), "GET" | "DELETE") {
            p.add(&place, "body", format!("{method} routes take no body"));
        }
        if let (Some(rpc), Some(t)) = (&rpc, &template) {
            check_bindings(&mut p, &place, rpc, t, &body);
        }
        let status = r.status.unwrap_or(200);
        if !matches!(status, 200 | 201 | 204) {
            p.add(
                &place,
                "status",
                format!("expected 200, 201 or 204, got {status}"),
            );
        }
        let access = match r.auth.as_deref().unwrap_or("user") {
            "public" => Access::Public,
            "user" => Access::User,
            "admin" => Access::Admin,
            other => {
                p.add(
                    &place,
                    "auth",
                    format!("expected public, user or admin, got {other:?}"),
                );
                Access::User
            }
        };
        for (key, policy, defined) in [
            (
                "limit",
                &r.limit,
                limits.contains_key(r.limit.as_deref().unwrap_or_default()),
            ),
            (
                "breaker",
                &r.breaker,
                breakers.contains_key(r.breaker.as_deref().unwrap_or_default()),
            ),
        ] {
            if let Some(name) = policy
                && !defined
            {
                p.add(&place, key, format!("no [{key}.{name}] is defined"));
            }
        }
        let timeout = duration(
            &mut p,
            &place,
            "timeout",
            r.timeout.as_deref(),
            upstreams
                .get(&r.upstream)
                .map(|u| u.timeout)
                .unwrap_or(DEFAULT_TIMEOUT),
        );
        if let (Some(template), Some(rpc)) = (template, rpc) {
            routes.push(Route {
                name,
                method,
                template,
                upstream: r.upstream.clone(),
                rpc,
                body,
                status,
                access,
                timeout,
                limit: r.limit.clone(),
                breaker: r.breaker.clone(),
                idempotent: r.idempotent.unwrap_or(false),
            });
        }
    }
    if let Some(name) = &auth.revocations
        && !upstreams.contains_key(name)
    {
        p.add("auth", "revocations", format!("no [upstream.{name}] is defined"));
    }
    for (a, b, why) in conflicts(
        routes
            .iter()
            .map(|r| (r.name.as_str(), r.method.as_str(), &r.template)),
    ) {
        p.add(format!("route {a:?}"), "path", format!("{why} route {b:?}"));
    }

    match (p.0.is_empty(), descriptors) {
        (true, Some(descriptors)) => Ok(Config {
            path: path.to_owned(),
            fingerprint: crate::metrics::fingerprint(text.as_bytes()),
            consul,
            max_body_bytes,
            trusted_proxies,
            header_timeout,
            idle_timeout,
            body_timeout,
            max_header_bytes,
            max_connections,
            descriptors,
            auth,
            listeners,
            upstreams,
            limits,
            breakers,
            routes,
        }),
        _ => Err(ConfigError {
            file: path.to_owned(),
            problems: p.0,
        }),
    }
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

fn descriptors(raw: &RawDescriptors, base: &Path, p: &mut Problems) -> Option<DescriptorPool> {
    match (raw.source.as_deref().unwrap_or("builtin"), &raw.files) {
        ("builtin", None) => match DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET) {
            Ok(pool) => Some(pool),
            Err(e) => {
                p.add(
                    "descriptors",
                    "source",
                    format!("the built-in descriptors do not decode: {e}"),
                );
                None
            }
        },
        ("files", Some(files)) if !files.is_empty() => {
            let includes: Vec<PathBuf> = raw
                .includes
                .clone()
                .unwrap_or_else(|| vec![PathBuf::from(".")])
                .iter()
                .map(|i| base.join(i))
                .collect();
            let files: Vec<PathBuf> = files.iter().map(|f| base.join(f)).collect();
            match protox::compile(&files, &includes) {
                Ok(set) => match DescriptorPool::from_file_descriptor_set(set) {
                    Ok(pool) => Some(pool),
                    Err(e) => {
                        p.add("descriptors", "files", e.to_string());
                        None
                    }
                },
                Err(e) => {
                    p.add("descriptors", "files", format!("cannot compile: {e}"));
                    None
                }
            }
        }
        ("files", _) => {
            p.add(
                "descriptors",
                "files",
                "source = \"files\" needs a non-empty files list",
            );
            None
        }
        ("builtin", Some(_)) => {
            p.add(
                "descriptors",
                "files",
                "files are read only with source = \"files\"",
            );
            None
        }
        (other, _) => {
            p.add(
                "descriptors",
                "source",
                format!("expected \"builtin\" or \"files\", got {other:?}"),
            );
            None
        }
    }
}

/// `package.Service/Method` -> the method, unary only.
fn resolve_rpc(pool: &DescriptorPool, rpc: &str) -> Result<MethodDescriptor, String> {
    let (service, method) = rpc
        .split_once('/')
        .ok_or_else(|| format!("expected package.Service/Method, got {rpc:?}"))?;
    let svc = pool
        .get_service_by_name(service)
        .ok_or_else(|| format!("no service {service:?} in the descriptors"))?;
    let m = svc.methods().find(|m| m.name() == method).ok_or_else(|| {
        let known: Vec<String> = svc.methods().map(|m| m.name().to_owned()).collect();
        format!("{service} has no method {method:?} (it has {})", known.join(", "))
    })?;
    if m.is_client_streaming() || m.is_server_streaming() {
        return Err(format!(
            "{rpc} is a streaming method; routes call unary methods only"
        ));
    }
    Ok(m)
}

/// Path parameters must name scalar fields of the request; a body field must be a message
/// field.
fn check_bindings(p: &mut Problems, place: &str, rpc: &MethodDescriptor, t: &Template, body: &Body) {
    let input = rpc.input();
    for param in t.params() {
        match input.get_field_by_name(param) {
            None => p.add(
                place,
                "path",
                format!(
                    "{{{param}}} matches no field of {} (fields: {})",
                    input.full_name(),
                    field_names(&input)
                ),
            ),
            Some(f) if f.is_list() || f.is_map() || matches!(f.kind(), Kind::Message(_)) => p.add(
                place,
                "path",
                format!("{{{param}}} binds to {}, which is not a scalar field", f.name()),
            ),
            Some(_) => {}
        }
    }
    if let Body::Field(name) = body {
        match input.get_field_by_name(name) {
            Some(f) if matches!(f.kind(), Kind::Message(_)) && !f.is_list() && !f.is_map() => {}
            Some(_) => p.add(
                place,
                "body",
                format!("{name} is not a message field; use body = \"*\""),
            ),
            None => p.add(
                place,
                "body",
                format!(
                    "{name:?} is no field of {} (fields: {})",
                    input.full_name(),
                    field_names(&input)
                ),
            ),
        }
    }
}

fn field_names(m: &MessageDescriptor) -> String {
    m.fields()
        .map(|f| f.name().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}
