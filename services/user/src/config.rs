//! The user service's settings: every key, its default, and how it is checked. Loaded by
//! `shop_kit::config::load` from defaults, `--config FILE`, `SHOP_*` variables and flags.

use std::path::PathBuf;
use std::time::Duration;

use shop_kit::config::{Settings, Value};

/// Default gRPC port, kept from the seed project.
pub const DEFAULT_PORT: u16 = 5001;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `server.host`: the address to listen on.
    pub host: String,
    /// `server.port`: 0 picks a free port (the ready line prints the real one).
    pub port: u16,
    /// `data.dir`: holds `user.db` and, by default, the token keys under `keys/`.
    pub data_dir: PathBuf,
    /// `consul.addr`: the local Consul agent's HTTP address; empty disables registration.
    pub consul: String,
    /// `log.level`: a tracing filter such as `info` or `info,user_service=debug`.
    pub log_level: String,
    /// `auth.private_key`: the Ed25519 signing key (PKCS#8 PEM), created on first start.
    pub private_key: Option<PathBuf>,
    /// `auth.public_key`: its public half (SPKI PEM), which every other component reads.
    pub public_key: Option<PathBuf>,
    /// `auth.algorithm`: must be `EdDSA`.
    pub algorithm: String,
    /// `auth.issuer` and `auth.audience`: written into tokens and required when verifying.
    pub issuer: String,
    pub audience: String,
    /// `auth.token_ttl`: how long an access token lives.
    pub token_ttl: Duration,
    /// `auth.leeway`: clock skew tolerated when verifying.
    pub leeway: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".to_owned(),
            port: DEFAULT_PORT,
            data_dir: PathBuf::from(".run/data"),
            consul: "http://127.0.0.1:8500".to_owned(),
            log_level: "info".to_owned(),
            private_key: None,
            public_key: None,
            algorithm: shop_auth::ALGORITHM.to_owned(),
            issuer: shop_auth::DEFAULT_ISSUER.to_owned(),
            audience: shop_auth::DEFAULT_AUDIENCE.to_owned(),
            token_ttl: Duration::from_secs(3600),
            leeway: Duration::from_secs(shop_auth::DEFAULT_LEEWAY_SECS),
        }
    }
}

impl Config {
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("user.db")
    }

    pub fn private_key_path(&self) -> PathBuf {
        self.private_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("token-signing.pem"))
    }

    pub fn public_key_path(&self) -> PathBuf {
        self.public_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("token-signing.pub.pem"))
    }

    pub fn token_rules(&self) -> shop_auth::TokenRules {
        shop_auth::TokenRules {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway_secs: self.leeway.as_secs(),
        }
    }
}

impl Settings for Config {
    const KEYS: &'static [&'static str] = &[
        "server.host",
        "server.port",
        "data.dir",
        "consul.addr",
        "log.level",
        "auth.private_key",
        "auth.public_key",
        "auth.algorithm",
        "auth.issuer",
        "auth.audience",
        "auth.token_ttl",
        "auth.leeway",
    ];

    fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        match key {
            "server.host" => self.host = value.string()?,
            "server.port" => self.port = value.port()?,
            "data.dir" => self.data_dir = value.path()?,
            "consul.addr" => self.consul = value.string()?,
            "log.level" => self.log_level = value.string()?,
            "auth.private_key" => self.private_key = Some(value.path()?),
            "auth.public_key" => self.public_key = Some(value.path()?),
            "auth.algorithm" => self.algorithm = value.string()?,
            "auth.issuer" => self.issuer = value.string()?,
            "auth.audience" => self.audience = value.string()?,
            "auth.token_ttl" => self.token_ttl = value.duration()?,
            "auth.leeway" => self.leeway = value.duration()?,
            other => return Err(format!("no such key {other}")),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, problem: &str| Err((key.to_owned(), problem.to_owned()));
        if self.host.parse::<std::net::IpAddr>().is_err() && self.host != "localhost" {
            return fail(
                "server.host",
                "expected an IP address such as 127.0.0.1 or 0.0.0.0",
            );
        }
        if !self.consul.is_empty() && !self.consul.starts_with("http://") {
            return fail(
                "consul.addr",
                "expected http://host:port, or an empty string to run without Consul",
            );
        }
        if self.algorithm != shop_auth::ALGORITHM {
            return fail("auth.algorithm", "only \"EdDSA\" is supported");
        }
        if self.issuer.is_empty() {
            return fail("auth.issuer", "must not be empty");
        }
        if self.audience.is_empty() {
            return fail("auth.audience", "must not be empty");
        }
        if self.token_ttl < Duration::from_secs(60) || self.token_ttl > Duration::from_secs(7 * 86_400) {
            return fail("auth.token_ttl", "expected between 1m and 7d");
        }
        if self.leeway > Duration::from_secs(300) {
            return fail("auth.leeway", "expected at most 5m");
        }
        Ok(())
    }
}
