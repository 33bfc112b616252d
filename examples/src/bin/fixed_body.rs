//! A plain hyper server that answers every request with the same small JSON body: the floor
//! `just bench` measures the gateway against (what HTTP/1.1 over loopback costs on this machine
//! with no routing, no policies and no upstream call). Prints `fixed-body ready on <addr>`.
//!
//! ```text
//! cargo run --release -p shop-examples --bin fixed-body -- 127.0.0.1:0
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// About the size of `GET /api/products/1`'s answer from the seeded catalogue.
const BODY: &[u8] = br#"{"id":1,"name":"iPhone 15","description":"Apple smartphone, 128 GB","price_cents":599900,"stock":100,"category":"phones","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("fixed-body: cannot listen on {addr}: {e}"))?;
    println!("fixed-body ready on {}", listener.local_addr()?);
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fixed-body: accept failed: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service_fn(|_req| async {
            let mut r = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            Ok::<_, Infallible>(r)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
