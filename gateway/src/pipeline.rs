//! One request's way through the gateway: request id, CORS, the gateway's own endpoints, route
//! match, auth policy, rate limit, body (size-limited, JSON only), JSON to protobuf, the upstream
//! call with its deadline and metadata, protobuf to JSON, gRPC status to HTTP status, and one
//! access-log line. Also what a configuration turns into ([`Loaded`]) and how a new one replaces
//! it while requests run ([`Gateway::reload`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use shop_discovery::CallError;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

use shop_auth::revoked::Revocations;
use shop_auth::{Identity, Role, TokenRules, Verifier};

use crate::breaker::{self, Breakers};
use crate::config::{self, Access, Config, LimitKey, Listener, Route};
use crate::cors;
use crate::limit::{self, Decision};
use crate::metrics::{self, Metrics, Seen};
use crate::reply::{self, Refusal, Reply};
use crate::router::{Found, Router};
use crate::transcode;
use crate::upstream::{self, Call, Failure, Guard, Upstreams};

/// The header that carries a request's id, in and out.
pub const REQUEST_ID: &str = shop_base::request_id::HEADER;
/// How long a reload waits for new upstreams' first instances before swapping anyway.
const FIRST_INSTANCES: std::time::Duration = std::time::Duration::from_secs(2);
/// The header a client sends to make `POST /api/orders` safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The gateway while it runs: the configuration in use (replaced whole by a reload) and what
/// outlives configurations (the counters).
pub struct Gateway {
    /// The file reloads read.
    path: PathBuf,
    /// What the listeners opened with (a reload that changes it says a restart is needed).
    sockets: Sockets,
    current: RwLock<Arc<Loaded>>,
    metrics: Metrics,
    reloads_ok: AtomicU64,
    reloads_refused: AtomicU64,
    /// One reload at a time (a signal and a file change may arrive together).
    reloading: Mutex<()>,
    /// The connection slots of every listener (`gateway.max_connections`, fixed at start).
    connections: Arc<crate::conn::Slots>,
    /// Revoked tokens, learned from the user service; every configuration's verifier reads them.
    revocations: Arc<Revocations>,
}

/// A loaded configuration and everything built from it. A request holds the one that was current
/// when it arrived until it is answered, so a reload never changes a request half-way.
pub struct Loaded {
    config: Config,
    router: Router,
    grpc_paths: Vec<http::uri::PathAndQuery>,
    upstreams: Upstreams,
    verifier: Option<Verifier>,
    limits: BTreeMap<String, Arc<limit::Policy>>,
    breakers: BTreeMap<String, Arc<Breakers>>,
}

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

/// What the access log and the response headers say about a request besides its status.
#[derive(Default)]
struct Trace {
    route: Option<String>,
    instance: Option<String>,
    /// The token bucket's answer, for the `RateLimit-*` headers.
    rate: Option<Decision>,
    /// The call ran a second time on another instance.
    retried: bool,
    /// The upstream the route calls.
    upstream: Option<String>,
    /// The limit policy that refused the request.
    limited_by: Option<String>,
}

impl Gateway {
    /// Builds everything `config` describes (see [`Loaded::build`]).
    pub fn new(config: Config) -> Result<Gateway, String> {
        let path = config.path.clone();
        let sockets = Sockets::of(&config);
        let connections = crate::conn::Slots::new(config.max_connections);
        let revocations = Arc::new(Revocations::default());
        let loaded = Loaded::build(config, None, &revocations)?;
        Ok(Gateway {
            path,
            sockets,
            current: RwLock::new(Arc::new(loaded)),
            metrics: Metrics::default(),
            reloads_ok: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
            reloading: Mutex::new(()),
            connections,
            revocations,
        })
    }

    /// The revocations every verifier checks (kept current by `revocations::follow`).
    pub fn revocations(&self) -> Arc<Revocations> {
        Arc::clone(&self.revocations)
    }

    /// The connection slots the listeners share.
    pub fn connections(&self) -> Arc<crate::conn::Slots> {
        Arc::clone(&self.connections)
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
            && crate::metrics::fingerprint(t.as_bytes()) == self.current().config.fingerprint
        {
            return Ok(None);
        }
        let result = text
            .and_then(|t| config::parse(&self.path, &t))
            .map_err(ReloadError::from)
            .and_then(|config| {
                let old = self.current();
                let next =
                    Loaded::build(config, Some(&old), &self.revocations).map_err(ReloadError::Build)?;
                // A route added with a new Consul upstream should serve from its first request:
                // give the new watches a moment to hear from Consul before the swap.
                let deadline = Instant::now() + FIRST_INSTANCES;
                for u in next.upstreams.new_since(&old.upstreams) {
                    while u.balancer.instances().is_empty() && Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
                let done = Reloaded {
                    routes: next.config.routes.len(),
                    fingerprint: next.config.fingerprint,
                    needs_restart: self.sockets.differences(&Sockets::of(&next.config)),
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
            Err(_) => &self.reloads_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result.map(Some)
    }
}

/// One shared state per named policy: the previous configuration's, given the new numbers, when
/// it had a policy of that name; a fresh one otherwise.
fn carry_over<C: Copy, T>(
    configured: &BTreeMap<String, C>,
    previous: Option<&BTreeMap<String, Arc<T>>>,
    new: impl Fn(C) -> T,
    update: impl Fn(&T, C),
) -> BTreeMap<String, Arc<T>> {
    configured
        .iter()
        .map(|(name, c)| {
            let state = match previous.and_then(|p| p.get(name)) {
                Some(kept) => {
                    update(kept, *c);
                    Arc::clone(kept)
                }
                None => Arc::new(new(*c)),
            };
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
}

impl Sockets {
    fn of(c: &Config) -> Sockets {
        Sockets {
            listeners: c.listeners.iter().map(|l| (l.address, l.tls.is_some())).collect(),
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            max_header_bytes: c.max_header_bytes,
            max_connections: c.max_connections,
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
        changed
    }
}

impl Loaded {
    /// Builds the router, the balancers (starting Consul watches on the current runtime) and,
    /// when a route needs one, the token verifier (reading the key file again, so a reload picks
    /// up a rotated key). With `previous`, its limit and breaker policies of the same name are
    /// kept (with their buckets and states; their numbers updated) and so are its upstreams
    /// whose definition is unchanged.
    pub fn build(
        config: Config,
        previous: Option<&Loaded>,
        revocations: &Arc<Revocations>,
    ) -> Result<Loaded, String> {
        let router = Router::new(
            config
                .routes
                .iter()
                .map(|r| (r.method.clone(), r.template.clone())),
        );
        let grpc_paths = config
            .routes
            .iter()
            .map(|r| upstream::grpc_path(&r.rpc))
            .collect::<Result<Vec<_>, _>>()?;
        let needs_tokens = config.routes.iter().any(|r| r.access != Access::Public);
        let verifier = if needs_tokens {
            let rules = TokenRules {
                issuer: config.auth.issuer.clone(),
                audience: config.auth.audience.clone(),
                leeway_secs: config.auth.leeway.as_secs(),
            };
            let v = Verifier::from_file("EdDSA", &config.auth.public_key, &rules).map_err(|e| {
                format!(
                    "{}: auth.public_key: {e} (the user service writes it on its first start)",
                    config.path.display()
                )
            })?;
            Some(v.with_revocations(Arc::clone(revocations)))
        } else {
            None
        };
        let upstreams = Upstreams::start(&config, previous.map(|p| (&p.config, &p.upstreams)))?;
        // Kept policies take their new numbers here, after the last step that can fail: a
        // refused reload leaves them as they were.
        let limits = carry_over(
            &config.limits,
            previous.map(|p| &p.limits),
            limit::Policy::new,
            limit::Policy::update,
        );
        let breakers = carry_over(
            &config.breakers,
            previous.map(|p| &p.breakers),
            Breakers::new,
            Breakers::update,
        );
        Ok(Loaded {
            config,
            router,
            grpc_paths,
            upstreams,
            verifier,
            limits,
            breakers,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The upstream of that name in this configuration.
    pub fn upstream(&self, name: &str) -> Option<&crate::upstream::Upstream> {
        self.upstreams.get(name)
    }
}

impl Gateway {
    /// Answers one request that arrived on `listener` (as it was configured when it opened).
    /// Never fails: every problem becomes an error reply.
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr, listener: &Listener) -> Reply
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let loaded = self.current();
        let request_id = request_id(req.headers());
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        // The listener's CORS as the file says now (by address); as it opened when the file no
        // longer lists it.
        let cors = match loaded.config.listener(listener.address) {
            Some(l) => l.cors.as_ref(),
            None => listener.cors.as_ref(),
        };
        let origin = cors.and_then(|c| cors::allowed_origin(c, req.headers()));
        let mut trace = Trace::default();
        let outcome = if let Some(answer) = cors.and_then(|c| cors::preflight(c, origin.as_ref(), &req)) {
            trace.route = Some("preflight".to_owned());
            answer
        } else if let Some(answer) = self.own_endpoint(&loaded, req.method(), &path) {
            trace.route = Some(path.trim_start_matches('/').to_owned());
            answer
        } else {
            loaded.route(req, peer, &request_id, &mut trace).await
        };
        let mut reply = match outcome {
            Ok(r) => r,
            Err(refusal) => {
                if let Refusal::Limited { policy, .. } = &refusal {
                    trace.limited_by = Some(policy.clone());
                }
                if let Refusal::Upstream(status) = &refusal {
                    tracing::debug!(request_id = %request_id, code = ?status.code(), message = status.message(), "upstream error");
                }
                refusal.reply()
            }
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            reply.headers_mut().insert(REQUEST_ID, v);
        }
        if let Some(d) = trace.rate {
            let h = reply.headers_mut();
            h.insert("ratelimit-limit", HeaderValue::from(d.limit));
            h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
            h.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
        }
        if let (Some(c), Some(o)) = (cors, origin) {
            cors::allow(c, o, reply.headers_mut());
        }
        let latency = started.elapsed();
        self.metrics.record(Seen {
            route: trace.route.as_deref().unwrap_or("-"),
            method: method.as_str(),
            status: reply.status().as_u16(),
            latency,
            limited_by: trace.limited_by.as_deref(),
            retried_upstream: trace.upstream.as_deref().filter(|_| trace.retried),
        });
        tracing::info!(
            target: "access",
            method = %method,
            path = %path,
            route = trace.route.as_deref().unwrap_or("-"),
            status = reply.status().as_u16(),
            latency_ms = format_args!("{:.2}", latency.as_secs_f64() * 1000.0),
            upstream = trace.instance.as_deref().unwrap_or("-"),
            retried = trace.retried,
            request_id = %request_id,
            peer = %peer,
        );
        reply
    }

    /// `/health` and `/metrics`, the gateway's own endpoints; `None` for any other path.
    fn own_endpoint(&self, loaded: &Loaded, method: &Method, path: &str) -> Option<Result<Reply, Refusal>> {
        if path != "/health" && path != "/metrics" {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            return Some(Err(Refusal::MethodNotAllowed {
                method: method.as_str().to_owned(),
                path: path.to_owned(),
                allow: vec!["GET".into(), "HEAD".into()],
            }));
        }
        Some(Ok(if path == "/health" {
            loaded.health()
        } else {
            self.metrics(loaded)
        }))
    }

    /// `GET /metrics`: the counters, then gauges read now from where they live.
    fn metrics(&self, loaded: &Loaded) -> Reply {
        use std::fmt::Write;
        let mut extra = loaded.gauges();
        metrics::header(
            &mut extra,
            "gateway_config_reloads_total",
            "counter",
            "Reloads of the configuration file, by result (ok or refused).",
        );
        for (result, counter) in [("ok", &self.reloads_ok), ("refused", &self.reloads_refused)] {
            let _ = writeln!(
                extra,
                "gateway_config_reloads_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        metrics::header(
            &mut extra,
            "gateway_connections_open",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(extra, "gateway_connections_open {}", self.connections.open());
        metrics::header(
            &mut extra,
            "gateway_revoked_users",
            "gauge",
            "Users with revoked tokens the gateway refuses (learned from the user service).",
        );
        let _ = writeln!(extra, "gateway_revoked_users {}", self.revocations.len());
        metrics::header(
            &mut extra,
            "gateway_revocations_age_seconds",
            "gauge",
            "Seconds since the revocation feed last answered (-1: never).",
        );
        let age = self.revocations.age().map_or(-1.0, |a| a.as_secs_f64());
        let _ = writeln!(extra, "gateway_revocations_age_seconds {age:.3}");
        metrics::header(
            &mut extra,
            "gateway_connections_closed_total",
            "counter",
            "Client connections the gateway closed, by reason (header_timeout, idle, evicted).",
        );
        for (cut, n) in self.connections.cuts() {
            let _ = writeln!(
                extra,
                "gateway_connections_closed_total{{reason=\"{}\"}} {n}",
                cut.label()
            );
        }
        let mut r = reply::empty(StatusCode::OK);
        *r.body_mut() = http_body_util::Full::new(Bytes::from(self.metrics.render(&extra)));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }
}

impl Loaded {
    /// A request for one of the routes: match, auth, limit, body, call, reply.
    async fn route<B>(
        &self,
        req: Request<B>,
        peer: SocketAddr,
        request_id: &str,
        trace: &mut Trace,
    ) -> Result<Reply, Refusal>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let (index, params) = match self.router.find(&method, &path) {
            Found::Route(i, params) => (i, params),
            Found::MethodNotAllowed(allow) => return Err(Refusal::MethodNotAllowed { method, path, allow }),
            Found::NotFound => return Err(Refusal::NoRoute { method, path }),
            Found::BadParam(name) => {
                return Err(Refusal::BadRequest(format!(
                    "path parameter {name} is not valid percent-encoded UTF-8"
                )));
            }
        };
        let route = &self.config.routes[index];
        trace.route = Some(route.name.clone());
        trace.upstream = Some(route.upstream.clone());

        let who = self.authorize(route, req.headers())?;
        self.take_token(route, who.as_ref(), peer, req.headers(), trace)?;
        let metadata = metadata(req.headers(), request_id)?;
        let query = req.uri().query().map(str::to_owned);
        let body = self.read_body(req).await?;
        let message =
            transcode::request(route, &params, query.as_deref(), &body).map_err(Refusal::BadRequest)?;

        let target = self
            .upstreams
            .get(&route.upstream)
            .ok_or_else(|| Refusal::NoInstances {
                upstream: route.upstream.clone(),
            })?;
        let call = Call {
            path: self.grpc_paths[index].clone(),
            output: route.rpc.output(),
            message,
            metadata,
        };
        let guard = Guard {
            upstream: &route.upstream,
            breakers: route
                .breaker
                .as_ref()
                .and_then(|b| self.breakers.get(b))
                .map(|b| &**b),
            idempotent: route.idempotent,
        };
        let outcome = upstream::unary(target, &call, route.timeout, &guard).await;
        trace.instance = outcome.instance;
        trace.retried = outcome.retried;
        match outcome.result {
            Ok(msg) => success(route, &msg),
            Err(Failure::AllOpen { retry_after_secs }) => Err(Refusal::AllOpen {
                upstream: route.upstream.clone(),
                retry_after_secs,
            }),
            Err(Failure::Call(CallError::NoInstances { .. } | CallError::AllExcluded { .. })) => {
                Err(Refusal::NoInstances {
                    upstream: route.upstream.clone(),
                })
            }
            Err(Failure::Call(e)) => Err(upstream_refusal(route, e, request_id)),
        }
    }

    /// `public` lets anyone through; `user` needs a valid token; `admin` an admin's token.
    /// The token still goes to the service, which checks it again and decides ownership.
    fn authorize(&self, route: &Route, headers: &HeaderMap) -> Result<Option<Identity>, Refusal> {
        if route.access == Access::Public {
            return Ok(None);
        }
        let Some(verifier) = &self.verifier else {
            return Err(Refusal::Upstream(Status::internal("no token verifier is loaded")));
        };
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(Refusal::Unauthenticated {
                message: shop_auth::AuthError::Missing.to_string(),
                invalid: false,
            });
        };
        let who = value
            .to_str()
            .map_err(|_| shop_auth::AuthError::NotBearer)
            .and_then(|v| verifier.verify_bearer(v))
            .map_err(|e| Refusal::Unauthenticated {
                message: e.client_message(),
                invalid: true,
            })?;
        if route.access == Access::Admin && who.role != Role::Admin {
            return Err(Refusal::Forbidden(format!(
                "{} {} is for admins only",
                route.method,
                route.template.as_str()
            )));
        }
        Ok(Some(who))
    }

    /// Takes a token from the route's limit policy, keyed as the policy says: the client's
    /// address, the verified user (the address when there is none), the route, or one bucket
    /// for everyone.
    fn take_token(
        &self,
        route: &Route,
        who: Option<&Identity>,
        peer: SocketAddr,
        headers: &HeaderMap,
        trace: &mut Trace,
    ) -> Result<(), Refusal> {
        let Some(name) = &route.limit else {
            return Ok(());
        };
        let Some(policy) = self.limits.get(name) else {
            return Ok(());
        };
        let Some(limit) = policy.limit() else {
            return Ok(());
        };
        let ip = || {
            format!(
                "ip:{}",
                crate::client::client_ip(peer, headers, &self.config.trusted_proxies)
            )
        };
        let key = match limit.key {
            LimitKey::Ip => ip(),
            LimitKey::User => match who {
                Some(w) if !w.is_service() => format!("user:{}", w.user_id),
                Some(w) => format!("service:{}", w.service.as_deref().unwrap_or("")),
                None => ip(),
            },
            LimitKey::Route => format!("route:{}", route.name),
            LimitKey::Global => String::new(),
        };
        let decision = policy.take(&key, Instant::now());
        trace.rate = Some(decision);
        if decision.allowed {
            Ok(())
        } else {
            Err(Refusal::Limited {
                policy: name.clone(),
                retry_after_secs: decision.retry_after_secs,
            })
        }
    }

    /// The body, refused with 413 past `max_body_bytes` (by its declared length before reading
    /// anything, or while reading), with 415 when its `Content-Type` says it is something else
    /// than JSON, and with 408 when it has not all arrived within `body_timeout`.
    async fn read_body<B>(&self, req: Request<B>) -> Result<Bytes, Refusal>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.config.max_body_bytes;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(Refusal::TooLarge { limit });
        }
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let text = ct.to_str().unwrap_or("");
            let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            // `curl -d` labels JSON as a form unless told otherwise; the body is parsed as JSON
            // either way, so that label is tolerated. Anything else is not JSON.
            let json_ish = essence == "application/json"
                || essence.ends_with("+json")
                || essence == "application/x-www-form-urlencoded";
            if !json_ish && declared != Some(0) {
                return Err(Refusal::UnsupportedMediaType(format!("{text:?}")));
            }
        }
        let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
        let after = self.config.body_timeout;
        let collected = tokio::time::timeout(after, Limited::new(req.into_body(), limit_usize).collect())
            .await
            .map_err(|_| Refusal::BodyTimeout { after })?;
        match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::TooLarge { limit }),
            Err(e) => Err(Refusal::BadRequest(format!(
                "the request body could not be read: {e}"
            ))),
        }
    }

    /// The gauges `/metrics` reads from this configuration: instances per upstream, breaker
    /// states and trips, buckets held per limit policy, and which file is loaded.
    fn gauges(&self) -> String {
        use std::fmt::Write;
        let mut extra = String::new();
        metrics::header(
            &mut extra,
            "gateway_upstream_instances",
            "gauge",
            "Healthy instances the balancer holds, by upstream.",
        );
        for (name, n) in self.upstreams.counts() {
            let _ = writeln!(
                extra,
                "gateway_upstream_instances{{upstream=\"{}\"}} {n}",
                metrics::escape(&name)
            );
        }
        metrics::header(
            &mut extra,
            "gateway_breaker_state",
            "gauge",
            "Circuit breaker per policy and instance address: 0 closed, 1 open, 2 half-open.",
        );
        let mut trips = String::new();
        metrics::header(
            &mut trips,
            "gateway_breaker_trips_total",
            "counter",
            "Times a breaker opened, by policy and instance.",
        );
        for (policy, b) in &self.breakers {
            for (instance, state, n) in b.states() {
                let labels = format!(
                    "policy=\"{}\",instance=\"{}\"",
                    metrics::escape(policy),
                    metrics::escape(&instance)
                );
                let code = match state {
                    breaker::State::Closed => 0,
                    breaker::State::Open => 1,
                    breaker::State::HalfOpen => 2,
                };
                let _ = writeln!(extra, "gateway_breaker_state{{{labels}}} {code}");
                let _ = writeln!(trips, "gateway_breaker_trips_total{{{labels}}} {n}");
            }
        }
        extra.push_str(&trips);
        metrics::header(
            &mut extra,
            "gateway_config_info",
            "gauge",
            "The loaded gateway.toml: its path and a fingerprint of its text.",
        );
        let _ = writeln!(
            extra,
            "gateway_config_info{{path=\"{}\",hash=\"{:016x}\"}} 1",
            metrics::escape(&self.config.path.display().to_string()),
            self.config.fingerprint
        );
        metrics::header(
            &mut extra,
            "gateway_ratelimit_buckets",
            "gauge",
            "Token buckets held, by limit policy (idle ones are forgotten).",
        );
        for (name, policy) in &self.limits {
            let _ = writeln!(
                extra,
                "gateway_ratelimit_buckets{{policy=\"{}\"}} {}",
                metrics::escape(name),
                policy.buckets()
            );
        }
        extra
    }

    /// Liveness and readiness: answering at all means alive; 200 means every upstream has a
    /// healthy instance, 503 that one has none (the body says which).
    fn health(&self) -> Reply {
        let counts = self.upstreams.counts();
        let ready = counts.iter().all(|(_, n)| *n > 0);
        let upstreams: serde_json::Map<String, serde_json::Value> = counts
            .into_iter()
            .map(|(name, n)| (name, serde_json::json!({ "instances": n })))
            .collect();
        let body = serde_json::json!({
            "status": if ready { "ok" } else { "degraded" },
            "config": self.config.path.display().to_string(),
            "routes": self.config.routes.len(),
            "upstreams": upstreams,
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        reply::json(status, Bytes::from(body.to_string()))
    }
}

/// The route's success status with the reply as JSON (204: no body).
fn success(route: &Route, msg: &prost_reflect::DynamicMessage) -> Result<Reply, Refusal> {
    let status = StatusCode::from_u16(route.status).unwrap_or(StatusCode::OK);
    if status == StatusCode::NO_CONTENT {
        return Ok(reply::empty(status));
    }
    let body = transcode::response(msg).map_err(|e| Refusal::Upstream(Status::internal(e)))?;
    Ok(reply::json(status, body))
}

/// A failed call as the client should see it: a service's own status passes through; a
/// transport failure (not sent, broken, late) is logged in full and answered with a plain
/// sentence that names the upstream (503, or 504 for the deadline).
fn upstream_refusal(route: &Route, error: CallError, request_id: &str) -> Refusal {
    if !matches!(error, CallError::Answered(_)) {
        tracing::warn!(
            request_id,
            upstream = %route.upstream,
            error = %error,
            "upstream call failed in transport"
        );
    }
    Refusal::Upstream(error.into_status(&route.upstream))
}

/// The id from the client when it is printable ASCII of a sane length, otherwise a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .map(HeaderValue::as_bytes)
        .filter(|b| shop_base::request_id::acceptable(b))
        .and_then(|b| std::str::from_utf8(b).ok())
        .map_or_else(shop_base::request_id::fresh, str::to_owned)
}

/// Longest `Idempotency-Key` accepted; the order service's limit too.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What the service gets besides the message: the request id, the client's token and its
/// idempotency key. A token that is not valid metadata is left out (the service then refuses
/// its absence); an idempotency key is never dropped: one that is not 1 to 255 printable ASCII
/// characters is refused here, because a retry that lost its key would create a second order.
fn metadata(headers: &HeaderMap, request_id: &str) -> Result<MetadataMap, Refusal> {
    let mut m = MetadataMap::new();
    if let Ok(v) = MetadataValue::try_from(request_id) {
        m.insert(REQUEST_ID, v);
    }
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Ok(v) = MetadataValue::try_from(v)
    {
        m.insert(AUTHORIZATION.as_str(), v);
    }
    if let Some(key) = headers.get(IDEMPOTENCY_KEY) {
        let bytes = key.as_bytes();
        let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
        let value = std::str::from_utf8(bytes)
            .ok()
            .filter(|_| printable && (1..=MAX_IDEMPOTENCY_KEY).contains(&bytes.len()))
            .and_then(|v| MetadataValue::try_from(v).ok())
            .ok_or_else(|| {
                Refusal::BadRequest(format!(
                    "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
                ))
            })?;
        m.insert(IDEMPOTENCY_KEY, value);
    }
    Ok(m)
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
        // Routes and policies are not socket settings.
        let routes = text.replace("rate = 50\n", "rate = 60\n");
        assert_ne!(routes, text);
        assert!(started.differences(&Sockets::of(&parse(&routes))).is_empty());
    }

    #[test]
    fn a_clients_request_id_is_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(request_id(&h).len(), 16);
        h.insert(REQUEST_ID, HeaderValue::from_str(&"x".repeat(129)).unwrap());
        assert_eq!(request_id(&h).len(), 16);
    }

    #[test]
    fn token_request_id_and_idempotency_key_are_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert("idempotency-key", HeaderValue::from_static("k-1"));
        h.insert("cookie", HeaderValue::from_static("secret=1"));
        let m = metadata(&h, "rid").unwrap();
        assert_eq!(m.get("authorization").unwrap(), "Bearer t");
        assert_eq!(m.get("idempotency-key").unwrap(), "k-1");
        assert_eq!(m.get(REQUEST_ID).unwrap(), "rid");
        assert!(m.get("cookie").is_none());
        h.insert("idempotency-key", HeaderValue::from_static("with a space"));
        assert!(metadata(&h, "rid").is_ok());
    }

    #[test]
    fn a_bad_idempotency_key_is_refused_never_dropped() {
        for bad in [
            HeaderValue::from_bytes("naïve".as_bytes()).unwrap(),
            HeaderValue::from_str(&"k".repeat(256)).unwrap(),
            HeaderValue::from_static(""),
            HeaderValue::from_bytes(b"tab\there").unwrap(),
        ] {
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", bad.clone());
            match metadata(&h, "rid") {
                Err(Refusal::BadRequest(m)) => assert!(m.contains("Idempotency-Key"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
