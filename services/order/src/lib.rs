//! The shop's order service: orders priced by the shop, backed by stock reserved in the product
//! service, never duplicated by a retry, never lost once acknowledged, and cancellable with the
//! stock returned exactly once, whatever crashes in between.
//!
//! `main` is thin; [`run`] is the whole server. Modules: [`config`], [`domain`] (status machine,
//! order rules, pricing, what a payment report does; pure), [`store`] (all SQL, and the
//! bookkeeping that makes crashes and races repairable), [`upstream`] (user and product calls
//! through discovery, with deadlines and typed failures), [`flows`] (create, show, move, cancel,
//! settle), [`payments`] (start a payment, apply a provider's report), [`webhook`] (report
//! signatures; pure), [`provider`] (the provider trait and the simulated provider), [`cart`],
//! [`feed`] (the events feed, long polls included), [`recovery`] (the pass that finishes what
//! was interrupted and expires unpaid orders), [`grpc`] (protobuf in and out), [`error`] (the
//! one mapping to gRPC status).

pub mod cart;
pub mod config;
pub mod domain;
pub mod error;
pub mod feed;
pub mod flows;
pub mod grpc;
pub mod payments;
pub mod provider;
pub mod recovery;
pub mod store;
pub mod upstream;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;

use shop_auth::revoked::{self, Revocations};
use shop_discovery::session::{self, Leadership, LockConfig};
use shop_discovery::watch::{self, Endpoints, WatchConfig};
use shop_discovery::{Balancer, ConsulClient};
use shop_kit::db::{Db, DbError};
use shop_kit::serve;
use shop_proto::order::v1::order_service_server::OrderServiceServer;
use tokio::net::TcpListener;
use upstream::Service;

pub use config::Config;

/// The name this service registers under and prints in its ready line.
pub const SERVICE_NAME: &str = "order-service";

/// SQLite connections per process.
const DB_POOL_SIZE: usize = 4;

/// Largest request accepted, decoded: 50 lines and an address are a few KiB.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("token verification key: {0}")]
    Verifier(#[from] shop_auth::KeyError),
    #[error(
        "cannot read the service token {path}: {source}; create it with \
         `user-service issue-service-token --service order-service --out {path}`"
    )]
    ServiceToken {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("consul: {0}")]
    Consul(#[from] shop_discovery::consul::ConsulError),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
}

fn endpoints(config: &Config, service: &str, fixed: &[String]) -> Result<Endpoints, RunError> {
    if !fixed.is_empty() {
        return Ok(watch::fixed(service, fixed));
    }
    let client = ConsulClient::new(&config.common.consul, config.common.consul_token.clone())?;
    Ok(watch::consul(client, WatchConfig::new(service)))
}

/// The user and product services, found through Consul or fixed addresses, called with the
/// service token for inventory.
fn upstreams(config: &Config) -> Result<upstream::Upstreams, RunError> {
    let token_path = config.service_token_path();
    let token = std::fs::read_to_string(&token_path).map_err(|source| RunError::ServiceToken {
        path: token_path.display().to_string(),
        source,
    })?;
    let (users, products) = (Service::Users.name(), Service::Products.name());
    Ok(upstream::Upstreams {
        users: Balancer::new(
            users,
            config.policy,
            endpoints(config, users, &config.user_addrs)?,
        ),
        products: Balancer::new(
            products,
            config.policy,
            endpoints(config, products, &config.product_addrs)?,
        ),
        timeout: config.timeout,
        service_bearer: format!("Bearer {}", token.trim()),
    })
}

/// With Consul, the session lock that elects the instance running recovery (tied to this
/// instance's registration and health check); without it, none: the instance runs alone.
fn recovery_lock(
    config: &Config,
    listener: &TcpListener,
) -> Result<Option<(ConsulClient, LockConfig)>, RunError> {
    if config.common.consul.is_empty() {
        return Ok(None);
    }
    let addr = listener
        .local_addr()
        .map_err(|e| RunError::Setup(format!("cannot read the bound address: {e}")))?;
    let id = serve::instance_id(&config.common, SERVICE_NAME, addr);
    let client = ConsulClient::new(&config.common.consul, config.common.consul_token.clone())?;
    Ok(Some((
        client,
        LockConfig::for_instance(&config.recovery_lock, &id),
    )))
}

/// The payment provider (`payments.provider`: none, or the simulated one reporting to
/// `payments.webhook_url`) and the webhook secret.
fn payments_setup(config: &Config) -> Result<flows::Payments, RunError> {
    let provider: Option<Box<dyn provider::Provider>> = match config.provider {
        config::ProviderKind::None => {
            tracing::info!("payments.provider is none: payments cannot be started here");
            None
        }
        config::ProviderKind::Simulated => {
            let url = config
                .webhook_url
                .parse()
                .map_err(|e| RunError::Setup(format!("payments.webhook_url: {e}")))?;
            tracing::warn!(
                webhook_url = %config.webhook_url,
                "payments.provider is simulated: every payment started succeeds without money moving; \
                 for demos and tests only"
            );
            Some(Box::new(provider::Simulated::new(
                config.webhook_secret.clone(),
                url,
            )))
        }
    };
    Ok(flows::Payments {
        provider,
        webhook_secret: config.webhook_secret.clone(),
    })
}

/// Opens the database, starts watching the user and product services, repairs interrupted
/// orders, and serves until `shutdown` resolves and calls in flight have finished.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let revocations = Arc::new(Revocations::default());
    let verifier = config
        .tokens
        .verifier(&config.common)?
        .with_revocations(Arc::clone(&revocations));
    let db = {
        let path = config.db_path();
        tokio::task::spawn_blocking(move || Db::open(&path, store::MIGRATIONS, DB_POOL_SIZE))
            .await
            .map_err(|e| RunError::Setup(format!("start-up task failed: {e}")))??
    };
    let up = Arc::new(upstreams(&config)?);
    // Tokens of deleted accounts, changed roles and changed passwords, learned from the user service.
    let feed = {
        let up = Arc::clone(&up);
        tokio::spawn(async move {
            revoked::follow(&revocations, revoked::POLL_EVERY, |after| {
                let up = Arc::clone(&up);
                async move { up.revocations(after).await }
            })
            .await;
        })
    };
    let orders = Arc::new(flows::Orders {
        db,
        up,
        pay: payments_setup(&config)?,
        rules: flows::Rules {
            pay_within: config.pay_within,
            max_unpaid: config.max_unpaid,
            events_keep: config.events_keep,
        },
        feed: tokio::sync::Notify::new(),
        feed_waiters: tokio::sync::Semaphore::new(feed::WAITING_MAX),
        checkouts: std::sync::Mutex::default(),
    });
    let api = grpc::OrderApi {
        orders: Arc::clone(&orders),
        verifier: Arc::new(verifier),
    };

    let leadership = match recovery_lock(&config, &listener)? {
        Some((client, lock)) => session::lead(client, lock),
        None => Leadership::alone(),
    };
    let recovery = {
        let (grace, every, held) = (
            config.recovery_grace(),
            config.recovery_interval,
            leadership.held.clone(),
        );
        tokio::spawn(async move { recovery::run(&orders, grace, every, held).await })
    };

    tracing::info!(db = %config.db_path().display(), "database open");
    let service = OrderServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
    let who = serve::Identity {
        name: SERVICE_NAME,
        version: env!("CARGO_PKG_VERSION"),
        common: &config.common,
        descriptors: &[shop_proto::FILE_DESCRIPTOR_SET],
    };
    let served = serve::grpc(who, service, listener, shutdown).await;
    recovery.abort();
    feed.abort();
    leadership.stop().await;
    served?;
    Ok(())
}
