//! The shop's user service: accounts with argon2id passwords, the only signer of access
//! tokens, and the ownership rules for profiles.
//!
//! `main` is thin; [`run`] is the whole server given a config, a bound listener and a shutdown
//! future, so tests start it on port 0. Modules: [`config`] (settings), [`domain`] (rules),
//! [`password`] (argon2id), [`token`] (keys and signing), [`store`] (all SQL), [`grpc`] (the
//! protobuf face), [`error`] (the one mapping to gRPC status).

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod password;
pub mod store;
pub mod token;

use std::future::Future;
use std::sync::Arc;

use shop_auth::revoked::{self, Revocations};
use shop_kit::db::{Db, DbError};
use shop_kit::serve;
use shop_proto::user::v1::user_service_server::UserServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

/// The name this service registers under and prints in its ready line.
pub const SERVICE_NAME: &str = "user-service";

/// SQLite connections per process: a few readers beside the one writer WAL allows.
const DB_POOL_SIZE: usize = 4;

/// Largest request accepted, decoded. User requests are a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("token keys: {0}")]
    Keys(#[from] token::KeyError),
    #[error("token verification key: {0}")]
    Verifier(#[from] shop_auth::KeyError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
}

/// An admin account to make sure of at start-up (from `SHOP_ADMIN_USER` and friends).
#[derive(Debug, Clone)]
pub struct AdminSeed {
    pub username: String,
    pub email: String,
    pub password: String,
}

/// Opens the database and keys, creates the admin if asked, then serves on `listener` until
/// `shutdown` resolves and calls in flight have finished.
pub async fn run(
    config: Config,
    admin: Option<AdminSeed>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let (db, key, hasher) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || -> Result<_, RunError> {
            let key = token::ensure_keys(&config.private_key_path(), &config.public_key_path())?;
            let db = Db::open(&config.db_path(), store::MIGRATIONS, DB_POOL_SIZE)?;
            let hasher = password::Hasher::new().map_err(|e| RunError::Setup(e.to_string()))?;
            Ok((db, key, hasher))
        })
        .await
        .map_err(|e| RunError::Setup(format!("start-up task failed: {e}")))??
    };
    let signer = token::Signer::new(
        &key,
        config.tokens.issuer.clone(),
        config.tokens.audience.clone(),
        config.token_ttl,
    )?;
    // This service checks its own revocations too (a deleted admin's token is refused here
    // within a second), read from its own database.
    let revocations = Arc::new(Revocations::default());
    let verifier = config
        .tokens
        .verifier(&config.common)?
        .with_revocations(Arc::clone(&revocations));
    let feed = {
        let db = db.clone();
        let revocations = Arc::clone(&revocations);
        tokio::spawn(async move {
            revoked::follow(&revocations, revoked::POLL_EVERY, |after| {
                grpc::revocations_after(&db, after)
            })
            .await;
        })
    };

    if let Some(seed) = admin {
        seed_admin(&db, &hasher, seed).await?;
    }

    let api = grpc::UserApi {
        db,
        hasher,
        signer: Arc::new(signer),
        verifier: Arc::new(verifier),
        revocations,
    };
    tracing::info!(db = %config.db_path().display(), "database open");
    let service = UserServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
    let who = serve::Identity {
        name: SERVICE_NAME,
        version: env!("CARGO_PKG_VERSION"),
        common: &config.common,
        descriptors: &[shop_proto::FILE_DESCRIPTOR_SET],
    };
    let served = serve::grpc(who, service, listener, shutdown).await;
    feed.abort();
    served?;
    Ok(())
}

/// Creates the admin account unless it exists. A customer with the same name is left alone
/// (and reported): start-up never promotes anyone.
pub async fn seed_admin(db: &Db, hasher: &password::Hasher, seed: AdminSeed) -> Result<(), RunError> {
    let new = domain::check_registration(&seed.username, &seed.email, &seed.password, "Administrator")
        .map_err(|e| RunError::Setup(format!("admin account: {e}")))?;
    let hash = hasher
        .hash(seed.password)
        .await
        .map_err(|e| RunError::Setup(e.to_string()))?;
    let outcome = db
        .write(move |c| store::ensure_admin(c, &new, &hash, shop_kit::clock::now_millis()))
        .await
        .map_err(|e| RunError::Setup(format!("admin account: {e}")))?;
    match outcome {
        store::AdminOutcome::Created(id) => {
            tracing::info!(user_id = id, username = %seed.username, "created the admin account")
        }
        store::AdminOutcome::AlreadyAdmin(id) => {
            tracing::info!(user_id = id, username = %seed.username, "the admin account exists")
        }
        store::AdminOutcome::NameTakenByCustomer => {
            return Err(RunError::Setup(format!(
                "admin account: {:?} is a customer account; choose another admin name",
                seed.username
            )));
        }
        store::AdminOutcome::EmailTaken => {
            return Err(RunError::Setup(format!(
                "admin account: the email {:?} belongs to another account",
                seed.email
            )));
        }
    }
    Ok(())
}
