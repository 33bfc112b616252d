//! Walks the order service's gRPC API: a customer orders (priced by the shop), retries with the
//! same idempotency key, pays through StartPayment (the simulated provider reports to the
//! gateway's webhook about a second later, which marks the order paid), cancels another order
//! and sees the stock come back.
//!
//! Run it against a running stack (`just up`; the gateway must be up for the provider's report):
//!
//! ```text
//! cargo run -p shop-examples --bin order-walkthrough
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shop_proto::order::v1 as pb;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::product::v1::product_service_client::ProductServiceClient;
use shop_proto::product::v1::{GetProductRequest, ListProductsRequest};
use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_proto::user::v1::{LoginRequest, RegisterRequest};
use tonic::Request;

type Error = Box<dyn std::error::Error>;

fn authed<T>(msg: T, token: &str) -> Result<Request<T>, Error> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (user_url, order_url, product_url) = (
        "http://127.0.0.1:5001",
        "http://127.0.0.1:5002",
        "http://127.0.0.1:5003",
    );
    let connect = |what: &str, url: &str, e: tonic::transport::Error| {
        format!("cannot reach the {what} at {url} ({e}); try `just up`")
    };
    let mut users = UserServiceClient::connect(user_url)
        .await
        .map_err(|e| connect("user service", user_url, e))?;
    let mut orders = OrderServiceClient::connect(order_url)
        .await
        .map_err(|e| connect("order service", order_url, e))?;
    let mut products = ProductServiceClient::connect(product_url)
        .await
        .map_err(|e| connect("product service", product_url, e))?;

    let name = format!(
        "shopper{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 1_000_000
    );
    users
        .register(RegisterRequest {
            username: name.clone(),
            email: format!("{name}@example.com"),
            password: "a-long-enough-password".to_owned(),
            full_name: "Shop Per".to_owned(),
        })
        .await?;
    let token = users
        .login(LoginRequest {
            username: name.clone(),
            password: "a-long-enough-password".to_owned(),
        })
        .await?
        .into_inner()
        .access_token;
    let catalogue = products
        .list_products(ListProductsRequest {
            category: "books".to_owned(),
            sort: "price_asc".to_owned(),
            page_size: Some(2),
            ..Default::default()
        })
        .await?
        .into_inner()
        .products;
    let [first, second] = catalogue.as_slice() else {
        return Err(
            "the catalogue has fewer than two books; run `just up` (it seeds the demo catalogue)".into(),
        );
    };
    let stock = |id| GetProductRequest { id };

    println!(
        "1. {name} orders 2 x {:?} and 1 x {:?}; the client sends no prices",
        first.name, second.name
    );
    let create = |key: &str| -> Result<Request<pb::CreateOrderRequest>, Error> {
        let mut req = authed(
            pb::CreateOrderRequest {
                user_id: 0,
                items: vec![
                    pb::CreateOrderItem {
                        product_id: first.id,
                        quantity: 2,
                    },
                    pb::CreateOrderItem {
                        product_id: second.id,
                        quantity: 1,
                    },
                ],
                shipping_address: "1 Example Road\nSpringfield".to_owned(),
            },
            &token,
        )?;
        req.metadata_mut().insert("idempotency-key", key.parse()?);
        Ok(req)
    };
    let order = orders.create_order(create("walkthrough-1")?).await?.into_inner();
    for i in &order.items {
        println!(
            "   {} x {} at {} = {}",
            i.quantity,
            i.product_name,
            money(i.unit_price_cents),
            money(i.line_total_cents)
        );
    }
    println!(
        "   order #{} {}: total {}",
        order.id,
        order.status,
        money(order.total_cents)
    );

    println!("2. The same request again (a retry after a timeout, say), same Idempotency-Key");
    let again = orders.create_order(create("walkthrough-1")?).await?.into_inner();
    let left = products.get_product(stock(first.id)).await?.into_inner().stock;
    println!(
        "   -> order #{} again, nothing more reserved ({} left of {:?})",
        again.id, left, first.name
    );

    println!("3. Pay: marking the order paid ourselves is refused; a payment is the way");
    if let Err(s) = orders
        .update_order_status(authed(
            pb::UpdateOrderStatusRequest {
                id: order.id,
                status: "paid".to_owned(),
            },
            &token,
        )?)
        .await
    {
        println!("   -> {:?}: {}", s.code(), s.message());
    }
    let payment = orders
        .start_payment(authed(
            pb::StartPaymentRequest {
                id: order.id,
                simulate: String::new(),
            },
            &token,
        )?)
        .await?
        .into_inner();
    println!(
        "   payment #{} of {} is {} (provider {}, ref {})",
        payment.id,
        money(payment.amount_cents),
        payment.status,
        payment.provider,
        payment.provider_ref
    );
    // The provider reports to the gateway's webhook about a second later; the order turns paid.
    let started = Instant::now();
    let paid = loop {
        let o = orders
            .get_order(authed(pb::GetOrderRequest { id: order.id }, &token)?)
            .await?
            .into_inner();
        if o.status != "pending" || started.elapsed() > Duration::from_secs(10) {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if paid.status != "paid" {
        return Err(format!(
            "order #{} is still {} after {:.1} s; is the gateway up (the provider reports through it)?",
            paid.id,
            paid.status,
            started.elapsed().as_secs_f64()
        )
        .into());
    }
    println!(
        "   -> {} after {:.1} s (payment {})",
        paid.status,
        started.elapsed().as_secs_f64(),
        paid.payments.last().map_or("?", |p| p.status.as_str())
    );
    println!("   Then try to ship it as a customer");
    if let Err(s) = orders
        .update_order_status(authed(
            pb::UpdateOrderStatusRequest {
                id: order.id,
                status: "shipped".to_owned(),
            },
            &token,
        )?)
        .await
    {
        println!("   -> {:?}: {}", s.code(), s.message());
    }

    println!("4. Another order, then cancel it: the units come back, once");
    let before = products.get_product(stock(second.id)).await?.into_inner().stock;
    let other = orders
        .create_order(create("walkthrough-2").map(|mut r| {
            r.get_mut().items.truncate(1);
            r.get_mut().items[0].product_id = second.id;
            r
        })?)
        .await?
        .into_inner();
    let during = products.get_product(stock(second.id)).await?.into_inner().stock;
    for _ in 0..2 {
        orders
            .cancel_order(authed(pb::CancelOrderRequest { id: other.id }, &token)?)
            .await?;
    }
    let after = products.get_product(stock(second.id)).await?.into_inner().stock;
    println!(
        "   {:?} stock: {before} before, {during} while ordered, {after} after cancelling twice",
        second.name
    );

    println!("5. Your orders, newest first");
    let mine = orders
        .list_user_orders(authed(
            pb::ListUserOrdersRequest {
                user_id: order.user_id,
                ..Default::default()
            },
            &token,
        )?)
        .await?
        .into_inner();
    for o in mine.orders {
        let trail: Vec<&str> = o.history.iter().map(|h| h.status.as_str()).collect();
        println!(
            "   #{} {} {} ({})",
            o.id,
            o.status,
            money(o.total_cents),
            trail.join(" -> ")
        );
    }
    Ok(())
}
