//! Unary gRPC calls over HTTP/2, spoken with the `h2` crate directly: a request goes from the
//! caller's task into the connection's stream state and out on the connection's own task, with
//! no buffer task and no dispatch channel in between (what a tonic `Channel` adds per call).
//!
//! [`Connections`] are an instance's HTTP/2 connections ([`PER_INSTANCE`] of them, taken in
//! turn, so one connection's lock is not everybody's), dialled on first use and again after
//! one fails. [`unary`] sends one framed message with the metadata and the deadline
//! (`grpc-timeout`), reads the framed reply and the status from the trailers (or a
//! trailers-only answer), and says what went wrong in `shop-discovery`'s terms: not sent,
//! broken, late, or the service's own status.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, StatusCode};
use shop_discovery::CallError;
use tonic::{Code, Status};

/// HTTP/2 connections per instance.
pub const PER_INSTANCE: usize = 2;
/// How long dialling an instance may take: instances are on the same network, so a slow connect
/// means a dead host, and the deadline should go to another instance.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest reply accepted (a page of products is tens of KiB).
pub const MAX_REPLY: usize = 4 * 1024 * 1024;

type Sender = h2::client::SendRequest<Bytes>;

/// The connections to one instance (`host:port`).
#[derive(Debug)]
pub struct Connections {
    authority: String,
    slots: [Slot; PER_INSTANCE],
    next: AtomicUsize,
}

/// One connection: ready to use, or to be dialled (by the first caller who finds it so).
#[derive(Debug, Default)]
struct Slot {
    ready: Mutex<Option<Sender>>,
    /// Held while dialling, so concurrent callers wait for one connection, not make many.
    dialling: tokio::sync::Mutex<()>,
}

impl Connections {
    /// Connections to `authority`, none dialled yet (a balancer's connector).
    pub fn lazy(authority: &str) -> Option<Arc<Connections>> {
        Some(Arc::new(Connections {
            authority: authority.to_owned(),
            slots: Default::default(),
            next: AtomicUsize::new(0),
        }))
    }

    /// A sender on the next connection, dialling it when it is not up.
    async fn sender(&self) -> Result<(usize, Sender), String> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % PER_INSTANCE;
        let slot = &self.slots[i];
        if let Some(s) = lock(&slot.ready).clone() {
            return Ok((i, s));
        }
        let _one = slot.dialling.lock().await;
        if let Some(s) = lock(&slot.ready).clone() {
            return Ok((i, s));
        }
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, dial(&self.authority))
            .await
            .map_err(|_| format!("no connection within {} ms", CONNECT_TIMEOUT.as_millis()))??;
        *lock(&slot.ready) = Some(sender.clone());
        Ok((i, sender))
    }

    /// Forgets connection `i` after it failed, so the next call dials anew.
    fn drop_connection(&self, i: usize) {
        if let Some(slot) = self.slots.get(i) {
            *lock(&slot.ready) = None;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Dials `authority` and starts the connection's task.
async fn dial(authority: &str) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let shown = authority.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(instance = %shown, error = %e, "connection to the instance ended");
        }
    });
    Ok(sender)
}

/// A gRPC message in its frame: not compressed, 4-byte big-endian length, the message.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// `grpc-timeout` as the spec writes it: at most 8 digits and a unit.
fn grpc_timeout(d: Duration) -> HeaderValue {
    let millis = d.as_millis().max(1);
    let text = if millis < 100_000_000 {
        format!("{millis}m")
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("1S"))
}

/// One unary call on `conns`: `body` is the framed request, `metadata` goes along as headers.
/// Returns the reply message (unframed).
pub async fn unary(
    conns: &Connections,
    path: &PathAndQuery,
    metadata: &HeaderMap,
    body: Bytes,
    deadline: Duration,
) -> Result<Bytes, CallError> {
    let instance = conns.authority.as_str();
    let not_sent = |why: String| CallError::NotSent {
        instance: instance.to_owned(),
        status: Status::unavailable(why),
    };
    let (slot, sender) = conns.sender().await.map_err(not_sent)?;
    let exchange = exchange(sender, conns, path, metadata, body, deadline);
    match tokio::time::timeout(deadline, exchange).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(Failed::Call(e))) => Err(e),
        Ok(Err(Failed::Connection(e, sent))) => {
            conns.drop_connection(slot);
            Err(CallError::from_h2(&e, sent, instance))
        }
        Err(_) => Err(CallError::Deadline {
            instance: instance.to_owned(),
            after: deadline,
        }),
    }
}

/// How an exchange failed: the service answered with an error status, or HTTP/2 failed (and
/// whether the request's headers had gone out by then).
enum Failed {
    Call(CallError),
    Connection(h2::Error, bool),
}

async fn exchange(
    sender: Sender,
    conns: &Connections,
    path: &PathAndQuery,
    metadata: &HeaderMap,
    body: Bytes,
    deadline: Duration,
) -> Result<Bytes, Failed> {
    let mut sender = sender.ready().await.map_err(|e| Failed::Connection(e, false))?;
    let uri = format!("http://{}{}", conns.authority, path.as_str());
    let mut request = Request::post(uri).body(()).map_err(|e| {
        Failed::Call(internal(
            &conns.authority,
            &format!("cannot build the request: {e}"),
        ))
    })?;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert("grpc-timeout", grpc_timeout(deadline));
    for (name, value) in metadata {
        headers.insert(name.clone(), value.clone());
    }
    let (response, mut stream) = sender
        .send_request(request, false)
        .map_err(|e| Failed::Connection(e, false))?;
    stream
        .send_data(body, true)
        .map_err(|e| Failed::Connection(e, true))?;
    let response = response.await.map_err(|e| Failed::Connection(e, true))?;
    reply(response, &conns.authority, deadline).await
}

/// The reply: the message, or the status the service answered with.
async fn reply(
    response: http::Response<h2::RecvStream>,
    instance: &str,
    deadline: Duration,
) -> Result<Bytes, Failed> {
    let (parts, mut body) = response.into_parts();
    if parts.status != StatusCode::OK {
        return Err(Failed::Call(CallError::Answered(Status::new(
            code_for_http(parts.status),
            format!("{instance} answered HTTP {}", parts.status),
        ))));
    }
    // Trailers-only: an error answered in the headers.
    if let Some(status) = grpc_status(&parts.headers) {
        return Err(Failed::Call(CallError::answered(status, instance, deadline)));
    }
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| Failed::Connection(e, true))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if data.len() + chunk.len() > MAX_REPLY + 5 {
            return Err(Failed::Call(internal(instance, "the reply is too large")));
        }
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(|e| Failed::Connection(e, true))?;
    match trailers.as_ref().and_then(grpc_status) {
        Some(status) if status.code() != Code::Ok => {
            Err(Failed::Call(CallError::answered(status, instance, deadline)))
        }
        Some(_) => unframe(data.freeze())
            .ok_or_else(|| Failed::Call(internal(instance, "the reply is not one gRPC message"))),
        None => Err(Failed::Call(internal(instance, "the reply has no grpc-status"))),
    }
}

fn internal(instance: &str, why: &str) -> CallError {
    CallError::Answered(Status::internal(format!("{instance}: {why}")))
}

/// The one message in a framed reply (uncompressed).
fn unframe(mut data: Bytes) -> Option<Bytes> {
    if data.len() < 5 || data[0] != 0 {
        return None;
    }
    data.advance(1);
    let len = usize::try_from(data.get_u32()).ok()?;
    (data.len() == len).then_some(data)
}

/// `grpc-status` and `grpc-message` (percent-decoded) from headers or trailers.
fn grpc_status(headers: &HeaderMap) -> Option<Status> {
    let code: i32 = headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Some(Status::new(Code::from_i32(code), message))
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gRPC code for an HTTP status that is not 200 (gRPC's HTTP-to-gRPC mapping).
fn code_for_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_statuses_and_timeouts() {
        let f = frame(b"\x08\x01");
        assert_eq!(&f[..], b"\x00\x00\x00\x00\x02\x08\x01");
        assert_eq!(unframe(f).as_deref(), Some(&b"\x08\x01"[..]));
        assert_eq!(
            unframe(Bytes::from_static(b"\x01\x00\x00\x00\x00")),
            None,
            "compressed"
        );
        assert_eq!(
            unframe(Bytes::from_static(b"\x00\x00\x00\x00\x05ab")),
            None,
            "short"
        );
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("5"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("order%207%20not%20found"),
        );
        let s = grpc_status(&h).unwrap();
        assert_eq!((s.code(), s.message()), (Code::NotFound, "order 7 not found"));
        assert_eq!(grpc_timeout(Duration::from_secs(3)), "3000m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
        assert_eq!(code_for_http(StatusCode::SERVICE_UNAVAILABLE), Code::Unavailable);
    }
}
