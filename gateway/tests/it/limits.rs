//! Token buckets through a real gateway: the default file's strict per-address login limit,
//! `Retry-After` and `RateLimit-*` headers, buckets per address (behind a trusted proxy) and per
//! user, and the gateway's memory under ten thousand client addresses at a time.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::{Stack, call, default_config, send, set_limit, start_gateway};

#[test]
fn login_is_limited_per_address_with_retry_after_and_what_is_left() {
    let s = Stack::start("gw-limit-ip");
    s.customer("alice");
    // The default file: 5 logins a minute per address. This gateway believes X-Forwarded-For
    // from 127.0.0.1, as it would behind a local proxy.
    let text = default_config(&s.scratch, &s.agent);
    assert!(text.contains("\ntrusted_proxies = []\n"));
    let text = text.replace(
        "\ntrusted_proxies = []\n",
        "\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let g = start_gateway(&s.scratch, "gateway-strict", &text);
    s.wait_ready(&g);
    let wrong = br#"{"username": "alice", "password": "not-her-password"}"#;
    let login = |from: &str| {
        send(
            &g,
            "POST",
            "/api/users/login",
            &[("X-Forwarded-For", from)],
            Some(wrong.as_slice()),
        )
    };
    for left in (0..5).rev() {
        let a = login("203.0.113.7");
        a.refused(401, "UNAUTHENTICATED", "");
        assert_eq!(a.header("ratelimit-limit"), Some("5"));
        assert_eq!(a.header("ratelimit-remaining"), Some(left.to_string().as_str()));
    }
    let a = login("203.0.113.7");
    a.refused(429, "RESOURCE_EXHAUSTED", "limit \"login\"");
    // One token every 12 s (5 a minute); Retry-After is whole seconds, rounded up.
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((11..=12).contains(&retry), "Retry-After {retry}");
    assert_eq!(a.header("ratelimit-remaining"), Some("0"));
    assert!(a.header("x-request-id").is_some());
    // Another address has its own bucket. A client that writes another address into the
    // header gains nothing: the proxy appends the real one, and that is the one believed.
    login("198.51.100.20").refused(401, "UNAUTHENTICATED", "");
    login("198.51.100.20, 203.0.113.7").refused(429, "RESOURCE_EXHAUSTED", "");
    // Other routes use other policies.
    call(&g, "GET", "/api/products", None, None).expect(200);
    assert!(
        g.logs().contains("status=429"),
        "the access log shows the refusal"
    );
    let m = call(&g, "GET", "/metrics", None, None).expect(200);
    assert!(
        m.raw
            .body
            .contains("gateway_ratelimit_rejections_total{policy=\"login\"} 2"),
        "{}",
        m.raw.body
    );
}

#[test]
fn a_user_keyed_limit_gives_each_user_their_own_bucket() {
    let s = Stack::start("gw-limit-user");
    let (alice, alice_t) = s.customer("alice");
    let (bob, bob_t) = s.customer("bob");
    let text = set_limit(
        &s.config(),
        "default",
        "rate = 2\nper = \"1m\"\nburst = 2\nkey = \"user\"",
    );
    let g = start_gateway(&s.scratch, "gateway-user-limit", &text);
    s.wait_ready(&g);
    let alice_path = format!("/api/users/{alice}");
    let bob_path = format!("/api/users/{bob}");
    call(&g, "GET", &alice_path, Some(&alice_t), None).expect(200);
    call(&g, "GET", &alice_path, Some(&alice_t), None).expect(200);
    let a = call(&g, "GET", &alice_path, Some(&alice_t), None);
    a.refused(429, "RESOURCE_EXHAUSTED", "limit \"default\"");
    assert_eq!(a.header("retry-after"), Some("30"));
    // Bob, from the same address, is not held back by Alice.
    call(&g, "GET", &bob_path, Some(&bob_t), None).expect(200);
}

/// The gateway's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `gateway_ratelimit_buckets{policy="default"}` from /metrics.
fn buckets(g: &shop_testkit::Process) -> u64 {
    let m = call(g, "GET", "/metrics", None, None).raw.body;
    let line = m
        .lines()
        .find(|l| l.starts_with("gateway_ratelimit_buckets{policy=\"default\"}"))
        .unwrap_or_else(|| panic!("no bucket gauge in {m}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// One GET per address in `addresses` (as `X-Forwarded-For` from a trusted local proxy), 16 at
/// a time over keep-alive connections; every one must be served.
fn wave(addr: std::net::SocketAddr, path: &str, addresses: std::ops::Range<u32>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        let per_task = addresses.len() as u32 / 16;
        for t in 0..16 {
            let (client, uri) = (client.clone(), uri.clone());
            let from = addresses.start + t * per_task;
            tasks.spawn(async move {
                for n in from..from + per_task {
                    let ip = std::net::Ipv4Addr::from(0x0a00_0000 + n);
                    let req = http::Request::get(uri.clone())
                        .header("x-forwarded-for", ip.to_string())
                        .body(Empty::new())
                        .unwrap();
                    let res = client.request(req).await.unwrap();
                    let status = res.status();
                    res.into_body().collect().await.unwrap();
                    assert_eq!(status, 200, "from {ip}");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
}

#[test]
fn ten_thousand_client_addresses_at_a_time_do_not_grow_memory_without_bound() {
    let s = Stack::start("gw-limit-memory");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    // One token a second per address: a bucket idle for a second is full again, and forgotten
    // at the next sweep (every 10 s).
    let text = set_limit(
        &s.config(),
        "default",
        "rate = 1\nper = \"1s\"\nburst = 1\nkey = \"ip\"",
    )
    .replace(
        "\ntrusted_proxies = []\n",
        "\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let g = start_gateway(&s.scratch, "gateway-memory", &text);
    s.wait_ready(&g);
    let path = format!("/api/products/{lamp}");
    let before = rss_kib(g.pid());

    let started = Instant::now();
    wave(g.addr(), &path, 0..10_000);
    let first = rss_kib(g.pid());
    let held_first = buckets(&g);
    assert!((1..=10_000).contains(&held_first), "{held_first} buckets");

    // Ten thousand other addresses once the first ones are idle: their buckets replace the
    // first ones' instead of adding to them.
    std::thread::sleep(Duration::from_secs(11));
    wave(g.addr(), &path, 10_000..20_000);
    let second = rss_kib(g.pid());
    let held_second = buckets(&g);
    eprintln!(
        "memory: {before} KiB at start, {first} KiB after 10 000 addresses ({held_first} buckets), \
         {second} KiB after 10 000 more ({held_second} buckets); {:?}",
        started.elapsed()
    );
    assert!(
        held_second <= 10_000,
        "idle buckets were not forgotten: {held_second}"
    );
    assert!(
        second <= first + 4 * 1024,
        "memory grew from {first} KiB to {second} KiB with the second wave"
    );
}
