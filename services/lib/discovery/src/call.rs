//! What became of a call that did not succeed, decided once, where the failure is born: was the
//! request sent at all, did the instance answer, and is running it again safe. The gateway's
//! retry and breakers and the order service's upstream calls all read this one classification.
//!
//! A failure is classified by the types in the error's source chain (tonic's `ConnectError`,
//! h2's stream and connection errors, hyper's "request was canceled before it was sent",
//! tonic's `TimeoutExpired`), never by the text of a message:
//!
//! | what happened | variant | sent? | retry |
//! |---|---|---|---|
//! | no instance to pick | `NoInstances`, `AllExcluded` | no | picking again finds none |
//! | connect failed; stream refused (`REFUSED_STREAM`); stream above a `GOAWAY`'s last id; request dropped from hyper's queue | `NotSent` | no | always safe |
//! | connection reset or lost once the request may have left | `Broken` | maybe | only if the call is idempotent |
//! | no answer within the deadline, or the service answered CANCELLED (its copy of our deadline ran out first) | `Deadline` | maybe | no (no time left) |
//! | the instance answered with a gRPC status | `Answered` | yes | `UNAVAILABLE` on an idempotent call only |

use std::error::Error as StdError;
use std::time::Duration;

use tonic::{Code, Status};

/// Why a call to a service did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no healthy instance of {service}")]
    NoInstances { service: String },
    /// Instances exist, but the caller's filter (a circuit breaker) refused every one.
    #[error("every instance of {service} is refused by its circuit breaker")]
    AllExcluded { service: String },
    /// The request never reached the service: running it again cannot run it twice.
    #[error("{instance}: the call was not sent ({})", .status.message())]
    NotSent { instance: String, status: Status },
    /// The connection failed after the request may have reached the service.
    #[error("{instance}: the connection failed during the call ({})", .status.message())]
    Broken { instance: String, status: Status },
    /// No answer in time; the service may still be running the call.
    #[error("{instance} did not answer within {} ms", .after.as_millis())]
    Deadline { instance: String, after: Duration },
    /// The service answered with this status.
    #[error("{}", .0.message())]
    Answered(Status),
}

impl CallError {
    /// Classifies a failed attempt on `instance` (given `left` to answer) by what its error is
    /// made of. A status with no source came from the service (trailers or headers); one with a
    /// source was made up by the transport.
    pub fn classify(status: Status, instance: &str, left: Duration) -> CallError {
        let Some(source) = StdError::source(&status) else {
            return CallError::answered(status, instance, left);
        };
        let instance = instance.to_owned();
        match transport_reach(source) {
            Reach::NotSent => CallError::NotSent { instance, status },
            Reach::TimedOut => CallError::Deadline {
                instance,
                after: left,
            },
            Reach::Maybe => CallError::Broken { instance, status },
        }
    }

    /// The service's own answer. A unary call that is still waiting for its answer has not
    /// cancelled anything, so a CANCELLED answer means the deadline the caller sent
    /// (`grpc-timeout`) ran out at the service first (tonic's server answers so): the same as no
    /// answer in time, however the two timers happened to race.
    pub fn answered(status: Status, instance: &str, left: Duration) -> CallError {
        if status.code() == Code::Cancelled {
            return CallError::Deadline {
                instance: instance.to_owned(),
                after: left,
            };
        }
        CallError::Answered(status)
    }

    /// A failure of the HTTP/2 exchange itself, for callers that speak HTTP/2 directly (the
    /// gateway): `sent` says whether the request's headers had gone out. Not sent, refused
    /// (`REFUSED_STREAM`) or beyond the server's `GOAWAY`: nothing ran; anything else may have.
    pub fn from_h2(error: &h2::Error, sent: bool, instance: &str) -> CallError {
        let status = Status::unavailable(error.to_string());
        let instance = instance.to_owned();
        if !sent || matches!(h2_reach(error), Reach::NotSent) {
            CallError::NotSent { instance, status }
        } else {
            CallError::Broken { instance, status }
        }
    }

    /// False only when the request certainly never reached the service.
    pub fn maybe_sent(&self) -> bool {
        !matches!(
            self,
            CallError::NoInstances { .. } | CallError::AllExcluded { .. } | CallError::NotSent { .. }
        )
    }

    /// Whether running the call again (elsewhere) is safe: always when it was not sent; after a
    /// broken connection or an UNAVAILABLE answer only when running it twice does no harm.
    pub fn retry_safe(&self, idempotent: bool) -> bool {
        match self {
            CallError::NotSent { .. } => true,
            CallError::Broken { .. } => idempotent,
            CallError::Answered(s) => idempotent && s.code() == Code::Unavailable,
            CallError::NoInstances { .. } | CallError::AllExcluded { .. } | CallError::Deadline { .. } => {
                false
            }
        }
    }

    /// Whether the outcome says something is wrong with the instance (what a circuit breaker
    /// counts): it could not be reached, broke, did not answer in time, or said it is
    /// unavailable or broken. A service's refusal of a request (4xx) never counts.
    pub fn counts_against_instance(&self) -> bool {
        match self {
            CallError::NotSent { .. } | CallError::Broken { .. } | CallError::Deadline { .. } => true,
            CallError::Answered(s) => matches!(
                s.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Internal | Code::Unknown | Code::DataLoss
            ),
            CallError::NoInstances { .. } | CallError::AllExcluded { .. } => false,
        }
    }

    /// The gRPC status a caller passes on: the service's own answer as it is; for the others
    /// UNAVAILABLE (DEADLINE_EXCEEDED for a deadline) with a sentence naming `service`.
    pub fn into_status(self, service: &str) -> Status {
        match self {
            CallError::Answered(s) => s,
            CallError::Deadline { .. } => {
                Status::deadline_exceeded(format!("the {service} service did not answer in time"))
            }
            CallError::NoInstances { .. } | CallError::AllExcluded { .. } => {
                Status::unavailable(format!("no instance of the {service} service is available"))
            }
            CallError::NotSent { .. } | CallError::Broken { .. } => {
                Status::unavailable(format!("the {service} service could not be reached"))
            }
        }
    }
}

impl From<crate::balance::BalanceError> for CallError {
    fn from(e: crate::balance::BalanceError) -> Self {
        match e {
            crate::balance::BalanceError::AllExcluded(service) => CallError::AllExcluded { service },
            crate::balance::BalanceError::NoInstances(service)
            | crate::balance::BalanceError::BadAddress { service, .. } => CallError::NoInstances { service },
        }
    }
}

enum Reach {
    NotSent,
    TimedOut,
    Maybe,
}

/// The server refused the stream before processing it, or announced with GOAWAY that it stops
/// below this stream (gRPC's "transparent retry" cases): not sent. Otherwise it may have run.
fn h2_reach(h2: &h2::Error) -> Reach {
    let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM);
    let beyond_goaway = h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
    if refused || beyond_goaway {
        Reach::NotSent
    } else {
        Reach::Maybe
    }
}

/// How far a transport failure got, from the types in its chain.
fn transport_reach(error: &(dyn StdError + 'static)) -> Reach {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<tonic::ConnectError>() {
            return Reach::NotSent;
        }
        if e.is::<tonic::TimeoutExpired>() {
            return Reach::TimedOut;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // The server refused the stream before processing it, or announced with GOAWAY
            // that it stops below this stream (gRPC's "transparent retry" cases).
            let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            let beyond_goaway =
                h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
            return if refused || beyond_goaway {
                Reach::NotSent
            } else {
                Reach::Maybe
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && h.is_canceled()
        {
            // hyper gives the request back with this error when its connection closed before
            // the request was written ("connection was not ready" / "connection closed").
            return Reach::NotSent;
        }
        next = e.source();
    }
    Reach::Maybe
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn with_source(code: Code, source: impl StdError + Send + Sync + 'static) -> Status {
        let mut s = Status::new(code, "transport");
        s.set_source(Arc::new(source));
        s
    }

    #[test]
    fn an_answer_is_a_status_without_source() {
        let e = CallError::classify(
            Status::failed_precondition("not enough stock"),
            "a:1",
            Duration::from_secs(1),
        );
        assert!(matches!(&e, CallError::Answered(s) if s.code() == Code::FailedPrecondition));
        assert!(e.maybe_sent() && !e.retry_safe(true) && !e.counts_against_instance());
        let busy = CallError::classify(
            Status::unavailable("database busy"),
            "a:1",
            Duration::from_secs(1),
        );
        assert!(busy.retry_safe(true) && !busy.retry_safe(false) && busy.counts_against_instance());
    }

    #[test]
    fn only_trouble_with_the_instance_counts_against_it() {
        let answered = |s: Status| CallError::Answered(s).counts_against_instance();
        assert!(answered(Status::unavailable("x")) && answered(Status::deadline_exceeded("x")));
        assert!(answered(Status::internal("x")) && answered(Status::unknown("x")));
        assert!(!answered(Status::not_found("x")) && !answered(Status::invalid_argument("x")));
        assert!(!answered(Status::permission_denied("x")) && !answered(Status::resource_exhausted("x")));
        let none = CallError::NoInstances { service: "s".into() };
        assert!(!none.counts_against_instance() && !none.retry_safe(true));
    }

    #[test]
    fn a_failed_connect_was_not_sent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = CallError::classify(
            with_source(Code::Unavailable, tonic::ConnectError(Box::new(refused))),
            "a:1",
            Duration::from_secs(1),
        );
        assert!(matches!(e, CallError::NotSent { .. }), "{e:?}");
        assert!(!e.maybe_sent() && e.retry_safe(false) && e.counts_against_instance());
    }

    #[test]
    fn refused_streams_and_goaway_were_not_sent_but_resets_may_have_been() {
        let refused = CallError::classify(
            with_source(Code::Unavailable, h2::Error::from(h2::Reason::REFUSED_STREAM)),
            "a:1",
            Duration::from_secs(1),
        );
        assert!(matches!(refused, CallError::NotSent { .. }), "{refused:?}");
        let reset = CallError::classify(
            with_source(Code::Internal, h2::Error::from(h2::Reason::INTERNAL_ERROR)),
            "a:1",
            Duration::from_secs(1),
        );
        assert!(matches!(reset, CallError::Broken { .. }), "{reset:?}");
        assert!(reset.retry_safe(true) && !reset.retry_safe(false));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let lost = CallError::classify(with_source(Code::Unknown, io), "a:1", Duration::from_secs(1));
        assert!(matches!(lost, CallError::Broken { .. }), "{lost:?}");
    }

    #[test]
    fn tonics_own_timeout_is_a_deadline() {
        let e = CallError::classify(
            with_source(Code::Cancelled, tonic::TimeoutExpired(())),
            "a:1",
            Duration::from_secs(1),
        );
        assert!(matches!(e, CallError::Deadline { .. }), "{e:?}");
        assert!(!e.retry_safe(true));
        assert_eq!(e.into_status("products").code(), Code::DeadlineExceeded);
        // The service's timer won the race and it answered CANCELLED: the same deadline.
        let answered = CallError::classify(
            Status::cancelled("Timeout expired"),
            "a:1",
            Duration::from_millis(1),
        );
        assert!(matches!(answered, CallError::Deadline { .. }), "{answered:?}");
        assert!(answered.counts_against_instance());
        assert_eq!(answered.into_status("products").code(), Code::DeadlineExceeded);
    }

    #[test]
    fn what_callers_pass_on() {
        let gone = CallError::NotSent {
            instance: "a:1".into(),
            status: Status::unavailable("tcp connect error"),
        };
        let s = gone.into_status("products");
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "the products service could not be reached")
        );
        let own = CallError::Answered(Status::not_found("order 7 not found")).into_status("orders");
        assert_eq!((own.code(), own.message()), (Code::NotFound, "order 7 not found"));
    }
}
