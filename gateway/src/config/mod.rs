//! `gateway.toml`: read into serde structs that refuse unknown keys ([`raw`]), then validated in
//! full into a typed [`Config`]: durations parsed, path templates compiled, RPCs resolved against
//! the proto descriptors, names of upstreams and policies checked ([`sections`], [`routes`]).
//! Every problem found is reported (file, route or table, key, what is wrong), not just the
//! first.

mod env;
mod raw;
mod routes;
mod sections;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use prost_reflect::{DescriptorPool, FieldDescriptor, MessageDescriptor, MethodDescriptor};

use shop_discovery::Policy;

use crate::client::Cidr;
use crate::router::Template;

// ---- The validated config ------------------------------------------------------------------

/// The largest request body accepted unless `gateway.max_body_bytes` says otherwise.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;
/// Paths the gateway answers itself; no route may take them.
pub const RESERVED_PATHS: [&str; 4] = ["/health", "/ready", "/metrics", "/openapi.json"];
/// The deadline of a call to an upstream unless the route or upstream says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `/ready` answers 503 after SIGTERM unless `gateway.drain` says otherwise: long
/// enough for a load balancer probing every second or two to see it twice and stop sending.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// A fingerprint of the file's text (FNV-1a), shown by `/metrics`.
    pub fingerprint: u64,
    pub consul: String,
    /// `[gateway] consul_token`: the ACL token sent to Consul (`X-Consul-Token`); when the file
    /// sets none, `CONSUL_HTTP_TOKEN` from the environment.
    pub consul_token: Option<Secret>,
    /// `[gateway] otlp_traces`: the OTLP/HTTP collector request spans go to (read at start).
    pub otlp_traces: Option<shop_base::spans::Endpoint>,
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
    /// After SIGTERM, how long `/ready` answers 503 (everything else served as usual) before
    /// the listeners close; zero: close at once.
    pub drain: Duration,
    /// SHA-256 of the file's text in hex (what `sha256sum` prints), shown by the admin view.
    pub sha256: String,
    pub access_log: AccessLog,
    /// The read-only admin listener, when `[admin]` is there.
    pub admin: Option<Admin>,
    pub descriptors: DescriptorPool,
    pub auth: Auth,
    pub listeners: Vec<Listener>,
    pub upstreams: BTreeMap<String, Upstream>,
    pub limits: BTreeMap<String, Limit>,
    pub breakers: BTreeMap<String, Breaker>,
    pub routes: Vec<Route>,
}

/// `[access_log]`: the line's format and fields, and the file lines are appended to (stderr
/// through the log writer when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub format: crate::access::Format,
    pub fields: Vec<crate::access::Field>,
    pub file: Option<PathBuf>,
}

/// `[admin]`: where the read-only admin view listens (never a public listener's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin {
    pub address: SocketAddr,
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

/// Where the body goes in the request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body allowed.
    None,
    /// The whole JSON body is the request message (path parameters are added to it).
    Whole,
    /// The JSON body is one message field of the request.
    Field(String),
    /// The body exactly as received, unparsed, is one singular `bytes` or `string` field of the
    /// request (`raw_body`): for signatures computed over the bytes sent.
    Raw(String),
}

/// A request header bound to a field of the request message (`headers = { ... }`), resolved at
/// load: the field is a singular scalar (not `bytes`) that nothing else binds.
#[derive(Debug, Clone)]
pub struct HeaderBinding {
    /// Lower-case, as HTTP/2 sends it and `http` keeps it; matched case-insensitively.
    pub header: HeaderName,
    pub field: FieldDescriptor,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub method: String,
    pub template: Template,
    pub upstream: String,
    pub rpc: MethodDescriptor,
    pub body: Body,
    /// Header bindings; empty for most routes, which then pay nothing for them.
    pub headers: Vec<HeaderBinding>,
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

/// A value that must never reach a log or an answer: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
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

/// The problems found so far; every check adds to it and goes on.
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, place: impl Into<String>, key: &str, message: impl Into<String>) {
        self.0.push(Problem {
            place: place.into(),
            key: key.to_owned(),
            message: message.into(),
        });
    }
}

/// A duration key: `default` when absent; a problem (and `default`) when it does not parse.
pub(super) fn duration(
    p: &mut Problems,
    place: &str,
    key: &str,
    text: Option<&str>,
    default: Duration,
) -> Duration {
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

/// A duration key that may be zero (`"0s"`, or plain `"0"`) and at most `max`: `default` when
/// absent; a problem (and `default`) otherwise.
pub(super) fn span(
    p: &mut Problems,
    place: &str,
    key: &str,
    text: Option<&str>,
    (default, max): (Duration, Duration),
) -> Duration {
    let Some(t) = text else {
        return default;
    };
    match parse_duration(t).or_else(|| (t.trim() == "0").then_some(Duration::ZERO)) {
        Some(d) if d <= max => d,
        Some(_) => {
            p.add(
                place,
                key,
                format!("expected at most {}s, got {t:?}", max.as_secs()),
            );
            default
        }
        None => {
            p.add(
                place,
                key,
                format!("expected a duration such as \"0s\", \"500ms\" or \"5s\", got {t:?}"),
            );
            default
        }
    }
}

/// SHA-256 of `bytes`, in lower-case hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// `<whole number><ms|s|m|h|d>` (`shop_base::duration`, the reading every service uses).
pub fn parse_duration(t: &str) -> Option<Duration> {
    shop_base::duration::parse(t).ok()
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

/// Validates the text of a gateway file named `path`: every section, then the routes against
/// what the sections defined.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_with(path, text, |name| std::env::var(name).ok())
}

/// The file's tables as written, `${NAME}` references replaced by `env`.
fn read_raw(
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<raw::RawFile, ConfigError> {
    let not_toml = |e: &dyn fmt::Display| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            place: "file".to_owned(),
            key: String::new(),
            message: e.to_string().trim_end().replace('\n', "\n    "),
        }],
    };
    // Read as written first, so a misspelt key is reported with its line; references only
    // change the text inside strings, never the file's shape.
    let raw: raw::RawFile = toml::from_str(text).map_err(|e| not_toml(&e))?;
    if !text.contains("${") {
        return Ok(raw);
    }
    let mut value: toml::Value = toml::from_str(text).map_err(|e| not_toml(&e))?;
    let mut p = Problems(Vec::new());
    env::expand(&mut value, "", &env, &mut p);
    if !p.0.is_empty() {
        return Err(ConfigError {
            file: path.to_owned(),
            problems: p.0,
        });
    }
    value.try_into().map_err(|e| not_toml(&e))
}

/// [`parse`], with `env` answering the `${NAME}` references.
pub fn parse_with(
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let raw = read_raw(path, text, env)?;
    let mut p = Problems(Vec::new());
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let settings = sections::gateway(&raw.gateway, &mut p);
    let descriptors = routes::descriptors(&raw.descriptors, &base, &mut p);
    let auth = sections::auth(&raw.auth, &base, &mut p);
    let listeners = sections::listeners(&raw.listeners, &base, &mut p);
    let upstreams = sections::upstreams(&raw.upstreams, &settings.consul, &mut p);
    let limits = sections::limits(&raw.limits, &mut p);
    let breakers = sections::breakers(&raw.breakers, &mut p);
    let access_log = sections::access_log(&raw.access_log, &base, &mut p);
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| sections::admin(a, &listeners, &mut p));
    if let Some(name) = &auth.revocations
        && !upstreams.contains_key(name)
    {
        p.add("auth", "revocations", format!("no [upstream.{name}] is defined"));
    }
    let routes = routes::routes(
        &raw.routes,
        &routes::Defined {
            descriptors: descriptors.as_ref(),
            upstreams: &upstreams,
            limits: &limits,
            breakers: &breakers,
        },
        &mut p,
    );
    match (p.0.is_empty(), descriptors) {
        (true, Some(descriptors)) => Ok(Config {
            path: path.to_owned(),
            fingerprint: crate::metrics::fingerprint(text.as_bytes()),
            consul: settings.consul,
            consul_token: settings.consul_token,
            otlp_traces: settings.otlp_traces,
            max_body_bytes: settings.max_body_bytes,
            trusted_proxies: settings.trusted_proxies,
            header_timeout: settings.header_timeout,
            idle_timeout: settings.idle_timeout,
            body_timeout: settings.body_timeout,
            max_header_bytes: settings.max_header_bytes,
            max_connections: settings.max_connections,
            drain: settings.drain,
            sha256: sha256_hex(text.as_bytes()),
            access_log,
            admin,
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
