//! The gateway's side of gRPC: one balancer per `[upstream.*]` (fed by a Consul blocking-query
//! watch or a static list, both from `shop-discovery`), each instance with its own HTTP/2
//! connections (`grpc`), and unary calls with messages known only by their descriptors: the
//! request encoded once, the reply decoded as the route's output type.
//!
//! Nothing here asks Consul anything while a request waits: the watches run in the background
//! and a call reads the latest healthy set the balancer holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http::uri::PathAndQuery;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::Status;

use shop_discovery::CallError;
use shop_discovery::balance::{BalanceError, Balancer, Instance, Picked};
use shop_discovery::consul::ConsulClient;
use shop_discovery::watch::{self, WatchConfig};

use crate::breaker::{Breakers, RetryBudget};
use crate::config::{Breaker, Config, Discovery};
use crate::grpc::{self, Connections};

/// One upstream: its balancer (each instance with its own HTTP/2 connections) and its retry
/// budget.
#[derive(Debug)]
pub struct Upstream {
    pub balancer: Balancer<Arc<Connections>>,
    pub budget: RetryBudget,
}

/// Every upstream, by the name routes use. Shared with the configuration that follows on a
/// reload when the definition is the same, so a reload keeps connections, watches and budgets.
#[derive(Debug)]
pub struct Upstreams {
    map: BTreeMap<String, Arc<Upstream>>,
}

impl Upstreams {
    /// Starts a watch per Consul upstream (on the current runtime) and builds the balancers.
    /// `consul_token` (or `CONSUL_HTTP_TOKEN`), when set, is sent to Consul as the ACL token (a
    /// changed token restarts the Consul watches). With `previous` (the
    /// configuration being replaced), upstreams it defines the same way are taken over as they
    /// are; the others' watches stop once the old configuration's last request is done.
    pub fn start(config: &Config, previous: Option<(&Config, &Upstreams)>) -> Result<Upstreams, String> {
        let token = config.consul_token.as_ref().map(|t| t.0.clone());
        let mut client = None;
        let mut map = BTreeMap::new();
        for (name, u) in &config.upstreams {
            let same = |(old, ups): (&Config, &Upstreams)| {
                let before = old.upstreams.get(name)?;
                let unchanged = before.discovery == u.discovery
                    && before.balancer == u.balancer
                    && (matches!(u.discovery, Discovery::Static(_))
                        || (old.consul == config.consul && old.consul_token == config.consul_token));
                if unchanged {
                    ups.map.get(name).cloned()
                } else {
                    None
                }
            };
            if let Some(kept) = previous.and_then(same) {
                map.insert(name.clone(), kept);
                continue;
            }
            let (service, endpoints) = match &u.discovery {
                Discovery::Static(addrs) => (name.as_str(), watch::fixed(name, addrs)),
                Discovery::Consul(service) => {
                    let client = match &client {
                        Some(c) => c,
                        None => client.insert(
                            ConsulClient::new(&config.consul, token.clone())
                                .map_err(|e| format!("gateway.consul {:?}: {e}", config.consul))?,
                        ),
                    };
                    (
                        service.as_str(),
                        watch::consul(client.clone(), WatchConfig::new(service)),
                    )
                }
            };
            map.insert(
                name.clone(),
                Arc::new(Upstream {
                    balancer: Balancer::with_connector(service, u.balancer, endpoints, Connections::lazy),
                    budget: RetryBudget::new(),
                }),
            );
        }
        Ok(Upstreams { map })
    }

    /// The upstreams started for this configuration (not taken over from `old`).
    pub fn new_since<'a>(&'a self, old: &Upstreams) -> Vec<&'a Upstream> {
        self.map
            .iter()
            .filter(|(name, u)| old.map.get(*name).is_none_or(|o| !Arc::ptr_eq(o, u)))
            .map(|(_, u)| &**u)
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Upstream> {
        self.map.get(name).map(|u| &**u)
    }

    /// The upstream of that name, to hold (a route's plan does).
    pub fn get_shared(&self, name: &str) -> Option<Arc<Upstream>> {
        self.map.get(name).cloned()
    }

    /// Every upstream with its name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Upstream)> {
        self.map.iter().map(|(name, u)| (name.as_str(), &**u))
    }

    /// `(name, healthy instances)` for each upstream.
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.map
            .iter()
            .map(|(name, u)| (name.clone(), u.balancer.instances().len()))
            .collect()
    }
}

/// A unary call to make: the method, the request (encoded and framed once, for any retry),
/// the reply's type, and the metadata to send with it.
pub struct Call {
    pub path: PathAndQuery,
    pub output: MessageDescriptor,
    pub body: Bytes,
    pub metadata: HeaderMap,
}

/// The gRPC path of a method: `/package.Service/Method`.
pub fn grpc_path(method: &MethodDescriptor) -> Result<PathAndQuery, String> {
    let text = format!("/{}/{}", method.parent_service().full_name(), method.name());
    text.parse::<PathAndQuery>()
        .map_err(|e| format!("{text} is not a usable gRPC path: {e}"))
}

/// Why a call did not get a reply from a service.
#[derive(Debug)]
pub enum Failure {
    /// Every instance's breaker is open; the first probe is due in this many seconds.
    AllOpen { retry_after_secs: u64 },
    /// What `shop-discovery` made of the failure: no instance, not sent, broken, late, or the
    /// service's own answer.
    Call(CallError),
}

/// A service's reply: as JSON already when [`wire_json`](crate::wire_json) could write it
/// straight from the bytes, else decoded.
pub enum Answer {
    Json(Bytes),
    Message(DynamicMessage),
}

/// How a call ended, with the instance that answered last (for the access log) and whether it
/// was retried.
pub struct Outcome {
    pub result: Result<Answer, Failure>,
    pub instance: Option<String>,
    pub retried: bool,
}

/// What guards a call: the breaker policy of its route (numbers and states) and whether the
/// route may run twice.
pub struct Guard<'a> {
    /// The upstream's name, for logs.
    pub upstream: &'a str,
    pub breakers: Option<(&'a Breaker, &'a Breakers)>,
    pub idempotent: bool,
}

/// Runs `call` on an instance of `upstream` within `deadline` (sent as `grpc-timeout`),
/// skipping instances whose breaker is open. One retry on another instance, within what is
/// left of the deadline and only if the upstream's retry budget allows, when the failure says a
/// retry is safe ([`CallError::retry_safe`]): the call was never sent (any route), or, on an
/// idempotent route, the connection broke or the service answered UNAVAILABLE.
pub async fn unary(upstream: &Upstream, call: &Call, deadline: Duration, guard: &Guard<'_>) -> Outcome {
    let started = Instant::now();
    upstream.budget.deposit();
    let first = match pick(upstream, None, guard) {
        Ok(p) => p,
        Err(e) => {
            return Outcome {
                result: Err(e),
                instance: None,
                retried: false,
            };
        }
    };
    let error = match guarded_attempt(&first, call, deadline, guard).await {
        Ok(answer) => {
            return Outcome {
                result: Ok(answer),
                instance: Some(first.authority().to_owned()),
                retried: false,
            };
        }
        Err(e) => e,
    };
    let left = deadline.saturating_sub(started.elapsed());
    if error.retry_safe(guard.idempotent)
        && !left.is_zero()
        && let Ok(second) = pick(upstream, Some(first.id()), guard)
        && second.id() != first.id()
    {
        if upstream.budget.withdraw() {
            tracing::warn!(
                upstream = guard.upstream,
                failed_on = %first.authority(),
                retry_on = %second.authority(),
                error = %error,
                "retrying once on another instance"
            );
            let result = guarded_attempt(&second, call, left, guard).await;
            return Outcome {
                result: result.map_err(Failure::Call),
                instance: Some(second.authority().to_owned()),
                retried: true,
            };
        }
        tracing::debug!(upstream = guard.upstream, "retry budget spent; not retrying");
    }
    Outcome {
        result: Err(Failure::Call(error)),
        instance: Some(first.authority().to_owned()),
        retried: false,
    }
}

/// An instance whose breaker lets calls through, avoiding `avoid` when another one exists.
fn pick(
    upstream: &Upstream,
    avoid: Option<&str>,
    guard: &Guard<'_>,
) -> Result<Picked<Arc<Connections>>, Failure> {
    let now = Instant::now();
    let allowed = |i: &Instance<Arc<Connections>>| {
        guard
            .breakers
            .is_none_or(|(config, b)| b.available(config, &i.authority, now))
    };
    match upstream.balancer.pick_where(avoid, allowed) {
        Ok(p) => Ok(p),
        Err(BalanceError::AllExcluded(_)) => {
            let all: Vec<String> = upstream
                .balancer
                .instances()
                .iter()
                .map(|i| i.authority.clone())
                .collect();
            Err(Failure::AllOpen {
                retry_after_secs: guard.breakers.map_or(1, |(_, b)| b.retry_after(&all, now)),
            })
        }
        Err(e) => Err(Failure::Call(e.into())),
    }
}

/// One attempt, told to the instance's breaker (by its address) before and after.
async fn guarded_attempt(
    picked: &Picked<Arc<Connections>>,
    call: &Call,
    left: Duration,
    guard: &Guard<'_>,
) -> Result<Answer, CallError> {
    let Some((config, breakers)) = guard.breakers else {
        return attempt(picked, call, left).await;
    };
    breakers.begin(picked.authority(), Instant::now());
    let result = attempt(picked, call, left).await;
    let failure = result.as_ref().err().filter(|e| e.counts_against_instance());
    if breakers.record(config, picked.authority(), failure.is_some(), Instant::now())
        && let Some(e) = failure
    {
        tracing::warn!(upstream = guard.upstream, instance = %picked.authority(), error = %e, "circuit breaker opened");
        breakers.explain(picked.authority(), e.to_string());
    }
    result
}

async fn attempt(
    picked: &Picked<Arc<Connections>>,
    call: &Call,
    left: Duration,
) -> Result<Answer, CallError> {
    let reply = grpc::unary(picked.conn(), &call.path, &call.metadata, call.body.clone(), left).await?;
    if let Ok(json) = crate::wire_json::encode(&call.output, &reply) {
        return Ok(Answer::Json(Bytes::from(json)));
    }
    DynamicMessage::decode(call.output.clone(), reply)
        .map(Answer::Message)
        .map_err(|e| {
            CallError::Answered(Status::internal(format!(
                "{}: cannot decode the reply: {e}",
                picked.authority()
            )))
        })
}
