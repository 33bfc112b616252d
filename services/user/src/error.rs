//! The user service's errors, and the one place that decides which gRPC status a client sees
//! for each of them.

use shop_kit::db::DbError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field breaks a rule; the message names the field.
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    /// A unique field is already used by another account.
    #[error("{0} is already taken")]
    Taken(&'static str),
    /// Login failed. Deliberately says nothing about which part was wrong.
    #[error("wrong username or password")]
    BadCredentials,
    #[error(transparent)]
    Unauthenticated(#[from] shop_auth::AuthError),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("user not found")]
    NotFound,
    /// The account used up its password changes for now.
    #[error("too many password changes for this account; retry in {retry_after_secs} s")]
    TooManyPasswordChanges { retry_after_secs: u64 },
    /// The password changed between the check of `current_password` and the write.
    #[error("the password changed while this change was being checked; nothing was changed")]
    PasswordChangedMeanwhile,
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
            Error::Taken(_) => Status::already_exists(e.to_string()),
            Error::BadCredentials => Status::unauthenticated(e.to_string()),
            Error::Unauthenticated(a) => a.into(),
            Error::Forbidden(_) => Status::permission_denied(e.to_string()),
            Error::NotFound => Status::not_found(e.to_string()),
            Error::TooManyPasswordChanges { .. } => Status::resource_exhausted(e.to_string()),
            Error::PasswordChangedMeanwhile => Status::aborted(e.to_string()),
            Error::Db(db) => db.into_status("user"),
            Error::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
