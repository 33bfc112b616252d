//! `gateway.toml` as written: serde structs that refuse unknown keys. Nothing here is checked
//! beyond TOML types; the sibling modules turn these into the validated [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) gateway: RawGateway,
    #[serde(default)]
    pub(super) descriptors: RawDescriptors,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default, rename = "listener")]
    pub(super) listeners: Vec<RawListener>,
    #[serde(default, rename = "upstream")]
    pub(super) upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default, rename = "limit")]
    pub(super) limits: BTreeMap<String, RawLimit>,
    #[serde(default, rename = "breaker")]
    pub(super) breakers: BTreeMap<String, RawBreaker>,
    #[serde(default, rename = "route")]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) access_log: RawAccessLog,
    pub(super) admin: Option<RawAdmin>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub(super) consul: Option<String>,
    pub(super) consul_token: Option<String>,
    pub(super) otlp_traces: Option<String>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) header_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) body_timeout: Option<String>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) max_connections: Option<usize>,
    /// How long `/ready` answers 503 after SIGTERM before the listeners close.
    pub(super) drain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDescriptors {
    pub(super) source: Option<String>,
    pub(super) files: Option<Vec<PathBuf>>,
    pub(super) includes: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) public_key: Option<PathBuf>,
    pub(super) issuer: Option<String>,
    pub(super) audience: Option<String>,
    pub(super) leeway: Option<String>,
    pub(super) revocations: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) address: String,
    pub(super) tls: Option<RawTls>,
    pub(super) cors: Option<RawCors>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    pub(super) allow_origins: Vec<String>,
    pub(super) allow_methods: Option<Vec<String>>,
    pub(super) allow_headers: Option<Vec<String>>,
    pub(super) expose_headers: Option<Vec<String>>,
    pub(super) max_age: Option<String>,
    pub(super) allow_credentials: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) service: Option<String>,
    pub(super) addresses: Option<Vec<String>>,
    pub(super) balancer: Option<String>,
    pub(super) timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    pub(super) rate: u32,
    pub(super) per: Option<String>,
    pub(super) burst: Option<u32>,
    pub(super) key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    pub(super) consecutive_failures: Option<u32>,
    pub(super) failure_ratio: Option<f64>,
    pub(super) min_calls: Option<u32>,
    pub(super) window: Option<String>,
    pub(super) open_for: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Option<String>,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) upstream: String,
    pub(super) rpc: String,
    pub(super) body: Option<String>,
    /// The body as received, unparsed, into this `bytes` or `string` field (not with `body`).
    pub(super) raw_body: Option<String>,
    /// Request header name -> request field (`headers = { "Shop-Signature" = "signature" }`).
    pub(super) headers: Option<BTreeMap<String, String>>,
    pub(super) status: Option<u16>,
    pub(super) auth: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) limit: Option<String>,
    pub(super) breaker: Option<String>,
    pub(super) idempotent: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessLog {
    pub(super) format: Option<String>,
    pub(super) fields: Option<Vec<String>>,
    pub(super) file: Option<PathBuf>,
}

/// The read-only admin listener (`[admin]`); off without the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) address: String,
}
