//! The listeners: HTTP/1.1 and HTTP/2 on each configured address, over cleartext (h2c, prior
//! knowledge) or TLS (rustls, ALPN h2 or http/1.1); one task per connection, with the
//! connection-level limits (header read timeout, which also bounds the TLS handshake; request
//! head size; connections at once), and a graceful stop: no new connections, requests in flight
//! finish within a bound, idle keep-alive connections are closed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::Listener;
use crate::pipeline::Gateway;

/// How long requests in flight may take to finish once a stop is asked for.
pub const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Binds every listener (all or none), prints `gateway ready on <addr>` for each, and serves
/// until `stop` completes; then drains. Returns after the drain.
///
/// The addresses, TLS on or off, and the connection limits are read once, here; a reload
/// changes what a request meets (routes, policies, CORS, the certificate), not the sockets.
pub async fn serve(gateway: Arc<Gateway>, stop: impl Future<Output = ()>) -> Result<(), ServeError> {
    let loaded = gateway.current();
    let config = loaded.config();
    let mut bound = Vec::new();
    for l in &config.listeners {
        let socket = TcpListener::bind(l.address)
            .await
            .map_err(|source| ServeError::Bind {
                addr: l.address,
                source,
            })?;
        let local = socket.local_addr().map_err(|source| ServeError::Bind {
            addr: l.address,
            source,
        })?;
        bound.push((socket, local, Arc::new(l.clone())));
    }
    let builder = Arc::new(builder(config.header_timeout, config.max_header_bytes));
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let (stopping, stop_seen) = watch::channel(false);
    // Every connection task holds a sender; the drain is over when the last one is dropped.
    let (alive, mut all_gone) = mpsc::channel::<()>(1);
    let mut accepting = Vec::new();
    for (socket, local, listener) in bound {
        let scheme = if listener.tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %local, scheme, routes = config.routes.len(), "listening");
        // The line scripts and tests wait for; stdout, flushed by println.
        println!("gateway ready on {local}");
        accepting.push(tokio::spawn(accept(Acceptor {
            socket,
            listener,
            gateway: Arc::clone(&gateway),
            builder: Arc::clone(&builder),
            slots: Arc::clone(&slots),
            header_timeout: config.header_timeout,
            stop: stop_seen.clone(),
            alive: alive.clone(),
        })));
    }
    drop(loaded);

    stop.await;
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
    Ok(())
}

fn builder(header_timeout: Duration, max_header_bytes: usize) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
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
    /// The listener as configured when it opened.
    listener: Arc<Listener>,
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    slots: Arc<Semaphore>,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
}

async fn accept(a: Acceptor) {
    let mut stop = a.stop.clone();
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's backlog.
        let next = async {
            let slot = a.slots.clone().acquire_owned().await;
            (slot, a.socket.accept().await)
        };
        let (slot, accepted) = tokio::select! {
            next = next => next,
            () = stopped(&mut stop) => return,
        };
        let Ok(slot) = slot else {
            return;
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: say so, breathe, go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot turn off Nagle's algorithm");
        }
        // The certificate as the file says now (a reload may have rotated it); the one the
        // listener opened with when the file no longer lists this address with TLS.
        let tls = a.listener.tls.as_ref().map(|opened| {
            let current = a.gateway.current();
            let now = current
                .config()
                .listener(a.listener.address)
                .and_then(|l| l.tls.as_ref())
                .unwrap_or(opened);
            Arc::clone(&now.server)
        });
        let gateway = Arc::clone(&a.gateway);
        let listener = Arc::clone(&a.listener);
        let service = service_fn(move |req| {
            let gateway = Arc::clone(&gateway);
            let listener = Arc::clone(&listener);
            async move { Ok::<_, Infallible>(gateway.handle(req, peer, &listener).await) }
        });
        let builder = Arc::clone(&a.builder);
        let stop = a.stop.clone();
        let alive = a.alive.clone();
        let header_timeout = a.header_timeout;
        tokio::spawn(async move {
            let _alive = alive;
            let _slot = slot;
            let result = match tls {
                None => drive(&builder, stream, service, stop).await,
                Some(config) => match crate::tls::accept(config, stream, header_timeout).await {
                    Ok(tls) => drive(&builder, tls, service, stop).await,
                    Err(e) => {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed; connection dropped");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Serves one connection until it ends; when the stop comes, lets the requests in flight finish
/// and closes it.
async fn drive<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
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
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// Completes when the stop is asked for (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
