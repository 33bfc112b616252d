//! Token buckets through a real gateway: the default file's strict per-address login limit,
//! `Retry-After` and `RateLimit-*` headers, buckets per address (behind a trusted proxy) and per
//! user.

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
