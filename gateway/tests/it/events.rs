//! The events feed end to end: every order change as an event, in id order, with its data;
//! admins only; a long poll answered by the next change; and the same feed, nothing lost or
//! repeated, after the order service restarts.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Stack, call};

fn feed(s: &Stack, admin: &str, after: i64) -> (Vec<Value>, i64) {
    let a = s
        .call(
            "GET",
            &format!("/api/events?after={after}&limit=1000"),
            Some(admin),
            None,
        )
        .expect(200);
    let events = a.json["events"].as_array().unwrap().clone();
    (events, a.json["next_after"].as_i64().unwrap())
}

fn summary(events: &[Value]) -> Vec<(String, i64, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["order_id"].as_i64().unwrap(),
                e["data"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_order_change_is_an_event_in_order_and_survives_a_restart() {
    let mut s = Stack::start("events");
    let admin = s.admin();
    let (alice, alice_t) = s.customer("alice");
    let lamp = s.product(&admin, "Lamp", 250, 10);
    s.call("GET", "/api/events", Some(&alice_t), None)
        .refused(403, "PERMISSION_DENIED", "admins");
    s.call("GET", "/api/events?limit=0", Some(&admin), None)
        .refused(400, "INVALID_ARGUMENT", "limit");
    s.call("GET", "/api/events?wait=31", Some(&admin), None)
        .refused(400, "INVALID_ARGUMENT", "wait");

    let shipped = s.order(&alice_t, lamp, 2);
    s.call(
        "POST",
        &format!("/api/orders/{shipped}/payments"),
        Some(&alice_t),
        Some("{}"),
    )
    .expect(201);
    s.wait_order(&alice_t, shipped, |o| o["status"] == "paid");
    for to in ["shipped", "delivered"] {
        s.call(
            "PUT",
            &format!("/api/orders/{shipped}/status"),
            Some(&admin),
            Some(&format!(r#"{{"status": "{to}"}}"#)),
        )
        .expect(200);
    }
    let cancelled = s.order(&alice_t, lamp, 1);
    s.call(
        "DELETE",
        &format!("/api/orders/{cancelled}"),
        Some(&alice_t),
        None,
    )
    .expect(200);
    let failed_pay = s.order(&alice_t, lamp, 1);
    s.call(
        "POST",
        &format!("/api/orders/{failed_pay}/payments"),
        Some(&alice_t),
        Some(r#"{"simulate": "fail"}"#),
    )
    .expect(201);
    s.wait_order(&alice_t, failed_pay, |o| o["payments"][0]["status"] == "failed");

    let (events, next) = feed(&s, &admin, 0);
    let want = vec![
        ("order.created".to_owned(), shipped, "pending".to_owned()),
        ("order.paid".to_owned(), shipped, "paid".to_owned()),
        ("order.shipped".to_owned(), shipped, "shipped".to_owned()),
        ("order.delivered".to_owned(), shipped, "delivered".to_owned()),
        ("order.created".to_owned(), cancelled, "pending".to_owned()),
        ("order.cancelled".to_owned(), cancelled, "cancelled".to_owned()),
        ("order.created".to_owned(), failed_pay, "pending".to_owned()),
        ("payment.failed".to_owned(), failed_pay, "pending".to_owned()),
    ];
    assert_eq!(summary(&events), want);
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(next, *ids.last().unwrap());
    let paid = &events[1]["data"];
    assert_eq!(paid["previous_status"], "pending");
    assert_eq!(
        (paid["user_id"].as_i64(), paid["total_cents"].as_i64()),
        (Some(alice), Some(500))
    );
    assert!(paid["payment_id"].as_i64().unwrap() > 0 && paid["amount_cents"] == 500);
    assert_eq!(events[5]["data"]["by"], alice, "the owner cancelled");
    let (page, page_next) = {
        let a = s
            .call("GET", "/api/events?after=0&limit=3", Some(&admin), None)
            .expect(200);
        (
            a.json["events"].as_array().unwrap().len(),
            a.json["next_after"].as_i64().unwrap(),
        )
    };
    assert_eq!((page, page_next), (3, ids[2]));

    // A long poll waits for the next change and answers with it.
    let poll = {
        let (gateway, admin, next) = (&s.gateway, admin.clone(), next);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(move || {
                let started = Instant::now();
                let a = call(
                    gateway,
                    "GET",
                    &format!("/api/events?after={next}&wait=20"),
                    Some(&admin),
                    None,
                );
                (a, started.elapsed())
            });
            std::thread::sleep(Duration::from_millis(700));
            s.call(
                "DELETE",
                &format!("/api/orders/{failed_pay}"),
                Some(&alice_t),
                None,
            )
            .expect(200);
            waiter.join().unwrap()
        })
    };
    let (a, took) = poll;
    let polled = summary(a.json["events"].as_array().unwrap());
    let polled_id = a.json["events"][0]["id"].as_i64().unwrap();
    assert_eq!(
        polled,
        vec![("order.cancelled".to_owned(), failed_pay, "cancelled".to_owned())]
    );
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let quiet = Instant::now();
    let (none, same) = {
        let a = s
            .call(
                "GET",
                &format!("/api/events?after={}&wait=1", polled_id),
                Some(&admin),
                None,
            )
            .expect(200);
        (
            a.json["events"].as_array().unwrap().len(),
            a.json["next_after"].as_i64().unwrap(),
        )
    };
    assert_eq!((none, same), (0, polled_id), "nothing new: next_after stays");
    assert!(quiet.elapsed() >= Duration::from_millis(900));

    // After a restart (and a kill -9), the feed is the same, and new events follow it.
    let (before, _) = feed(&s, &admin, 0);
    s.order.terminate();
    s.order = s.order_launch.start();
    s.wait_instances(&s.gateway, "orders", 1);
    s.order.kill9();
    s.order = s.order_launch.start();
    let started = Instant::now();
    let after = loop {
        let a = s.call("GET", "/api/events?limit=1000", Some(&admin), None);
        if a.status == 200 {
            break a.json["events"].as_array().unwrap().clone();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", a.raw);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(after, before);
    let more = s.order(&alice_t, lamp, 1);
    let (tail, _) = feed(&s, &admin, polled_id);
    assert_eq!(
        summary(&tail),
        vec![("order.created".to_owned(), more, "pending".to_owned())]
    );
    assert!(tail[0]["id"].as_i64().unwrap() > polled_id);
}

#[test]
fn old_events_leave_the_feed_and_a_reader_behind_them_is_told() {
    let s = Stack::start_with("events-keep", &["events.keep=2s", "recovery.interval=1s"]);
    let admin = s.admin();
    let (_, alice_t) = s.customer("alice");
    let lamp = s.product(&admin, "Lamp", 250, 10);
    let first = s.order(&alice_t, lamp, 1);
    s.call("DELETE", &format!("/api/orders/{first}"), Some(&alice_t), None)
        .expect(200);
    let (events, caught_up) = feed(&s, &admin, 0);
    assert_eq!(events.len(), 2, "created and cancelled");
    let behind = events[0]["id"].as_i64().unwrap();

    // Both grow older than two seconds; a recovery pass removes them.
    let started = Instant::now();
    while !feed(&s, &admin, 0).0.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "old events were never removed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A reader that had seen only the first is told it missed one, never silently moved on.
    s.call("GET", &format!("/api/events?after={behind}"), Some(&admin), None)
        .refused(400, "OUT_OF_RANGE", "after=0");
    // A reader that had seen both goes on as before, and so does a new one.
    assert!(feed(&s, &admin, caught_up).0.is_empty());
    let second = s.order(&alice_t, lamp, 1);
    for after in [caught_up, 0] {
        let (events, _) = feed(&s, &admin, after);
        assert_eq!(
            summary(&events),
            [("order.created".to_owned(), second, "pending".to_owned())]
        );
        assert!(
            events[0]["id"].as_i64().unwrap() > caught_up,
            "ids are never reused"
        );
    }
}
