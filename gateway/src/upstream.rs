//! The gateway's side of gRPC: one balancer per `[upstream.*]` (fed by a Consul blocking-query
//! watch or a static list, both from `shop-discovery`), and unary calls with messages known
//! only by their descriptors (a codec for `DynamicMessage`).
//!
//! Nothing here asks Consul anything while a request waits: the watches run in the background
//! and a call reads the latest healthy set the balancer holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use shop_discovery::balance::{BalanceError, Balancer, Picked, is_connection_refused};
use shop_discovery::consul::ConsulClient;
use shop_discovery::watch::{self, WatchConfig};

use crate::breaker::{Breakers, RetryBudget};
use crate::config::{Config, Discovery};

/// Every upstream's balancer and retry budget, by the name routes use.
#[derive(Debug)]
pub struct Upstreams {
    balancers: BTreeMap<String, Arc<Balancer>>,
    budgets: BTreeMap<String, Arc<RetryBudget>>,
    /// For upstreams a route names but the file does not define (refused by `check`).
    spare: RetryBudget,
}

impl Upstreams {
    /// Starts a watch per Consul upstream (on the current runtime) and builds the balancers.
    /// `CONSUL_HTTP_TOKEN`, when set, is sent to Consul as the ACL token.
    pub fn start(config: &Config) -> Result<Upstreams, String> {
        let token = std::env::var("CONSUL_HTTP_TOKEN").ok().filter(|t| !t.is_empty());
        let mut client = None;
        let mut balancers = BTreeMap::new();
        for (name, u) in &config.upstreams {
            let endpoints = match &u.discovery {
                Discovery::Static(addrs) => watch::fixed(name, addrs),
                Discovery::Consul(service) => {
                    let client = match &client {
                        Some(c) => c,
                        None => client.insert(
                            ConsulClient::new(&config.consul, token.clone())
                                .map_err(|e| format!("gateway.consul {:?}: {e}", config.consul))?,
                        ),
                    };
                    watch::consul(client.clone(), WatchConfig::new(service))
                }
            };
            let service = match &u.discovery {
                Discovery::Consul(s) => s.clone(),
                Discovery::Static(_) => name.clone(),
            };
            balancers.insert(
                name.clone(),
                Arc::new(Balancer::new(&service, u.balancer, endpoints)),
            );
        }
        let budgets = balancers
            .keys()
            .map(|name| (name.clone(), Arc::new(RetryBudget::new())))
            .collect();
        Ok(Upstreams {
            balancers,
            budgets,
            spare: RetryBudget::with(0.0, 0.0),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Balancer>> {
        self.balancers.get(name)
    }

    /// The upstream's retry budget (none to spend for an unknown name).
    pub fn budget(&self, name: &str) -> &RetryBudget {
        self.budgets.get(name).map(|b| &**b).unwrap_or(&self.spare)
    }

    /// `(name, healthy instances)` for each upstream.
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.balancers
            .iter()
            .map(|(name, b)| (name.clone(), b.instances().len()))
            .collect()
    }
}

/// A unary call to make: the method, the message and the metadata to send with it.
pub struct Call {
    pub path: PathAndQuery,
    pub output: MessageDescriptor,
    pub message: DynamicMessage,
    pub metadata: MetadataMap,
}

/// The gRPC path of a method: `/package.Service/Method`.
pub fn grpc_path(method: &MethodDescriptor) -> Result<PathAndQuery, String> {
    let text = format!("/{}/{}", method.parent_service().full_name(), method.name());
    text.parse::<PathAndQuery>()
        .map_err(|e| format!("{text} is not a usable gRPC path: {e}"))
}

/// Why a call did not get a reply from a service.
#[derive(Debug)]
pub enum CallError {
    /// The upstream has no healthy instance.
    NoInstances,
    /// Every instance's breaker is open; the first probe is due in this many seconds.
    AllOpen { retry_after_secs: u64 },
    /// The service's status, or one the transport made up.
    Status(Status),
}

/// How a call ended, with the instance that answered last (for the access log) and whether it
/// was retried.
pub struct Outcome {
    pub result: Result<DynamicMessage, CallError>,
    pub instance: Option<String>,
    pub retried: bool,
}

impl Outcome {
    /// No instance was called (only a placeholder where the first outcome is always known).
    const NONE: Outcome = Outcome {
        result: Err(CallError::NoInstances),
        instance: None,
        retried: false,
    };
}

/// What guards a call: the breaker policy of its route, the upstream's retry budget, and
/// whether the route may run twice.
pub struct Guard<'a> {
    pub upstream: &'a str,
    pub breakers: Option<&'a Breakers>,
    pub budget: &'a RetryBudget,
    pub idempotent: bool,
}

/// Runs `call` on an instance from `balancer` within `deadline` (sent as `grpc-timeout`),
/// skipping instances whose breaker is open. One retry on another instance, within what is
/// left of the deadline and only if the retry budget allows: after a refused connection
/// (nothing was sent, so any route), or after UNAVAILABLE on an idempotent route.
pub async fn unary(balancer: &Balancer, call: Call, deadline: Duration, guard: Guard<'_>) -> Outcome {
    let started = Instant::now();
    guard.budget.deposit();
    let key = |id: &str| format!("{}/{id}", guard.upstream);
    let mut avoid: Option<String> = None;
    // The first attempt's outcome while a retry is being tried: what the client gets when the
    // retry cannot happen after all.
    let mut first: Option<Outcome> = None;
    loop {
        let retried = first.is_some();
        let now = Instant::now();
        let picked = balancer.pick_where(avoid.as_deref(), |i| {
            guard.breakers.is_none_or(|b| b.available(&key(&i.id), now))
        });
        let picked = match picked {
            Ok(p) => p,
            Err(_) if first.is_some() => return first.unwrap_or(Outcome::NONE),
            Err(BalanceError::AllExcluded(_)) => {
                let ids: Vec<String> = balancer.instances().iter().map(|i| key(&i.id)).collect();
                let retry_after_secs = guard.breakers.map(|b| b.retry_after(&ids, now)).unwrap_or(1);
                return Outcome {
                    result: Err(CallError::AllOpen { retry_after_secs }),
                    instance: None,
                    retried,
                };
            }
            Err(_) => {
                return Outcome {
                    result: Err(CallError::NoInstances),
                    instance: None,
                    retried,
                };
            }
        };
        if avoid.as_deref() == Some(picked.id()) {
            // The only instance left is the one that just failed: no retry after all.
            return first.unwrap_or(Outcome::NONE);
        }
        let left = deadline.saturating_sub(started.elapsed());
        if let Some(b) = guard.breakers {
            b.begin(&key(picked.id()), Instant::now());
        }
        let result = attempt(&picked, &call, left).await;
        if let Some(b) = guard.breakers {
            let failed = crate::breaker::is_failure(&result.as_ref().map(|_| ()));
            if b.record(&key(picked.id()), failed, Instant::now()) {
                tracing::warn!(upstream = guard.upstream, instance = %picked.authority(), "circuit breaker opened");
            }
        }
        let retryable = match &result {
            Err(s) => is_connection_refused(s) || (guard.idempotent && s.code() == Code::Unavailable),
            Ok(_) => false,
        };
        let left = deadline.saturating_sub(started.elapsed());
        if retryable && !retried && !left.is_zero() && balancer.instances().len() > 1 {
            if guard.budget.withdraw() {
                tracing::warn!(
                    upstream = guard.upstream,
                    failed_on = %picked.authority(),
                    "retrying once on another instance"
                );
                avoid = Some(picked.id().to_owned());
                first = Some(Outcome {
                    result: result.map_err(CallError::Status),
                    instance: Some(picked.authority().to_owned()),
                    retried: false,
                });
                continue;
            }
            tracing::debug!(upstream = guard.upstream, "retry budget spent; not retrying");
        }
        break Outcome {
            result: result.map_err(CallError::Status),
            instance: Some(picked.authority().to_owned()),
            retried,
        };
    }
}

async fn attempt(picked: &Picked, call: &Call, left: Duration) -> Result<DynamicMessage, Status> {
    let mut grpc = tonic::client::Grpc::new(picked.channel());
    let mut request = tonic::Request::new(call.message.clone());
    *request.metadata_mut() = call.metadata.clone();
    request.set_timeout(left);
    let codec = DynamicCodec {
        output: call.output.clone(),
    };
    let exchange = async {
        grpc.ready().await.map_err(|e| Status::from_error(Box::new(e)))?;
        grpc.unary(request, call.path.clone(), codec).await
    };
    let started = Instant::now();
    let late = || {
        Status::deadline_exceeded(format!(
            "{} did not answer within {} ms",
            picked.authority(),
            left.as_millis()
        ))
    };
    match tokio::time::timeout(left, exchange).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        // tonic enforces `grpc-timeout` itself and reports it as a CANCELLED transport error;
        // past the deadline, whatever the error, it is the deadline.
        Ok(Err(_)) if started.elapsed() >= left => Err(late()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(late()),
    }
}

/// Encodes any `DynamicMessage`; decodes replies as `output`.
#[derive(Debug, Clone)]
pub struct DynamicCodec {
    pub output: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.output.clone())
    }
}

#[derive(Debug)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the request: {e}")))
    }
}

#[derive(Debug)]
pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::new(Code::Internal, format!("cannot decode the reply: {e}")))
    }
}
