//! One request's way through the gateway: request id, CORS, the gateway's own endpoints, route
//! match, auth policy, rate limit, body (size-limited, time-limited, JSON only), JSON (with the
//! headers and raw body a route binds) to protobuf, the upstream call with its deadline and
//! metadata, protobuf to JSON, gRPC status to HTTP status, the counters and one access-log line. Everything a route needs was resolved when
//! its configuration loaded (`loaded::Plan`); a request looks nothing up by name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use shop_discovery::CallError;
use tonic::Status;

use shop_auth::{Identity, Role};

use crate::access;
use crate::config::{Access, LimitKey, Listener};
use crate::cors;
use crate::limit::{Decision, Key};
use crate::live::Gateway;
use crate::loaded::{Loaded, Plan};
use crate::metrics::RouteCounters;
use crate::reply::{self, Refusal, Reply};
use crate::router::Found;
use crate::transcode;
use crate::upstream::{self, Answer, Call, Failure, Guard};
use shop_base::trace::TraceContext;

/// The header that carries a request's id, in and out.
pub const REQUEST_ID: &str = shop_base::request_id::HEADER;
/// The W3C trace context header, in and out (and to the service as metadata).
pub const TRACEPARENT: &str = shop_base::trace::HEADER;
/// The header a client sends to make `POST /api/orders` safe to retry.
const IDEMPOTENCY_KEY: &str = shop_base::metadata::IDEMPOTENCY_KEY;

/// What the access log, the counters and the response headers say about a request besides its
/// status.
#[derive(Default)]
struct Trace {
    /// The route's name (or the gateway's own answer), and its counters.
    route: Option<(Arc<str>, Arc<RouteCounters>)>,
    /// The instance that answered last.
    instance: Option<String>,
    /// The token bucket's answer, for the `RateLimit-*` headers.
    rate: Option<Decision>,
    /// The call ran a second time on another instance.
    retried: bool,
}

impl Gateway {
    /// Answers one request that arrived on `listener` (as it was configured when it opened).
    /// Never fails: every problem becomes an error reply.
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr, listener: &Listener) -> Reply
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let wall = std::time::SystemTime::now();
        let loaded = self.current();
        let request_id = request_id(req.headers());
        // This hop of the caller's trace (or a new trace): forwarded, returned and logged.
        let hop = TraceContext::continue_from(req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
        let traceparent = HeaderValue::from_str(&hop.to_string()).ok();
        let trace_id = hop.trace_id();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        // The listener's CORS as the file says now (by address); as it opened when the file no
        // longer lists it.
        let cors = match loaded.config().listener(listener.address) {
            Some(l) => l.cors.as_ref(),
            None => listener.cors.as_ref(),
        };
        let origin = cors.and_then(|c| cors::allowed_origin(c, req.headers()));
        let mut trace = Trace::default();
        let outcome = if let Some(answer) = cors.and_then(|c| cors::preflight(c, origin.as_ref(), &req)) {
            trace.route = Some(self.own_counters("preflight"));
            answer
        } else if let Some(answer) = self.own_endpoint(&loaded, req.method(), &path) {
            trace.route = Some(self.own_counters(path.trim_start_matches('/')));
            answer
        } else {
            let ids = Ids {
                request_id: &request_id,
                traceparent: traceparent.as_ref(),
            };
            loaded.route(req, peer, ids, &mut trace).await
        };
        let mut reply = outcome.unwrap_or_else(|refusal| refusal.reply());
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            reply.headers_mut().insert(REQUEST_ID, v);
        }
        if let Some(v) = traceparent {
            reply.headers_mut().insert(TRACEPARENT, v);
        }
        if let Some(d) = trace.rate {
            let h = reply.headers_mut();
            h.insert("ratelimit-limit", HeaderValue::from(d.limit));
            h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
            h.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
        }
        if let (Some(c), Some(o)) = (cors, origin) {
            cors::allow(c, o, reply.headers_mut());
        }
        let latency = started.elapsed();
        let (route, counters) = trace.route.unwrap_or_else(|| self.own_counters("-"));
        counters.record(method.as_str(), reply.status().as_u16(), latency);
        let bytes = hyper::body::Body::size_hint(reply.body()).exact().unwrap_or(0);
        loaded.access().write(&access::Entry {
            method: method.as_str(),
            path: &path,
            route: &route,
            status: reply.status().as_u16(),
            latency,
            upstream: trace.instance.as_deref().unwrap_or("-"),
            retried: trace.retried,
            bytes,
            request_id: &request_id,
            trace_id: Some(&trace_id),
            peer,
        });
        export_span(hop, &route, &method, reply.status().as_u16(), wall);
        reply
    }
}

/// The request's span, to the OTLP collector when one is configured.
fn export_span(
    hop: TraceContext,
    route: &str,
    method: &http::Method,
    status: u16,
    start: std::time::SystemTime,
) {
    if !shop_base::spans::enabled() {
        return;
    }
    use shop_base::spans::{Attr, Span};
    shop_base::spans::record(Span {
        context: hop,
        name: format!("{method} {route}"),
        start,
        end: std::time::SystemTime::now(),
        attributes: vec![
            ("http.request.method", Attr::Text(method.as_str().to_owned())),
            ("http.route", Attr::Text(route.to_owned())),
            ("http.response.status_code", Attr::Int(i64::from(status))),
        ],
        error: status >= 500,
    });
}

impl Loaded {
    /// A request for one of the routes: match, auth, limit, body, call, reply.
    async fn route<B>(
        &self,
        req: Request<B>,
        peer: SocketAddr,
        ids: Ids<'_>,
        trace: &mut Trace,
    ) -> Result<Reply, Refusal>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (index, params) = match self.router().find(req.method().as_str(), req.uri().path()) {
            Found::Route(i, params) => (i, params),
            Found::MethodNotAllowed(allow) => {
                return Err(Refusal::MethodNotAllowed {
                    method: req.method().as_str().to_owned(),
                    path: req.uri().path().to_owned(),
                    allow,
                });
            }
            Found::NotFound => {
                return Err(Refusal::NoRoute {
                    method: req.method().as_str().to_owned(),
                    path: req.uri().path().to_owned(),
                });
            }
            Found::BadParam(name) => {
                return Err(Refusal::BadRequest(format!(
                    "path parameter {name} is not valid percent-encoded UTF-8"
                )));
            }
        };
        let Some(plan) = self.plan(index) else {
            return Err(Refusal::Upstream(Status::internal("a route has no plan")));
        };
        trace.route = Some((Arc::clone(&plan.name), Arc::clone(&plan.counters)));

        let who = self.authorize(plan, req.headers())?;
        self.take_token(plan, who.as_ref(), peer, req.headers(), trace)?;
        let metadata = metadata(req.headers(), ids)?;
        let (head, body) = req.into_parts();
        let body = self.read_body(&head.headers, body).await?;
        let message = transcode::request(&plan.route, &params, head.uri.query(), &head.headers, &body)
            .map_err(Refusal::BadRequest)?;
        let call = Call {
            path: plan.grpc_path.clone(),
            output: plan.route.rpc.output(),
            body: crate::grpc::frame(&prost::Message::encode_to_vec(&message)),
            metadata,
        };
        let guard = Guard {
            upstream: &plan.upstream_name,
            breakers: plan.breakers.as_ref().map(|(config, b)| (config, &**b)),
            idempotent: plan.route.idempotent,
        };
        let outcome = upstream::unary(&plan.upstream, &call, plan.route.timeout, &guard).await;
        trace.instance = outcome.instance;
        trace.retried = outcome.retried;
        if outcome.retried {
            plan.retries.fetch_add(1, Ordering::Relaxed);
        }
        match outcome.result {
            Ok(answer) => success(plan, answer),
            Err(e) => Err(upstream_refusal(plan, e, ids.request_id)),
        }
    }

    /// `public` lets anyone through; `user` needs a valid token; `admin` an admin's token.
    /// The token still goes to the service, which checks it again and decides ownership.
    fn authorize(&self, plan: &Plan, headers: &HeaderMap) -> Result<Option<Identity>, Refusal> {
        let route = &plan.route;
        if route.access == Access::Public {
            return Ok(None);
        }
        let Some(verifier) = self.verifier() else {
            return Err(Refusal::Upstream(Status::internal("no token verifier is loaded")));
        };
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(Refusal::Unauthenticated {
                message: shop_auth::AuthError::Missing.to_string(),
                invalid: false,
            });
        };
        let who = value
            .to_str()
            .map_err(|_| shop_auth::AuthError::NotBearer)
            .and_then(|v| verifier.verify_bearer(v))
            .map_err(|e| Refusal::Unauthenticated {
                message: e.client_message(),
                invalid: true,
            })?;
        if route.access == Access::Admin && who.role != Role::Admin {
            return Err(Refusal::Forbidden(format!(
                "{} {} is for admins only",
                route.method,
                route.template.as_str()
            )));
        }
        Ok(Some(who))
    }

    /// Takes a token from the route's limit policy, keyed as the policy says: the client's
    /// address, the verified user (the address when there is none), the route, or one bucket
    /// for everyone.
    fn take_token(
        &self,
        plan: &Plan,
        who: Option<&Identity>,
        peer: SocketAddr,
        headers: &HeaderMap,
        trace: &mut Trace,
    ) -> Result<(), Refusal> {
        let Some(limit) = &plan.limit else {
            return Ok(());
        };
        let ip = || {
            Key::Ip(crate::client::client_ip(
                peer,
                headers,
                &self.config().trusted_proxies,
            ))
        };
        let key = match limit.limit.key {
            LimitKey::Ip => ip(),
            LimitKey::User => match who {
                Some(w) if !w.is_service() => Key::User(w.user_id),
                Some(w) => Key::Service(w.service.clone().unwrap_or_else(|| Arc::from(""))),
                None => ip(),
            },
            LimitKey::Route => Key::Route(Arc::clone(&plan.name)),
            LimitKey::Global => Key::Global,
        };
        let decision = limit.buckets.take(&limit.limit, key, Instant::now());
        trace.rate = Some(decision);
        if decision.allowed {
            Ok(())
        } else {
            limit.refused.fetch_add(1, Ordering::Relaxed);
            Err(Refusal::Limited {
                policy: limit.name.to_string(),
                retry_after_secs: decision.retry_after_secs,
            })
        }
    }

    /// The body, refused with 413 past `max_body_bytes` (by its declared length before reading
    /// anything, or while reading), with 415 when its `Content-Type` says it is something else
    /// than JSON, and with 408 when it has not all arrived within `body_timeout`.
    async fn read_body<B>(&self, headers: &HeaderMap, body: B) -> Result<Bytes, Refusal>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.config().max_body_bytes;
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(Refusal::TooLarge { limit });
        }
        if let Some(ct) = headers.get(CONTENT_TYPE) {
            let text = ct.to_str().unwrap_or("");
            let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            // `curl -d` labels JSON as a form unless told otherwise; the body is parsed as JSON
            // either way, so that label is tolerated. Anything else is not JSON.
            let json_ish = essence == "application/json"
                || essence.ends_with("+json")
                || essence == "application/x-www-form-urlencoded";
            if !json_ish && declared != Some(0) {
                return Err(Refusal::UnsupportedMediaType(format!("{text:?}")));
            }
        }
        let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
        let after = self.config().body_timeout;
        let collected = tokio::time::timeout(after, Limited::new(body, limit_usize).collect())
            .await
            .map_err(|_| Refusal::BodyTimeout { after })?;
        match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::TooLarge { limit }),
            Err(e) => Err(Refusal::BadRequest(format!(
                "the request body could not be read: {e}"
            ))),
        }
    }
}

/// The route's success status with the reply as JSON (204: no body).
fn success(plan: &Plan, answer: Answer) -> Result<Reply, Refusal> {
    let status = plan.status;
    if status == StatusCode::NO_CONTENT {
        return Ok(reply::empty(status));
    }
    let body = match answer {
        Answer::Json(body) => body,
        Answer::Message(msg) => {
            transcode::response(&msg).map_err(|e| Refusal::Upstream(Status::internal(e)))?
        }
    };
    Ok(reply::json(status, body))
}

/// A failed call as the client should see it: a service's own status passes through; a
/// transport failure (not sent, broken, late) is logged in full and answered with a plain
/// sentence that names the upstream (503, or 504 for the deadline).
fn upstream_refusal(plan: &Plan, error: Failure, request_id: &str) -> Refusal {
    let upstream = plan.upstream_name.to_string();
    match error {
        Failure::AllOpen { retry_after_secs } => Refusal::AllOpen {
            upstream,
            retry_after_secs,
        },
        Failure::Call(CallError::NoInstances { .. } | CallError::AllExcluded { .. }) => {
            Refusal::NoInstances { upstream }
        }
        Failure::Call(error) => {
            if !matches!(error, CallError::Answered(_)) {
                tracing::warn!(request_id, upstream, error = %error, "upstream call failed in transport");
            }
            Refusal::Upstream(error.into_status(&upstream))
        }
    }
}

/// The id from the client when it is printable ASCII of a sane length, otherwise a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .map(HeaderValue::as_bytes)
        .filter(|b| shop_base::request_id::acceptable(b))
        .and_then(|b| std::str::from_utf8(b).ok())
        .map_or_else(shop_base::request_id::fresh, str::to_owned)
}

/// Longest `Idempotency-Key` accepted; the order service's limit too.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A request's identity for logs and for the service: its request id and this hop's
/// `traceparent`.
#[derive(Clone, Copy)]
struct Ids<'a> {
    request_id: &'a str,
    traceparent: Option<&'a HeaderValue>,
}

/// What the service gets besides the message: the request id, the trace context, the client's
/// token and its idempotency key. A token that is not valid header text is left out (the service
/// then refuses its absence); an idempotency key is never dropped: one that is not 1 to 255
/// printable ASCII characters is refused here, because a retry that lost its key would create a
/// second order.
fn metadata(headers: &HeaderMap, ids: Ids<'_>) -> Result<HeaderMap, Refusal> {
    let mut m = HeaderMap::with_capacity(5);
    if let Ok(v) = HeaderValue::from_str(ids.request_id) {
        m.insert(REQUEST_ID, v);
    }
    if let Some(v) = ids.traceparent {
        m.insert(TRACEPARENT, v.clone());
    }
    if let Some(v) = headers.get(AUTHORIZATION)
        && v.to_str().is_ok()
    {
        m.insert(AUTHORIZATION, v.clone());
    }
    if let Some(key) = headers.get(IDEMPOTENCY_KEY) {
        let bytes = key.as_bytes();
        let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
        if !printable || !(1..=MAX_IDEMPOTENCY_KEY).contains(&bytes.len()) {
            return Err(Refusal::BadRequest(format!(
                "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            )));
        }
        m.insert(IDEMPOTENCY_KEY, key.clone());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(request_id: &str) -> Ids<'_> {
        Ids {
            request_id,
            traceparent: None,
        }
    }

    #[test]
    fn a_clients_request_id_is_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(request_id(&h).len(), 16);
        h.insert(REQUEST_ID, HeaderValue::from_str(&"x".repeat(129)).unwrap());
        assert_eq!(request_id(&h).len(), 16);
    }

    #[test]
    fn token_request_id_and_idempotency_key_are_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert("idempotency-key", HeaderValue::from_static("k-1"));
        h.insert("cookie", HeaderValue::from_static("secret=1"));
        let m = metadata(&h, ids("rid")).unwrap();
        assert_eq!(m.get("authorization").unwrap(), "Bearer t");
        assert_eq!(m.get("idempotency-key").unwrap(), "k-1");
        assert_eq!(m.get(REQUEST_ID).unwrap(), "rid");
        assert!(m.get("cookie").is_none());
        h.insert("idempotency-key", HeaderValue::from_static("with a space"));
        assert!(metadata(&h, ids("rid")).is_ok());
    }

    #[test]
    fn a_bad_idempotency_key_is_refused_never_dropped() {
        for bad in [
            HeaderValue::from_bytes("naïve".as_bytes()).unwrap(),
            HeaderValue::from_str(&"k".repeat(256)).unwrap(),
            HeaderValue::from_static(""),
            HeaderValue::from_bytes(b"tab\there").unwrap(),
        ] {
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", bad.clone());
            match metadata(&h, ids("rid")) {
                Err(Refusal::BadRequest(m)) => assert!(m.contains("Idempotency-Key"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
