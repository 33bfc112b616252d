//! One configuration built: the router, a [`Plan`] per route (everything a request on that route
//! needs, resolved once: the gRPC path, the upstream, the policies, the counters), the
//! balancers, the token verifier, the policies' state and the access log. A request holds the `Loaded` that was
//! current when it arrived until it is answered, so a reload never changes a request half-way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;
use http::uri::PathAndQuery;
use shop_auth::revoked::Revocations;
use shop_auth::{TokenRules, Verifier};

use crate::access;
use crate::breaker::Breakers;
use crate::config::{Access, Breaker, Config, Limit, Route};
use crate::limit;
use crate::live::carry_over;
use crate::metrics::{Metrics, RouteCounters};
use crate::router::Router;
use crate::upstream::{self, Upstream, Upstreams};

/// A route compiled for the request path: nothing is looked up by name per request.
pub struct Plan {
    pub route: Route,
    /// `/package.Service/Method`.
    pub grpc_path: PathAndQuery,
    /// The success status.
    pub status: StatusCode,
    pub upstream: Arc<Upstream>,
    pub limit: Option<PlannedLimit>,
    /// The breaker policy's numbers and the breakers' states.
    pub breakers: Option<(Breaker, Arc<Breakers>)>,
    pub counters: Arc<RouteCounters>,
    /// Retries of calls to the upstream.
    pub retries: Arc<AtomicU64>,
    /// The route's name and upstream name, shared (the access log and metrics show them).
    pub name: Arc<str>,
    pub upstream_name: Arc<str>,
}

/// A route's limit policy: its name (for 429s), its numbers, its buckets, its refusals.
pub struct PlannedLimit {
    pub name: Arc<str>,
    pub limit: Limit,
    pub buckets: Arc<limit::Policy>,
    pub refused: Arc<AtomicU64>,
}

/// A loaded configuration and everything built from it.
pub struct Loaded {
    config: Config,
    router: Router,
    plans: Vec<Plan>,
    upstreams: Upstreams,
    verifier: Option<Verifier>,
    limits: BTreeMap<String, Arc<limit::Policy>>,
    breakers: BTreeMap<String, Arc<Breakers>>,
    /// The upstreams some route calls (what readiness waits for), by name.
    routed: Vec<String>,
    access: access::Log,
    /// When this configuration was built (the admin view shows it).
    loaded_at: SystemTime,
    /// This configuration's OpenAPI document (`GET /openapi.json`), generated once at load.
    openapi: Bytes,
}

fn verifier(config: &Config, revocations: &Arc<Revocations>) -> Result<Option<Verifier>, String> {
    if config.routes.iter().all(|r| r.access == Access::Public) {
        return Ok(None);
    }
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
    Ok(Some(v.with_revocations(Arc::clone(revocations))))
}

impl Loaded {
    /// Builds the router, the plans, the balancers (starting Consul watches on the current
    /// runtime) and, when a route needs one, the token verifier (reading the key file again, so
    /// a reload picks up a rotated key). With `previous`, its limit and breaker policies of the
    /// same name are kept (with their buckets and states; their numbers updated) and so are its
    /// upstreams whose definition is unchanged. Counters come from `metrics`, by name.
    pub fn build(
        config: Config,
        previous: Option<&Loaded>,
        revocations: &Arc<Revocations>,
        metrics: &Metrics,
    ) -> Result<Loaded, String> {
        let router = Router::new(
            config
                .routes
                .iter()
                .map(|r| (r.method.clone(), r.template.clone())),
        );
        let verifier = verifier(&config, revocations)?;
        let upstreams = Upstreams::start(&config, previous.map(|p| (&p.config, &p.upstreams)))?;
        // Policies that keep their name keep their state (buckets, breaker states); their
        // numbers are this configuration's, read from it with every call.
        let limits = carry_over(&config.limits, previous.map(|p| &p.limits));
        let breakers = carry_over(&config.breakers, previous.map(|p| &p.breakers));
        let plans = config
            .routes
            .iter()
            .map(|r| plan(&config, r, &upstreams, &limits, &breakers, metrics))
            .collect::<Result<Vec<_>, _>>()?;
        let mut routed: Vec<String> = config.routes.iter().map(|r| r.upstream.clone()).collect();
        routed.sort();
        routed.dedup();
        let a = &config.access_log;
        let access = access::Log::open(a.format, a.fields.clone(), a.file.as_deref())
            .map_err(|e| format!("{}: {e}", config.path.display()))?;
        let openapi = crate::openapi::compact(&config);
        Ok(Loaded {
            config,
            router,
            plans,
            upstreams,
            verifier,
            limits,
            breakers,
            routed,
            access,
            loaded_at: SystemTime::now(),
            openapi,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The plan of route `index` (as the router numbers them).
    pub fn plan(&self, index: usize) -> Option<&Plan> {
        self.plans.get(index)
    }

    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    /// The upstream of that name in this configuration.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.get(name)
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    pub fn limits(&self) -> &BTreeMap<String, Arc<limit::Policy>> {
        &self.limits
    }

    pub fn breakers(&self) -> &BTreeMap<String, Arc<Breakers>> {
        &self.breakers
    }

    /// The OpenAPI document of this configuration, as JSON (see [`crate::openapi`]).
    pub fn openapi(&self) -> &Bytes {
        &self.openapi
    }

    /// The names of the upstreams some route calls.
    pub fn routed_upstreams(&self) -> &[String] {
        &self.routed
    }

    /// This configuration's access log.
    pub fn access(&self) -> &access::Log {
        &self.access
    }

    /// When this configuration was built.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// Upstreams started for this configuration rather than taken over from `old`.
    pub fn new_upstreams_since<'a>(&'a self, old: &Loaded) -> Vec<&'a Upstream> {
        self.upstreams.new_since(&old.upstreams)
    }
}

/// One route's plan. Validation already proved every name resolves; a miss here is a bug, and
/// refuses the configuration rather than a request.
fn plan(
    config: &Config,
    r: &Route,
    upstreams: &Upstreams,
    limits: &BTreeMap<String, Arc<limit::Policy>>,
    breakers: &BTreeMap<String, Arc<Breakers>>,
    metrics: &Metrics,
) -> Result<Plan, String> {
    let missing = |what: &str, name: &str| format!("route {:?}: no {what} {name:?}", r.name);
    let upstream = upstreams
        .get_shared(&r.upstream)
        .ok_or_else(|| missing("upstream", &r.upstream))?;
    let limit = match &r.limit {
        Some(name) => Some(PlannedLimit {
            name: Arc::from(name.as_str()),
            limit: *config.limits.get(name).ok_or_else(|| missing("limit", name))?,
            buckets: Arc::clone(limits.get(name).ok_or_else(|| missing("limit", name))?),
            refused: metrics.limited(name),
        }),
        None => None,
    };
    let breakers = match &r.breaker {
        Some(name) => Some((
            *config
                .breakers
                .get(name)
                .ok_or_else(|| missing("breaker", name))?,
            Arc::clone(breakers.get(name).ok_or_else(|| missing("breaker", name))?),
        )),
        None => None,
    };
    Ok(Plan {
        route: r.clone(),
        grpc_path: upstream::grpc_path(&r.rpc)?,
        status: StatusCode::from_u16(r.status).map_err(|e| format!("route {:?}: status: {e}", r.name))?,
        upstream,
        limit,
        breakers,
        counters: metrics.route(&r.name),
        retries: metrics.retries(&r.upstream),
        name: Arc::from(r.name.as_str()),
        upstream_name: Arc::from(r.upstream.as_str()),
    })
}
