//! The order service's errors, and the one place that decides which gRPC status a client sees
//! for each of them.

use shop_kit::db::DbError;
use tonic::{Code, Status};

use crate::domain::Refusal;
use crate::upstream::{Service, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The order rules refuse the request (a bad field, an illegal move, an unknown product).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// No such order, or one the caller may not see (a customer cannot tell the two apart).
    #[error("order {0} not found")]
    NotFound(i64),
    /// A state the request cannot meet (the user cannot order, a reused idempotency key...).
    #[error("{0}")]
    Conflict(String),
    /// The first request with an idempotency key is still being processed.
    #[error("{0}")]
    InProgress(String),
    #[error(transparent)]
    Unauthenticated(#[from] shop_auth::AuthError),
    #[error("{0}")]
    Forbidden(String),
    /// A call to another service failed; what the client sees depends on how (below).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The order was written but a crash or a recovery pass took it over before it was
    /// acknowledged; nothing is held for it and the client may retry.
    #[error("order {0} was interrupted before it completed; nothing was charged or held; retry")]
    Interrupted(i64),
    /// This instance is at a limit it sets itself (long polls waiting); retry.
    #[error("{0}")]
    Busy(String),
    /// A payment report whose signature does not hold (the kind is logged, never shown).
    #[error("the payment report's signature is missing, stale or wrong")]
    BadSignature(crate::webhook::SignatureError),
    /// A payment report naming no payment.
    #[error("no payment has provider_ref {0:?}")]
    UnknownPayment(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(DbError::Sqlite(e))
    }
}

fn refusal_status(r: &Refusal) -> Status {
    let code = match r {
        Refusal::Invalid { .. } => Code::InvalidArgument,
        Refusal::IllegalMove { .. } => Code::FailedPrecondition,
        Refusal::AdminOnly(_) | Refusal::PayByPayment(_) => Code::PermissionDenied,
        Refusal::UnknownProduct(_) => Code::NotFound,
        Refusal::EventsPruned { .. } => Code::OutOfRange,
    };
    Status::new(code, r.to_string())
}

/// Another service's failure as our client should see it: a refusal on the merits passes
/// through (not enough stock, unknown product, the user's own token refused); a refusal of our
/// service token is our configuration's fault; anything else means the service is unavailable.
fn upstream_status(e: UpstreamError) -> Status {
    if let Some(s) = e.refusal() {
        return Status::new(s.code(), s.message());
    }
    if let Some(s) = e.answered(&[Code::Unauthenticated, Code::PermissionDenied]) {
        if e.service == Service::Products {
            tracing::error!(
                error = %s.message(),
                "the product service refused the order service's service token; re-issue it with \
                 `user-service issue-service-token --service order-service`"
            );
            return Status::internal("internal error");
        }
        return Status::new(s.code(), s.message());
    }
    let service = e.service.noun();
    tracing::warn!(error = %e, "upstream call failed");
    match e.error {
        shop_discovery::CallError::Answered(s) => {
            // The service's own failure (busy, broken): unavailable to our client.
            Status::unavailable(format!("the {service} service is unavailable: {}", s.message()))
        }
        other => other.into_status(service),
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match e {
            Error::Refused(r) => refusal_status(&r),
            Error::NotFound(_) => Status::not_found(e.to_string()),
            Error::Conflict(_) => Status::failed_precondition(e.to_string()),
            Error::InProgress(_) => Status::aborted(e.to_string()),
            Error::Unauthenticated(a) => a.into(),
            Error::Forbidden(_) => Status::permission_denied(e.to_string()),
            Error::Upstream(u) => upstream_status(u),
            Error::Interrupted(_) => Status::unavailable(e.to_string()),
            Error::BadSignature(_) => Status::unauthenticated(e.to_string()),
            Error::Busy(_) => Status::resource_exhausted(e.to_string()),
            Error::UnknownPayment(_) => Status::not_found(e.to_string()),
            Error::Db(db) => db.into_status("order"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_discovery::CallError;

    fn upstream(service: Service, error: CallError) -> Status {
        Status::from(Error::Upstream(UpstreamError { service, error }))
    }

    #[test]
    fn upstream_failures_are_shown_by_kind() {
        let stock = upstream(
            Service::Products,
            CallError::Answered(Status::failed_precondition("not enough stock")),
        );
        assert_eq!(
            (stock.code(), stock.message()),
            (Code::FailedPrecondition, "not enough stock")
        );
        let token = upstream(
            Service::Products,
            CallError::Answered(Status::permission_denied("no")),
        );
        assert_eq!(token.code(), Code::Internal, "our service token is our problem");
        let expired = upstream(
            Service::Users,
            CallError::Answered(Status::unauthenticated("expired")),
        );
        assert_eq!(
            expired.code(),
            Code::Unauthenticated,
            "the customer's token is theirs"
        );
        let gone = upstream(
            Service::Products,
            CallError::NotSent {
                instance: "a:1".into(),
                status: Status::unavailable("tcp connect error"),
            },
        );
        assert_eq!(
            (gone.code(), gone.message()),
            (Code::Unavailable, "the product service could not be reached")
        );
        let late = upstream(
            Service::Users,
            CallError::Deadline {
                instance: "a:1".into(),
                after: std::time::Duration::from_secs(1),
            },
        );
        assert_eq!(late.code(), Code::DeadlineExceeded);
        let busy = upstream(
            Service::Products,
            CallError::Answered(Status::unavailable("busy")),
        );
        assert_eq!(busy.code(), Code::Unavailable);
    }

    #[test]
    fn refusals_map_by_kind() {
        use crate::domain::OrderStatus;
        let s = Status::from(Error::from(Refusal::AdminOnly(OrderStatus::Shipped)));
        assert_eq!(s.code(), Code::PermissionDenied);
        let s = Status::from(Error::from(Refusal::UnknownProduct(9)));
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "product 9 does not exist or is no longer sold")
        );
    }
}
