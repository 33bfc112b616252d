//! The product service's settings: the shared server and token keys, nothing more. Loaded by
//! `shop_kit::config::load` from defaults, `--config FILE`, `SHOP_*` variables and flags.

use std::path::PathBuf;

use shop_kit::config::{Common, Invalid, Settings, TokenCheck, Value};

/// Default gRPC port, kept from the seed project.
pub const DEFAULT_PORT: u16 = 5003;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub common: Common,
    pub tokens: TokenCheck,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            common: Common::with_port(DEFAULT_PORT),
            tokens: TokenCheck::default(),
        }
    }
}

impl Config {
    pub fn db_path(&self) -> PathBuf {
        self.common.data_dir.join("product.db")
    }
}

impl Settings for Config {
    const KEYS: &'static [&'static str] = shop_kit::settings_keys!();

    fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        if self.common.set(key, value)? || self.tokens.set(key, value)? {
            return Ok(());
        }
        Err(format!("no such key {key}"))
    }

    fn validate(&self) -> Result<(), Invalid> {
        self.common.validate()?;
        self.tokens.validate()
    }
}
