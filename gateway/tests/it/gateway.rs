//! What the gateway answers itself (404, 405, 400, 413, 415), request ids from client to
//! service log, HTTP/2 without TLS, a route added by editing a copy of gateway.toml, static
//! upstreams, load spread over instances, and a service that hangs or disappears (504, 503).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Stack, call, send, start_gateway};

#[test]
fn the_gateways_own_refusals_name_the_problem_and_change_nothing() {
    let s = Stack::start("gw-refusals");
    let admin = s.admin();
    let (alice, alice_t) = s.customer("alice");
    let lamp = s.product(&admin, "Lamp", 1999, 5);

    let a = s.call("GET", "/api/nothing", None, None);
    a.refused(404, "NOT_FOUND", "no route for GET /api/nothing");
    assert!(a.header("x-request-id").is_some());
    let a = s.call("PATCH", &format!("/api/products/{lamp}"), None, Some("{}"));
    a.refused(405, "UNIMPLEMENTED", "PATCH");
    assert_eq!(a.header("allow"), Some("DELETE, GET, PUT"));
    // The gateway's own endpoints take GET and HEAD only.
    let a = s.call("POST", "/metrics", None, Some("{}"));
    a.refused(405, "UNIMPLEMENTED", "POST");
    assert_eq!(a.header("allow"), Some("GET, HEAD"));

    // 400: bad JSON, a wrong type, an unknown field, bad path and query values.
    s.call("POST", "/api/users", None, Some(r#"{"username": "#))
        .refused(400, "INVALID_ARGUMENT", "not valid JSON");
    s.call("POST", "/api/users", None, Some(r#"{"username": 5}"#))
        .refused(
            400,
            "INVALID_ARGUMENT",
            "username: expected a string, got a number",
        );
    let priced = json!({
        "items": [{ "product_id": lamp, "quantity": 1, "unit_price_cents": 1 }],
        "shipping_address": "x",
    });
    s.call("POST", "/api/orders", Some(&alice_t), Some(&priced.to_string()))
        .refused(400, "INVALID_ARGUMENT", "unknown field items[0].unit_price_cents");
    s.call("GET", "/api/users/abc", Some(&alice_t), None).refused(
        400,
        "INVALID_ARGUMENT",
        "path parameter id: expected an integer, got \"abc\"",
    );
    s.call("GET", "/api/products/1%FF", None, None)
        .refused(400, "INVALID_ARGUMENT", "path parameter id");
    s.call("GET", "/api/products?page=two", None, None).refused(
        400,
        "INVALID_ARGUMENT",
        "query parameter page",
    );
    s.call("GET", "/api/products?colour=red", None, None).refused(
        400,
        "INVALID_ARGUMENT",
        "unknown query parameter colour",
    );
    s.call("GET", &format!("/api/products/{lamp}"), None, Some("{}"))
        .refused(400, "INVALID_ARGUMENT", "takes no request body");

    // 413: by the declared length, and by what arrives when no length is declared.
    let big = format!(r#"{{"username": "{}"}}"#, "a".repeat(70_000));
    s.call("POST", "/api/users", None, Some(&big))
        .refused(413, "RESOURCE_EXHAUSTED", "65536 bytes");
    let (status, body) = chunked_post(&s.gateway.addr().to_string(), "/api/users", big.as_bytes());
    assert_eq!(status, 413, "{body}");
    // 415: a body that says it is not JSON.
    let a = send(
        &s.gateway,
        "POST",
        "/api/users",
        &[("Content-Type", "text/xml")],
        Some(b"<user/>"),
    );
    a.refused(415, "INVALID_ARGUMENT", "text/xml");

    // None of it reached a service or changed anything.
    let a = s
        .call("GET", &format!("/api/orders/user/{alice}"), Some(&alice_t), None)
        .expect(200);
    assert_eq!(a.json["total"], 0);
    assert_eq!(s.stock(lamp), 5);
    let a = s.call("GET", "/api/products", None, None).expect(200);
    assert_eq!(a.json["total"], 1);
}

/// A POST with a chunked body (no Content-Length), read to the end: (status, whole answer).
fn chunked_post(addr: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(8192) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if c.write_all(&framed).is_err() {
            break; // the gateway answered and closed: fine
        }
    }
    let _ = c.write_all(b"0\r\n\r\n");
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[test]
fn the_request_id_goes_from_the_client_to_the_service_log_and_back() {
    let s = Stack::start("gw-request-id");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    let a = send(
        &s.gateway,
        "GET",
        &format!("/api/products/{lamp}"),
        &[("X-Request-Id", "trace-e2e-7f3a")],
        None,
    )
    .expect(200);
    assert_eq!(a.header("x-request-id"), Some("trace-e2e-7f3a"));
    // A generated id is used when the client sends none, and it reaches the service too.
    let b = s
        .call("GET", &format!("/api/products/{lamp}"), None, None)
        .expect(200);
    let generated = b.header("x-request-id").unwrap().to_owned();
    assert_ne!(generated, "trace-e2e-7f3a");
    let started = Instant::now();
    loop {
        let logs = s.product.logs();
        if logs.contains("trace-e2e-7f3a") && logs.contains(&generated) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "request ids not in the product log:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // /metrics counts them, with the upstream's instances and the loaded file.
    let m = s.call("GET", "/metrics", None, None).expect(200);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for want in [
        "gateway_requests_total{route=\"get-product\",method=\"GET\",status=\"200\"} 2",
        "gateway_request_duration_seconds_count{route=\"get-product\"} 2",
        "gateway_upstream_instances{upstream=\"products\"} 1",
        "gateway_config_info{path=",
    ] {
        assert!(m.raw.body.contains(want), "{want} not in:\n{}", m.raw.body);
    }
    // The gateway's access log has one line per request with route, status, instance and id.
    let access = s.gateway.logs();
    let line = access
        .lines()
        .find(|l| l.contains("trace-e2e-7f3a"))
        .unwrap_or_else(|| panic!("no access line:\n{access}"));
    for want in [
        "method=GET",
        "route=\"get-product\"",
        "status=200",
        "latency_ms=",
        &format!("upstream=\"{}\"", s.product.addr()),
    ] {
        assert!(line.contains(want), "{want} not in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_without_tls_is_served() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let s = tokio::task::spawn_blocking(|| Stack::start("gw-h2c"))
        .await
        .unwrap();
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<bytes::Bytes>>();
    let uri: hyper::Uri = format!("http://{}/health", s.gateway.addr()).parse().unwrap();
    let response = client.get(uri).await.unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["upstreams"]["products"]["instances"], 1);
    tokio::task::spawn_blocking(move || drop(s)).await.unwrap();
}

#[test]
fn a_route_added_to_the_file_serves_an_unused_rpc_through_a_static_upstream() {
    let s = Stack::start("gw-new-route");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    // BatchGetProducts has no route in the default file. This copy adds one, on an upstream
    // that lists the product service's address instead of asking Consul.
    let text = format!(
        "{}\n[upstream.catalogue]\naddresses = [\"{}\"]\n\n\
         [[route]]\nname = \"batch-products\"\nmethod = \"GET\"\npath = \"/api/products/batch\"\n\
         upstream = \"catalogue\"\nrpc = \"shop.product.v1.ProductService/BatchGetProducts\"\n\
         auth = \"public\"\n",
        s.config(),
        s.product.addr()
    );
    let g = start_gateway(&s.scratch, "gateway-extra", &text);
    s.wait_ready(&g);
    let a = call(
        &g,
        "GET",
        &format!("/api/products/batch?ids={lamp}&ids=999999"),
        None,
        None,
    )
    .expect(200);
    assert_eq!(a.json["products"][0]["id"], json!(lamp));
    assert_eq!(a.json["products"][0]["available"], true);
    assert_eq!(a.json["products"][1]["available"], false);
    // The literal segment wins over /api/products/{id}, which still works.
    call(&g, "GET", &format!("/api/products/{lamp}"), None, None).expect(200);
    call(&g, "GET", "/api/products/batch?ids=x", None, None).refused(
        400,
        "INVALID_ARGUMENT",
        "query parameter ids",
    );
    assert!(g.logs().contains("upstream=\"") && g.logs().contains("route=\"batch-products\""));
}

#[test]
fn calls_spread_over_instances_and_a_lost_service_is_a_clear_503_then_504_when_it_hangs() {
    let mut s = Stack::start("gw-instances");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);

    // A second product instance (same database): the gateway learns it from Consul.
    let mut second = s.product_launch.start();
    let started = Instant::now();
    loop {
        let h = s.call("GET", "/health", None, None);
        if h.json["upstreams"]["products"]["instances"] == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "second instance not seen: {:?}",
            h.raw
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..40 {
        s.call("GET", &format!("/api/products/{lamp}"), None, None)
            .expect(200);
    }
    let access = s.gateway.logs();
    for p in [&s.product, &second] {
        let n = access.matches(&format!("upstream=\"{}\"", p.addr())).count();
        assert!(n >= 5, "{} served {n} of 40 calls", p.addr());
    }

    // A hung instance (SIGSTOP): the call ends at the route's deadline with 504.
    second.kill9();
    let started = Instant::now();
    while s.call("GET", "/health", None, None).json["upstreams"]["products"]["instances"] != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "killed instance still listed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.product.signal("STOP");
    let started = Instant::now();
    let a = s.call("GET", &format!("/api/products/{lamp}"), None, None);
    let took = started.elapsed();
    s.product.signal("CONT");
    assert!(
        matches!(a.status, 503 | 504),
        "a hung service is a 504 (or 503 once Consul marks it): {:?}",
        a.raw
    );
    assert!(
        took < Duration::from_secs(5),
        "the 3 s route deadline held: {took:?}"
    );
    if a.status == 504 {
        assert_eq!(a.json["code"], "DEADLINE_EXCEEDED");
    }

    // No instance at all: 503 at once, saying which upstream, and /health says degraded.
    s.product.kill9();
    let started = Instant::now();
    let a = loop {
        let a = s.call("GET", &format!("/api/products/{lamp}"), None, None);
        if a.status == 503
            && a.json["error"]
                .as_str()
                .unwrap_or("")
                .contains("no healthy instance")
        {
            break a;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still {:?}", a.raw);
        std::thread::sleep(Duration::from_millis(100));
    };
    a.refused(503, "UNAVAILABLE", "no healthy instance of products");
    let h = s.call("GET", "/health", None, None);
    assert_eq!(h.status, 503);
    assert_eq!(h.json["status"], "degraded");
    assert_eq!(h.json["upstreams"]["products"]["instances"], 0);
    // Other upstreams keep working.
    s.call("GET", "/api/users/1", Some(&admin), None).expect(200);

    // The service comes back (new port): the gateway follows without a restart.
    s.product = s.product_launch.start();
    s.wait_ready(&s.gateway);
    s.call("GET", &format!("/api/products/{lamp}"), None, None)
        .expect(200);
}

#[test]
fn sigterm_stops_accepting_and_lets_the_request_in_flight_finish() {
    let mut s = Stack::start("gw-drain");
    // Hold a request in flight: the product service is frozen, so the call waits for its
    // 3 s deadline.
    s.product.signal("STOP");
    let gateway_addr = s.gateway.addr().to_string();
    let in_flight = std::thread::spawn(move || {
        shop_testkit::http::request(&gateway_addr, "GET", "/api/products/1", &[], None)
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = s.gateway.terminate();
    s.product.signal("CONT");
    assert!(status.success(), "exit status {status:?}");
    let answer = in_flight
        .join()
        .unwrap()
        .expect("the request in flight got an answer");
    assert!(matches!(answer.status, 503 | 504), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drain took {:?}",
        started.elapsed()
    );
    // Stopped: nothing listens any more.
    assert!(
        shop_testkit::http::request(&s.gateway.addr().to_string(), "GET", "/health", &[], None).is_none()
    );
}
