//! The cart end to end: lines set, changed and removed at today's prices, only by their owner;
//! input limits; checkout placing the order like POST /api/orders (idempotency included) and
//! emptying the cart only when the order exists.

use serde_json::{Value, json};

use crate::support::Stack;

fn put(s: &Stack, token: &str, product: i64, quantity: i64) -> crate::support::Answer {
    s.call(
        "PUT",
        &format!("/api/cart/items/{product}"),
        Some(token),
        Some(&json!({ "quantity": quantity }).to_string()),
    )
}

fn lines(cart: &Value) -> Vec<(i64, i64)> {
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["product_id"].as_i64().unwrap(), i["quantity"].as_i64().unwrap()))
        .collect()
}

#[test]
fn a_cart_is_kept_priced_today_and_checked_out_once() {
    let s = Stack::start("cart");
    let admin = s.admin();
    let (_, alice) = s.customer("alice");
    let (_, bob) = s.customer("bob");
    let tea = s.product(&admin, "Tea", 450, 10);
    let cup = s.product(&admin, "Cup", 1200, 2);

    let empty = s.call("GET", "/api/cart", Some(&alice), None).expect(200);
    assert_eq!(empty.json["total_cents"], 0);
    s.call("GET", "/api/cart", None, None)
        .refused(401, "UNAUTHENTICATED", "");
    put(&s, &alice, tea, 2).expect(200);
    let cart = put(&s, &alice, cup, 1).expect(200).json;
    assert_eq!(lines(&cart), vec![(tea, 2), (cup, 1)]);
    assert_eq!(cart["total_cents"], 2 * 450 + 1200);
    assert_eq!(cart["items"][0]["name"], "Tea");
    assert_eq!(cart["items"][0]["line_total_cents"], 900);
    let cart = put(&s, &alice, tea, 3).expect(200).json;
    assert_eq!(
        lines(&cart),
        vec![(tea, 3), (cup, 1)],
        "a set replaces the quantity"
    );

    // Limits and bad input change nothing.
    put(&s, &alice, tea, 0).refused(400, "INVALID_ARGUMENT", "quantity");
    put(&s, &alice, tea, 1000).refused(400, "INVALID_ARGUMENT", "quantity");
    put(&s, &alice, 999_999, 1).refused(404, "NOT_FOUND", "999999");
    s.call(
        "PUT",
        &format!("/api/cart/items/{tea}"),
        Some(&alice),
        Some(r#"{"quantity": 1, "unit_price_cents": 1}"#),
    )
    .refused(400, "INVALID_ARGUMENT", "unit_price_cents");
    // Bob's cart is his own.
    assert_eq!(
        lines(&s.call("GET", "/api/cart", Some(&bob), None).expect(200).json),
        vec![]
    );
    s.call("DELETE", &format!("/api/cart/items/{tea}"), Some(&bob), None)
        .expect(200);

    // Prices are today's until checkout.
    s.call(
        "PUT",
        &format!("/api/products/{tea}"),
        Some(&admin),
        Some(r#"{"price_cents": 500}"#),
    )
    .expect(200);
    let cart = s.call("GET", "/api/cart", Some(&alice), None).expect(200).json;
    assert_eq!(cart["total_cents"], 3 * 500 + 1200);

    // A checkout that fails (not enough cups) keeps the cart.
    put(&s, &alice, cup, 5).expect(200);
    let address = r#"{"shipping_address": "1 Main St"}"#;
    s.call("POST", "/api/cart/checkout", Some(&alice), Some(address))
        .refused(409, "FAILED_PRECONDITION", "");
    assert_eq!(
        lines(&s.call("GET", "/api/cart", Some(&alice), None).expect(200).json),
        vec![(tea, 3), (cup, 5)]
    );
    assert_eq!((s.stock(tea), s.stock(cup)), (10, 2), "nothing held");
    s.call("POST", "/api/cart/checkout", Some(&alice), Some("{}"))
        .refused(400, "INVALID_ARGUMENT", "shipping_address");

    // Checkout with a key, twice: one order, the cart emptied once.
    let cart = s
        .call("DELETE", &format!("/api/cart/items/{cup}"), Some(&alice), None)
        .expect(200)
        .json;
    assert_eq!(lines(&cart), vec![(tea, 3)]);
    let checkout = |key: &str| {
        crate::support::send(
            &s.gateway,
            "POST",
            "/api/cart/checkout",
            &[
                ("Authorization", &format!("Bearer {alice}")),
                ("Idempotency-Key", key),
            ],
            Some(address.as_bytes()),
        )
    };
    let order = checkout("cart-1").expect(201);
    assert_eq!(order.json["status"], "pending");
    assert_eq!(order.json["total_cents"], 1500, "priced at checkout");
    assert_eq!(order.json["items"][0]["quantity"], 3);
    assert_eq!(
        lines(&s.call("GET", "/api/cart", Some(&alice), None).expect(200).json),
        vec![]
    );
    let again = checkout("cart-1");
    assert_eq!(again.status, 201, "{:?}", again.raw);
    assert_eq!(again.json["id"], order.json["id"]);
    assert_eq!(s.stock(tea), 7, "held once");
    s.call("POST", "/api/cart/checkout", Some(&alice), Some(address))
        .refused(409, "FAILED_PRECONDITION", "empty");

    // A deleted product shows as unavailable and blocks checkout until removed.
    put(&s, &alice, cup, 1).expect(200);
    s.call("DELETE", &format!("/api/products/{cup}"), Some(&admin), None)
        .expect(204);
    let cart = s.call("GET", "/api/cart", Some(&alice), None).expect(200).json;
    assert_eq!(cart["items"][0]["available"], false);
    assert_eq!(cart["total_cents"], 0);
    s.call("POST", "/api/cart/checkout", Some(&alice), Some(address))
        .refused(404, "NOT_FOUND", &cup.to_string());
}

#[test]
fn a_cart_holds_at_most_fifty_lines() {
    let s = Stack::start("cart-cap");
    let admin = s.admin();
    let (_, alice) = s.customer("alice");
    let products: Vec<i64> = (0..51)
        .map(|i| s.product(&admin, &format!("P{i}"), 100, 5))
        .collect();
    for p in &products[..50] {
        put(&s, &alice, *p, 1).expect(200);
    }
    put(&s, &alice, products[50], 1).refused(409, "FAILED_PRECONDITION", "at most 50");
    put(&s, &alice, products[0], 2).expect(200);
    let order = s
        .call(
            "POST",
            "/api/cart/checkout",
            Some(&alice),
            Some(r#"{"shipping_address": "x"}"#),
        )
        .expect(201);
    assert_eq!(order.json["items"].as_array().unwrap().len(), 50);
}
