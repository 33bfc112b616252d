//! Failover through a real gateway: `kill -9` of one of two product instances under load. On an
//! idempotent route no request fails (calls that broke with the instance run again on the
//! other); on a route that is not idempotent only calls that were never sent run again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shop_testkit::Process;

use crate::support::{Stack, call, set_limit, start_gateway};

/// A gateway on the stack's file with the per-user limit out of the way (the load comes from one
/// address and one admin), once it sees both product instances.
fn unlimited_gateway(s: &Stack, name: &str) -> Process {
    let text = set_limit(
        &s.config(),
        "default",
        "rate = 1000000\nburst = 1000000\nkey = \"ip\"",
    );
    let g = start_gateway(&s.scratch, name, &text);
    s.wait_instances(&g, "products", 2);
    g
}

/// Runs `clients` threads calling `one` in a loop until `stop`; returns every status seen.
fn load(
    clients: usize,
    stop: &Arc<AtomicBool>,
    one: impl Fn() -> u16 + Send + Sync + 'static,
) -> Vec<std::thread::JoinHandle<Vec<u16>>> {
    let one = Arc::new(one);
    (0..clients)
        .map(|_| {
            let (stop, one) = (Arc::clone(stop), Arc::clone(&one));
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    seen.push(one());
                }
                seen
            })
        })
        .collect()
}

#[test]
fn killing_one_of_two_instances_fails_no_idempotent_read() {
    let mut s = Stack::start("gw-failover-read");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    let second = s.product_launch.start();
    let g = unlimited_gateway(&s, "gateway-failover");
    let gateway = g.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let path = format!("/api/products/{lamp}");
    let readers = load(6, &stop, move || {
        shop_testkit::http::request(&gateway.to_string(), "GET", &path, &[], None).map_or(0, |r| r.status)
    });
    std::thread::sleep(Duration::from_millis(1_000));
    s.product.kill9();
    // Long enough for Consul's 1 s check to fail and the watch to drop the instance.
    std::thread::sleep(Duration::from_millis(4_000));
    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = readers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    let retried = g.logs().matches("retried=true").count();
    eprintln!(
        "failover: {} reads, {} failed, {retried} retried on the other instance",
        statuses.len(),
        failed.len()
    );
    assert!(statuses.len() > 200, "the load ran: {} reads", statuses.len());
    assert!(
        failed.is_empty(),
        "{} of {} reads failed: {failed:?}",
        failed.len(),
        statuses.len()
    );
    assert!(retried > 0, "the kill hit calls that had to run again");
    drop(second);
}

#[test]
fn on_a_route_that_is_not_idempotent_only_unsent_calls_run_again() {
    let mut s = Stack::start("gw-failover-write");
    let admin = s.admin();
    let second = s.product_launch.start();
    let g = unlimited_gateway(&s, "gateway-failover");
    let gateway = g.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(Mutex::new(Vec::new()));
    let n = Arc::new(AtomicUsize::new(0));
    let writers = {
        let (created, n) = (Arc::clone(&created), Arc::clone(&n));
        load(4, &stop, move || {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let body = serde_json::json!({ "name": format!("Item {i}"), "price_cents": 100, "stock": 1 })
                .to_string();
            let auth = format!("Bearer {admin}");
            let r = shop_testkit::http::request(
                &gateway.to_string(),
                "POST",
                "/api/products",
                &[("Authorization", auth.as_str())],
                Some(body.as_bytes()),
            );
            let status = r.as_ref().map_or(0, |r| r.status);
            if status == 201 {
                created.lock().unwrap().push(i);
            }
            status
        })
    };
    let logged_before = g.logs().len();
    std::thread::sleep(Duration::from_millis(1_000));
    let killed_at = Instant::now();
    s.product.kill9();
    std::thread::sleep(Duration::from_millis(4_000));
    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let logs = g.logs()[logged_before..].to_owned();
    let retries: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("retrying once on another instance"))
        .collect();
    eprintln!(
        "non-idempotent failover: {} creates, {} answered 201, {} retried, {:?} after the kill",
        statuses.len(),
        created.lock().unwrap().len(),
        retries.len(),
        killed_at.elapsed()
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 201 | 503)),
        "only successes and 503s: {statuses:?}"
    );
    for line in &retries {
        assert!(
            line.contains("the call was not sent"),
            "a call that may have run was retried: {line}"
        );
    }
    // Every acknowledged create made exactly one product.
    let mut names = Vec::new();
    for page in 1.. {
        let path = format!("/api/products?page_size=100&page={page}");
        let answer = call(&g, "GET", &path, None, None).expect(200);
        let products = answer.json["products"].as_array().unwrap().clone();
        if products.is_empty() {
            break;
        }
        names.extend(products.iter().map(|p| p["name"].as_str().unwrap().to_owned()));
    }
    for i in created.lock().unwrap().iter() {
        let name = format!("Item {i}");
        assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{name}");
    }
    drop(second);
}
