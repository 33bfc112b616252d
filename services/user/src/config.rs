//! The user service's settings: the shared server and token keys (`shop_kit::config::Common`,
//! `TokenCheck`) plus what only the signer has. Loaded by `shop_kit::config::load` from
//! defaults, `--config FILE`, `SHOP_*` variables and flags.

use std::path::PathBuf;
use std::time::Duration;

use shop_kit::config::{Common, Invalid, Settings, TokenCheck, Value};

/// Default gRPC port, kept from the seed project.
pub const DEFAULT_PORT: u16 = 5001;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub common: Common,
    /// `auth.public_key` and the rules tokens are written with and checked against.
    pub tokens: TokenCheck,
    /// `auth.private_key`: the Ed25519 signing key (PKCS#8 PEM), created on first start.
    pub private_key: Option<PathBuf>,
    /// `auth.token_ttl`: how long an access token lives.
    pub token_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            common: Common::with_port(DEFAULT_PORT),
            tokens: TokenCheck::default(),
            private_key: None,
            token_ttl: Duration::from_secs(3600),
        }
    }
}

impl Config {
    pub fn db_path(&self) -> PathBuf {
        self.common.data_dir.join("user.db")
    }

    pub fn private_key_path(&self) -> PathBuf {
        self.private_key
            .clone()
            .unwrap_or_else(|| self.common.keys_dir().join("token-signing.pem"))
    }

    pub fn public_key_path(&self) -> PathBuf {
        self.tokens.public_key_path(&self.common)
    }
}

impl Settings for Config {
    const KEYS: &'static [&'static str] = shop_kit::settings_keys!("auth.private_key", "auth.token_ttl");

    fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        if self.common.set(key, value)? || self.tokens.set(key, value)? {
            return Ok(());
        }
        match key {
            "auth.private_key" => self.private_key = Some(value.path()?),
            "auth.token_ttl" => self.token_ttl = value.duration()?,
            other => return Err(format!("no such key {other}")),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), Invalid> {
        self.common.validate()?;
        self.tokens.validate()?;
        if self.token_ttl < Duration::from_secs(60) || self.token_ttl > Duration::from_secs(7 * 86_400) {
            return Err(Invalid::new("auth.token_ttl", "expected between 1m and 7d"));
        }
        Ok(())
    }
}
