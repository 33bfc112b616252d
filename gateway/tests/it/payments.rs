//! Payments end to end through the gateway: the simulated provider paying an order by its
//! signed report, customers no longer marking their own orders paid, forged, stale, replayed and
//! duplicate reports, and a payment racing a cancel (the guarded moves decide which came first,
//! the money goes back exactly once, and the stock is right either way).

use serde_json::{Value, json};

use crate::support::{Stack, WEBHOOK_SECRET, unix_now};

/// A stack whose simulated provider cannot reach the gateway, so the test plays the provider.
fn silent_provider(name: &str) -> Stack {
    Stack::start_with(
        name,
        &["payments.webhook_url=http://127.0.0.1:9/api/payments/webhook"],
    )
}

fn report_body(provider_ref: &str, outcome: &str) -> String {
    json!({"provider_ref": provider_ref, "outcome": outcome}).to_string()
}

fn pay(s: &Stack, token: &str, order: i64, body: &str) -> Value {
    s.call(
        "POST",
        &format!("/api/orders/{order}/payments"),
        Some(token),
        Some(body),
    )
    .expect(201)
    .json
}

fn history(order: &Value) -> Vec<(String, i64)> {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["status"].as_str().unwrap().to_owned(),
                h["changed_by"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_simulated_provider_pays_an_order_and_customers_cannot_mark_it_paid() {
    let s = Stack::start("pay-happy");
    let admin = s.admin();
    let (alice, alice_t) = s.customer("alice");
    let (_, bob_t) = s.customer("bob");
    let lamp = s.product(&admin, "Lamp", 1250, 10);
    let order = s.order(&alice_t, lamp, 2);

    let status = format!("/api/orders/{order}/status");
    s.call("PUT", &status, Some(&alice_t), Some(r#"{"status": "paid"}"#))
        .refused(403, "PERMISSION_DENIED", "starting a payment");

    let p = pay(&s, &alice_t, order, "{}");
    assert_eq!(p["status"], "pending");
    assert_eq!(p["provider"], "simulated");
    assert_eq!(p["amount_cents"], 2500, "the order's total, never the client's");
    assert_eq!(p["order_id"], order);
    assert!(p["provider_ref"].as_str().unwrap().len() > 10);
    let again = pay(&s, &alice_t, order, "{}");
    assert_eq!(
        again["id"], p["id"],
        "a second start while one is pending is that payment"
    );
    s.call(
        "POST",
        &format!("/api/orders/{order}/payments"),
        Some(&bob_t),
        Some("{}"),
    )
    .refused(404, "NOT_FOUND", "");
    s.call(
        "POST",
        &format!("/api/orders/{order}/payments"),
        Some(&alice_t),
        Some(r#"{"amount_cents": 1}"#),
    )
    .refused(400, "INVALID_ARGUMENT", "amount_cents");

    let paid = s.wait_order(&alice_t, order, |o| o["status"] == "paid");
    assert_eq!(paid["payments"][0]["status"], "succeeded");
    assert_eq!(paid["payments"].as_array().unwrap().len(), 1);
    assert_eq!(
        history(&paid).last().unwrap(),
        &("paid".to_owned(), 0),
        "the shop paid it"
    );
    assert_eq!(paid["user_id"], alice);
    assert_eq!(s.stock(lamp), 8, "a paid order still holds its units");
    s.call(
        "POST",
        &format!("/api/orders/{order}/payments"),
        Some(&alice_t),
        Some("{}"),
    )
    .refused(409, "FAILED_PRECONDITION", "only a pending order");

    // A failed payment leaves the order pending; the next one pays it.
    let second = s.order(&alice_t, lamp, 1);
    pay(&s, &alice_t, second, r#"{"simulate": "fail"}"#);
    let failed = s.wait_order(&alice_t, second, |o| o["payments"][0]["status"] == "failed");
    assert_eq!(failed["status"], "pending");
    pay(&s, &alice_t, second, "{}");
    let paid = s.wait_order(&alice_t, second, |o| o["status"] == "paid");
    assert_eq!(paid["payments"][1]["status"], "succeeded");

    // Admins still mark paid by hand, and the history names them.
    let third = s.order(&alice_t, lamp, 1);
    let by_hand = s
        .call(
            "PUT",
            &format!("/api/orders/{third}/status"),
            Some(&admin),
            Some(r#"{"status": "paid"}"#),
        )
        .expect(200);
    let admin_id = history(&by_hand.json).last().unwrap().1;
    assert!(admin_id > 0 && admin_id != alice, "{:?}", by_hand.json);
    let (ok, out) = s.audit_ok();
    assert!(ok, "{out}");
}

#[test]
fn an_idempotency_key_answers_its_first_payment() {
    let s = silent_provider("pay-keys");
    let admin = s.admin();
    let (_, alice_t) = s.customer("alice");
    let lamp = s.product(&admin, "Lamp", 100, 10);
    let (one, two) = (s.order(&alice_t, lamp, 1), s.order(&alice_t, lamp, 1));
    let start = |order: i64| {
        crate::support::send(
            &s.gateway,
            "POST",
            &format!("/api/orders/{order}/payments"),
            &[
                ("Authorization", &format!("Bearer {alice_t}")),
                ("Idempotency-Key", "pay-1"),
            ],
            Some(b"{}"),
        )
    };
    let first = start(one).expect(201);
    assert_eq!(start(one).expect(201).json["id"], first.json["id"]);
    start(two).refused(409, "FAILED_PRECONDITION", "Idempotency-Key");
}

#[test]
fn forged_stale_replayed_and_duplicate_reports_change_nothing() {
    let s = silent_provider("pay-webhooks");
    let admin = s.admin();
    let (_, alice_t) = s.customer("alice");
    let lamp = s.product(&admin, "Lamp", 700, 5);
    let order = s.order(&alice_t, lamp, 1);
    let p = pay(&s, &alice_t, order, "{}");
    let reference = p["provider_ref"].as_str().unwrap().to_owned();
    let good = report_body(&reference, "succeeded");
    let now = unix_now();

    let unchanged = |why: &str| {
        let o = s
            .call("GET", &format!("/api/orders/{order}"), Some(&alice_t), None)
            .expect(200);
        assert_eq!(o.json["status"], "pending", "{why}");
        assert_eq!(o.json["payments"][0]["status"], "pending", "{why}");
    };
    let unsigned = crate::support::send(
        &s.gateway,
        "POST",
        "/api/payments/webhook",
        &[("Content-Type", "application/json")],
        Some(good.as_bytes()),
    );
    unsigned.refused(401, "UNAUTHENTICATED", "signature");
    unchanged("no signature");
    s.report(&good, "an-attackers-guess-at-the-secret-0000", now)
        .refused(401, "UNAUTHENTICATED", "signature");
    unchanged("wrong secret");
    s.report(&good, WEBHOOK_SECRET, now - 301)
        .refused(401, "UNAUTHENTICATED", "signature");
    unchanged("stale");
    s.report(&good, WEBHOOK_SECRET, now + 301)
        .refused(401, "UNAUTHENTICATED", "signature");
    unchanged("from the future");
    // A signature over other bytes (the same JSON, spaced differently) does not hold.
    let signature = crate::support::sign(WEBHOOK_SECRET, now, good.as_bytes());
    let spaced = good.replace(':', ": ");
    crate::support::send(
        &s.gateway,
        "POST",
        "/api/payments/webhook",
        &[
            ("Content-Type", "application/json"),
            ("Shop-Signature", &signature),
        ],
        Some(spaced.as_bytes()),
    )
    .refused(401, "UNAUTHENTICATED", "signature");
    unchanged("other bytes");
    s.report(&report_body("sim_nobody", "succeeded"), WEBHOOK_SECRET, now)
        .refused(404, "NOT_FOUND", "sim_nobody");
    s.report(r#"{"provider_ref": 5}"#, WEBHOOK_SECRET, now)
        .refused(400, "INVALID_ARGUMENT", "provider_ref");
    unchanged("bad reports");

    // The real report, sent by eight senders at once and then replayed: one payment, once.
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| s.report(&good, WEBHOOK_SECRET, now).status))
            .collect();
        senders.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(answers, vec![200; 8]);
    let replay = s.report(&good, WEBHOOK_SECRET, now).expect(200);
    assert_eq!(replay.json["payment_status"], "succeeded");
    // A late "failed" for the same payment changes nothing either.
    s.report(&report_body(&reference, "failed"), WEBHOOK_SECRET, now)
        .expect(200);
    let o = s
        .call("GET", &format!("/api/orders/{order}"), Some(&alice_t), None)
        .expect(200)
        .json;
    assert_eq!(o["status"], "paid");
    assert_eq!(o["payments"][0]["status"], "succeeded");
    let paid_entries = history(&o).iter().filter(|(st, _)| st == "paid").count();
    assert_eq!(paid_entries, 1);
    let events = s
        .call("GET", "/api/events?limit=1000", Some(&admin), None)
        .expect(200)
        .json;
    let paid_events = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "order.paid" && e["order_id"] == order)
        .count();
    assert_eq!(paid_events, 1);
}

#[test]
fn a_payment_racing_a_cancel_is_refunded_exactly_once() {
    let s = silent_provider("pay-race");
    let admin = s.admin();
    const STOCK: i64 = 100;
    let lamp = s.product(&admin, "Lamp", 300, STOCK);
    // Four customers with five unpaid orders each (under the cap of ten).
    let racers: Vec<String> = (0..4).map(|i| s.customer(&format!("racer{i}")).1).collect();
    let orders: Vec<(i64, String)> = (0..20)
        .map(|i| {
            let token = racers[i % 4].clone();
            (s.order(&token, lamp, 2), token)
        })
        .collect();
    let refs: Vec<String> = orders
        .iter()
        .map(|(id, t)| pay(&s, t, *id, "{}")["provider_ref"].as_str().unwrap().to_owned())
        .collect();
    std::thread::scope(|scope| {
        for ((id, token), reference) in orders.iter().zip(&refs) {
            let s = &s;
            scope.spawn(move || s.report(&report_body(reference, "succeeded"), WEBHOOK_SECRET, unix_now()));
            scope.spawn(move || {
                s.call("DELETE", &format!("/api/orders/{id}"), Some(token), None)
                    .expect(200)
            });
        }
    });
    // Owners may cancel paid orders too, so every order ends cancelled; what the race decides is
    // whether the report found it pending (paid, then cancelled: the cancel refunds) or
    // cancelled (the report is refunded). Either way the money goes back exactly once.
    let held = 0;
    let mut paid_first = 0;
    for (id, token) in &orders {
        let o = s.wait_order(token, *id, |o| {
            o["status"] != "pending" && o["payments"][0]["status"] != "pending"
        });
        let payment = o["payments"][0]["status"].as_str().unwrap().to_owned();
        assert_eq!(
            (o["status"].as_str().unwrap(), payment.as_str()),
            ("cancelled", "refunded"),
            "order {id}"
        );
        let statuses: Vec<String> = history(&o).into_iter().map(|(st, _)| st).collect();
        match statuses.as_slice() {
            [p, c] if p == "pending" && c == "cancelled" => {}
            [p, paid, c] if p == "pending" && paid == "paid" && c == "cancelled" => paid_first += 1,
            other => panic!("order {id}: history {other:?}"),
        }
    }
    let events = s
        .call("GET", "/api/events?limit=1000", Some(&admin), None)
        .expect(200)
        .json;
    let refunds = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "payment.refunded")
        .count();
    assert_eq!(
        refunds,
        orders.len(),
        "one refund per order ({paid_first} were paid first)"
    );
    // The product service follows the cancels; wait for it, then check the books.
    let started = std::time::Instant::now();
    while s.stock(lamp) != STOCK - held {
        assert!(
            started.elapsed().as_secs() < 15,
            "stock {} != {}",
            s.stock(lamp),
            STOCK - held
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, out) = s.audit_ok();
    assert!(ok, "{out}");
}

#[test]
fn money_that_cannot_pay_the_order_is_refunded() {
    let s = silent_provider("pay-refunds");
    let admin = s.admin();
    let (_, alice_t) = s.customer("alice");
    let lamp = s.product(&admin, "Lamp", 400, 10);
    let now = unix_now();
    let status = |order: i64| {
        let o = s
            .call("GET", &format!("/api/orders/{order}"), Some(&alice_t), None)
            .expect(200)
            .json;
        (
            o["status"].as_str().unwrap().to_owned(),
            o["payments"][0]["status"].as_str().unwrap().to_owned(),
        )
    };

    // The provider says it collected another amount than the order's: never paid.
    let short = s.order(&alice_t, lamp, 2);
    let reference = pay(&s, &alice_t, short, "{}")["provider_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"provider_ref": reference, "outcome": "succeeded", "amount_cents": 400}).to_string();
    let a = s.report(&body, WEBHOOK_SECRET, now).expect(200);
    assert_eq!(a.json["payment_status"], "refunded");
    assert_eq!(status(short), ("pending".to_owned(), "refunded".to_owned()));

    // A success delivered after the failure of the same payment: the money goes back.
    let late = s.order(&alice_t, lamp, 1);
    let reference = pay(&s, &alice_t, late, "{}")["provider_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    s.report(&report_body(&reference, "failed"), WEBHOOK_SECRET, now)
        .expect(200);
    assert_eq!(status(late), ("pending".to_owned(), "failed".to_owned()));
    let a = s
        .report(&report_body(&reference, "succeeded"), WEBHOOK_SECRET, now)
        .expect(200);
    assert_eq!(a.json["payment_status"], "refunded");
    assert_eq!(status(late), ("pending".to_owned(), "refunded".to_owned()));

    // The right amount pays.
    let right = json!({"provider_ref": pay(&s, &alice_t, late, "{}")["provider_ref"], "outcome": "succeeded", "amount_cents": 400})
        .to_string();
    s.report(&right, WEBHOOK_SECRET, now).expect(200);
    assert_eq!(status(late).0, "paid");
}

#[test]
fn a_shop_without_a_provider_takes_no_payments_and_refuses_every_report() {
    let s = Stack::start_with(
        "pay-none",
        &["payments.provider=none", "payments.webhook_secret="],
    );
    let admin = s.admin();
    let (_, alice_t) = s.customer("alice");
    let lamp = s.product(&admin, "Lamp", 100, 5);
    let order = s.order(&alice_t, lamp, 1);
    s.call(
        "POST",
        &format!("/api/orders/{order}/payments"),
        Some(&alice_t),
        Some("{}"),
    )
    .refused(409, "FAILED_PRECONDITION", "takes no payments");
    // Without a secret nothing can be signed well enough: even a report signed with the test
    // secret is refused.
    s.report(
        &report_body("sim_anything", "succeeded"),
        WEBHOOK_SECRET,
        unix_now(),
    )
    .refused(401, "UNAUTHENTICATED", "signature");
    let o = s
        .call("GET", &format!("/api/orders/{order}"), Some(&alice_t), None)
        .expect(200);
    assert_eq!(o.json["status"], "pending");
}
