//! Two order-service instances on one database behind the gateway: a burst of creates and
//! cancels through REST, `kill -9` of the instance holding the recovery lock in the middle.
//! Afterwards the lock has moved, every acknowledged order exists in the state its client was
//! told, no order is left half done, and stock + units held = stock set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use shop_testkit::Process;
use shop_testkit::consul::http_get;

use crate::support::{Stack, call, service, set_limit, start_gateway};

const KEY: &str = "shop/order-service/recovery";
const STOCK: i64 = 10_000;

/// The instance id holding the recovery lock (the value it wrote), once someone holds it.
fn holder(s: &Stack) -> Option<String> {
    let (status, body) = http_get(&s.agent.addr(), &format!("/v1/kv/{KEY}"))?;
    if status != 200 {
        return None;
    }
    let entries: serde_json::Value = serde_json::from_str(&body).ok()?;
    let entry = entries.get(0)?;
    entry["Session"].as_str().filter(|s| !s.is_empty())?;
    let (_, raw) = http_get(&s.agent.addr(), &format!("/v1/kv/{KEY}?raw"))?;
    Some(raw)
}

fn wait_for_holder(s: &Stack, want: impl Fn(&str) -> bool, within: Duration) -> String {
    let started = Instant::now();
    loop {
        if let Some(h) = holder(s).filter(|h| want(h)) {
            return h;
        }
        assert!(started.elapsed() < within, "lock holder: {:?}", holder(s));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Orders whose product side is not settled yet, or that are still reserving.
fn unsettled(s: &Stack) -> (i64, i64) {
    let db = rusqlite::Connection::open(s.scratch.join("data/order.db")).unwrap();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    (
        count("SELECT count(*) FROM orders WHERE status = 'reserving'"),
        count("SELECT count(*) FROM orders WHERE settlement = 'owed'"),
    )
}

fn held_by_live_orders(s: &Stack, product: i64) -> i64 {
    let db = rusqlite::Connection::open(s.scratch.join("data/order.db")).unwrap();
    db.query_row(
        "SELECT coalesce(sum(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id
         WHERE i.product_id = ?1 AND o.status IN ('pending', 'paid', 'shipped', 'delivered')",
        [product],
        |r| r.get(0),
    )
    .unwrap()
}

/// What a client was told: the order id, and whether its cancel was acknowledged.
type Told = Arc<Mutex<Vec<(i64, bool)>>>;

fn burst(
    gateway: &Process,
    token: &str,
    product: i64,
    stop: &Arc<AtomicBool>,
    told: &Told,
) -> Vec<std::thread::JoinHandle<usize>> {
    (0..6)
        .map(|w| {
            let (addr, token, stop, told) = (gateway.addr().to_string(), format!("Bearer {token}"), Arc::clone(stop), Arc::clone(told));
            std::thread::spawn(move || {
                let mut failed = 0;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = json!({"items": [{"product_id": product, "quantity": 1}], "shipping_address": "1 Main St"}).to_string();
                    let key = format!("ha-{w}-{i}");
                    let headers = [("Authorization", token.as_str()), ("Idempotency-Key", key.as_str())];
                    let created = shop_testkit::http::request(&addr, "POST", "/api/orders", &headers, Some(body.as_bytes()));
                    let Some(id) = created.filter(|r| r.status == 201).and_then(|r| {
                        serde_json::from_str::<serde_json::Value>(&r.body).ok()?["id"].as_i64()
                    }) else {
                        failed += 1;
                        continue;
                    };
                    let cancelled = i % 2 == 0
                        && shop_testkit::http::request(&addr, "DELETE", &format!("/api/orders/{id}"), &headers[..1], None)
                            .is_some_and(|r| r.status == 200);
                    told.lock().unwrap().push((id, cancelled));
                }
                failed
            })
        })
        .collect()
}

#[test]
fn two_order_instances_survive_losing_the_one_that_runs_recovery() {
    // One buyer places hundreds of orders here, most left unpaid: no cap.
    let mut s = Stack::start_with("gw-orders-ha", &["orders.max_unpaid=0"]);
    let second = service(&s.scratch, &s.agent, "order-service")
        .arg("--set")
        .arg("orders.max_unpaid=0")
        .arg("--set")
        .arg("upstream.timeout=1s")
        .arg("--set")
        .arg("recovery.interval=1s")
        .start();
    let text = set_limit(
        &s.config(),
        "default",
        "rate = 1000000\nburst = 1000000\nkey = \"ip\"",
    );
    let g = start_gateway(&s.scratch, "gateway-orders-ha", &text);
    s.wait_instances(&g, "orders", 2);
    let admin = s.admin();
    let product = s.product(&admin, "Mug", 500, STOCK);
    let (_, token) = s.customer("buyer");

    let first_port = s.order.addr().port();
    let lead = wait_for_holder(&s, |_| true, Duration::from_secs(10));
    let first_leads = lead.ends_with(&format!("-{first_port}"));
    eprintln!("recovery lock held by {lead}");

    let stop = Arc::new(AtomicBool::new(false));
    let told: Told = Arc::new(Mutex::new(Vec::new()));
    let workers = burst(&g, &token, product, &stop, &told);
    std::thread::sleep(Duration::from_millis(1_500));
    let killed_at = Instant::now();
    let second_port = second.addr().port();
    let mut second = Some(second);
    let (killed_port, survivor_port) = if first_leads {
        s.order.kill9();
        (first_port, second_port)
    } else {
        second.take(); // dropping a Process kills it (-9)
        (second_port, first_port)
    };
    std::thread::sleep(Duration::from_millis(2_500));
    stop.store(true, Ordering::Relaxed);
    let failed: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let told = told.lock().unwrap().clone();

    let new_lead = wait_for_holder(
        &s,
        |h| !h.ends_with(&format!("-{killed_port}")),
        Duration::from_secs(15),
    );
    eprintln!(
        "killed the lock holder after {} acknowledged orders; {failed} calls failed; the lock moved to {new_lead} {:?} after the kill",
        told.len(),
        killed_at.elapsed()
    );
    assert!(new_lead.ends_with(&format!("-{survivor_port}")));
    assert!(told.len() > 20, "the burst ran: {} orders", told.len());

    // Recovery on the survivor finishes what the killed instance left (the grace is 5 s).
    let started = Instant::now();
    while unsettled(&s) != (0, 0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "left half done: {:?}",
            unsettled(&s)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (id, cancelled) in &told {
        let o = call(&g, "GET", &format!("/api/orders/{id}"), Some(&admin), None).expect(200);
        let want = if *cancelled { "cancelled" } else { "pending" };
        let status = o.json["status"].as_str().unwrap().to_owned();
        // A cancel whose answer was lost may still have happened.
        assert!(
            status == want || status == "cancelled",
            "order {id}: {status}, told {want}"
        );
    }
    assert_eq!(s.stock(product) + held_by_live_orders(&s, product), STOCK);
    drop(second);
}
