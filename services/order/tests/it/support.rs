//! The whole back end for one test: Consul, the user, product and order services (found through
//! Consul), an admin, customers and products.

use std::time::{Duration, Instant};

use shop_proto::order::v1 as pb;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::product::v1 as product;
use shop_proto::product::v1::product_service_client::ProductServiceClient;
use shop_proto::user::v1 as user;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_testkit::consul::ConsulAgent;
use shop_testkit::{Launch, Process, Scratch, issue_service_token, sibling_binary};
use tonic::Request;
use tonic::transport::Channel;

pub use shop_testkit::grpc::{assert_status, with_token};

pub const ORDER_BIN: &str = env!("CARGO_BIN_EXE_order-service");
pub const ADMIN_PASSWORD: &str = "root-password-1";

pub struct Stack {
    pub scratch: Scratch,
    pub agent: ConsulAgent,
    pub user: Process,
    pub product_launch: Launch,
    pub product: Process,
    pub order_launch: Launch,
    pub order: Process,
}

fn launch(scratch: &Scratch, agent: &ConsulAgent, bin: std::path::PathBuf, name: &str) -> Launch {
    agent.service(bin, name, scratch)
}

impl Stack {
    pub fn start(name: &str) -> Stack {
        let scratch = Scratch::new(name);
        let agent = ConsulAgent::start(scratch.path());
        let user_bin = sibling_binary(ORDER_BIN, "user-service");
        let user = launch(&scratch, &agent, user_bin.clone(), "user-service")
            .env("SHOP_ADMIN_USER", "root")
            .env("SHOP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .start();
        issue_service_token(&user_bin, &scratch, "order-service");
        let product_launch = launch(
            &scratch,
            &agent,
            sibling_binary(ORDER_BIN, "product-service"),
            "product-service",
        );
        let product = product_launch.start();
        let order_launch = launch(&scratch, &agent, ORDER_BIN.into(), "order-service")
            .arg("--set")
            .arg("upstream.timeout=1s")
            .arg("--set")
            .arg("recovery.interval=1s");
        let order = order_launch.start();
        let stack = Stack {
            scratch,
            agent,
            user,
            product_launch,
            product,
            order_launch,
            order,
        };
        stack.wait_healthy("user-service", 1);
        stack.wait_healthy("product-service", 1);
        stack
    }

    pub fn wait_healthy(&self, service: &str, n: usize) {
        let started = Instant::now();
        while self.agent.passing_ids(service).len() < n {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{service} not healthy in Consul"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::connect(self.user.url()).await.unwrap()
    }

    pub async fn products(&self) -> ProductServiceClient<Channel> {
        ProductServiceClient::connect(self.product.url()).await.unwrap()
    }

    pub async fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::connect(self.order.url()).await.unwrap()
    }

    pub async fn admin(&self) -> String {
        login(&mut self.users().await, "root", ADMIN_PASSWORD).await
    }

    /// Registers a customer and returns (id, token).
    pub async fn customer(&self, name: &str) -> (i64, String) {
        let mut users = self.users().await;
        let u = users
            .register(user::RegisterRequest {
                username: name.to_owned(),
                email: format!("{name}@example.com"),
                password: "password-123".to_owned(),
                full_name: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        (u.id, login(&mut users, name, "password-123").await)
    }

    pub async fn product(&self, name: &str, price_cents: i64, stock: i64) -> i64 {
        let admin = self.admin().await;
        self.products()
            .await
            .create_product(with_token(
                product::CreateProductRequest {
                    name: name.to_owned(),
                    description: String::new(),
                    price_cents,
                    stock,
                    category: "test".to_owned(),
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .id
    }

    pub async fn stock(&self, id: i64) -> i64 {
        self.products()
            .await
            .get_product(product::GetProductRequest { id })
            .await
            .unwrap()
            .into_inner()
            .stock
    }

    /// Units held by orders that are not cancelled (or failed), per product, read from the
    /// order service's own SQLite file.
    pub fn held_by_orders(&self, product_id: i64) -> i64 {
        let conn = rusqlite_open(&self.scratch.join("data/order.db"));
        conn.query_row(
            "SELECT coalesce(sum(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id
             WHERE i.product_id = ?1 AND o.status IN ('pending', 'paid', 'shipped', 'delivered')",
            [product_id],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Orders in a given internal status, read from the SQLite file.
    pub fn count_status(&self, status: &str) -> i64 {
        let conn = rusqlite_open(&self.scratch.join("data/order.db"));
        conn.query_row("SELECT count(*) FROM orders WHERE status = ?1", [status], |r| {
            r.get(0)
        })
        .unwrap()
    }

    /// Orders on which the order service and the product service disagree: a live order
    /// (pending, paid) whose units are not held, a shipped or delivered one whose units are not
    /// committed, a cancelled or failed one whose units are not back, or one still reserving.
    /// Read from both services' SQLite files.
    pub fn disagreements(&self) -> Vec<String> {
        let orders = rusqlite_open(&self.scratch.join("data/order.db"));
        let products = rusqlite_open(&self.scratch.join("data/product.db"));
        let mut stmt = orders
            .prepare("SELECT id, status FROM orders ORDER BY id")
            .unwrap();
        let all: Vec<(i64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut wrong = Vec::new();
        for (id, status) in all {
            let state: Option<String> = products
                .query_row("SELECT state FROM reservations WHERE order_id = ?1", [id], |r| {
                    r.get(0)
                })
                .ok();
            let agrees = match status.as_str() {
                "pending" | "paid" => state.as_deref() == Some("held"),
                "shipped" | "delivered" => state.as_deref() == Some("committed"),
                "cancelled" | "failed" | "expired" => matches!(state.as_deref(), None | Some("released")),
                _ => false,
            };
            if !agrees {
                wrong.push(format!("order {id} is {status}, its reservation {state:?}"));
            }
        }
        wrong
    }

    /// Waits (up to 30 s) until recovery has settled every order with the product service.
    pub async fn wait_settled(&self) {
        let started = Instant::now();
        while !self.disagreements().is_empty() && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The order service's own service token (what it presents for inventory calls).
    pub fn service_token(&self) -> String {
        std::fs::read_to_string(self.scratch.join("data/keys/order-service.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The `settlement` of an order, read from the order service's SQLite file.
    pub fn settlement(&self, id: i64) -> String {
        let conn = rusqlite_open(&self.scratch.join("data/order.db"));
        conn.query_row("SELECT settlement FROM orders WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    }

    /// `product-service audit` on the product database: stock + reserved = set by admins.
    pub fn product_audit(&self) -> (bool, String) {
        shop_testkit::product_audit(&sibling_binary(ORDER_BIN, "product-service"), &self.scratch)
    }
}

fn rusqlite_open(path: &std::path::Path) -> rusqlite::Connection {
    shop_kit::db::open_connection(path).unwrap()
}

pub async fn login(users: &mut UserServiceClient<Channel>, name: &str, password: &str) -> String {
    users
        .login(user::LoginRequest {
            username: name.to_owned(),
            password: password.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token
}

pub fn order_req(items: &[(i64, i64)], token: &str, key: Option<&str>) -> Request<pb::CreateOrderRequest> {
    let mut req = with_token(
        pb::CreateOrderRequest {
            user_id: 0,
            items: items
                .iter()
                .map(|(product_id, quantity)| pb::CreateOrderItem {
                    product_id: *product_id,
                    quantity: *quantity,
                })
                .collect(),
            shipping_address: "1 Test Street\nTestville".to_owned(),
        },
        token,
    );
    if let Some(k) = key {
        req.metadata_mut().insert("idempotency-key", k.parse().unwrap());
    }
    req
}

pub fn status_req(id: i64, status: &str, token: &str) -> Request<pb::UpdateOrderStatusRequest> {
    with_token(
        pb::UpdateOrderStatusRequest {
            id,
            status: status.to_owned(),
        },
        token,
    )
}
