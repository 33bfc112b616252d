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

use shop_discovery::balance::{Balancer, Picked, is_connection_refused};
use shop_discovery::consul::ConsulClient;
use shop_discovery::watch::{self, WatchConfig};

use crate::config::{Config, Discovery};

/// Every upstream's balancer, by the name routes use.
#[derive(Debug)]
pub struct Upstreams {
    balancers: BTreeMap<String, Arc<Balancer>>,
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
        Ok(Upstreams { balancers })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Balancer>> {
        self.balancers.get(name)
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

/// How a call ended, with the instance that answered (for the access log); no instance means
/// none could be picked.
pub struct Outcome {
    pub result: Result<DynamicMessage, Status>,
    pub instance: Option<String>,
}

/// Runs `call` on an instance from `balancer` within `deadline` (sent as `grpc-timeout`). A
/// refused connection means nothing was sent, so the call then runs once on another instance
/// with the time that is left.
pub async fn unary(balancer: &Balancer, call: Call, deadline: Duration) -> Outcome {
    let started = Instant::now();
    let first = match balancer.pick(None) {
        Ok(p) => p,
        Err(e) => {
            return Outcome {
                result: Err(e.into()),
                instance: None,
            };
        }
    };
    let result = attempt(&first, &call, deadline).await;
    let result = match result {
        Err(status) if is_connection_refused(&status) => {
            let left = deadline.saturating_sub(started.elapsed());
            match balancer.pick(Some(first.id())) {
                Ok(second) if second.id() != first.id() && !left.is_zero() => {
                    tracing::warn!(
                        service = %balancer.service(),
                        refused = %first.authority(),
                        retry_on = %second.authority(),
                        "connection refused; retrying once on another instance"
                    );
                    let result = attempt(&second, &call, left).await;
                    return Outcome {
                        result,
                        instance: Some(second.authority().to_owned()),
                    };
                }
                _ => Err(status),
            }
        }
        other => other,
    };
    Outcome {
        result,
        instance: Some(first.authority().to_owned()),
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
    match tokio::time::timeout(left, exchange).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{} did not answer within {} ms",
            picked.authority(),
            left.as_millis()
        ))),
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
