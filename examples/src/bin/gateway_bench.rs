//! Measures `GET /api/products/{id}` through the gateway (HTTP/1.1, keep-alive) next to a plain
//! hyper server that returns a fixed body of the same size (`fixed-body`: the HTTP floor) and
//! the same call made directly to the product service over gRPC, in one run with the same load:
//! prints requests per second and latency percentiles. Asserts nothing (see docs/benchmarks.md).
//!
//! ```text
//! just bench       # starts release binaries on free ports and runs this
//! cargo run --release -p shop-examples --bin gateway-bench -- --gateway 127.0.0.1:8080 \
//!     --plain 127.0.0.1:9000 --grpc http://127.0.0.1:5003 --id 1 --seconds 10 --concurrency 32
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shop_proto::product::v1 as pb;
use shop_proto::product::v1::product_service_client::ProductServiceClient;
use tokio::sync::Mutex;

struct Options {
    gateway: String,
    /// A `fixed-body` server to measure first, when given.
    plain: Option<String>,
    grpc: String,
    id: i64,
    seconds: u64,
    concurrency: usize,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        gateway: "127.0.0.1:8080".to_owned(),
        plain: None,
        grpc: "http://127.0.0.1:5003".to_owned(),
        id: 1,
        seconds: 10,
        concurrency: 32,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag}: {value:?} is not a number");
        match flag.as_str() {
            "--gateway" => o.gateway = value,
            "--plain" => o.plain = Some(value),
            "--grpc" => o.grpc = value,
            "--id" => o.id = value.parse().map_err(bad)?,
            "--seconds" => o.seconds = value.parse().map_err(bad)?,
            "--concurrency" => o.concurrency = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(o)
}

/// Latencies and failures of one measured run.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failures: usize,
}

/// Runs `call` from `concurrency` tasks for `length` and collects every latency.
async fn load<F, Fut>(concurrency: usize, length: Duration, call: F) -> (Tally, Duration)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let call = call.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Tally::default();
            while started.elapsed() < length {
                let t = Instant::now();
                if call().await {
                    mine.latencies.push(t.elapsed());
                } else {
                    mine.failures += 1;
                }
            }
            let mut all = tally.lock().await;
            all.latencies.extend(mine.latencies);
            all.failures += mine.failures;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let tally = Arc::try_unwrap(tally).map(Mutex::into_inner).unwrap_or_default();
    (tally, elapsed)
}

fn report(name: &str, mut tally: Tally, elapsed: Duration) {
    tally.latencies.sort();
    let pct = |p: f64| {
        let n = tally.latencies.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((n as f64 - 1.0) * p).round() as usize;
        tally.latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "{name:<32} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>7.2} ms   ({} ok, {} failed)",
        tally.latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        tally.latencies.len(),
        tally.failures
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options().map_err(|e| format!("gateway-bench: {e}"))?;
    let length = Duration::from_secs(o.seconds);
    let warm = Duration::from_secs(1);
    println!(
        "GET /api/products/{} for {} s each, {} concurrent callers",
        o.id, o.seconds, o.concurrency
    );

    // The same HTTP/1.1 client for both: pooled keep-alive connections.
    let http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(o.concurrency)
        .build_http::<Empty<Bytes>>();
    let http_call = |uri: hyper::Uri| {
        let http = http.clone();
        move || {
            let http = http.clone();
            let uri = uri.clone();
            async move {
                match http.get(uri).await {
                    Ok(r) if r.status() == 200 => r.into_body().collect().await.is_ok(),
                    _ => false,
                }
            }
        }
    };

    if let Some(plain) = &o.plain {
        let uri: hyper::Uri = format!("http://{plain}/").parse()?;
        let call = http_call(uri);
        load(o.concurrency, warm, call.clone()).await;
        let (tally, elapsed) = load(o.concurrency, length, call).await;
        report("plain hyper, fixed body", tally, elapsed);
    }

    // Through the gateway: JSON over HTTP/1.1, routed, limited, transcoded, called over gRPC.
    let uri: hyper::Uri = format!("http://{}/api/products/{}", o.gateway, o.id).parse()?;
    let probe = http.get(uri.clone()).await?;
    if probe.status() != 200 {
        return Err(format!("the gateway answered {} for {uri}", probe.status()).into());
    }
    let gateway_call = http_call(uri);
    load(o.concurrency, warm, gateway_call.clone()).await;
    let (tally, elapsed) = load(o.concurrency, length, gateway_call).await;
    report("gateway (HTTP/1.1 + JSON)", tally, elapsed);

    // Directly: protobuf over one HTTP/2 connection, as the gateway itself calls the service.
    let grpc = ProductServiceClient::connect(o.grpc.clone())
        .await
        .map_err(|e| format!("cannot reach {}: {e}", o.grpc))?;
    let id = o.id;
    let grpc_call = move || {
        let mut grpc = grpc.clone();
        async move { grpc.get_product(pb::GetProductRequest { id }).await.is_ok() }
    };
    load(o.concurrency, warm, grpc_call.clone()).await;
    let (tally, elapsed) = load(o.concurrency, length, grpc_call).await;
    report("direct gRPC (product service)", tally, elapsed);
    Ok(())
}
