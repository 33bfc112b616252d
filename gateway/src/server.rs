//! The listeners: HTTP/1.1 and HTTP/2 on each configured address, over cleartext (h2c, prior
//! knowledge) or TLS (rustls, ALPN h2 or http/1.1); one task per connection, living by the
//! connection limits (`conn`: header timeout from accept, TLS handshake included; idle timeout;
//! room made at the connection cap; plus hyper's request head size limit); the admin listener
//! (`[admin]`, cleartext, the read-only view of `admin`); and a graceful stop: `/ready` says
//! 503 for the drain window while everything is still served, then no new connections,
//! requests in flight finish within a bound, idle keep-alive connections are closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::Listener;
use crate::conn::{self, Clock, Cut, Slots, Tracker};
use crate::live::Gateway;

/// How long requests in flight may take to finish once a stop is asked for.
pub const DRAIN: Duration = Duration::from_secs(10);

/// How long an idle connection asked to close (HTTP/2: after its `GOAWAY`) may take to do so
/// before it is dropped: covers a client that stopped reading a response.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Who a socket serves: the public API (a `[[listener]]`, as configured when it opened) or the
/// read-only admin view (`[admin]`).
#[derive(Clone)]
pub(crate) enum Serves {
    Public(Arc<Listener>),
    Admin,
}

/// Connections the admin view serves at once: a few operators and scrapers, never a crowd.
const ADMIN_CONNECTIONS: usize = 64;

/// How long the stop waits for the access log file to take its last lines.
const LOG_FLUSH: Duration = Duration::from_secs(2);

/// The sockets a gateway serves: its listeners and its admin listener, bound (see [`bind`]).
pub struct Bound(Vec<(TcpListener, SocketAddr, Serves)>);

impl Bound {
    /// The addresses bound, in the file's order (the admin listener last), port 0 resolved.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|(_, a, _)| *a).collect()
    }
}

/// Binds every listener and the admin listener of `config`: all or none. Separate from
/// [`serve`], as every service's `run` takes its listener, so that a caller (a test, a socket
/// handed over by a supervisor) can bind first and learn the ports.
pub async fn bind(config: &crate::config::Config) -> Result<Bound, ServeError> {
    let public = config
        .listeners
        .iter()
        .map(|l| (l.address, Serves::Public(Arc::new(l.clone()))));
    let admin = config.admin.map(|a| (a.address, Serves::Admin));
    let mut bound = Vec::new();
    for (addr, serves) in public.chain(admin) {
        let error = |source| ServeError::Bind { addr, source };
        let socket = TcpListener::bind(addr).await.map_err(error)?;
        let local = socket.local_addr().map_err(error)?;
        bound.push((socket, local, serves));
    }
    Ok(Bound(bound))
}

/// Serves the `bound` sockets, printing `gateway ready on <addr>` for each listener (and
/// `gateway admin on <addr>`), until `stop` completes; then
/// `/ready` answers 503 for the drain window (`gateway.drain`) while everything else is served
/// as before, and then the listeners close and requests in flight finish. Returns after that.
///
/// The addresses, TLS on or off, and the connection limits are read once, here; a reload
/// changes what a request meets (routes, policies, CORS, the certificate), not the sockets.
pub async fn serve(
    gateway: Arc<Gateway>,
    bound: Bound,
    stop: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let loaded = gateway.current();
    let config = loaded.config();
    let builder = Arc::new(builder(config.max_header_bytes));
    let clock = Clock {
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
    };
    let (stopping, stop_seen) = watch::channel(false);
    // Every connection task holds a sender; the drain is over when the last one is dropped.
    let (alive, mut all_gone) = mpsc::channel::<()>(1);
    let mut accepting = Vec::new();
    for (socket, local, serves) in bound.0 {
        let slots = match &serves {
            Serves::Public(listener) => {
                let scheme = if listener.tls.is_some() { "https" } else { "http" };
                tracing::info!(addr = %local, scheme, routes = config.routes.len(), "listening");
                // The line scripts and tests wait for; stdout, flushed by println.
                println!("gateway ready on {local}");
                gateway.connections()
            }
            Serves::Admin => {
                tracing::info!(addr = %local, "admin view listening (/config, /upstreams, /metrics)");
                println!("gateway admin on {local}");
                crate::conn::Slots::new(ADMIN_CONNECTIONS)
            }
        };
        accepting.push(tokio::spawn(accept(Acceptor {
            socket,
            serves,
            gateway: Arc::clone(&gateway),
            builder: Arc::clone(&builder),
            slots,
            clock,
            stop: stop_seen.clone(),
            alive: alive.clone(),
        })));
    }
    drop(loaded);

    stop.await;
    drain_window(&gateway).await;
    tracing::info!(
        drain_secs = DRAIN.as_secs(),
        "stopping: no new connections; draining"
    );
    let _ = stopping.send(true);
    for task in accepting {
        let _ = task.await;
    }
    drop(alive);
    match tokio::time::timeout(DRAIN, all_gone.recv()).await {
        Ok(_) => tracing::info!("drained; stopped"),
        Err(_) => tracing::warn!("requests still running after {DRAIN:?}; stopping anyway"),
    }
    gateway.current().access().flush(LOG_FLUSH).await;
    Ok(())
}

/// After a stop is asked for: `/ready` answers 503 for `gateway.drain` (as the file says now),
/// so that load balancers stop sending before the listeners close; every other request is
/// served as usual meanwhile.
async fn drain_window(gateway: &Gateway) {
    let window = gateway.current().config().drain;
    gateway.start_draining();
    if !window.is_zero() {
        tracing::info!(
            drain_window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            "stopping: /ready answers 503 from now; still serving until the drain window ends"
        );
        tokio::time::sleep(window).await;
    }
}

/// hyper's part: protocols, the request head size limit. Timing is `conn`'s (hyper's own
/// HTTP/1 header timer would also cut idle keep-alive connections at the header timeout).
fn builder(max_header_bytes: usize) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// One listener's accept loop and what its connections need.
struct Acceptor {
    socket: TcpListener,
    serves: Serves,
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    slots: Arc<Slots>,
    clock: Clock,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
}

async fn accept(a: Acceptor) {
    let mut stop = a.stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = a.socket.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: say so, breathe, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        // At the cap, the longest-idle connection makes room; only when every connection is
        // busy does this one wait (and the next ones in the kernel's backlog).
        let slot = tokio::select! {
            slot = a.slots.admit() => slot,
            () = stopped(&mut stop) => return,
        };
        let Some(slot) = slot else {
            return;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot turn off Nagle's algorithm");
        }
        let tls = tls_now(&a);
        let gateway = Arc::clone(&a.gateway);
        let serves = a.serves.clone();
        let tracker = Arc::clone(&slot.tracker);
        let service = service_fn(move |req| {
            let gateway = Arc::clone(&gateway);
            let serves = serves.clone();
            let in_flight = tracker.begin();
            async move {
                let reply = match &serves {
                    Serves::Public(listener) => gateway.handle(req, peer, listener).await,
                    Serves::Admin => gateway.admin(req.method(), req.uri().path()),
                };
                drop(in_flight);
                Ok::<_, Infallible>(reply)
            }
        });
        let ends = Ends {
            builder: Arc::clone(&a.builder),
            stop: a.stop.clone(),
            tracker: Arc::clone(&slot.tracker),
            clock: a.clock,
        };
        let alive = a.alive.clone();
        let slots = Arc::clone(&a.slots);
        tokio::spawn(async move {
            let _alive = alive;
            let _slot = slot;
            let result = match tls {
                None => ends.drive(stream, service).await,
                Some(config) => ends.drive_tls(stream, config, service, peer).await,
            };
            match result {
                Ok(Some(cut)) => {
                    slots.count_cut(cut);
                    tracing::debug!(peer = %peer, why = cut.as_str(), "connection closed by the gateway");
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(peer = %peer, error = %e, "connection ended with an error"),
            }
        });
    }
}

/// The certificate a new connection on a TLS listener gets: as the file says now (a reload may
/// have rotated it); the one the listener opened with when the file no longer lists this address
/// with TLS. `None`: cleartext (and the admin view, which is always cleartext).
fn tls_now(a: &Acceptor) -> Option<Arc<rustls::ServerConfig>> {
    let Serves::Public(listener) = &a.serves else {
        return None;
    };
    listener.tls.as_ref().map(|opened| {
        let current = a.gateway.current();
        let now = current
            .config()
            .listener(listener.address)
            .and_then(|l| l.tls.as_ref())
            .unwrap_or(opened);
        Arc::clone(&now.server)
    })
}

/// What ends a connection besides its client: the stop, and its clock.
struct Ends {
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<bool>,
    tracker: Arc<Tracker>,
    clock: Clock,
}

impl Ends {
    /// Serves one connection until it ends. When the stop comes, requests in flight finish and
    /// the connection closes. When its clock runs out it is dropped at once (no request yet, or
    /// chosen to make room) or closed gracefully (idle: HTTP/2 gets a `GOAWAY`), within
    /// [`CLOSE_GRACE`]. Returns the cut, when the gateway ended it.
    async fn drive<I, S>(
        mut self,
        io: I,
        service: S,
    ) -> Result<Option<Cut>, Box<dyn std::error::Error + Send + Sync>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<
                http::Request<hyper::body::Incoming>,
                Response = crate::reply::Reply,
                Error = Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let cut = tokio::select! {
            result = connection.as_mut() => return result.map(|()| None),
            () = stopped(&mut self.stop) => {
                connection.as_mut().graceful_shutdown();
                return connection.await.map(|()| None);
            }
            cut = conn::watch(&self.tracker, self.clock) => cut,
        };
        if cut == Cut::Idle {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
        }
        Ok(Some(cut))
    }

    /// The TLS handshake (on the connection's clock: it counts against the header timeout),
    /// then [`Ends::drive`]. A failed handshake drops the connection.
    async fn drive_tls<S>(
        self,
        stream: tokio::net::TcpStream,
        config: Arc<rustls::ServerConfig>,
        service: S,
        peer: SocketAddr,
    ) -> Result<Option<Cut>, Box<dyn std::error::Error + Send + Sync>>
    where
        S: hyper::service::Service<
                http::Request<hyper::body::Incoming>,
                Response = crate::reply::Reply,
                Error = Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        let tls = tokio::select! {
            tls = handshake => tls,
            cut = conn::watch(&self.tracker, self.clock) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("TLS handshake not done: {}", cut.as_str()),
            )),
        };
        match tls {
            Ok(tls) => self.drive(tls, service).await,
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed; connection dropped");
                Ok(None)
            }
        }
    }
}

/// Completes when the stop is asked for (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
