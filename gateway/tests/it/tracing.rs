//! Trace context end to end: the gateway continues a client's `traceparent` (or starts a
//! trace), returns it, and passes it on; the order service continues it into its calls to the
//! user and product services; every log line of the request, in every process, carries the
//! trace id.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Stack, send};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Waits until `logs()` mentions `needle` (log lines are written by a background thread).
#[track_caller]
fn wait_logged(what: &str, logs: impl Fn() -> String, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let text = logs();
        if text.contains(needle) {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} never logged {needle}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_requests_trace_id_is_in_every_log_line_it_caused() {
    let s = Stack::start("tracing");
    let admin = s.admin();
    let (_, alice) = s.customer("alice");
    let lamp = s.product(&admin, "Lamp", 100, 5);
    let body = json!({"items": [{"product_id": lamp, "quantity": 1}], "shipping_address": "x"}).to_string();
    let parent = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let auth = format!("Bearer {alice}");
    let a = send(
        &s.gateway,
        "POST",
        "/api/orders",
        &[
            ("Authorization", &auth),
            ("traceparent", &parent),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
    )
    .expect(201);
    let back = a.header("traceparent").unwrap_or_default().to_owned();
    assert!(back.starts_with(&format!("00-{TRACE}-")), "{back}");
    assert_ne!(back, parent, "the gateway's hop has a span id of its own");
    let gateway = wait_logged("the gateway", || s.gateway.logs(), TRACE);
    assert!(
        gateway
            .lines()
            .any(|l| l.contains("route=\"create-order\"") && l.contains(TRACE))
    );
    let order = wait_logged("the order service", || s.order.logs(), TRACE);
    assert!(
        order
            .lines()
            .any(|l| l.contains("CreateOrder") && l.contains(TRACE)),
        "{order}"
    );
    assert!(
        order
            .lines()
            .any(|l| l.contains("order placed") && l.contains(TRACE)),
        "{order}"
    );
    let product = wait_logged("the product service", || s.product.logs(), TRACE);
    assert!(
        product
            .lines()
            .any(|l| l.contains("ReserveStock") && l.contains(TRACE)),
        "{product}"
    );
    wait_logged("the user service", || s._user.logs(), TRACE);

    // Without a traceparent (or with a broken one) the gateway starts a trace and says which.
    for sent in [None, Some("00-not-a-trace-01")] {
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(t) = sent {
            headers.push(("traceparent", t));
        }
        let a = send(&s.gateway, "GET", "/api/cart", &headers, None).expect(200);
        let started = a.header("traceparent").unwrap_or_default().to_owned();
        let trace = started.split('-').nth(1).unwrap_or_default().to_owned();
        assert_eq!(trace.len(), 32, "{started}");
        assert_ne!(trace, TRACE);
        wait_logged("the order service", || s.order.logs(), &trace);
    }
}

/// A stand-in OTLP/HTTP collector: answers every POST 200 and keeps the bodies.
struct Collector {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Collector {
    fn start() -> Collector {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&bodies);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    kept.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Collector { url, bodies }
    }

    /// The spans of `trace` received so far: (service, span id, parent span id, name).
    fn spans(&self, trace: &str) -> Vec<(String, String, String, String)> {
        let mut found = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            for rs in v["resourceSpans"].as_array().unwrap() {
                let service = rs["resource"]["attributes"][0]["value"]["stringValue"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    for span in ss["spans"].as_array().unwrap() {
                        if span["traceId"] == trace {
                            found.push((
                                service.clone(),
                                span["spanId"].as_str().unwrap().to_owned(),
                                span["parentSpanId"].as_str().unwrap_or("").to_owned(),
                                span["name"].as_str().unwrap().to_owned(),
                            ));
                        }
                    }
                }
            }
        }
        found
    }
}

#[test]
fn spans_reach_an_otlp_collector_as_one_tree() {
    let collector = Collector::start();
    let s = Stack::start_traced("tracing-otlp", &collector.url);
    let admin = s.admin();
    let (_, alice) = s.customer("alice");
    let lamp = s.product(&admin, "Lamp", 100, 5);
    let body = json!({"items": [{"product_id": lamp, "quantity": 1}], "shipping_address": "x"}).to_string();
    let client_span = "00f067aa0ba902b7";
    let auth = format!("Bearer {alice}");
    let parent = format!("00-{TRACE}-{client_span}-01");
    send(
        &s.gateway,
        "POST",
        "/api/orders",
        &[
            ("Authorization", &auth),
            ("traceparent", &parent),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
    )
    .expect(201);
    // Batches leave every second.
    let started = Instant::now();
    let spans = loop {
        let spans = collector.spans(TRACE);
        let services: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.0.as_str()).collect();
        if services.len() == 4 {
            break spans;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "spans so far: {spans:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let of = |service: &str| spans.iter().filter(|s| s.0 == service).collect::<Vec<_>>();
    let gateway = of("gateway");
    assert_eq!(gateway.len(), 1, "{spans:?}");
    assert_eq!(
        gateway[0].2, client_span,
        "the gateway's span continues the client's"
    );
    assert_eq!(gateway[0].3, "POST create-order");
    let order = of("order-service");
    assert_eq!(order.len(), 1, "{spans:?}");
    assert_eq!(
        order[0].2, gateway[0].1,
        "the order service's span is the gateway's child"
    );
    assert!(order[0].3.ends_with("CreateOrder"));
    for callee in ["product-service", "user-service"] {
        let called = of(callee);
        assert!(!called.is_empty(), "{spans:?}");
        assert!(
            called.iter().all(|c| c.2 == order[0].1),
            "{callee} spans are the order's children: {spans:?}"
        );
    }
}
