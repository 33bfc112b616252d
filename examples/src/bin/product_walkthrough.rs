//! Walks the product service's gRPC API: browse and search the catalogue (Chinese and English),
//! change it as an admin, and reserve and release stock the way the order service will.
//!
//! Run it against a running stack (`just up` starts one and seeds the catalogue):
//!
//! ```text
//! cargo run -p shop-examples --bin product-walkthrough
//! cargo run -p shop-examples --bin product-walkthrough -- http://127.0.0.1:5001 http://127.0.0.1:5003
//! ```
//!
//! The admin login comes from SHOP_ADMIN_USER / SHOP_ADMIN_PASSWORD, or from the password `just up`
//! generated in .run/admin-password.

use std::time::{SystemTime, UNIX_EPOCH};

use shop_proto::product::v1 as pb;
use shop_proto::product::v1::product_service_client::ProductServiceClient;
use shop_proto::user::v1::LoginRequest;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use tonic::Request;

type Error = Box<dyn std::error::Error>;

fn with_token<T>(msg: T, token: &str) -> Result<Request<T>, Error> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

fn show(p: &pb::Product) -> String {
    format!(
        "#{} {} ({}) {}.{:02}, {} in stock",
        p.id,
        p.name,
        p.category,
        p.price_cents / 100,
        p.price_cents % 100,
        p.stock
    )
}

async fn search(
    products: &mut ProductServiceClient<tonic::transport::Channel>,
    q: &str,
) -> Result<(), Error> {
    let r = products
        .list_products(pb::ListProductsRequest {
            q: q.to_owned(),
            page_size: Some(3),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("   q={q:?}: {} matches", r.total);
    for p in r.products {
        println!("     {}", show(&p));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let user_url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:5001".to_owned());
    let product_url = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "http://127.0.0.1:5003".to_owned());
    let mut products = ProductServiceClient::connect(product_url.clone())
        .await
        .map_err(|e| format!("cannot reach the product service at {product_url} ({e}); try `just up`"))?;

    println!("1. The first page, newest first");
    let page = products
        .list_products(pb::ListProductsRequest::default())
        .await?
        .into_inner();
    println!(
        "   {} products in all; page {} of size {}",
        page.total, page.page, page.page_size
    );
    for p in page.products.iter().take(3) {
        println!("   {}", show(p));
    }

    println!("2. Search: substrings, any script, any case; short terms work too");
    for q in ["手机", "iphone", "机", "coffee"] {
        search(&mut products, q).await?;
    }

    println!("3. Cheapest books");
    let books = products
        .list_products(pb::ListProductsRequest {
            category: "books".to_owned(),
            sort: "price_asc".to_owned(),
            page_size: Some(3),
            ..Default::default()
        })
        .await?
        .into_inner();
    for p in books.products {
        println!("   {}", show(&p));
    }

    println!("4. Out-of-range paging is refused, not silently fixed");
    if let Err(s) = products
        .list_products(pb::ListProductsRequest {
            page_size: Some(500),
            ..Default::default()
        })
        .await
    {
        println!("   -> {:?}: {}", s.code(), s.message());
    }

    println!("5. A customer cannot change the catalogue; an admin can");
    let admin_user = std::env::var("SHOP_ADMIN_USER").unwrap_or_else(|_| "admin".to_owned());
    let admin_password = match std::env::var("SHOP_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => std::fs::read_to_string(".run/admin-password")
            .map(|s| s.trim().to_owned())
            .map_err(|e| {
                format!("set SHOP_ADMIN_PASSWORD or run `just up` first (.run/admin-password: {e})")
            })?,
    };
    let mut users = UserServiceClient::connect(user_url.clone())
        .await
        .map_err(|e| format!("cannot reach the user service at {user_url} ({e})"))?;
    let admin = users
        .login(LoginRequest {
            username: admin_user,
            password: admin_password,
        })
        .await?
        .into_inner()
        .access_token;
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 1_000_000;
    let created = products
        .create_product(with_token(
            pb::CreateProductRequest {
                name: format!("Walkthrough Mug #{suffix}"),
                description: "A mug made by the product walkthrough.".to_owned(),
                price_cents: 1_250,
                stock: 3,
                category: "home".to_owned(),
            },
            &admin,
        )?)
        .await?
        .into_inner();
    println!("   created {}", show(&created));
    if let Err(s) = products.create_product(pb::CreateProductRequest::default()).await {
        println!("   without a token -> {:?}: {}", s.code(), s.message());
    }

    println!("6. Reserve for an order (what the order service does), all or nothing");
    let order_id = i64::try_from(suffix)? + 1_000_000_000;
    let reserve = |quantity| pb::ReserveStockRequest {
        order_id,
        items: vec![pb::StockLine {
            product_id: created.id,
            quantity,
        }],
    };
    if let Err(s) = products.reserve_stock(with_token(reserve(5), &admin)?).await {
        println!("   5 of 3 -> {:?}: {}", s.code(), s.message());
    }
    let held = products
        .reserve_stock(with_token(reserve(2), &admin)?)
        .await?
        .into_inner();
    let replay = products
        .reserve_stock(with_token(reserve(2), &admin)?)
        .await?
        .into_inner();
    let after = products
        .get_product(pb::GetProductRequest { id: created.id })
        .await?
        .into_inner();
    println!(
        "   reserved 2 (replayed: {}), again (replayed: {}); stock now {}",
        held.replayed, replay.replayed, after.stock
    );
    let released = products
        .release_stock(with_token(pb::ReleaseStockRequest { order_id }, &admin)?)
        .await?
        .into_inner();
    let after = products
        .get_product(pb::GetProductRequest { id: created.id })
        .await?
        .into_inner();
    println!(
        "   release -> {}; stock back to {}",
        released.outcome, after.stock
    );

    products
        .delete_product(with_token(pb::DeleteProductRequest { id: created.id }, &admin)?)
        .await?;
    if let Err(s) = products
        .get_product(pb::GetProductRequest { id: created.id })
        .await
    {
        println!("   deleted; get -> {:?}: {}", s.code(), s.message());
    }
    Ok(())
}
