//! The shop's product service: the catalogue that admins manage and anyone can browse and
//! search (Chinese and English, substrings), and the inventory the order service reserves from
//! without ever overselling.
//!
//! `main` is thin; [`run`] is the whole server given a config, a bound listener and a shutdown
//! future. Modules: [`config`] (settings), [`domain`] (rules and queries), [`store`] (all SQL,
//! the inventory invariant), [`grpc`] (the protobuf face), [`error`] (the one mapping to gRPC
//! status), [`seed`] (the demo catalogue).

pub mod config;
pub mod domain;
pub mod error;
pub mod generate;
pub mod grpc;
pub mod listing;
pub mod search;
pub mod seed;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use shop_kit::db::{Db, DbError};
use shop_kit::serve;

use crate::error::Error as ProductError;
use shop_proto::product::v1::product_service_server::ProductServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

/// The name this service registers under and prints in its ready line.
pub const SERVICE_NAME: &str = "product-service";

/// SQLite connections per process: readers beside the one writer WAL allows. Writers queue on
/// SQLite's lock anyway, so more connections would only add contention.
const DB_POOL_SIZE: usize = 4;

/// Largest request accepted, decoded. A product with a full description is ~20 KiB.
const MAX_REQUEST_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("token verification key: {0}")]
    Verifier(#[from] shop_auth::KeyError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
}

/// Indexes for search the products a database from before search migration 3 holds, in
/// batches through the writer, before the service says it is ready.
async fn backfill(db: &Db) -> Result<(), RunError> {
    let started = std::time::Instant::now();
    let mut done = 0;
    loop {
        let moved = db
            .write(listing::backfill_batch)
            .await
            .map_err(|e: ProductError| RunError::Setup(format!("search backfill: {e}")))?;
        if moved == 0 {
            break;
        }
        done += moved;
        tracing::info!(ids = done, "indexing existing products for search");
    }
    if done > 0 {
        db.write(|c| {
            c.execute_batch("INSERT INTO product_search (product_search) VALUES ('optimize')")
                .map_err(|e| ProductError::from(DbError::from(e)))
        })
        .await
        .map_err(|e| RunError::Setup(format!("search backfill: {e}")))?;
        tracing::info!(
            ids = done,
            seconds = started.elapsed().as_secs_f64(),
            "search index filled"
        );
    }
    Ok(())
}

/// Opens the database and serves on `listener` until `shutdown` resolves and calls in flight
/// have finished.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let db = {
        let path = config.db_path();
        tokio::task::spawn_blocking(move || Db::open(&path, store::MIGRATIONS, DB_POOL_SIZE))
            .await
            .map_err(|e| RunError::Setup(format!("start-up task failed: {e}")))??
    };
    backfill(&db).await?;
    let verifier = config.tokens.verifier(&config.common)?;
    let api = grpc::ProductApi {
        db,
        verifier: Arc::new(verifier),
    };
    tracing::info!(db = %config.db_path().display(), "database open");
    let service = ProductServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
    let who = serve::Identity {
        name: SERVICE_NAME,
        version: env!("CARGO_PKG_VERSION"),
        common: &config.common,
        descriptors: &[shop_proto::FILE_DESCRIPTOR_SET],
    };
    serve::grpc(who, service, listener, shutdown).await?;
    Ok(())
}
