//! The listeners: HTTP/1.1 and HTTP/2 over cleartext (h2c, prior knowledge) on each configured
//! address, one task per connection, with the connection-level limits (header read timeout,
//! request head size, connections at once), and a graceful stop (no new connections, requests
//! in flight finish within a bound).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::pipeline::Gateway;

/// How long requests in flight may take to finish once a stop is asked for.
pub const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds every listener (all or none), prints `gateway ready on <addr>` for each, and serves
/// until `stop` completes; then drains. Returns after the drain.
pub async fn serve(gateway: Arc<Gateway>, stop: impl Future<Output = ()>) -> Result<(), ServeError> {
    let mut listeners = Vec::new();
    for addr in &gateway.config().listeners {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr: *addr, source })?;
        listeners.push(listener);
    }
    let graceful = Arc::new(GracefulShutdown::new());
    let mut accepting = Vec::new();
    for listener in listeners {
        let local = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: gateway.config().listeners[0],
            source,
        })?;
        tracing::info!(addr = %local, routes = gateway.config().routes.len(), "listening");
        // The line scripts and tests wait for; stdout, flushed by println.
        println!("gateway ready on {local}");
        accepting.push(tokio::spawn(accept(listener, gateway.clone(), graceful.clone())));
    }

    stop.await;
    tracing::info!(
        drain_secs = DRAIN.as_secs(),
        "stopping: no new connections; draining"
    );
    for task in &accepting {
        task.abort();
    }
    for task in accepting {
        let _ = task.await;
    }
    // The accept loops held the only other handles, and they have ended: this is the last one.
    // (A fresh GracefulShutdown here would watch nothing and skip the drain.)
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::error!("the drain is still shared; stopping without waiting for requests");
        return Ok(());
    };
    match tokio::time::timeout(DRAIN, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained; stopped"),
        Err(_) => tracing::warn!("requests still running after {DRAIN:?}; stopping anyway"),
    }
    Ok(())
}

async fn accept(listener: TcpListener, gateway: Arc<Gateway>, graceful: Arc<GracefulShutdown>) {
    let config = gateway.config();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    let slots = Arc::new(Semaphore::new(config.max_connections));
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
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
        let gateway = gateway.clone();
        let service = service_fn(move |req| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(req, peer).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
}
