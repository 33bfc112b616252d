//! The order service's errors, and the one place that decides which gRPC status a client sees
//! for each of them.

use shop_kit::db::DbError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field breaks a rule; the message names the field.
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("order {0} not found")]
    NotFound(i64),
    /// A move or a state the order cannot take (illegal status move, reused idempotency key...).
    #[error("{0}")]
    Conflict(String),
    /// The first request with an idempotency key is still being processed.
    #[error("{0}")]
    InProgress(String),
    #[error(transparent)]
    Unauthenticated(#[from] shop_auth::AuthError),
    #[error("{0}")]
    Forbidden(String),
    /// Another service answered with a status the client should see as it is (not enough
    /// stock, unknown product).
    #[error("{}", .0.message())]
    Upstream(Status),
    /// Another service could not be reached or did not answer in time.
    #[error("{service} is unavailable: {detail}")]
    Unavailable { service: &'static str, detail: String },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            problem: problem.into(),
        }
    }

    /// Classifies an answer from another service: business refusals pass through, everything
    /// else means the service is unavailable.
    pub fn from_upstream(service: &'static str, status: Status) -> Error {
        match status.code() {
            Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument => Error::Upstream(status),
            // The product service is called with our own service token: a refusal there is our
            // configuration's fault, not the customer's.
            Code::Unauthenticated | Code::PermissionDenied if service == crate::upstream::PRODUCT_SERVICE => {
                Error::Internal(format!(
                    "the product service refused the order service's service token ({}); re-issue it with \
                     `user-service issue-service-token --service order-service`",
                    status.message()
                ))
            }
            Code::Unauthenticated | Code::PermissionDenied => Error::Upstream(status),
            _ => Error::Unavailable {
                service,
                detail: status.message().to_owned(),
            },
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
            Error::NotFound(_) => Status::not_found(e.to_string()),
            Error::Conflict(_) => Status::failed_precondition(e.to_string()),
            Error::InProgress(_) => Status::aborted(e.to_string()),
            Error::Unauthenticated(a) => a.into(),
            Error::Forbidden(_) => Status::permission_denied(e.to_string()),
            Error::Upstream(s) => Status::new(s.code(), s.message()),
            Error::Unavailable { .. } => Status::unavailable(e.to_string()),
            Error::Db(db) => db.into_status("order"),
            Error::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_answers_are_classified() {
        let product = crate::upstream::PRODUCT_SERVICE;
        let user = crate::upstream::USER_SERVICE;
        assert!(matches!(
            Error::from_upstream(product, Status::failed_precondition("stock")),
            Error::Upstream(_)
        ));
        assert!(matches!(
            Error::from_upstream(product, Status::unavailable("gone")),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            Error::from_upstream(product, Status::deadline_exceeded("slow")),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            Error::from_upstream(product, Status::permission_denied("no")),
            Error::Internal(_)
        ));
        assert!(matches!(
            Error::from_upstream(user, Status::unauthenticated("expired")),
            Error::Upstream(_)
        ));
        let shown = Status::from(Error::from_upstream(product, Status::unavailable("gone")));
        assert_eq!(shown.code(), Code::Unavailable);
        assert_eq!(shown.message(), "product-service is unavailable: gone");
    }
}
