//! Starting the product service and talking to it.

use shop_proto::product::v1 as pb;
use shop_proto::product::v1::product_service_client::ProductServiceClient;
use shop_testkit::tokens::TokenMint;
use shop_testkit::{Launch, Process, Scratch};
use tonic::Request;
use tonic::transport::Channel;

pub use shop_testkit::grpc::{assert_status, with_token};

pub const BIN: &str = env!("CARGO_BIN_EXE_product-service");

pub struct Harness {
    pub scratch: Scratch,
    pub launch: Launch,
    pub process: Process,
    pub mint: TokenMint,
}

impl Harness {
    pub fn start(name: &str) -> Harness {
        Self::start_with(name, |_, _| {})
    }

    /// Starts the service after `prepare` ran with its settings and data folder (e.g. to seed
    /// it).
    pub fn start_with(name: &str, prepare: impl FnOnce(&Launch, &std::path::Path)) -> Harness {
        let scratch = Scratch::new(name);
        let data = scratch.join("data");
        let mint = TokenMint::create(&data.join("keys"));
        let settings = Launch::new(BIN, "product-service", scratch.path())
            .arg("--data-dir")
            .arg(data.to_str().unwrap())
            .arg("--consul")
            .arg("");
        prepare(&settings, &data);
        let launch = settings.arg("--port").arg("0");
        let process = launch.start();
        Harness {
            scratch,
            launch,
            process,
            mint,
        }
    }

    pub async fn client(&self) -> ProductServiceClient<Channel> {
        ProductServiceClient::connect(self.process.url()).await.unwrap()
    }

    pub fn restart(&mut self) {
        self.process = self.launch.start();
    }

    /// Runs `product-service audit` on the data folder; returns (balanced, output).
    pub fn audit(&self) -> (bool, String) {
        let data = self.scratch.join("data");
        let (status, out, err) = Launch::new(BIN, "audit", self.scratch.path())
            .arg("audit")
            .arg("--data-dir")
            .arg(data.to_str().unwrap())
            .run(None);
        (
            status.success() && out.contains(" 0 unbalanced"),
            format!("{out}{err}"),
        )
    }

    pub fn admin(&self) -> String {
        self.mint.admin()
    }

    pub fn customer(&self) -> String {
        self.mint.customer(7)
    }

    /// The order service's token: what inventory calls need.
    pub fn order_service(&self) -> String {
        self.mint.service("order-service")
    }
}

pub fn new_product(name: &str, price_cents: i64, stock: i64, category: &str) -> pb::CreateProductRequest {
    pb::CreateProductRequest {
        name: name.to_owned(),
        description: format!("About {name}."),
        price_cents,
        stock,
        category: category.to_owned(),
    }
}

pub async fn create(
    c: &mut ProductServiceClient<Channel>,
    admin: &str,
    req: pb::CreateProductRequest,
) -> pb::Product {
    let shown = format!("{req:?}");
    c.create_product(with_token(req, admin))
        .await
        .unwrap_or_else(|s| panic!("create {shown}: {s:?}"))
        .into_inner()
}

pub async fn stock_of(c: &mut ProductServiceClient<Channel>, id: i64) -> i64 {
    c.get_product(pb::GetProductRequest { id })
        .await
        .unwrap()
        .into_inner()
        .stock
}

pub fn lines(items: &[(i64, i64)]) -> Vec<pb::StockLine> {
    items
        .iter()
        .map(|(product_id, quantity)| pb::StockLine {
            product_id: *product_id,
            quantity: *quantity,
        })
        .collect()
}

pub fn reserve_req(order_id: i64, items: &[(i64, i64)], token: &str) -> Request<pb::ReserveStockRequest> {
    with_token(
        pb::ReserveStockRequest {
            order_id,
            items: lines(items),
        },
        token,
    )
}
