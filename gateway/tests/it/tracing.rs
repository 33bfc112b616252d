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
