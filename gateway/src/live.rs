//! The gateway while it runs: the configuration in use (a [`Loaded`], replaced whole by a
//! reload) and what outlives configurations: the counters, the connection slots, the
//! revocations learned from the user service. A reload reads and validates the file, builds
//! the next [`Loaded`] beside the current one (keeping the state of policies and upstreams that
//! did not change) and swaps it in; requests in flight finish on the one they started with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use shop_auth::revoked::Revocations;

use crate::config::{self, Config};
use crate::loaded::Loaded;
use crate::metrics::{Metrics, RouteCounters};

/// How long a reload waits for new upstreams' first instances before swapping anyway.
const FIRST_INSTANCES: std::time::Duration = std::time::Duration::from_secs(2);

/// The gateway while it runs.
pub struct Gateway {
    /// The file reloads read.
    path: PathBuf,
    /// What the listeners opened with (a reload that changes it says a restart is needed).
    sockets: Sockets,
    current: RwLock<Arc<Loaded>>,
    metrics: Arc<Metrics>,
    reloads_ok: AtomicU64,
    reloads_refused: AtomicU64,
    /// One reload at a time (a signal and a file change may arrive together).
    reloading: Mutex<()>,
    /// The connection slots of every listener (`gateway.max_connections`, fixed at start).
    connections: Arc<crate::conn::Slots>,
    /// Revoked tokens, learned from the user service; every configuration's verifier reads them.
    revocations: Arc<Revocations>,
    /// Counters of the gateway's own answers, by the name the access log shows.
    own: Vec<(Arc<str>, Arc<RouteCounters>)>,
    /// A stop was asked for: `/ready` says 503 while the listeners still serve.
    draining: AtomicBool,
    /// The last reload refused, for the admin view.
    last_refused: Mutex<Option<Refused>>,
}

/// A reload that was refused: when, what asked for it, and why (`check`'s words).
#[derive(Debug, Clone)]
pub struct Refused {
    pub at: SystemTime,
    pub cause: Cause,
    pub error: String,
}

/// The gateway's own answers, counted like routes: no route matched, CORS preflights, and its
/// own endpoints.
const OWN: [&str; 6] = ["-", "preflight", "health", "ready", "metrics", "openapi.json"];

/// What a reload did, for its log line.
#[derive(Debug)]
pub struct Reloaded {
    pub routes: usize,
    pub fingerprint: u64,
    /// Settings that changed in the file but only take effect when the gateway restarts.
    pub needs_restart: Vec<&'static str>,
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The file changed on disk: nothing to do if its text is the one loaded.
    FileChanged,
    /// SIGHUP: reload whatever the file says (keys and certificates are read again).
    Signal,
}

impl Cause {
    /// As the reload's log line names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::FileChanged => "file changed",
            Cause::Signal => "SIGHUP",
        }
    }
}

/// Why a reload was refused; the configuration in use stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(#[from] config::ConfigError),
    #[error("{0}")]
    Build(String),
}

impl Gateway {
    /// Builds everything `config` describes (see [`Loaded::build`]).
    pub fn new(config: Config) -> Result<Gateway, String> {
        let path = config.path.clone();
        let sockets = Sockets::of(&config);
        let connections = crate::conn::Slots::new(config.max_connections);
        let revocations = Arc::new(Revocations::default());
        let metrics = Arc::new(Metrics::default());
        let loaded = Loaded::build(config, None, &revocations, &metrics)?;
        let own = OWN.iter().map(|n| (Arc::from(*n), metrics.route(n))).collect();
        Ok(Gateway {
            path,
            sockets,
            current: RwLock::new(Arc::new(loaded)),
            metrics,
            reloads_ok: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
            reloading: Mutex::new(()),
            connections,
            revocations,
            own,
            draining: AtomicBool::new(false),
            last_refused: Mutex::new(None),
        })
    }

    /// The name and counters of one of the gateway's own answers (`-` for anything else).
    pub(crate) fn own_counters(&self, name: &str) -> (Arc<str>, Arc<RouteCounters>) {
        let found = self
            .own
            .iter()
            .find(|(n, _)| &**n == name)
            .or_else(|| self.own.first());
        match found {
            Some((n, c)) => (Arc::clone(n), Arc::clone(c)),
            None => (Arc::from(name), Arc::new(RouteCounters::default())),
        }
    }

    /// The revocations every verifier checks (kept current by `revocations::follow`).
    pub fn revocations(&self) -> Arc<Revocations> {
        Arc::clone(&self.revocations)
    }

    /// The connection slots the listeners share.
    pub fn connections(&self) -> Arc<crate::conn::Slots> {
        Arc::clone(&self.connections)
    }

    /// The counters, kept across reloads.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Reloads done and refused so far.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_refused.load(Ordering::Relaxed),
        )
    }
    /// From now on `/ready` answers 503 (a stop was asked for; the listeners close after the
    /// drain window).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether a stop is under way.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The last reload that was refused, if any.
    pub fn last_refused(&self) -> Option<Refused> {
        self.last_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The file this gateway was started with (and reloads).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The configuration in use now.
    pub fn current(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reads the file again, validates it in full and, if it is good, makes it the configuration
    /// for every request that arrives from now on (blocking: run it off the async workers, inside
    /// the runtime, as `reload::watch` does). Requests already running finish on the one
    /// they started with. Limit and breaker policies that keep their name keep their state, and
    /// upstreams whose definition did not change keep their balancer (and its connections). On
    /// any problem nothing changes and the error says why (the same words as `gateway check`).
    /// `Ok(None)`: the file changed on disk but its text is the one loaded; nothing was done.
    pub fn reload(&self, cause: Cause) -> Result<Option<Reloaded>, ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let text = config::read(&self.path);
        if cause == Cause::FileChanged
            && let Ok(t) = &text
            && crate::metrics::fingerprint(t.as_bytes()) == self.current().config().fingerprint
        {
            return Ok(None);
        }
        let result = text
            .and_then(|t| config::parse(&self.path, &t))
            .map_err(ReloadError::from)
            .and_then(|config| {
                let old = self.current();
                let next = Loaded::build(config, Some(&old), &self.revocations, &self.metrics)
                    .map_err(ReloadError::Build)?;
                // A route added with a new Consul upstream should serve from its first request:
                // wait (this thread is a blocking one, inside the runtime) until the new watches
                // have heard from Consul, for a moment at most, before the swap.
                let new = next.new_upstreams_since(&old);
                if !new.is_empty() {
                    tokio::runtime::Handle::current().block_on(async {
                        let deadline = tokio::time::Instant::now() + FIRST_INSTANCES;
                        for u in new {
                            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                            u.balancer.first_instances(left).await;
                        }
                    });
                }
                let done = Reloaded {
                    routes: next.config().routes.len(),
                    fingerprint: next.config().fingerprint,
                    needs_restart: self.sockets.differences(&Sockets::of(next.config())),
                };
                let next = Arc::new(next);
                match self.current.write() {
                    Ok(mut c) => *c = next,
                    Err(poisoned) => *poisoned.into_inner() = next,
                }
                Ok(done)
            });
        let counter = match &result {
            Ok(_) => &self.reloads_ok,
            Err(e) => {
                *self.last_refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(Refused {
                    at: SystemTime::now(),
                    cause,
                    error: e.to_string().trim_end().to_owned(),
                });
                &self.reloads_refused
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result.map(Some)
    }
}

/// One shared state per named policy: the previous configuration's when it had a policy of
/// that name (states hold no numbers, so new numbers need nothing); a fresh one otherwise.
pub(crate) fn carry_over<C, T: Default>(
    configured: &BTreeMap<String, C>,
    previous: Option<&BTreeMap<String, Arc<T>>>,
) -> BTreeMap<String, Arc<T>> {
    configured
        .keys()
        .map(|name| {
            let state = previous
                .and_then(|p| p.get(name))
                .map_or_else(|| Arc::new(T::default()), Arc::clone);
            (name.clone(), state)
        })
        .collect()
}

/// What the listeners were opened with: the settings a reload cannot change.
#[derive(Debug, Clone, PartialEq)]
struct Sockets {
    /// Address, and whether it speaks TLS.
    listeners: Vec<(SocketAddr, bool)>,
    header_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
    max_header_bytes: usize,
    max_connections: usize,
    admin: Option<SocketAddr>,
}

impl Sockets {
    fn of(c: &Config) -> Sockets {
        Sockets {
            listeners: c.listeners.iter().map(|l| (l.address, l.tls.is_some())).collect(),
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            max_header_bytes: c.max_header_bytes,
            max_connections: c.max_connections,
            admin: c.admin.map(|a| a.address),
        }
    }

    /// What `new` says differently, named as in the file.
    fn differences(&self, new: &Sockets) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let addresses = |s: &Sockets| s.listeners.iter().map(|l| l.0).collect::<Vec<_>>();
        if addresses(self) != addresses(new) {
            changed.push("listener addresses");
        } else if self.listeners != new.listeners {
            changed.push("whether a listener uses TLS");
        }
        if self.header_timeout != new.header_timeout {
            changed.push("gateway.header_timeout");
        }
        if self.idle_timeout != new.idle_timeout {
            changed.push("gateway.idle_timeout");
        }
        if self.max_header_bytes != new.max_header_bytes {
            changed.push("gateway.max_header_bytes");
        }
        if self.max_connections != new.max_connections {
            changed.push("gateway.max_connections");
        }
        if self.admin != new.admin {
            changed.push("admin.address");
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_the_socket_settings_it_cannot_apply() {
        let text = include_str!("../../gateway.toml");
        let parse = |t: &str| config::parse(std::path::Path::new("gateway.toml"), t).unwrap();
        let started = Sockets::of(&parse(text));
        assert!(started.differences(&Sockets::of(&parse(text))).is_empty());
        let moved = text.replace("127.0.0.1:8080", "127.0.0.1:8081").replace(
            "trusted_proxies = []",
            "trusted_proxies = []\nheader_timeout = \"5s\"",
        );
        assert_eq!(
            started.differences(&Sockets::of(&parse(&moved))),
            ["listener addresses", "gateway.header_timeout"]
        );
        let admin = format!("{text}\n[admin]\naddress = \"127.0.0.1:9901\"\n");
        assert_eq!(
            started.differences(&Sockets::of(&parse(&admin))),
            ["admin.address"]
        );
        // Routes and policies are not socket settings.
        let routes = text.replace("rate = 50\n", "rate = 60\n");
        assert_ne!(routes, text);
        assert!(started.differences(&Sockets::of(&parse(&routes))).is_empty());
    }
}
