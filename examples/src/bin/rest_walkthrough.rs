//! The shop through its REST API, as a client sees it: browse and search the catalogue,
//! register, log in, order (priced by the shop, safe to retry with an idempotency key), pay,
//! order again and cancel, and watch the stock go down and come back. Every call is printed
//! with its answer; an unexpected status stops the walk with an error (exit 1), so this doubles
//! as the end-to-end check of a running stack.
//!
//! ```text
//! just up && cargo run -p shop-examples --bin rest-walkthrough            # gateway on :8080
//! cargo run -p shop-examples --bin rest-walkthrough -- http://host:8080   # another gateway
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error>;

struct Shop {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Shop {
    /// One call: prints it and its answer, and fails unless the status is `expect`.
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
        println!(
            "> {method} {path}{}",
            if body.is_empty() {
                String::new()
            } else {
                format!("  {}", String::from_utf8_lossy(&body))
            }
        );
        let res = self.http.request(req.body(Full::new(body))?).await.map_err(|e| {
            format!(
                "cannot reach the gateway at {} ({e}); is the stack up (`just up`)?",
                self.base
            )
        })?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        let shown: String = text.chars().take(300).collect();
        println!(
            "< {status} {shown}{}\n",
            if text.chars().count() > 300 { " ..." } else { "" }
        );
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

#[tokio::main]
async fn main() -> Result<(), Error> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let shop = Shop {
        base: base.trim_end_matches('/').to_owned(),
        http: Client::builder(TokioExecutor::new()).build_http(),
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
    let stock_at_start = number(
        &shop
            .call(get.clone(), &product_path, None, &[], None, 200)
            .await?,
        "stock",
    )?;

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

    println!("== Pay\n");
    shop.call(
        Method::PUT,
        &format!("/api/orders/{order_id}/status"),
        token,
        &[],
        Some(json!({ "status": "paid" })),
        200,
    )
    .await?;

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

    println!(
        "Walked: {stock_at_start} in stock, two bought and paid, one ordered and cancelled: {after} left."
    );
    Ok(())
}
