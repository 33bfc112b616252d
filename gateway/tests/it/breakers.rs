//! Circuit breakers and retries through a real gateway: a frozen instance (SIGSTOP) costs at
//! most `consecutive_failures` slow calls before it is skipped, comes back through one probe
//! after SIGCONT; with every instance gone the answer is a fast 503 with `Retry-After`; retries
//! of failed calls stay within the retry budget; searches that all miss their deadline open
//! their own breakers and never cut off reads by id.

use std::time::{Duration, Instant};

use crate::support::{Stack, call, set_limit, set_table, start_gateway};

/// The stack's file with the products upstream pinned to `addrs` (static: Consul does not take
/// a frozen instance away, so only the breaker does), a 1 s deadline and `breaker` as the
/// default breaker policy.
fn config(s: &Stack, addrs: &[String], breaker: &str) -> String {
    let list = addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = set_table(
        &s.config(),
        "upstream.products",
        &format!("addresses = [{list}]\nbalancer = \"round_robin\"\ntimeout = \"1s\""),
    );
    set_table(&text, "breaker.default", breaker)
}

fn count(logs: &str, needle: &str) -> usize {
    logs.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_frozen_instance_is_skipped_after_two_failures_and_probed_back() {
    let mut s = Stack::start("gw-breaker");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    let second = s.product_launch.start();
    let (p1, p2) = (s.product.addr().to_string(), second.addr().to_string());
    let text = config(
        &s,
        &[p1.clone(), p2.clone()],
        "consecutive_failures = 2\nfailure_ratio = 0.9\nmin_calls = 100\nwindow = \"10s\"\nopen_for = \"2s\"",
    );
    let g = start_gateway(&s.scratch, "gateway-breaker", &text);
    s.wait_ready(&g);
    let path = format!("/api/products/{lamp}");
    for _ in 0..6 {
        call(&g, "GET", &path, None, None).expect(200);
    }

    // Frozen: calls to it wait out the 1 s deadline (504) until two in a row trip its breaker;
    // then every call goes to the other instance at once.
    second.signal("STOP");
    let mut timeouts = 0;
    let mut fast = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let a = call(&g, "GET", &path, None, None);
        match a.status {
            504 => timeouts += 1,
            200 => fast.push(started.elapsed()),
            _ => panic!("{:?}", a.raw),
        }
    }
    assert_eq!(timeouts, 2, "exactly consecutive_failures slow calls");
    assert!(fast.iter().all(|t| *t < Duration::from_millis(900)), "{fast:?}");
    assert!(g.logs().contains("circuit breaker opened"));
    let m = call(&g, "GET", "/metrics", None, None).expect(200);
    let state = format!("gateway_breaker_state{{policy=\"default\",instance=\"{p2}\"}} 1");
    let trips = format!("gateway_breaker_trips_total{{policy=\"default\",instance=\"{p2}\"}} 1");
    assert!(
        m.raw.body.contains(&state) && m.raw.body.contains(&trips),
        "{}",
        m.raw.body
    );

    // Back: after open_for one probe goes to it, succeeds, and it takes its share again.
    second.signal("CONT");
    std::thread::sleep(Duration::from_millis(2_200));
    let before = count(&g.logs(), &format!("upstream=\"{p2}\""));
    for _ in 0..10 {
        call(&g, "GET", &path, None, None).expect(200);
    }
    let after = count(&g.logs(), &format!("upstream=\"{p2}\""));
    assert!(
        after - before >= 4,
        "the instance serves again: {} calls of 10",
        after - before
    );

    // Everything gone: once both breakers are open, the answer is an immediate 503.
    drop(second);
    s.product.kill9();
    let mut last = None;
    for _ in 0..4 {
        last = Some(call(&g, "GET", &path, None, None));
    }
    let started = Instant::now();
    let a = call(&g, "GET", &path, None, None);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "not fast: {:?}",
        started.elapsed()
    );
    a.refused(503, "UNAVAILABLE", "circuit breakers open");
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    drop(last);
}

#[test]
fn retries_of_failing_calls_stay_within_the_budget() {
    let s = Stack::start("gw-retry-budget");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    // Two addresses where nothing listens: every call is refused, and would be retried on the
    // other. Breakers are out of the way here.
    let dead: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", shop_testkit::free_port()))
        .collect();
    let text = config(
        &s,
        &dead,
        "consecutive_failures = 1000\nfailure_ratio = 1.0\nmin_calls = 1000\nwindow = \"10s\"\nopen_for = \"1s\"",
    );
    let g = start_gateway(&s.scratch, "gateway-budget", &text);
    let path = format!("/api/products/{lamp}");
    let n = 100;
    for _ in 0..n {
        let a = call(&g, "GET", &path, None, None);
        a.refused(503, "UNAVAILABLE", "could not be reached");
    }
    let logs = g.logs();
    let retried = count(&logs, "retried=true");
    // A reserve of 10, plus 20 % of the requests.
    let budget = 10 + n / 5;
    assert!(
        retried <= budget,
        "{retried} retries for {n} requests; budget {budget}"
    );
    assert!(retried >= budget - 2, "the budget is used: {retried}");
    assert_eq!(count(&logs, "GET path=/api/products/"), n);
    let m = call(&g, "GET", "/metrics", None, None).expect(200);
    let line = format!("gateway_retries_total{{upstream=\"products\"}} {retried}");
    assert!(m.raw.body.contains(&line), "{line} not in:\n{}", m.raw.body);
}

#[test]
fn searches_that_time_out_never_cut_off_reads_by_id() {
    let s = Stack::start("gw-search-flood");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    // Every search misses its deadline (1 ms); reads by id keep the upstream's 3 s. One client
    // sends all of it: the per-client limit is out of the way.
    let text = set_limit(
        &s.config(),
        "default",
        "rate = 100000\nper = \"1s\"\nburst = 100000\nkey = \"ip\"",
    )
    .replacen(
        "name = \"list-products\"",
        "name = \"list-products\"\ntimeout = \"1ms\"",
        1,
    );
    let g = start_gateway(&s.scratch, "gateway-flood", &text);
    s.wait_ready(&g);
    let addr = g.addr().to_string();
    let flood: Vec<_> = (0..6)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for _ in 0..40 {
                    let a = shop_testkit::http::request(
                        &addr,
                        "GET",
                        "/api/products?q=lamp&sort=price_asc",
                        &[],
                        None,
                    );
                    statuses.push(a.map_or(0, |a| a.status));
                }
                statuses
            })
        })
        .collect();
    let mut reads = 0;
    while !flood.iter().all(std::thread::JoinHandle::is_finished) {
        call(&g, "GET", &format!("/api/products/{lamp}"), None, None).expect(200);
        reads += 1;
    }
    let searches: Vec<u16> = flood.into_iter().flat_map(|t| t.join().unwrap()).collect();
    // The searches failed (504 while their breaker was closed, 503 once it opened; one fast
    // enough for 1 ms may pass) ...
    assert!(
        searches.iter().all(|s| [200, 503, 504].contains(s)),
        "{searches:?}"
    );
    assert!(searches.contains(&503), "the search breaker opened: {searches:?}");
    // ... and every read by id in the meantime, on the same instance, was served.
    assert!(reads > 0);
    let m = call(&g, "GET", "/metrics", None, None).expect(200);
    assert!(
        m.raw.body.contains("gateway_breaker_state{policy=\"search\""),
        "{}",
        m.raw.body
    );
    let default_open = m
        .raw
        .body
        .lines()
        .any(|l| l.starts_with("gateway_breaker_state{policy=\"default\"") && !l.ends_with(" 0"));
    assert!(
        !default_open,
        "reads by id have their own breakers: {}",
        m.raw.body
    );
    call(&g, "GET", &format!("/api/products/{lamp}"), None, None).expect(200);
}
