//! The lifecycle of a shop gRPC server, the same in every service:
//! bind -> print one ready line with the real address -> register in Consul -> serve (health
//! SERVING, reflection, one log line per call carrying the request id) -> on SIGINT/SIGTERM:
//! health NOT_SERVING, deregister, stop accepting, let calls in flight finish within a bound,
//! return.
//!
//! The binary binds and passes the signal future; tests bind port 0 and pass their own.
//!
//! Reflection (v1 and v1alpha) lists exactly what the server serves: its own service, health
//! and reflection, described from the files `descriptors` cuts out of the shared set.

pub mod descriptors;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Request, Response};
use shop_base::trace::TraceContext;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

/// The metadata key (and HTTP header) carrying a request's id from the gateway to the services.
pub const REQUEST_ID: &str = shop_base::request_id::HEADER;
/// The W3C trace context metadata key.
pub const TRACEPARENT: &str = shop_base::trace::HEADER;

/// How long in-flight calls may take to finish after a shutdown signal. Calls carry deadlines of
/// a few seconds, so ten seconds lets them end on their own without holding a deploy hostage.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub use shop_base::stop::signal as shutdown_signal;

/// Prints the one line that tells a supervisor or a test the server is ready, with the real
/// bound address (useful when the port was 0): `<service> ready on <addr>`.
pub fn announce_ready(service: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{service} ready on {addr}");
    let _ = out.flush();
}

/// `grpc.health.v1.Health`: served by every shop server.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// gRPC reflection, both versions: v1, and v1alpha, which older grpcurl releases, Postman and
/// many other clients speak only.
pub const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Reflection over v1 and v1alpha that advertises exactly what a server serves: the service
/// `own` (its fully qualified name), health and reflection. Only the files `own` is declared in
/// and the files they import are served from `descriptor_sets` (the shop's set declares every
/// service), so a tool shown this server never finds a service it cannot call here.
#[allow(clippy::type_complexity, reason = "the two servers' types are tonic's")]
pub fn reflection(
    descriptor_sets: &[&[u8]],
    own: &str,
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ServeError,
> {
    let files = descriptors::Files::decode(descriptor_sets)?;
    let own_set = files.serving(own)?;
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(own_set.clone())
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Both reflection files in both versions, so each describes the other too.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
            .with_service_name(own)
            .with_service_name(HEALTH_SERVICE);
        for name in REFLECTION_SERVICES {
            builder = builder.with_service_name(name);
        }
        builder
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// Consul's grace before it removes an instance whose check stays critical (its minimum): a
/// crashed instance leaves the healthy set at its first failed check and the catalogue a
/// minute later.
pub const DEREGISTER_CRITICAL_AFTER: Duration = Duration::from_secs(60);

/// The address announced in Consul (empty: the node's) and the one the agent checks: what was
/// asked, else the bound IP; a wildcard bind leaves the address empty so Consul uses the
/// node's, while the agent (local by design) checks us on loopback.
fn advertised(common: &crate::config::Common, addr: SocketAddr) -> (String, String) {
    match &common.advertise {
        Some(a) => (a.clone(), a.clone()),
        None if addr.ip().is_unspecified() => (String::new(), "127.0.0.1".to_owned()),
        None => (addr.ip().to_string(), addr.ip().to_string()),
    }
}

/// The id this instance registers under in Consul, `<name>-<ip>-<port>` (`node` for the
/// node's address); its health check is `service:<id>`.
pub fn instance_id(common: &crate::config::Common, name: &str, addr: SocketAddr) -> String {
    let (address, _) = advertised(common, addr);
    let shown = if address.is_empty() {
        "node".to_owned()
    } else {
        address.replace(':', "_")
    };
    format!("{name}-{shown}-{}", addr.port())
}

/// Starts announcing this instance in Consul (unless `consul.addr` is empty): service `name`,
/// checked through grpc.health.v1 for `grpc_service`, at the bound `addr`.
///
/// The instance id is `<name>-<ip>-<port>`: unique on its agent (one process per port), and the
/// same after a restart, so a restarted instance replaces its own stale entry.
pub fn register(
    common: &crate::config::Common,
    name: &str,
    grpc_service: &str,
    addr: SocketAddr,
    version: &str,
) -> Result<Option<shop_discovery::Registrar>, shop_discovery::consul::ConsulError> {
    if common.consul.is_empty() {
        tracing::info!("consul.addr is empty: not registering (static upstreams only)");
        return Ok(None);
    }
    let client = shop_discovery::ConsulClient::new(&common.consul, common.consul_token.clone())?;
    let (address, check_host) = advertised(common, addr);
    let registration = shop_discovery::Registration {
        id: instance_id(common, name, addr),
        name: name.to_owned(),
        address,
        port: addr.port(),
        tags: vec!["grpc".to_owned()],
        meta: [("version".to_owned(), version.to_owned())].into(),
        grpc_check: if check_host.contains(':') {
            format!("[{check_host}]:{}/{grpc_service}", addr.port())
        } else {
            format!("{check_host}:{}/{grpc_service}", addr.port())
        },
        check_interval: common.check_interval,
        check_timeout: common.check_interval.min(Duration::from_secs(2)),
        deregister_after: DEREGISTER_CRITICAL_AFTER,
    };
    Ok(Some(shop_discovery::Registrar::start(
        client,
        registration,
        shop_discovery::register::RECHECK_EVERY,
    )))
}

/// Runs a server until `shutdown` resolves, then drains it.
///
/// `serve` receives the future that tells tonic to stop accepting (pass it to
/// `serve_with_incoming_shutdown`). `names` are the gRPC services to mark NOT_SERVING first, so
/// health checks (Consul's among them) stop sending traffic; then the instance leaves Consul,
/// and only then does the listener close.
pub async fn run_until<F, Fut>(
    health: &HealthReporter,
    names: &[&str],
    registrar: Option<shop_discovery::Registrar>,
    shutdown: impl Future<Output = ()>,
    serve: F,
) -> Result<(), tonic::transport::Error>
where
    F: FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = Result<(), tonic::transport::Error>>,
{
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = serve(Box::pin(async move {
        let _ = stop_rx.await;
    }));
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    health.set_service_status("", ServingStatus::NotServing).await;
    for name in names {
        health.set_service_status(*name, ServingStatus::NotServing).await;
    }
    if let Some(registrar) = registrar {
        registrar.deregister().await;
    }
    let _ = stop_tx.send(());
    let started = Instant::now();
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(result) => {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "drained, stopped"
            );
            result
        }
        Err(_) => {
            tracing::warn!(
                timeout_s = DRAIN_TIMEOUT.as_secs(),
                "calls still running after the drain timeout; stopping anyway"
            );
            Ok(())
        }
    }
}

/// Upper bound for any call, whatever `grpc-timeout` the caller sent.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Streams a client may cancel before the server accepts them, per connection, before the
/// server closes the connection (h2's defence against "rapid reset" floods; its default is 20).
/// A service's callers are the gateway and the order service, each multiplexing many clients
/// on one connection: when a burst of those clients give up at once, 20 would close the shared
/// connection and fail every call on it. The flood defence stays at the public edge (the
/// gateway's own listeners keep the default).
pub const MAX_PENDING_RESETS: usize = 1024;

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("reflection: {0}")]
    Descriptors(#[from] descriptors::DescriptorError),
    #[error("consul: {0}")]
    Consul(#[from] shop_discovery::consul::ConsulError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Who is serving: the name it prints and registers under, its version, and its settings.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// `user-service`, `product-service`, `order-service`.
    pub name: &'a str,
    pub version: &'a str,
    pub common: &'a crate::config::Common,
    /// The encoded descriptor sets reflection serves (`shop_proto::FILE_DESCRIPTOR_SET`).
    pub descriptors: &'a [&'static [u8]],
}

/// Serves one gRPC service the shop's way, from bound listener to drained exit: health (SERVING
/// for `""` and the service's name), reflection, the request-log layer, a ready line, Consul
/// registration, and on `shutdown` the drain sequence of [`run_until`].
pub async fn grpc<S>(
    who: Identity<'_>,
    service: S,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError>
where
    S: tower::Service<
            Request<tonic::body::Body>,
            Response = Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status(S::NAME, ServingStatus::Serving).await;
    let (reflection_v1, reflection_v1alpha) = reflection(who.descriptors, S::NAME)?;
    let addr = listener.local_addr()?;
    if let Some(collector) = &who.common.otlp_traces {
        shop_base::spans::init(collector.clone(), who.name);
    }
    tracing::info!(%addr, service = S::NAME, "serving");
    announce_ready(who.name, addr);
    let registrar = register(who.common, who.name, S::NAME, addr, who.version)?;
    run_until(&health, &[S::NAME], registrar, shutdown, |stop| {
        tonic::transport::Server::builder()
            .timeout(CALL_TIMEOUT)
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
            .layer(RequestLogLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming(listener), stop)
    })
    .await?;
    Ok(())
}

/// A listener that could not be opened, with the address it was for.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {host}:{port}: {source}")]
pub struct BindError {
    pub host: String,
    pub port: u16,
    pub source: std::io::Error,
}

/// Binds `host:port` (port 0 picks a free one).
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, BindError> {
    TcpListener::bind((host, port)).await.map_err(|source| BindError {
        host: host.to_owned(),
        port,
        source,
    })
}

/// A stream of accepted connections for `serve_with_incoming_shutdown`, with Nagle's algorithm
/// off. tonic applies its own `tcp_nodelay` only to listeners it binds itself; without it, a
/// successful reply (headers, data and trailers written separately) waits for the client's
/// delayed ACK and every call gains ~40 ms, while errors (one write) do not.
pub fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot turn off Nagle's algorithm on a connection");
        }
        Ok(stream)
    })
}

fn acceptable_request_id(v: &HeaderValue) -> bool {
    shop_base::request_id::acceptable(v.as_bytes())
}

/// The line for a call that ended without a server fault, in the shape `tracing` gives the
/// other lines (`<time>  INFO call{method=.. request_id=.. trace_id=..}: call done grpc_status=Ok
/// elapsed_ms=0.12`), formatted straight into one buffer: on a cheap call, building and
/// formatting a `tracing` event cost more than the read behind it.
fn call_done(method: &str, id: &HeaderValue, trace_id: &str, status: tonic::Code, elapsed_ms: f64) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let mut line = Vec::with_capacity(200);
    shop_base::logs::timestamp(&mut line);
    let _ = writeln!(
        line,
        "  INFO call{{method={method} request_id={} trace_id={trace_id}}}: call done grpc_status={status:?} \
         elapsed_ms={elapsed_ms}",
        id.to_str().unwrap_or("-"),
    );
    shop_base::logs::emit(line);
}

/// The call's span, to the OTLP collector when one is configured.
fn export_span(hop: TraceContext, method: &str, start: SystemTime, grpc_status: i32, fault: bool) {
    if !shop_base::spans::enabled() {
        return;
    }
    use shop_base::spans::{Attr, Span};
    shop_base::spans::record(Span {
        context: hop,
        name: method.trim_start_matches('/').to_owned(),
        start,
        end: SystemTime::now(),
        attributes: vec![
            ("rpc.system", Attr::Text("grpc".to_owned())),
            ("rpc.grpc.status_code", Attr::Int(i64::from(grpc_status))),
        ],
        error: fault,
    });
}

/// A tower layer for the tonic server: gives every call a span with its method, request id
/// (taken from `x-request-id`, or generated and added to the request so handlers can forward
/// it) and trace id (the call continues the caller's `traceparent`, or starts a trace, and the
/// request carries this hop's `traceparent` on to handlers), echoes the request id on the
/// response, and logs one line when the call ends with its gRPC status and latency.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLogLayer;

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<Request<B>> for RequestLog<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = match req.headers().get(REQUEST_ID) {
            Some(v) if acceptable_request_id(v) => v.clone(),
            _ => {
                let fresh = HeaderValue::from_str(&shop_base::request_id::fresh())
                    .unwrap_or(HeaderValue::from_static("-"));
                req.headers_mut().insert(REQUEST_ID, fresh.clone());
                fresh
            }
        };
        // This call's hop of the caller's trace (or a new trace), put back on the request so
        // that handlers forwarding it make this hop the parent of their calls.
        let hop = TraceContext::continue_from(req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
        if let Ok(v) = HeaderValue::from_str(&hop.to_string()) {
            req.headers_mut().insert(TRACEPARENT, v);
        }
        let trace_id = hop.trace_id();
        let method = req.uri().path().to_owned();
        let span = tracing::info_span!(
            "call",
            method = %method,
            request_id = %id.to_str().unwrap_or("-"),
            trace_id = %trace_id,
        );
        let started = Instant::now();
        let wall = SystemTime::now();
        let future = span.in_scope(|| self.inner.call(req));
        Box::pin(
            async move {
                let result = shop_base::trace::scope(hop, future).await;
                let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                match result {
                    Ok(mut res) => {
                        // tonic sends errors of unary calls as trailers-only responses, so the
                        // status is in the headers; without one the call succeeded.
                        let code = res
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|s| s.parse::<i32>().ok())
                            .unwrap_or(0);
                        let status = tonic::Code::from_i32(code);
                        let fault = matches!(
                            status,
                            tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss
                        );
                        export_span(hop, &method, wall, code, fault);
                        if fault {
                            tracing::error!(grpc_status = ?status, elapsed_ms, "call failed");
                        } else {
                            call_done(&method, &id, &trace_id, status, elapsed_ms);
                        }
                        res.headers_mut().insert(REQUEST_ID, id);
                        Ok(res)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, elapsed_ms, "call failed in transport");
                        Err(e)
                    }
                }
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_lists_names_as_tonic_serves_them() {
        fn name<S: tonic::server::NamedService>(_: &S) -> &'static str {
            S::NAME
        }
        let (v1, v1alpha) = reflection(
            &[tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET],
            REFLECTION_SERVICES[0],
        )
        .unwrap();
        assert_eq!([name(&v1), name(&v1alpha)], REFLECTION_SERVICES);
        let (_, health) = tonic_health::server::health_reporter();
        assert_eq!(name(&health), HEALTH_SERVICE);
        assert!(matches!(
            reflection(&[], "shop.nothing.v1.Nothing"),
            Err(ServeError::Descriptors(
                descriptors::DescriptorError::UnknownService(_)
            ))
        ));
    }

    #[tokio::test]
    async fn a_port_in_use_is_named_in_the_error() {
        let taken = bind("127.0.0.1", 0).await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = bind("127.0.0.1", port).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")),
            "{e}"
        );
    }
}
