//! Typed service settings, layered: built-in defaults, then a TOML file, then `SHOP_*`
//! environment variables, then command-line flags. Every key has one name (`server.port`) in all
//! four places, unknown keys are refused, and every error names where the value came from, the
//! key and what is wrong with it.
//!
//! A service describes its settings by implementing [`Settings`]: the list of keys, how to apply
//! one raw value, and the checks across keys. [`load`] does the layering.
//!
//! String values in the file may name environment variables, `${NAME}` or `${NAME:-default}`
//! (whole or embedded; rules in `shop_base::env_refs`), so a secret need not be written in the
//! file. A value that named one is read as text, like an environment variable's value, so
//! `port = "${PORT:-5001}"` works too.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in defaults"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {key}: {problem}")]
pub struct ConfigError {
    pub origin: Origin,
    /// The key, `section.name`, or empty when the whole source is unreadable.
    pub key: String,
    pub problem: String,
}

/// One raw value before the service types it: from TOML it keeps its TOML type, from the
/// environment and flags it is text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Toml(toml::Value),
    Text(String),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Toml(toml::Value::String(s)) => format!("string {s:?}"),
            Value::Toml(toml::Value::Integer(i)) => format!("integer {i}"),
            Value::Toml(toml::Value::Float(f)) => format!("float {f}"),
            Value::Toml(toml::Value::Boolean(b)) => format!("boolean {b}"),
            Value::Toml(v) => format!("a {}", v.type_str()),
            Value::Text(s) => format!("{s:?}"),
        }
    }

    pub fn string(&self) -> Result<String, String> {
        match self {
            Value::Toml(toml::Value::String(s)) | Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected a string, got {}", other.describe())),
        }
    }

    pub fn path(&self) -> Result<PathBuf, String> {
        let s = self.string()?;
        if s.trim().is_empty() {
            return Err("expected a path, got an empty string".to_owned());
        }
        Ok(PathBuf::from(s))
    }

    fn integer(&self) -> Result<i64, String> {
        match self {
            Value::Toml(toml::Value::Integer(i)) => Ok(*i),
            Value::Text(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("expected a whole number, got {s:?}")),
            other => Err(format!("expected a whole number, got {}", other.describe())),
        }
    }

    /// A TCP port; 0 asks the OS for a free one.
    pub fn port(&self) -> Result<u16, String> {
        let n = self.integer()?;
        u16::try_from(n).map_err(|_| format!("expected a port number 0-65535, got {n}"))
    }

    /// A whole number in `min..=max`.
    pub fn int_in(&self, min: i64, max: i64) -> Result<i64, String> {
        let n = self.integer()?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("expected a number from {min} to {max}, got {n}"))
        }
    }

    pub fn bool(&self) -> Result<bool, String> {
        match self {
            Value::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Value::Text(s) if s == "true" || s == "1" => Ok(true),
            Value::Text(s) if s == "false" || s == "0" => Ok(false),
            other => Err(format!("expected true or false, got {}", other.describe())),
        }
    }

    /// A duration written with a unit: `250ms`, `30s`, `5m`, `24h`, `7d`.
    pub fn duration(&self) -> Result<Duration, String> {
        parse_duration(&self.string()?)
    }
}

/// Parses `<whole number><unit>` with unit `ms`, `s`, `m`, `h` or `d` (`shop_base::duration`).
pub use shop_base::duration::parse as parse_duration;

/// A service's settings.
pub trait Settings: Default {
    /// Every key the service understands, `section.name`.
    const KEYS: &'static [&'static str];

    /// Applies one value; the key is always one of [`Settings::KEYS`]. Returns the problem.
    fn set(&mut self, key: &str, value: &Value) -> Result<(), String>;

    /// Checks that need several keys, or that defaults alone cannot satisfy: the key at fault
    /// and the problem.
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// What a whole-settings check found wrong: the key at fault (whose source the error then
/// names) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(key: &str, problem: impl Into<String>) -> Invalid {
        Invalid {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The environment variable that sets `key`: `server.port` -> `SHOP_SERVER_PORT`.
pub fn env_name(key: &str) -> String {
    format!("SHOP_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Short flags every service accepts, and the key each one sets.
pub const FLAG_ALIASES: &[(&str, &str)] = &[
    ("--host", "server.host"),
    ("--port", "server.port"),
    ("--data-dir", "data.dir"),
    ("--consul", "consul.addr"),
    ("--log", "log.level"),
];

/// What the command line asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    /// `--config PATH`.
    pub config: Option<PathBuf>,
    /// `(flag as written, key, value)` in command-line order.
    pub overrides: Vec<(String, String, String)>,
    /// `--check`: validate and exit.
    pub check: bool,
    /// `--help`.
    pub help: bool,
    /// Arguments that are not settings (for subcommands), in order.
    pub rest: Vec<String>,
}

/// Reads `--config PATH`, the [`FLAG_ALIASES`], `--set key=value`, `--check` and `--help`, in
/// either `--flag value` or `--flag=value` form. Anything else that starts with `--` goes to
/// [`Flags::rest`] with its value, for the binary to interpret.
pub fn parse_flags(args: impl IntoIterator<Item = String>) -> Result<Flags, ConfigError> {
    let mut flags = Flags::default();
    let mut args = args.into_iter();
    let flag_error = |flag: &str, problem: &str| ConfigError {
        origin: Origin::Flag(flag.to_owned()),
        key: String::new(),
        problem: problem.to_owned(),
    };
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let is_setting =
            name == "--config" || name == "--set" || FLAG_ALIASES.iter().any(|(f, _)| *f == name);
        if !is_setting {
            match name.as_str() {
                "--check" => flags.check = true,
                "--help" | "-h" => flags.help = true,
                _ => flags.rest.push(arg),
            }
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| flag_error(&name, "needs a value"))?,
        };
        match name.as_str() {
            "--config" => flags.config = Some(PathBuf::from(value)),
            "--set" => {
                let (key, v) = value
                    .split_once('=')
                    .ok_or_else(|| flag_error("--set", "expected key=value, e.g. --set server.port=5001"))?;
                flags
                    .overrides
                    .push(("--set".to_owned(), key.trim().to_owned(), v.to_owned()));
            }
            _ => {
                let key = FLAG_ALIASES
                    .iter()
                    .find(|(f, _)| *f == name)
                    .map(|(_, k)| (*k).to_owned())
                    .unwrap_or_default();
                flags.overrides.push((name, key, value));
            }
        }
    }
    Ok(flags)
}

/// Builds the settings: defaults, then the file (`--config`, else `SHOP_CONFIG`, else none),
/// then the environment, then flags; finally [`Settings::validate`]. Flags for keys the service
/// does not have are refused.
pub fn load<S: Settings>(flags: &Flags, env: impl Fn(&str) -> Option<String>) -> Result<S, ConfigError> {
    let mut settings = S::default();
    let file = flags
        .config
        .clone()
        .or_else(|| env("SHOP_CONFIG").map(PathBuf::from));
    if let Some(path) = &file {
        apply_file(&mut settings, path, &env)?;
    }
    // Where each key's final value came from, for the errors `validate` finds.
    let mut origins: Vec<(&str, Origin)> = Vec::new();
    for key in S::KEYS {
        let name = env_name(key);
        if let Some(text) = env(&name) {
            apply(&mut settings, Origin::Env(name.clone()), key, &Value::Text(text))?;
            origins.push((key, Origin::Env(name)));
        }
    }
    for (flag, key, value) in &flags.overrides {
        let origin = Origin::Flag(flag.clone());
        apply(&mut settings, origin.clone(), key, &Value::Text(value.clone()))?;
        origins.push((key.as_str(), origin));
    }
    settings
        .validate()
        .map_err(|Invalid { key, problem }| ConfigError {
            origin: origins
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, o)| o.clone())
                .or_else(|| file.map(Origin::File))
                .unwrap_or(Origin::Default),
            key,
            problem,
        })?;
    Ok(settings)
}

fn apply<S: Settings>(settings: &mut S, origin: Origin, key: &str, value: &Value) -> Result<(), ConfigError> {
    let error = |problem: String| ConfigError {
        origin: origin.clone(),
        key: key.to_owned(),
        problem,
    };
    if !S::KEYS.contains(&key) {
        return Err(error(unknown_key_problem(S::KEYS, key)));
    }
    settings.set(key, value).map_err(error)
}

fn unknown_key_problem(keys: &[&str], key: &str) -> String {
    let section = key.split('.').next().unwrap_or(key);
    let siblings: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| k.starts_with(&format!("{section}.")))
        .collect();
    if siblings.is_empty() {
        let sections: Vec<&str> = {
            let mut s: Vec<&str> = keys.iter().filter_map(|k| k.split('.').next()).collect();
            s.dedup();
            s
        };
        format!("unknown key; the sections are {}", sections.join(", "))
    } else {
        format!("unknown key; known keys here are {}", siblings.join(", "))
    }
}

fn apply_file<S: Settings>(
    settings: &mut S,
    path: &Path,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let origin = Origin::File(path.to_owned());
    let whole = |problem: String| ConfigError {
        origin: origin.clone(),
        key: String::new(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| whole(format!("not valid TOML: {e}")))?;
    for (section, body) in &table {
        let toml::Value::Table(body) = body else {
            return Err(ConfigError {
                origin: origin.clone(),
                key: section.clone(),
                problem: "expected a [section] table".to_owned(),
            });
        };
        for (name, value) in body {
            let key = format!("{section}.{name}");
            // An unknown key is reported as such, before whatever its value refers to.
            let value = if S::KEYS.contains(&key.as_str()) {
                with_env_refs(value, env).map_err(|e| ConfigError {
                    origin: origin.clone(),
                    key: key.clone(),
                    problem: e.to_string(),
                })?
            } else {
                Value::Toml(value.clone())
            };
            apply(settings, origin.clone(), &key, &value)?;
        }
    }
    Ok(())
}

/// A file's value with its `${NAME}` references replaced: a string that had one becomes
/// [`Value::Text`] (typed like an environment variable's value); strings inside arrays and
/// tables are replaced in place; anything else is unchanged.
fn with_env_refs(
    value: &toml::Value,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Value, shop_base::env_refs::ExpandError> {
    use std::borrow::Cow;
    match value {
        toml::Value::String(s) => Ok(match shop_base::env_refs::expand(s, env)? {
            Cow::Borrowed(_) => Value::Toml(value.clone()),
            Cow::Owned(text) => Value::Text(text),
        }),
        toml::Value::Array(_) | toml::Value::Table(_) => Ok(Value::Toml(expand_nested(value, env)?)),
        _ => Ok(Value::Toml(value.clone())),
    }
}

fn expand_nested(
    value: &toml::Value,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<toml::Value, shop_base::env_refs::ExpandError> {
    Ok(match value {
        toml::Value::String(s) => toml::Value::String(shop_base::env_refs::expand(s, env)?.into_owned()),
        toml::Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .map(|v| expand_nested(v, env))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => {
            let mut out = toml::Table::new();
            for (k, v) in table {
                out.insert(k.clone(), expand_nested(v, env)?);
            }
            toml::Value::Table(out)
        }
        other => other.clone(),
    })
}

/// A service's full key list: the shared [`Common`] and [`TokenCheck`] keys followed by its own,
/// so no service can forget one.
///
/// ```
/// const KEYS: &[&str] = shop_kit::settings_keys!("auth.token_ttl");
/// assert!(KEYS.contains(&"server.port") && KEYS.contains(&"auth.token_ttl"));
/// ```
#[macro_export]
macro_rules! settings_keys {
    ($($own:literal),* $(,)?) => {
        &[
            "server.host",
            "server.port",
            "data.dir",
            "consul.addr",
            "consul.token",
            "consul.advertise",
            "consul.check_interval",
            "log.level",
            "tracing.otlp_traces",
            "auth.public_key",
            "auth.algorithm",
            "auth.issuer",
            "auth.audience",
            "auth.leeway",
            $($own),*
        ]
    };
}

/// The start of every service binary: reads the flags, answers `--help`, loads and checks the
/// settings, answers `--check`, and installs the logs. `Err` carries the exit code after the
/// message was printed (success for `--help` and `--check`).
pub fn start<S: Settings>(
    name: &str,
    usage: &str,
    log_level: impl Fn(&S) -> &str,
) -> Result<(S, Flags, shop_base::logs::Guard), std::process::ExitCode> {
    let fail = |message: String| {
        eprintln!("{name}: {message}");
        std::process::ExitCode::FAILURE
    };
    let flags = parse_flags(std::env::args().skip(1)).map_err(|e| fail(e.to_string()))?;
    if flags.help {
        println!("{usage}");
        return Err(std::process::ExitCode::SUCCESS);
    }
    let settings: S =
        load(&flags, |k| std::env::var(k).ok()).map_err(|e| fail(format!("invalid settings: {e}")))?;
    if flags.check {
        println!("settings are valid");
        return Err(std::process::ExitCode::SUCCESS);
    }
    let logs = shop_base::logs::init(log_level(&settings), false).map_err(fail)?;
    Ok((settings, flags, logs))
}

/// The settings every service has: where it listens, where its data lives, Consul and logs.
/// A service's [`Settings`] embeds it and lists [`Common::KEYS`] among its own keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// `server.host`: the IP address to listen on.
    pub host: String,
    /// `server.port`: 0 picks a free port (the ready line prints the real one).
    pub port: u16,
    /// `data.dir`: the service's SQLite file and, by default, the token keys under `keys/`.
    pub data_dir: PathBuf,
    /// `consul.addr`: the local Consul agent's HTTP address; empty runs without Consul.
    pub consul: String,
    /// `consul.token`: an ACL token, sent as `X-Consul-Token`; never logged.
    pub consul_token: Option<String>,
    /// `consul.advertise`: the address other hosts reach this instance on. Default: the bound
    /// address, or (when bound to 0.0.0.0) the Consul agent's node address.
    pub advertise: Option<String>,
    /// `consul.check_interval`: how often Consul checks this instance's gRPC health.
    pub check_interval: Duration,
    /// `log.level`: a tracing filter such as `info` or `info,product_service=debug`.
    pub log_level: String,
    /// `tracing.otlp_traces`: an OTLP/HTTP collector (`http://host:4318/v1/traces`) that every
    /// call's span is sent to; none: spans are not exported.
    pub otlp_traces: Option<shop_base::spans::Endpoint>,
}

impl Common {
    pub const KEYS: &'static [&'static str] = &[
        "server.host",
        "server.port",
        "data.dir",
        "consul.addr",
        "consul.token",
        "consul.advertise",
        "consul.check_interval",
        "log.level",
        "tracing.otlp_traces",
    ];

    /// The defaults, with the service's own default port.
    pub fn with_port(port: u16) -> Common {
        Common {
            host: "127.0.0.1".to_owned(),
            port,
            data_dir: PathBuf::from(".run/data"),
            consul: "http://127.0.0.1:8500".to_owned(),
            consul_token: None,
            advertise: None,
            // Fast enough that a dead instance leaves the healthy set within seconds, slow enough
            // to be noise for the agent.
            check_interval: Duration::from_secs(5),
            log_level: "info".to_owned(),
            otlp_traces: None,
        }
    }

    /// Applies `key` when it is one of [`Common::KEYS`]; `Ok(false)` when it is not.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<bool, String> {
        match key {
            "server.host" => self.host = value.string()?,
            "server.port" => self.port = value.port()?,
            "data.dir" => self.data_dir = value.path()?,
            "consul.addr" => self.consul = value.string()?,
            "consul.token" => self.consul_token = Some(value.string()?).filter(|t| !t.is_empty()),
            "consul.advertise" => self.advertise = Some(value.string()?).filter(|a| !a.is_empty()),
            "consul.check_interval" => self.check_interval = value.duration()?,
            "log.level" => self.log_level = value.string()?,
            "tracing.otlp_traces" => {
                let url = value.string()?;
                self.otlp_traces = if url.is_empty() {
                    None
                } else {
                    Some(shop_base::spans::Endpoint::parse(&url)?)
                };
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.host.parse::<std::net::IpAddr>().is_err() && self.host != "localhost" {
            return Err(Invalid::new(
                "server.host",
                "expected an IP address such as 127.0.0.1 or 0.0.0.0",
            ));
        }
        if !self.consul.is_empty() && !self.consul.starts_with("http://") {
            return Err(Invalid::new(
                "consul.addr",
                "expected http://host:port, or an empty string to run without Consul",
            ));
        }
        if let Some(a) = &self.advertise
            && a.parse::<std::net::IpAddr>().is_err()
        {
            return Err(Invalid::new("consul.advertise", "expected an IP address"));
        }
        if self.check_interval < Duration::from_secs(1) || self.check_interval > Duration::from_secs(60) {
            return Err(Invalid::new(
                "consul.check_interval",
                "expected between 1s and 60s",
            ));
        }
        Ok(())
    }

    /// The default folder of the token key pair: `<data.dir>/keys`.
    pub fn keys_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }
}

/// How a service checks access tokens (the `auth.*` keys every service shares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCheck {
    /// `auth.public_key`: the signer's public key (SPKI PEM); default
    /// `<data.dir>/keys/token-signing.pub.pem`.
    pub public_key: Option<PathBuf>,
    /// `auth.algorithm`: must be `EdDSA`.
    pub algorithm: String,
    /// `auth.issuer`, `auth.audience`: required in every token.
    pub issuer: String,
    pub audience: String,
    /// `auth.leeway`: clock skew tolerated on `exp`.
    pub leeway: Duration,
}

impl Default for TokenCheck {
    fn default() -> Self {
        TokenCheck {
            public_key: None,
            algorithm: shop_auth::ALGORITHM.to_owned(),
            issuer: shop_auth::DEFAULT_ISSUER.to_owned(),
            audience: shop_auth::DEFAULT_AUDIENCE.to_owned(),
            leeway: Duration::from_secs(shop_auth::DEFAULT_LEEWAY_SECS),
        }
    }
}

/// The public key's file name inside the keys folder.
pub const PUBLIC_KEY_FILE: &str = "token-signing.pub.pem";

impl TokenCheck {
    pub const KEYS: &'static [&'static str] = &[
        "auth.public_key",
        "auth.algorithm",
        "auth.issuer",
        "auth.audience",
        "auth.leeway",
    ];

    /// Applies `key` when it is one of [`TokenCheck::KEYS`]; `Ok(false)` when it is not.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<bool, String> {
        match key {
            "auth.public_key" => self.public_key = Some(value.path()?),
            "auth.algorithm" => self.algorithm = value.string()?,
            "auth.issuer" => self.issuer = value.string()?,
            "auth.audience" => self.audience = value.string()?,
            "auth.leeway" => self.leeway = value.duration()?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        let fail = |key: &str, problem: &str| Err(Invalid::new(key, problem));
        if self.algorithm != shop_auth::ALGORITHM {
            return fail("auth.algorithm", "only \"EdDSA\" is supported");
        }
        if self.issuer.is_empty() {
            return fail("auth.issuer", "must not be empty");
        }
        if self.audience.is_empty() {
            return fail("auth.audience", "must not be empty");
        }
        if self.leeway > Duration::from_secs(300) {
            return fail("auth.leeway", "expected at most 5m");
        }
        Ok(())
    }

    pub fn public_key_path(&self, common: &Common) -> PathBuf {
        self.public_key
            .clone()
            .unwrap_or_else(|| common.keys_dir().join(PUBLIC_KEY_FILE))
    }

    pub fn rules(&self) -> shop_auth::TokenRules {
        shop_auth::TokenRules {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway_secs: self.leeway.as_secs(),
        }
    }

    /// Loads the verifier from the public key file.
    pub fn verifier(&self, common: &Common) -> Result<shop_auth::Verifier, shop_auth::KeyError> {
        shop_auth::Verifier::from_file(&self.algorithm, &self.public_key_path(common), &self.rules())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, Default, PartialEq)]
    struct Demo {
        port: u16,
        dir: PathBuf,
        ttl: Duration,
    }

    impl Settings for Demo {
        const KEYS: &'static [&'static str] = &["server.port", "data.dir", "auth.token_ttl"];
        fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
            match key {
                "server.port" => self.port = value.port()?,
                "data.dir" => self.dir = value.path()?,
                "auth.token_ttl" => self.ttl = value.duration()?,
                _ => unreachable!("load checks keys"),
            }
            Ok(())
        }
        fn validate(&self) -> Result<(), Invalid> {
            if self.ttl.is_zero() {
                return Err(Invalid::new("auth.token_ttl", "must be more than 0"));
            }
            Ok(())
        }
    }

    fn args(a: &[&str]) -> Flags {
        parse_flags(a.iter().map(|s| (*s).to_owned())).unwrap()
    }

    fn scratch_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shop-kit-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let file = scratch_file(
            "layers.toml",
            "[server]\nport = 1\n[data]\ndir = \"/file\"\n[auth]\ntoken_ttl = \"1h\"\n",
        );
        let env: HashMap<&str, &str> = [("SHOP_SERVER_PORT", "2"), ("SHOP_DATA_DIR", "/env")].into();
        let flags = args(&["--config", file.to_str().unwrap(), "--port=3"]);
        let demo: Demo = load(&flags, |k| env.get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(
            demo,
            Demo {
                port: 3,
                dir: "/env".into(),
                ttl: Duration::from_secs(3600)
            }
        );
    }

    #[test]
    fn errors_name_the_source_key_and_problem() {
        let check = |text: &str, flags: &[&str], want: &str| {
            let file = scratch_file("errors.toml", text);
            let mut all = vec!["--config", file.to_str().unwrap()];
            all.extend_from_slice(flags);
            let err = load::<Demo>(&args(&all), |_| None).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        };
        let ok = "[auth]\ntoken_ttl = \"1h\"\n";
        check(
            "[server]\nprot = 1\n",
            &[],
            "errors.toml: server.prot: unknown key; known keys here are server.port",
        );
        check(
            "[sever]\nport = 1\n",
            &[],
            "sever.port: unknown key; the sections are server, data, auth",
        );
        check(
            "[server]\nport = \"x\"\n",
            &[],
            "server.port: expected a whole number, got string \"x\"",
        );
        check(
            "[server]\nport = 70000\n",
            &[],
            "server.port: expected a port number 0-65535, got 70000",
        );
        check(
            "[auth]\ntoken_ttl = \"10 minutes\"\n",
            &[],
            "auth.token_ttl: expected a duration",
        );
        check("port = 1\n", &[], "errors.toml: port: expected a [section] table");
        check("[server\n", &[], "errors.toml: : not valid TOML");
        check(
            ok,
            &["--port", "abc"],
            "flag --port: server.port: expected a whole number, got \"abc\"",
        );
        check(
            ok,
            &["--set", "server.nope=1"],
            "flag --set: server.nope: unknown key",
        );
        check(
            "[auth]\ntoken_ttl = \"0s\"\n",
            &[],
            "errors.toml: auth.token_ttl: must be more than 0",
        );
        check(
            ok,
            &["--set", "auth.token_ttl=0s"],
            "flag --set: auth.token_ttl: must be more than 0",
        );
        // A whole-settings check names where the offending key's value came from.
        let env: HashMap<&str, &str> = [("SHOP_AUTH_TOKEN_TTL", "0s")].into();
        let err = load::<Demo>(&args(&[]), |k| env.get(k).map(|v| (*v).to_owned()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable SHOP_AUTH_TOKEN_TTL: auth.token_ttl: must be more than 0"),
            "{err}"
        );
    }

    #[test]
    fn file_values_may_name_environment_variables() {
        let file = scratch_file(
            "refs.toml",
            "[server]\nport = \"${PORT:-7}\"\n[data]\ndir = \"/srv/${WHO}/data\"\n\
             [auth]\ntoken_ttl = \"${TTL}\"\n",
        );
        let flags = args(&["--config", file.to_str().unwrap()]);
        let load_with = |vars: &[(&str, &str)]| {
            let env: HashMap<&str, &str> = vars.iter().copied().collect();
            load::<Demo>(&flags, |k| env.get(k).map(|v| (*v).to_owned()))
        };
        let demo = load_with(&[("WHO", "shop"), ("TTL", "2h")]).unwrap();
        assert_eq!(
            demo,
            Demo {
                port: 7,
                dir: "/srv/shop/data".into(),
                ttl: Duration::from_secs(7200)
            }
        );
        assert_eq!(
            load_with(&[("WHO", "a"), ("TTL", "1h"), ("PORT", "9")])
                .unwrap()
                .port,
            9
        );
        // A missing variable names the file, the key and the variable.
        let err = load_with(&[("WHO", "shop")]).unwrap_err().to_string();
        assert!(
            err.ends_with("refs.toml: auth.token_ttl: environment variable TTL is not set (write ${TTL:-default} to give a default)"),
            "{err}"
        );
        // The value is typed after the replacement, and an error says where it came from.
        let err = load_with(&[("WHO", "shop"), ("TTL", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refs.toml: auth.token_ttl: expected a duration"),
            "{err}"
        );
        // A literal `${` survives as `$${`; an unknown key stays an unknown key.
        let check = |text: &str, want: &str| {
            let file = scratch_file("refs-more.toml", text);
            let env = |k: &str| (k == "TTL").then(|| "1h".to_owned());
            let got = load::<Demo>(&args(&["--config", file.to_str().unwrap()]), env);
            match got {
                Ok(demo) => assert_eq!(demo.dir, PathBuf::from(want), "{text}"),
                Err(e) => assert!(e.to_string().contains(want), "{e} should contain {want:?}"),
            }
        };
        check(
            "[data]\ndir = \"/a/$${B}\"\n[auth]\ntoken_ttl = \"${TTL}\"\n",
            "/a/${B}",
        );
        check("[data]\ndri = \"${NOPE}\"\n", "data.dri: unknown key");
        check(
            "[data]\ndir = \"${NOPE\"\n",
            "data.dir: the reference at byte 0: `${` without a closing `}`",
        );
    }

    #[test]
    fn flags_keep_what_they_do_not_know_for_the_binary() {
        let f = args(&[
            "create-admin",
            "--username",
            "root",
            "--check",
            "--data-dir",
            "/d",
        ]);
        assert_eq!(f.rest, vec!["create-admin", "--username", "root"]);
        assert!(f.check);
        assert_eq!(
            f.overrides,
            vec![("--data-dir".into(), "data.dir".into(), "/d".into())]
        );
        assert!(parse_flags(["--port".to_owned()]).is_err());
    }

    #[test]
    fn the_key_macro_lists_exactly_the_shared_keys_first() {
        let keys: &[&str] = crate::settings_keys!("own.key");
        let shared: Vec<&str> = Common::KEYS.iter().chain(TokenCheck::KEYS).copied().collect();
        assert_eq!(&keys[..shared.len()], shared.as_slice());
        assert_eq!(keys[shared.len()..], ["own.key"]);
    }
}
