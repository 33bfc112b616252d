//! Tokens that must stop working before they expire, over REST: a customer's after their
//! account is deleted, an admin's after theirs is, a customer's after their role changed or
//! their password did, and a token whose `nbf` is still in the future. The gateway learns revocations from the user
//! service's feed; the promise is "within 5 s", and the figure is printed.

use std::time::{Duration, Instant};

use serde_json::json;
use shop_testkit::tokens::TokenMint;
use shop_testkit::{Launch, sibling_binary};

use crate::support::{GATEWAY_BIN, Stack};

/// The shop promises revoked tokens stop working within this.
const PROMISE: Duration = Duration::from_secs(5);

/// Calls `path` with `token` until it answers 401 "revoked"; returns how long that took.
fn until_revoked(s: &Stack, method: &str, path: &str, token: &str, body: Option<&str>) -> Duration {
    let started = Instant::now();
    loop {
        let a = s.call(method, path, Some(token), body);
        if a.status == 401 {
            a.refused(401, "UNAUTHENTICATED", "revoked");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PROMISE,
            "{method} {path} still answers {} after {:?}",
            a.status,
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn set_role(s: &Stack, username: &str, role: &str) {
    let (status, _, err) = Launch::new(
        sibling_binary(GATEWAY_BIN, "user-service"),
        "set-role",
        s.scratch.path(),
    )
    .arg("set-role")
    .arg("--username")
    .arg(username)
    .arg("--role")
    .arg(role)
    .arg("--data-dir")
    .arg(s.scratch.join("data").to_str().unwrap())
    .run(None);
    assert!(status.success(), "set-role failed: {err}");
}

#[test]
fn a_deleted_customers_token_stops_working_everywhere() {
    let s = Stack::start("gw-revoke-customer");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1000, 10);
    let (alice, token) = s.customer("alice");
    let order = s
        .call(
            "POST",
            "/api/orders",
            Some(&token),
            Some(
                &json!({"items": [{"product_id": lamp, "quantity": 1}], "shipping_address": "1 Main St"})
                    .to_string(),
            ),
        )
        .expect(201)
        .id();
    let (order_path, mine, me) = (
        format!("/api/orders/{order}"),
        format!("/api/orders/user/{alice}"),
        format!("/api/users/{alice}"),
    );
    s.call("GET", &order_path, Some(&token), None).expect(200);

    s.call("DELETE", &me, Some(&token), None).expect(204);
    let took = until_revoked(&s, "GET", &order_path, &token, None);
    eprintln!("a deleted customer's token was refused {took:?} after the delete");
    // Each of these the owner may do with a live token (a customer may cancel, not mark paid).
    let cancel = json!({"status": "cancelled"}).to_string();
    for (method, path, body) in [
        ("GET", mine.as_str(), None),
        ("PUT", &format!("{order_path}/status"), Some(cancel.as_str())),
        ("DELETE", order_path.as_str(), None),
        ("GET", me.as_str(), None),
        ("PUT", me.as_str(), Some(r#"{"full_name": "Ghost"}"#)),
    ] {
        s.call(method, path, Some(&token), body)
            .refused(401, "UNAUTHENTICATED", "revoked");
    }
    // Nothing the revoked token asked for happened.
    let o = s.call("GET", &order_path, Some(&admin), None).expect(200);
    assert_eq!(o.json["status"], "pending");
    assert_eq!(s.stock(lamp), 9);
}

#[test]
fn a_deleted_admins_token_and_a_changed_roles_token_stop_working() {
    let s = Stack::start("gw-revoke-admin");
    let (alice, alice_token) = s.customer("alice");
    let (bob, customer_token) = s.customer("bob");

    // Bob becomes an admin: his customer token was issued under his old role and is revoked;
    // a new login gives an admin token that works.
    set_role(&s, "bob", "admin");
    let took = until_revoked(&s, "GET", &format!("/api/users/{bob}"), &customer_token, None);
    eprintln!("a token from before a role change was refused {took:?} after it");
    let bob_admin = s.login("bob", "password-123");
    let product = json!({"name": "Desk", "price_cents": 5000, "stock": 3}).to_string();
    s.call("POST", "/api/products", Some(&bob_admin), Some(&product))
        .expect(201);
    s.call("GET", &format!("/api/users/{alice}"), Some(&bob_admin), None)
        .expect(200);

    // Bob's admin account is deleted (by himself): his admin token stops working everywhere.
    s.call("DELETE", &format!("/api/users/{bob}"), Some(&bob_admin), None)
        .expect(204);
    let took = until_revoked(&s, "POST", "/api/products", &bob_admin, Some(&product));
    eprintln!("a deleted admin's token was refused {took:?} after the delete");
    s.call("GET", &format!("/api/users/{alice}"), Some(&bob_admin), None)
        .refused(401, "UNAUTHENTICATED", "revoked");
    s.call(
        "GET",
        &format!("/api/orders/user/{alice}"),
        Some(&bob_admin),
        None,
    )
    .refused(401, "UNAUTHENTICATED", "revoked");
    s.call("DELETE", &format!("/api/users/{alice}"), Some(&bob_admin), None)
        .refused(401, "UNAUTHENTICATED", "revoked");
    // Alice, untouched, goes on.
    s.call("GET", &format!("/api/users/{alice}"), Some(&alice_token), None)
        .expect(200);
    let m = s.call("GET", "/metrics", None, None).expect(200);
    assert!(m.raw.body.contains("gateway_revoked_users 1"), "{}", m.raw.body);
}

#[test]
fn a_token_that_is_not_valid_yet_is_refused() {
    let s = Stack::start("gw-nbf");
    let (alice, _) = s.customer("alice");
    // Signed with the shop's own key, so only `nbf` is wrong.
    let mint = TokenMint::load(&s.scratch.join("data/keys/token-signing.pem"));
    let mut claims = mint.claims(alice, "customer");
    claims.nbf = Some(claims.iat + 3600);
    let early = mint.sign(&claims);
    s.call("GET", &format!("/api/users/{alice}"), Some(&early), None)
        .refused(401, "UNAUTHENTICATED", "not valid");
    claims.nbf = Some(claims.iat);
    let ready = mint.sign(&claims);
    s.call("GET", &format!("/api/users/{alice}"), Some(&ready), None)
        .expect(200);
}

#[test]
fn a_new_password_signs_out_every_older_token() {
    let s = Stack::start("gw-revoke-password");
    let admin = s.admin();
    let (alice, phone) = s.customer("alice");
    let laptop = s.login("alice", "password-123");
    let (bob, bobs) = s.customer("bob");
    let me = format!("/api/users/{alice}");

    // Alice changes her password from her phone: the phone's token and the laptop's (which a
    // thief may hold) stop working; the new password signs her in again.
    let change = json!({"password": "a-brand-new-one", "current_password": "password-123"}).to_string();
    s.call("PUT", &me, Some(&phone), Some(&change)).expect(200);
    let took = until_revoked(&s, "GET", &me, &laptop, None);
    eprintln!("a token from before a password change was refused {took:?} after it");
    s.call("GET", &me, Some(&phone), None)
        .refused(401, "UNAUTHENTICATED", "revoked");
    let fresh = s.login("alice", "a-brand-new-one");
    s.call("GET", &me, Some(&fresh), None).expect(200);
    let old = json!({"username": "alice", "password": "password-123"}).to_string();
    s.call("POST", "/api/users/login", None, Some(&old))
        .refused(401, "UNAUTHENTICATED", "wrong");

    // An admin's reset signs bob out too; changing only a name signs no one out.
    s.call(
        "PUT",
        &format!("/api/users/{bob}"),
        Some(&admin),
        Some(r#"{"password": "reset-by-admin"}"#),
    )
    .expect(200);
    until_revoked(&s, "GET", &format!("/api/users/{bob}"), &bobs, None);
    s.call("PUT", &me, Some(&fresh), Some(r#"{"full_name": "Alice L."}"#))
        .expect(200);
    std::thread::sleep(Duration::from_millis(1500));
    s.call("GET", &me, Some(&fresh), None).expect(200);
    s.call("GET", &format!("/api/users/{bob}"), Some(&admin), None)
        .expect(200);
}
