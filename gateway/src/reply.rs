//! What the gateway answers when it does not pass a service's reply through: the one table from
//! gRPC status codes to HTTP statuses (the design page's), the gateway's own refusals, and the
//! `{"error": ..., "code": ...}` body every error carries.

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;
use tonic::Code;

/// The response type of the whole gateway: bodies are small and built whole.
pub type Reply = Response<Full<Bytes>>;

/// The HTTP status for a gRPC status code. `OK` is 200 here; a route may say 201 or 204.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // 499 "client closed request" (nginx's), which has no constant.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The name a client sees in `code`: the gRPC code in capitals, as in the gRPC spec.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A request the gateway answers itself, with an error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("{method} is not allowed on {path}; allowed: {}", allow.join(", "))]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: Vec<String>,
    },
    /// Bad JSON, a wrong type, an unknown field, a bad path or query value.
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the request body must be JSON (Content-Type: application/json), not {0}")]
    UnsupportedMediaType(String),
    /// The body did not arrive within `gateway.body_timeout`; the connection is closed after.
    #[error("the request body did not arrive within {} s", .after.as_secs_f64())]
    BodyTimeout { after: std::time::Duration },
    /// No token, or one that does not verify. `invalid` says a token was sent.
    #[error("{message}")]
    Unauthenticated { message: String, invalid: bool },
    #[error("{0}")]
    Forbidden(String),
    #[error("too many requests (limit {policy:?}); retry in {retry_after_secs} s")]
    Limited { policy: String, retry_after_secs: u64 },
    #[error("every instance of {upstream} is failing (circuit breakers open); retry in {retry_after_secs} s")]
    AllOpen { upstream: String, retry_after_secs: u64 },
    #[error("no healthy instance of {upstream} is available")]
    NoInstances { upstream: String },
    /// A status from the upstream call (the service's, or the transport's).
    #[error("{}", .0.message())]
    Upstream(tonic::Status),
}

impl Refusal {
    pub fn code(&self) -> Code {
        match self {
            Refusal::NoRoute { .. } => Code::NotFound,
            Refusal::MethodNotAllowed { .. } => Code::Unimplemented,
            Refusal::BadRequest(_) | Refusal::UnsupportedMediaType(_) => Code::InvalidArgument,
            Refusal::TooLarge { .. } => Code::ResourceExhausted,
            Refusal::BodyTimeout { .. } => Code::DeadlineExceeded,
            Refusal::Unauthenticated { .. } => Code::Unauthenticated,
            Refusal::Forbidden(_) => Code::PermissionDenied,
            Refusal::Limited { .. } => Code::ResourceExhausted,
            Refusal::NoInstances { .. } | Refusal::AllOpen { .. } => Code::Unavailable,
            Refusal::Upstream(s) => s.code(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            other => http_status(other.code()),
        }
    }

    /// The response: status, `{error, code}`, and the headers the status calls for.
    pub fn reply(&self) -> Reply {
        let mut r = json(self.status(), error_body(&self.to_string(), self.code()));
        let headers = r.headers_mut();
        if let Refusal::MethodNotAllowed { allow, .. } = self
            && let Ok(v) = HeaderValue::from_str(&allow.join(", "))
        {
            headers.insert(ALLOW, v);
        }
        if let Refusal::Limited { retry_after_secs, .. } | Refusal::AllOpen { retry_after_secs, .. } = self {
            headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        if let Refusal::BodyTimeout { .. } = self {
            // The rest of the body may still come; the connection cannot be reused.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        // Every 401 names the scheme (RFC 9110, RFC 6750), whether the gateway or the service
        // refused the token; `invalid_token` when the gateway saw a token it could not accept.
        if self.code() == Code::Unauthenticated {
            let v = if matches!(self, Refusal::Unauthenticated { invalid: true, .. }) {
                "Bearer realm=\"shop\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"shop\""
            };
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        r
    }
}

/// `{"error": message, "code": "NAME"}` as bytes.
pub fn error_body(message: &str, code: Code) -> Bytes {
    let body = serde_json::json!({ "error": message, "code": code_name(code) });
    Bytes::from(body.to_string())
}

/// A JSON response with `status` and `body`.
pub fn json(status: StatusCode, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An empty response (204).
pub fn empty(status: StatusCode) -> Reply {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_pages_table() {
        for (code, want) in [
            (Code::Ok, 200),
            (Code::InvalidArgument, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::FailedPrecondition, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Unknown, 500),
            (Code::Internal, 500),
            (Code::DataLoss, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), want, "{code:?}");
        }
    }

    #[test]
    fn refusals_carry_their_headers_and_body() {
        let r = Refusal::MethodNotAllowed {
            method: "PATCH".into(),
            path: "/api/users/1".into(),
            allow: vec!["DELETE".into(), "GET".into()],
        }
        .reply();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[ALLOW], "DELETE, GET");

        let r = Refusal::Unauthenticated {
            message: "token expired".into(),
            invalid: true,
        }
        .reply();
        assert_eq!(r.status(), 401);
        assert!(
            r.headers()[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        // A service's UNAUTHENTICATED (a wrong password at login) is a 401 with the header too.
        let r = Refusal::Upstream(tonic::Status::unauthenticated("wrong username or password")).reply();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"shop\"");

        assert_eq!(
            error_body("no \"quotes\" break it", Code::NotFound),
            r#"{"code":"NOT_FOUND","error":"no \"quotes\" break it"}"#
        );
    }
}
