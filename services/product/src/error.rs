//! The product service's errors, and the one place that decides which gRPC status a client
//! sees for each of them.

use shop_kit::db::DbError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field breaks a rule; the message names the field.
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("product {0} not found")]
    NotFound(i64),
    /// A product in a reservation does not exist or was deleted.
    #[error("product {0} does not exist or is no longer sold")]
    UnknownProduct(i64),
    #[error("not enough stock for product {id} ({name:?}): {requested} requested, {available} available")]
    OutOfStock {
        id: i64,
        name: String,
        requested: i64,
        available: i64,
    },
    /// The reservation is in a state that does not allow the call.
    #[error("{0}")]
    Reservation(String),
    #[error(transparent)]
    Unauthenticated(#[from] shop_auth::AuthError),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl Error {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            problem: problem.into(),
        }
    }
}

impl From<shop_kit::lines::Invalid> for Error {
    fn from(e: shop_kit::lines::Invalid) -> Error {
        Error::Invalid {
            field: e.field,
            problem: e.problem,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(DbError::Sqlite(e))
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match e {
            Error::Invalid { .. } => Status::invalid_argument(e.to_string()),
            Error::NotFound(_) | Error::UnknownProduct(_) => Status::not_found(e.to_string()),
            Error::OutOfStock { .. } | Error::Reservation(_) => Status::failed_precondition(e.to_string()),
            Error::Unauthenticated(a) => a.into(),
            Error::Forbidden(_) => Status::permission_denied(e.to_string()),
            Error::Db(db) => db.into_status("product"),
        }
    }
}
