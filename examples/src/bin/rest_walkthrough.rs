//! The shop through its REST API, as a client sees it: browse and search the catalogue,
//! register, log in, order (priced by the shop, safe to retry with an idempotency key), pay
//! through the payment provider (whose signed report, about a second later, marks the order
//! paid), order again and cancel, and watch the stock go down and come back; fill a cart, change
//! it and check it out; and read, as the admin, the events the walk left in the order feed.
//! Every call is printed with its answer; an unexpected status stops the walk with an error
//! (exit 1), so this doubles as the end-to-end check of a running stack.
//!
//! ```text
//! just up && cargo run -p shop-examples --bin rest-walkthrough            # gateway on :8080
//! cargo run -p shop-examples --bin rest-walkthrough -- http://host:8080   # another gateway
//! ```
//!
//! The admin login (for the events feed) comes from SHOP_ADMIN_USER / SHOP_ADMIN_PASSWORD, or
//! from the password `just up` generated in .run/admin-password.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error>;

#[derive(Clone)]
struct Shop {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
    /// Print each call and its answer (off for polls).
    show: bool,
}

/// How long a payment may take to turn its order paid: the simulated provider reports about a
/// second after the payment starts; the rest is slack for a loaded machine.
const PAYMENT_WAIT: Duration = Duration::from_secs(10);

impl Shop {
    /// The same shop, not printing its calls.
    fn quiet(&self) -> Shop {
        Shop {
            show: false,
            ..self.clone()
        }
    }

    /// One call: prints it and its answer (unless quiet), and fails unless the status is
    /// `expect`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
        expect: u16,
    ) -> Result<Value, Error> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match &body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        if self.show {
            println!(
                "> {method} {path}{}",
                if body.is_empty() {
                    String::new()
                } else {
                    format!("  {}", String::from_utf8_lossy(&body))
                }
            );
        }
        let res = self.http.request(req.body(Full::new(body))?).await.map_err(|e| {
            format!(
                "cannot reach the gateway at {} ({e}); is the stack up (`just up`)?",
                self.base
            )
        })?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        if self.show {
            let shown: String = text.chars().take(300).collect();
            println!(
                "< {status} {shown}{}\n",
                if text.chars().count() > 300 { " ..." } else { "" }
            );
        }
        if status != expect {
            return Err(format!("{method} {path}: expected {expect}, got {status}: {text}").into());
        }
        Ok(if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        })
    }
}

fn number(v: &Value, key: &str) -> Result<i64, Error> {
    v[key]
        .as_i64()
        .ok_or_else(|| format!("no number {key:?} in {v}").into())
}

/// The elements of a JSON list (none when the field is absent: an empty list may be left out).
fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map_or(&[], Vec::as_slice)
}

/// The admin's token: the login from SHOP_ADMIN_USER / SHOP_ADMIN_PASSWORD, or the password
/// `just up` generated. The login is not printed (it carries the password).
async fn admin_login(shop: &Shop) -> Result<String, Error> {
    let user = std::env::var("SHOP_ADMIN_USER").unwrap_or_else(|_| "admin".to_owned());
    let password = match std::env::var("SHOP_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => std::fs::read_to_string(".run/admin-password")
            .map(|s| s.trim().to_owned())
            .map_err(|e| {
                format!("set SHOP_ADMIN_PASSWORD or run `just up` first (.run/admin-password: {e})")
            })?,
    };
    let login = shop
        .quiet()
        .call(
            Method::POST,
            "/api/users/login",
            None,
            &[],
            Some(json!({ "username": user, "password": password })),
            200,
        )
        .await?;
    println!("(logged in as the admin, {user:?}; the login is not shown)\n");
    Ok(login["access_token"]
        .as_str()
        .ok_or("no access_token for the admin")?
        .to_owned())
}

/// Reads the order until it is paid (quietly); returns it and how long that took. Fails after
/// [`PAYMENT_WAIT`], or at once if it leaves `pending` for anything but `paid`.
async fn wait_paid(shop: &Shop, order_id: i64, token: Option<&str>) -> Result<(Value, Duration), Error> {
    let started = Instant::now();
    let path = format!("/api/orders/{order_id}");
    loop {
        let order = shop
            .quiet()
            .call(Method::GET, &path, token, &[], None, 200)
            .await?;
        let status = order["status"].as_str().unwrap_or_default();
        if status == "paid" {
            return Ok((order, started.elapsed()));
        }
        if status != "pending" || started.elapsed() > PAYMENT_WAIT {
            return Err(format!(
                "order {order_id} is {status:?} {:.1} s after its payment started, not paid; its payments: \
                 {}; does the order service's payments.webhook_url reach this gateway?",
                started.elapsed().as_secs_f64(),
                order["payments"]
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Who made a change: a user's id, or 0 for the shop itself (a payment report, expiry).
fn who(by: &Value) -> String {
    match by.as_i64().unwrap_or(0) {
        0 => "the shop".to_owned(),
        id => format!("user {id}"),
    }
}

/// One line for an event of the feed.
fn event_line(e: &Value) -> String {
    let d = &e["data"];
    let text = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
    let (status, previous) = (text("status"), text("previous_status"));
    let moved = if previous.is_empty() {
        status
    } else {
        format!("{previous} -> {status}")
    };
    let by = who(&d["by"]);
    let payment = match d["payment_id"].as_i64().unwrap_or(0) {
        0 => String::new(),
        id => format!(", payment #{id}"),
    };
    format!(
        "  #{} {:<16} order #{}: {moved}, by {by}{payment}",
        e["id"],
        e["type"].as_str().unwrap_or_default(),
        e["order_id"]
    )
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let shop = Shop {
        base: base.trim_end_matches('/').to_owned(),
        http: Client::builder(TokioExecutor::new()).build_http(),
        show: true,
    };
    let get = Method::GET;

    println!("== Browse and search (no account needed)\n");
    let page = shop
        .call(
            get.clone(),
            "/api/products?page=1&page_size=3&sort=price_asc",
            None,
            &[],
            None,
            200,
        )
        .await?;
    println!("{} products in the catalogue\n", number(&page, "total")?);
    shop.call(
        get.clone(),
        "/api/products?q=%E6%89%8B%E6%9C%BA&page_size=3",
        None,
        &[],
        None,
        200,
    )
    .await?; // q=手机
    shop.call(
        get.clone(),
        "/api/products?q=phone&page_size=3",
        None,
        &[],
        None,
        200,
    )
    .await?;
    // The first product with enough stock for two orders.
    let listed = shop
        .call(get.clone(), "/api/products?page_size=100", None, &[], None, 200)
        .await?;
    let product = listed["products"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["stock"].as_i64().unwrap_or(0) >= 3))
        .cloned()
        .ok_or("no product with at least 3 in stock; reseed with `just up` on a fresh .run/")?;
    let product_id = number(&product, "id")?;
    let product_path = format!("/api/products/{product_id}");
    // Two others for the cart, so that its units do not blur the stock counts below.
    let for_cart: Vec<i64> = listed["products"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["stock"].as_i64().unwrap_or(0) >= 2)
                .filter_map(|p| p["id"].as_i64())
                .filter(|id| *id != product_id)
                .take(2)
                .collect()
        })
        .unwrap_or_default();
    let [cart_a, cart_b] = for_cart[..] else {
        return Err("fewer than three products in stock; reseed with `just up` on a fresh .run/".into());
    };
    let stock_at_start = number(
        &shop
            .call(get.clone(), &product_path, None, &[], None, 200)
            .await?,
        "stock",
    )?;

    println!("== The admin notes where the order events feed ends\n");
    let admin = admin_login(&shop).await?;
    let admin = Some(admin.as_str());
    let mut feed_end = 0;
    loop {
        let page = shop
            .quiet()
            .call(
                get.clone(),
                &format!("/api/events?after={feed_end}&limit=1000"),
                admin,
                &[],
                None,
                200,
            )
            .await?;
        let next = page["next_after"].as_i64().unwrap_or(feed_end);
        if next == feed_end {
            break;
        }
        feed_end = next;
    }
    println!("The feed ends at event {feed_end}; the walk's events will follow it.\n");

    println!("== An account\n");
    let name = format!(
        "walker{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 1_000_000_000
    );
    let password = "correct horse battery";
    let user = shop
        .call(
            Method::POST,
            "/api/users",
            None,
            &[],
            Some(json!({ "username": name, "email": format!("{name}@example.com"), "password": password, "full_name": "Walker" })),
            201,
        )
        .await?;
    let user_id = number(&user, "id")?;
    let login = shop
        .call(
            Method::POST,
            "/api/users/login",
            None,
            &[],
            Some(json!({ "username": name, "password": password })),
            200,
        )
        .await?;
    let token = login["access_token"]
        .as_str()
        .ok_or("no access_token")?
        .to_owned();
    let token = Some(token.as_str());
    shop.call(
        get.clone(),
        &format!("/api/users/{user_id}"),
        token,
        &[],
        None,
        200,
    )
    .await?;
    shop.call(
        get.clone(),
        &format!("/api/users/{user_id}"),
        None,
        &[],
        None,
        401,
    )
    .await?;

    println!("== Order two, priced by the shop (a client-sent price is refused)\n");
    shop.call(
        Method::POST,
        "/api/orders",
        token,
        &[],
        Some(json!({ "items": [{ "product_id": product_id, "quantity": 2, "price_cents": 1 }], "shipping_address": "1 Main St" })),
        400,
    )
    .await?;
    let key = format!("walk-{name}");
    let order_body =
        json!({ "items": [{ "product_id": product_id, "quantity": 2 }], "shipping_address": "1 Main St" });
    let order = shop
        .call(
            Method::POST,
            "/api/orders",
            token,
            &[("idempotency-key", &key)],
            Some(order_body.clone()),
            201,
        )
        .await?;
    let order_id = number(&order, "id")?;
    println!("The same request again with the same Idempotency-Key returns the same order:\n");
    let again = shop
        .call(
            Method::POST,
            "/api/orders",
            token,
            &[("idempotency-key", &key)],
            Some(order_body),
            201,
        )
        .await?;
    if number(&again, "id")? != order_id {
        return Err("a retried order made a second order".into());
    }
    let stock = number(
        &shop
            .call(get.clone(), &product_path, None, &[], None, 200)
            .await?,
        "stock",
    )?;
    if stock != stock_at_start - 2 {
        return Err(format!("stock {stock_at_start} -> {stock}, expected -2").into());
    }

    println!("== Pay: a customer cannot mark the order paid, but starts a payment\n");
    shop.call(
        Method::PUT,
        &format!("/api/orders/{order_id}/status"),
        token,
        &[],
        Some(json!({ "status": "paid" })),
        403,
    )
    .await?;
    let payment = shop
        .call(
            Method::POST,
            &format!("/api/orders/{order_id}/payments"),
            token,
            &[],
            Some(json!({})),
            201,
        )
        .await?;
    println!(
        "Payment #{} of {} cents is {}; the provider reports to the gateway's webhook in about a second.\n",
        number(&payment, "id")?,
        number(&payment, "amount_cents")?,
        payment["status"].as_str().unwrap_or_default()
    );
    let (paid, took) = wait_paid(&shop, order_id, token).await?;
    println!(
        "Order #{order_id} is paid {:.1} s later (payment {}); its history: {}.\n",
        took.as_secs_f64(),
        list(&paid, "payments")
            .last()
            .and_then(|p| p["status"].as_str())
            .unwrap_or("?"),
        list(&paid, "history")
            .iter()
            .map(|h| format!(
                "{} by {}",
                h["status"].as_str().unwrap_or("?"),
                who(&h["changed_by"])
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!("== Order one more, cancel it, and the unit comes back\n");
    let second = shop
        .call(
            Method::POST,
            "/api/orders",
            token,
            &[],
            Some(json!({ "items": [{ "product_id": product_id, "quantity": 1 }], "shipping_address": "1 Main St" })),
            201,
        )
        .await?;
    let second_id = number(&second, "id")?;
    let during = number(
        &shop
            .call(get.clone(), &product_path, None, &[], None, 200)
            .await?,
        "stock",
    )?;
    shop.call(
        Method::DELETE,
        &format!("/api/orders/{second_id}"),
        token,
        &[],
        None,
        200,
    )
    .await?;
    let after = number(
        &shop
            .call(get.clone(), &product_path, None, &[], None, 200)
            .await?,
        "stock",
    )?;
    if during != stock_at_start - 3 || after != stock_at_start - 2 {
        return Err(format!("stock {stock_at_start} -> {during} -> {after}, expected -3 then -2").into());
    }
    shop.call(
        get.clone(),
        &format!("/api/orders/user/{user_id}?page_size=10"),
        token,
        &[],
        None,
        200,
    )
    .await?;

    println!("== A cart: add two products, change one, check it out\n");
    let item = |id: i64| format!("/api/cart/items/{id}");
    for id in [cart_a, cart_b] {
        shop.call(
            Method::PUT,
            &item(id),
            token,
            &[],
            Some(json!({ "quantity": 1 })),
            200,
        )
        .await?;
    }
    shop.call(
        Method::PUT,
        &item(cart_a),
        token,
        &[],
        Some(json!({ "quantity": 2 })),
        200,
    )
    .await?;
    let cart = shop.call(get.clone(), "/api/cart", token, &[], None, 200).await?;
    let cart_total = number(&cart, "total_cents")?;
    println!(
        "The cart holds {} lines, {cart_total} cents at today's prices (fixed only at checkout).\n",
        list(&cart, "items").len()
    );
    let placed = shop
        .call(
            Method::POST,
            "/api/cart/checkout",
            token,
            &[],
            Some(json!({ "shipping_address": "1 Main St" })),
            201,
        )
        .await?;
    let placed_id = number(&placed, "id")?;
    if number(&placed, "total_cents")? != cart_total {
        return Err(format!("the cart said {cart_total} cents, its order {placed}").into());
    }
    let emptied = shop.call(get.clone(), "/api/cart", token, &[], None, 200).await?;
    if !list(&emptied, "items").is_empty() {
        return Err(format!("the cart is not empty after checkout: {emptied}").into());
    }
    println!(
        "Order #{placed_id} placed from the cart, which is empty again. Left unpaid, it expires after \
         the shop's pay-within period (orders.pay_within, 30 min by default) and its units go back.\n"
    );

    println!("== The admin reads the events the walk added to the feed\n");
    let feed = shop
        .call(
            get.clone(),
            &format!("/api/events?after={feed_end}&limit=100"),
            admin,
            &[],
            None,
            200,
        )
        .await?;
    let events = list(&feed, "events");
    for e in events {
        println!("{}", event_line(e));
    }
    println!();
    let has = |kind: &str, order: i64| events.iter().any(|e| e["type"] == kind && e["order_id"] == order);
    for (kind, order) in [
        ("order.created", order_id),
        ("order.paid", order_id),
        ("order.cancelled", second_id),
        ("order.created", placed_id),
    ] {
        if !has(kind, order) {
            return Err(format!("no {kind} event for order {order} in the feed").into());
        }
    }

    println!(
        "Walked: {stock_at_start} in stock, two bought and paid, one ordered and cancelled: {after} left; \
         a cart checked out as order #{placed_id}; {} events in the feed.",
        events.len()
    );
    Ok(())
}
