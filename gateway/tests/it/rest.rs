//! The REST API end to end: every route of the default gateway.toml with its success status and
//! its auth rules, the services' errors as HTTP statuses, and the commerce rules seen by a
//! client (the shop's prices, stock that comes back on cancel, the last units sold once).

use serde_json::json;

use crate::support::{Answer, Stack};

#[track_caller]
fn has_request_id(a: &Answer) {
    let id = a.header("x-request-id").unwrap_or_default();
    assert!(!id.is_empty(), "no x-request-id on {:?}", a.raw);
}

#[test]
fn every_route_answers_with_its_status_and_auth_rules() {
    let s = Stack::start("gw-routes");
    let admin = s.admin();

    // Users: register 201, login 200 (inside customer()), get / update / delete.
    let (alice, alice_t) = s.customer("alice");
    let (bob, bob_t) = s.customer("bob");
    let me = format!("/api/users/{alice}");
    let a = s.call("GET", &me, None, None);
    a.refused(401, "UNAUTHENTICATED", "no access token");
    assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"shop\""));
    has_request_id(&a);
    let a = s.call("GET", &me, Some("not-a-token"), None);
    a.refused(401, "UNAUTHENTICATED", "not valid");
    assert!(a.header("www-authenticate").unwrap().contains("invalid_token"));
    let a = s.call("GET", &me, Some(&alice_t), None).expect(200);
    assert_eq!(a.json["username"], "alice");
    assert_eq!(a.json["id"], json!(alice), "64-bit ids are JSON numbers");
    assert!(a.json.get("password").is_none() && a.json.get("password_hash").is_none());
    has_request_id(&a);
    // The gateway lets any signed-in user through; the user service decides ownership.
    s.call("GET", &me, Some(&bob_t), None)
        .refused(403, "PERMISSION_DENIED", "");
    s.call("GET", &me, Some(&admin), None).expect(200);
    let a = s
        .call("PUT", &me, Some(&alice_t), Some(r#"{"full_name": "Alice A."}"#))
        .expect(200);
    assert_eq!(a.json["full_name"], "Alice A.");
    s.call("PUT", &me, Some(&bob_t), Some(r#"{"full_name": "Mallory"}"#))
        .refused(403, "PERMISSION_DENIED", "");

    // Products: admin writes, public reads.
    let new = r#"{"name": "Lamp", "price_cents": 1999, "stock": 10, "category": "test"}"#;
    s.call("POST", "/api/products", None, Some(new))
        .refused(401, "UNAUTHENTICATED", "");
    s.call("POST", "/api/products", Some(&alice_t), Some(new))
        .refused(403, "PERMISSION_DENIED", "admins only");
    let lamp = s
        .call("POST", "/api/products", Some(&admin), Some(new))
        .expect(201);
    assert_eq!(lamp.json["price_cents"], 1999);
    let lamp = lamp.id();
    let chair = s.product(&admin, "Chair", 5000, 3);
    let a = s
        .call("GET", &format!("/api/products/{lamp}"), None, None)
        .expect(200);
    assert_eq!(
        (a.json["name"].as_str(), a.json["stock"].as_i64()),
        (Some("Lamp"), Some(10))
    );
    let a = s
        .call(
            "GET",
            "/api/products?category=test&page_size=1&sort=price_desc",
            None,
            None,
        )
        .expect(200);
    assert_eq!(a.json["total"], 2);
    assert_eq!(a.json["page_size"], 1);
    assert_eq!(a.json["products"][0]["name"], "Chair");
    let path = format!("/api/products/{lamp}");
    s.call("PUT", &path, Some(&alice_t), Some(r#"{"price_cents": 1}"#))
        .refused(403, "PERMISSION_DENIED", "");
    let a = s
        .call("PUT", &path, Some(&admin), Some(r#"{"price_cents": 1500}"#))
        .expect(200);
    assert_eq!(a.json["price_cents"], 1500);

    // Orders: the shop's price, stock reserved, status moves, cancel returns the stock.
    let order = json!({
        "items": [{ "product_id": lamp, "quantity": 2 }],
        "shipping_address": "1 Test Street",
    })
    .to_string();
    s.call("POST", "/api/orders", None, Some(&order))
        .refused(401, "UNAUTHENTICATED", "");
    let o = s
        .call("POST", "/api/orders", Some(&alice_t), Some(&order))
        .expect(201);
    assert_eq!(o.json["user_id"], json!(alice));
    assert_eq!(o.json["total_cents"], 3000);
    assert_eq!(o.json["status"], "pending");
    assert_eq!(s.stock(lamp), 8);
    let o = o.id();
    let path = format!("/api/orders/{o}");
    s.call("GET", &path, Some(&alice_t), None).expect(200);
    s.call("GET", &path, Some(&admin), None).expect(200);
    // Someone else's order is as missing as a missing one: ids cannot be probed.
    s.call("GET", &path, Some(&bob_t), None)
        .refused(404, "NOT_FOUND", "not found");
    let mine = format!("/api/orders/user/{alice}");
    let a = s.call("GET", &mine, Some(&alice_t), None).expect(200);
    assert_eq!(a.json["total"], 1);
    assert_eq!(a.json["orders"][0]["id"], json!(o));
    s.call("GET", &mine, Some(&bob_t), None)
        .refused(403, "PERMISSION_DENIED", "");
    // The owner pays through POST /api/orders/{id}/payments, never by setting the status; an
    // admin may mark an order paid by hand.
    s.call(
        "PUT",
        &format!("{path}/status"),
        Some(&alice_t),
        Some(r#"{"status": "paid"}"#),
    )
    .refused(403, "PERMISSION_DENIED", "starting a payment");
    let a = s
        .call(
            "PUT",
            &format!("{path}/status"),
            Some(&admin),
            Some(r#"{"status": "paid"}"#),
        )
        .expect(200);
    assert_eq!(a.json["status"], "paid");
    let a = s.call("DELETE", &path, Some(&alice_t), None).expect(200);
    assert_eq!(a.json["status"], "cancelled");
    assert_eq!(s.stock(lamp), 10, "cancelling returns the units");
    s.call("DELETE", &path, Some(&alice_t), None);
    assert_eq!(s.stock(lamp), 10, "a second cancel returns nothing more");

    // Deletes answer 204 with no body.
    let a = s
        .call("DELETE", &format!("/api/products/{chair}"), Some(&admin), None)
        .expect(204);
    assert!(a.raw.body.is_empty(), "{:?}", a.raw);
    has_request_id(&a);
    s.call("GET", &format!("/api/products/{chair}"), None, None)
        .refused(404, "NOT_FOUND", "");
    s.call("DELETE", &format!("/api/users/{bob}"), Some(&bob_t), None)
        .expect(204);
    let body = r#"{"username": "bob", "password": "password-123"}"#;
    s.call("POST", "/api/users/login", None, Some(body))
        .refused(401, "UNAUTHENTICATED", "");
}

#[test]
fn service_errors_become_http_statuses_and_change_nothing() {
    let s = Stack::start("gw-errors");
    let admin = s.admin();
    let (alice, alice_t) = s.customer("alice");
    let lamp = s.product(&admin, "Lamp", 1999, 2);

    // INVALID_ARGUMENT -> 400, with the service's sentence.
    let weak = r#"{"username": "carol", "email": "carol@example.com", "password": "short"}"#;
    s.call("POST", "/api/users", None, Some(weak))
        .refused(400, "INVALID_ARGUMENT", "password");
    // ALREADY_EXISTS -> 409.
    let again = r#"{"username": "alice", "email": "other@example.com", "password": "password-123"}"#;
    s.call("POST", "/api/users", None, Some(again))
        .refused(409, "ALREADY_EXISTS", "");
    // UNAUTHENTICATED from the service (a wrong password) -> 401.
    let wrong = r#"{"username": "alice", "password": "password-999"}"#;
    s.call("POST", "/api/users/login", None, Some(wrong))
        .refused(401, "UNAUTHENTICATED", "");
    // NOT_FOUND -> 404.
    s.call("GET", "/api/products/999999", None, None)
        .refused(404, "NOT_FOUND", "999999");
    // FAILED_PRECONDITION -> 409: more than the stock, and an illegal status move.
    let greedy = json!({ "items": [{ "product_id": lamp, "quantity": 3 }], "shipping_address": "x" });
    s.call("POST", "/api/orders", Some(&alice_t), Some(&greedy.to_string()))
        .refused(409, "FAILED_PRECONDITION", "");
    assert_eq!(s.stock(lamp), 2, "a refused order takes nothing");
    let ok = json!({ "items": [{ "product_id": lamp, "quantity": 1 }], "shipping_address": "x" });
    let o = s
        .call("POST", "/api/orders", Some(&alice_t), Some(&ok.to_string()))
        .expect(201)
        .id();
    s.call(
        "PUT",
        &format!("/api/orders/{o}/status"),
        Some(&alice_t),
        Some(r#"{"status": "delivered"}"#),
    )
    .refused(409, "FAILED_PRECONDITION", "");
    // PERMISSION_DENIED from the service -> 403: a customer may neither mark an order paid
    // (payments do that) nor ship it; an admin may mark it paid by hand.
    s.call(
        "PUT",
        &format!("/api/orders/{o}/status"),
        Some(&alice_t),
        Some(r#"{"status": "paid"}"#),
    )
    .refused(403, "PERMISSION_DENIED", "starting a payment");
    s.call(
        "PUT",
        &format!("/api/orders/{o}/status"),
        Some(&admin),
        Some(r#"{"status": "paid"}"#),
    )
    .expect(200);
    s.call(
        "PUT",
        &format!("/api/orders/{o}/status"),
        Some(&alice_t),
        Some(r#"{"status": "shipped"}"#),
    )
    .refused(403, "PERMISSION_DENIED", "");
    let a = s
        .call("GET", &format!("/api/orders/{o}"), Some(&alice_t), None)
        .expect(200);
    assert_eq!(a.json["status"], "paid", "refused moves change nothing");

    // Idempotency-Key reaches the order service: a retry returns the first order.
    let send = |key: &str| {
        let auth = format!("Bearer {alice_t}");
        crate::support::send(
            &s.gateway,
            "POST",
            "/api/orders",
            &[("Authorization", auth.as_str()), ("Idempotency-Key", key)],
            Some(ok.to_string().as_bytes()),
        )
    };
    let first = send("retry-1").expect(201).id();
    let second = send("retry-1").expect(201).id();
    assert_eq!(first, second);
    assert_eq!(s.stock(lamp), 0, "two orders of one unit each, not three");
    let a = s
        .call("GET", &format!("/api/orders/user/{alice}"), Some(&alice_t), None)
        .expect(200);
    assert_eq!(a.json["total"], 2);
}

#[test]
fn parallel_buyers_of_the_last_units_through_the_gateway_buy_exactly_them() {
    let s = Stack::start("gw-last-units");
    let admin = s.admin();
    let (_, t1) = s.customer("ann");
    let (_, t2) = s.customer("ben");
    let lamp = s.product(&admin, "Lamp", 1000, 5);
    let body =
        json!({ "items": [{ "product_id": lamp, "quantity": 1 }], "shipping_address": "x" }).to_string();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let token = if i % 2 == 0 { &t1 } else { &t2 };
                let body = &body;
                let s = &s;
                scope.spawn(move || s.call("POST", "/api/orders", Some(token), Some(body)).status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sold = statuses.iter().filter(|&&c| c == 201).count();
    let refused = statuses.iter().filter(|&&c| c == 409).count();
    assert_eq!((sold, refused), (5, 15), "{statuses:?}");
    assert_eq!(s.stock(lamp), 0);
}

#[test]
fn a_bad_idempotency_key_is_refused_and_a_good_one_makes_retries_safe() {
    let s = Stack::start("gw-idempotency");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1000, 10);
    let (_, alice) = s.customer("alice");
    let auth = format!("Bearer {alice}");
    let body =
        json!({"items": [{"product_id": lamp, "quantity": 1}], "shipping_address": "1 Main St"}).to_string();
    let order = |key: &str| {
        crate::support::send(
            &s.gateway,
            "POST",
            "/api/orders",
            &[("Authorization", auth.as_str()), ("Idempotency-Key", key)],
            Some(body.as_bytes()),
        )
    };
    // Not silently dropped (a retry would then place a second order): refused, naming the header.
    for bad in ["naïve-ключ", &"k".repeat(256)] {
        order(bad).refused(400, "INVALID_ARGUMENT", "Idempotency-Key");
    }
    assert_eq!(s.stock(lamp), 10, "nothing was ordered");
    let first = order("retry me please").expect(201).id();
    let again = order("retry me please").expect(201).id();
    assert_eq!(first, again);
    assert_eq!(s.stock(lamp), 9);
}
