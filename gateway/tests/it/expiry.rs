//! Unpaid orders expire and give their units back exactly once, also when the order service is
//! killed in the middle of a sweep; a success reported for an expired order is refunded and
//! does not revive it; and a customer holds at most `orders.max_unpaid` unpaid orders.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Stack, WEBHOOK_SECRET, unix_now};

const STOCK: i64 = 1_000;

/// Expired orders of these users, by their lists (a few calls, well under the rate limit).
fn expired(s: &Stack, admin: &str, users: &[i64]) -> usize {
    users
        .iter()
        .map(|u| {
            let a = s.call(
                "GET",
                &format!("/api/orders/user/{u}?status=expired&page_size=1"),
                Some(admin),
                None,
            );
            a.json["total"].as_u64().unwrap_or(0) as usize
        })
        .sum()
}

fn events_of(s: &Stack, admin: &str, kind: &str) -> Vec<i64> {
    let a = s
        .call("GET", "/api/events?limit=1000", Some(admin), None)
        .expect(200);
    a.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["order_id"].as_i64().unwrap())
        .collect()
}

#[test]
fn unpaid_orders_expire_once_across_kill_9_and_stay_expired() {
    let mut s = Stack::start_with(
        "expiry",
        &[
            "orders.pay_within=3s",
            "recovery.interval=1s",
            "orders.max_unpaid=8",
            "payments.webhook_url=http://127.0.0.1:9/api/payments/webhook",
        ],
    );
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 100, STOCK);
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    let mut users = Vec::new();
    for c in 0..5 {
        let (u, t) = s.customer(&format!("buyer{c}"));
        for _ in 0..8 {
            ids.push(s.order(&t, lamp, 3));
        }
        tokens.push(t);
        users.push(u);
    }
    // The cap: a ninth unpaid order is refused with a sentence saying why.
    let ninth = json!({"items": [{"product_id": lamp, "quantity": 1}], "shipping_address": "x"}).to_string();
    s.call("POST", "/api/orders", Some(&tokens[0]), Some(&ninth))
        .refused(409, "FAILED_PRECONDITION", "unpaid orders");
    // One order has a payment in flight whose report will come too late.
    let late = ids[0];
    let payment = s
        .call(
            "POST",
            &format!("/api/orders/{late}/payments"),
            Some(&tokens[0]),
            Some("{}"),
        )
        .expect(201);
    let reference = payment.json["provider_ref"].as_str().unwrap().to_owned();
    assert_eq!(s.stock(lamp), STOCK - 3 * 40);

    // Kill the order service as soon as the sweep has expired some orders, not all.
    let started = Instant::now();
    loop {
        let n = expired(&s, &admin, &users);
        if n > 0 {
            assert!(
                n < ids.len(),
                "the sweep finished before the kill; the test needs a slower sweep"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "nothing expired");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.order.kill9();
    s.order = s.order_launch.start();
    let started = Instant::now();
    while expired(&s, &admin, &users) < ids.len() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not every order expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The units come back once: stock is whole again, and stays whole.
    let started = Instant::now();
    while s.stock(lamp) != STOCK {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "stock {}",
            s.stock(lamp)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.stock(lamp), STOCK);
    let (ok, out) = s.audit_ok();
    assert!(ok, "{out}");
    let mut expiries = events_of(&s, &admin, "order.expired");
    expiries.sort_unstable();
    assert_eq!(expiries, ids, "one order.expired event per order");

    // The late success is recorded as refunded; the order stays expired.
    let body = json!({"provider_ref": reference, "outcome": "succeeded"}).to_string();
    let a = s.report(&body, WEBHOOK_SECRET, unix_now()).expect(200);
    assert_eq!(a.json["payment_status"], "refunded");
    let o = s
        .call("GET", &format!("/api/orders/{late}"), Some(&tokens[0]), None)
        .expect(200);
    assert_eq!(o.json["status"], "expired");
    assert_eq!(o.json["payments"][0]["status"], "refunded");
    assert_eq!(events_of(&s, &admin, "payment.refunded"), vec![late]);
    s.call(
        "POST",
        &format!("/api/orders/{late}/payments"),
        Some(&tokens[0]),
        Some("{}"),
    )
    .refused(409, "FAILED_PRECONDITION", "expired");
    s.call(
        "PUT",
        &format!("/api/orders/{late}/status"),
        Some(&admin),
        Some(r#"{"status": "paid"}"#),
    )
    .refused(409, "FAILED_PRECONDITION", "expired");
    // Expired orders free the cap.
    s.call("POST", "/api/orders", Some(&tokens[0]), Some(&ninth))
        .expect(201);
    let listed = s
        .call(
            "GET",
            &format!(
                "/api/orders/user/{}?status=expired&page_size=100",
                o.json["user_id"]
            ),
            Some(&admin),
            None,
        )
        .expect(200);
    assert_eq!(listed.json["total"], 8);
}
