//! The order service's settings: the shared server and token keys, where its service token is,
//! how it finds the user and product services, how often it repairs interrupted orders, how
//! long an order may stay unpaid, how long events stay in the feed, and the payment provider's
//! webhook secret and address.

use std::path::PathBuf;
use std::time::Duration;

use shop_discovery::Policy;
use shop_kit::config::{Common, Invalid, Settings, TokenCheck, Value};

/// Default gRPC port, kept from the seed project.
pub const DEFAULT_PORT: u16 = 5002;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub common: Common,
    pub tokens: TokenCheck,
    /// `auth.service_token`: the token (from `user-service issue-service-token`) this service
    /// presents for inventory calls. Default `<data.dir>/keys/order-service.token`.
    pub service_token: Option<PathBuf>,
    /// `upstream.user_addrs`, `upstream.product_addrs`: fixed `host:port` lists; empty means
    /// "find them in Consul".
    pub user_addrs: Vec<String>,
    pub product_addrs: Vec<String>,
    /// `upstream.timeout`: the deadline of every call to another service.
    pub timeout: Duration,
    /// `upstream.policy`: `round_robin` or `p2c`.
    pub policy: Policy,
    /// `recovery.interval`: how often interrupted orders are repaired.
    pub recovery_interval: Duration,
    /// `recovery.lock`: the Consul KV key whose session lock elects the one instance (of those
    /// sharing a database) that runs recovery.
    pub recovery_lock: String,
    /// `orders.pay_within`: a pending order unpaid for longer expires (its units go back).
    pub pay_within: Duration,
    /// `orders.max_unpaid`: pending orders a customer may hold at once; 0: no cap.
    pub max_unpaid: i64,
    /// `events.keep`: how long an event stays in the feed; 0 keeps every event forever.
    pub events_keep: Duration,
    /// `payments.webhook_secret` (env `SHOP_PAYMENTS_WEBHOOK_SECRET`): the key provider reports
    /// are signed with. Empty: payments are off (starting one is refused, every report is 401).
    pub webhook_secret: String,
    /// `payments.webhook_url`: where the simulated provider sends its reports (the gateway's
    /// `POST /api/payments/webhook`).
    pub webhook_url: String,
    /// `payments.provider`: `none` (the default: payments cannot start) or `simulated` (the
    /// built-in provider that pays every order it is asked to: for demos and tests only).
    pub provider: ProviderKind,
}

/// Which payment provider takes payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    None,
    Simulated,
}

/// Shortest webhook secret accepted (bytes).
pub const WEBHOOK_SECRET_MIN: usize = 32;

impl Default for Config {
    fn default() -> Self {
        Config {
            common: Common::with_port(DEFAULT_PORT),
            tokens: TokenCheck::default(),
            service_token: None,
            user_addrs: Vec::new(),
            product_addrs: Vec::new(),
            // Reads and reservations take milliseconds; three seconds covers a busy SQLite
            // writer queue and still fails fast when a service is gone.
            timeout: Duration::from_secs(3),
            policy: Policy::PowerOfTwo,
            recovery_interval: Duration::from_secs(10),
            recovery_lock: "shop/order-service/recovery".to_owned(),
            pay_within: Duration::from_secs(30 * 60),
            max_unpaid: 10,
            // A month: long enough for a consumer to be down over a holiday and catch up.
            events_keep: Duration::from_secs(30 * 24 * 3600),
            webhook_secret: String::new(),
            webhook_url: "http://127.0.0.1:8080/api/payments/webhook".to_owned(),
            provider: ProviderKind::None,
        }
    }
}

impl Config {
    pub fn db_path(&self) -> PathBuf {
        self.common.data_dir.join("order.db")
    }

    pub fn service_token_path(&self) -> PathBuf {
        self.service_token
            .clone()
            .unwrap_or_else(|| self.common.keys_dir().join("order-service.token"))
    }

    /// How old an order stuck in `reserving` must be before recovery touches it: longer than any
    /// create can still be running (four upstream calls, each bounded by the timeout).
    pub fn recovery_grace(&self) -> Duration {
        self.timeout * 4 + Duration::from_secs(1)
    }
}

fn addr_list(value: &Value) -> Result<Vec<String>, String> {
    let text = value.string()?;
    let list: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    for a in &list {
        if a.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "expected host:port addresses separated by commas, got {a:?}"
            ));
        }
    }
    Ok(list)
}

impl Settings for Config {
    const KEYS: &'static [&'static str] = shop_kit::settings_keys!(
        "auth.service_token",
        "upstream.user_addrs",
        "upstream.product_addrs",
        "upstream.timeout",
        "upstream.policy",
        "recovery.interval",
        "recovery.lock",
        "orders.pay_within",
        "orders.max_unpaid",
        "events.keep",
        "payments.webhook_secret",
        "payments.webhook_url",
        "payments.provider"
    );

    fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        if self.common.set(key, value)? || self.tokens.set(key, value)? {
            return Ok(());
        }
        match key {
            "auth.service_token" => self.service_token = Some(value.path()?),
            "upstream.user_addrs" => self.user_addrs = addr_list(value)?,
            "upstream.product_addrs" => self.product_addrs = addr_list(value)?,
            "upstream.timeout" => self.timeout = value.duration()?,
            "upstream.policy" => {
                let text = value.string()?;
                self.policy = Policy::parse(&text)
                    .ok_or_else(|| format!("expected round_robin or p2c, got {text:?}"))?;
            }
            "recovery.interval" => self.recovery_interval = value.duration()?,
            "recovery.lock" => {
                let key = value.string()?;
                let valid = !key.is_empty()
                    && key.len() <= 256
                    && !key.starts_with('/')
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
                if !valid {
                    return Err(format!(
                        "expected a Consul key of letters, digits and - _ . / (not starting with /), got {key:?}"
                    ));
                }
                self.recovery_lock = key;
            }
            "orders.pay_within" => self.pay_within = value.duration()?,
            "orders.max_unpaid" => self.max_unpaid = value.int_in(0, 1_000_000)?,
            "events.keep" => self.events_keep = value.duration()?,
            "payments.webhook_secret" => self.webhook_secret = value.string()?,
            "payments.webhook_url" => {
                let url = value.string()?;
                let parsed = url.parse::<hyper::Uri>().ok();
                let http = parsed.as_ref().is_some_and(|u| {
                    u.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("http")) && u.host().is_some()
                });
                if !http {
                    return Err(format!("expected an http:// URL, got {url:?}"));
                }
                self.webhook_url = url;
            }
            "payments.provider" => {
                self.provider = match value.string()?.as_str() {
                    "none" => ProviderKind::None,
                    "simulated" => ProviderKind::Simulated,
                    other => return Err(format!("expected none or simulated, got {other:?}")),
                }
            }
            other => return Err(format!("no such key {other}")),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), Invalid> {
        self.common.validate()?;
        self.tokens.validate()?;
        let fail = |k: &str, p: &str| Err(Invalid::new(k, p));
        if self.common.consul.is_empty() && self.user_addrs.is_empty() {
            return fail(
                "upstream.user_addrs",
                "is empty and consul.addr is empty: no way to find the user service",
            );
        }
        if self.common.consul.is_empty() && self.product_addrs.is_empty() {
            return fail(
                "upstream.product_addrs",
                "is empty and consul.addr is empty: no way to find the product service",
            );
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(60) {
            return fail("upstream.timeout", "expected between 100ms and 60s");
        }
        if self.recovery_interval < Duration::from_secs(1)
            || self.recovery_interval > Duration::from_secs(3600)
        {
            return fail("recovery.interval", "expected between 1s and 1h");
        }
        if self.pay_within < Duration::from_secs(1) || self.pay_within > Duration::from_secs(7 * 24 * 3600) {
            return fail("orders.pay_within", "expected between 1s and 7d");
        }
        if self.events_keep > Duration::from_secs(10 * 365 * 24 * 3600) {
            return fail("events.keep", "expected at most 3650d, or 0s to keep every event");
        }
        if self.provider != ProviderKind::None && self.webhook_secret.is_empty() {
            return fail(
                "payments.webhook_secret",
                "is required when payments.provider is set (set SHOP_PAYMENTS_WEBHOOK_SECRET)",
            );
        }
        let secret = &self.webhook_secret;
        if !secret.is_empty()
            && (secret.len() < WEBHOOK_SECRET_MIN || secret.chars().any(char::is_whitespace))
        {
            return fail(
                "payments.webhook_secret",
                "expected at least 32 characters without spaces (`openssl rand -hex 32` makes one)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payments_are_off_unless_a_provider_and_its_secret_are_set() {
        let mut c = Config::default();
        assert_eq!(c.provider, ProviderKind::None);
        c.set("payments.provider", &Value::Text("simulated".into()))
            .unwrap();
        assert_eq!(c.validate().unwrap_err().key, "payments.webhook_secret");
        c.set("payments.webhook_secret", &Value::Text("short".into()))
            .unwrap();
        assert_eq!(c.validate().unwrap_err().key, "payments.webhook_secret");
        c.set("payments.webhook_secret", &Value::Text("k".repeat(32)))
            .unwrap();
        assert!(c.validate().is_ok());
        assert!(c.set("payments.provider", &Value::Text("stripe".into())).is_err());
        for url in ["https://shop/x", "ftp://a/b", "not a url", "http://"] {
            assert!(
                c.set("payments.webhook_url", &Value::Text(url.into())).is_err(),
                "{url}"
            );
        }
        assert!(
            c.set(
                "payments.webhook_url",
                &Value::Text("HTTP://127.0.0.1:8080/w".into())
            )
            .is_ok()
        );
    }

    #[test]
    fn upstreams_need_consul_or_addresses() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.common.consul.clear();
        assert_eq!(c.validate().unwrap_err().key, "upstream.user_addrs");
        c.set(
            "upstream.user_addrs",
            &Value::Text("127.0.0.1:5001, 127.0.0.1:5011".into()),
        )
        .unwrap();
        c.set("upstream.product_addrs", &Value::Text("127.0.0.1:5003".into()))
            .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.user_addrs.len(), 2);
        assert!(c.set("upstream.user_addrs", &Value::Text("nope".into())).is_err());
    }
}
