//! Spans exported over OTLP/HTTP, JSON encoding, to a collector when one is configured (off by
//! default): the gateway records one span per request and each service one per call, with the
//! ids of [`crate::trace`], so a collector (Jaeger, Tempo, the OpenTelemetry Collector) shows a
//! request's whole way. Recording never waits: spans go into a bounded queue that a background
//! task sends in batches (every second, or at 512 spans); when the queue is full or the collector
//! does not answer, spans are dropped and counted, never retried, so a missing collector costs a
//! request nothing.
//!
//! The collector is spoken to with a hand-written HTTP/1.1 POST (`http://` only): one request
//! per batch on a fresh connection, which a few batches a second do not notice.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::trace::TraceContext;

/// Spans waiting to be sent; more are dropped.
const QUEUE: usize = 8192;
/// Spans per request to the collector.
const BATCH: usize = 512;
/// How long spans wait for a batch to fill.
const EVERY: Duration = Duration::from_secs(1);
/// Deadline of one send.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A finished span.
#[derive(Debug, Clone)]
pub struct Span {
    pub context: TraceContext,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Attr)>,
    /// The operation failed (a 5xx, a server fault).
    pub error: bool,
}

#[derive(Debug, Clone)]
pub enum Attr {
    Text(String),
    Int(i64),
}

struct Exporter {
    queue: mpsc::Sender<Span>,
    dropped: AtomicU64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Where a collector listens: `http://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host_port: String,
    path: String,
}

impl Endpoint {
    /// An `http://host[:port][/path]` URL (path default `/v1/traces`, port default 80).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = || format!("expected http://host:port/v1/traces, got {url:?}");
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/v1/traces"),
        };
        let ok = !authority.is_empty()
            && authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            && path.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(bad());
        }
        let host_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint {
            host_port,
            path: path.to_owned(),
        })
    }
}

/// Starts sending spans of `service` to `endpoint` (on the current tokio runtime). Once per
/// process; later calls change nothing.
pub fn init(endpoint: Endpoint, service: &str) {
    let (tx, rx) = mpsc::channel(QUEUE);
    if EXPORTER
        .set(Exporter {
            queue: tx,
            dropped: AtomicU64::new(0),
        })
        .is_ok()
    {
        tokio::spawn(send_loop(rx, endpoint, service.to_owned()));
    }
}

/// Whether spans are exported: callers skip building them otherwise.
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Queues a span for export; dropped (and counted) when the queue is full or export is off.
pub fn record(span: Span) {
    if let Some(e) = EXPORTER.get()
        && e.queue.try_send(span).is_err()
    {
        e.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

async fn send_loop(mut rx: mpsc::Receiver<Span>, endpoint: Endpoint, service: String) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut failing = false;
    loop {
        let deadline = tokio::time::Instant::now() + EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let body = encode(&service, &batch);
        let sent = tokio::time::timeout(SEND_TIMEOUT, post(&endpoint, &body)).await;
        match sent {
            Ok(Ok(())) => {
                if failing {
                    tracing::info!(collector = %endpoint.host_port, "span export works again");
                }
                failing = false;
            }
            Ok(Err(e)) if !failing => {
                tracing::warn!(collector = %endpoint.host_port, error = %e, "span export failed; spans are dropped until it works");
                failing = true;
            }
            Err(_) if !failing => {
                tracing::warn!(collector = %endpoint.host_port, "span export timed out; spans are dropped until it works");
                failing = true;
            }
            _ => {}
        }
        if let Some(e) = EXPORTER.get()
            && failing
        {
            e.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        batch.clear();
    }
}

/// One POST; Ok when the collector answered 2xx.
async fn post(endpoint: &Endpoint, body: &str) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(&endpoint.host_port)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.host_port,
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(body.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = [0u8; 32];
    let n = stream.read(&mut answer).await.map_err(|e| e.to_string())?;
    let status = std::str::from_utf8(&answer[..n])
        .ok()
        .and_then(|t| t.split(' ').nth(1))
        .unwrap_or("");
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("the collector answered {status:?}"))
    }
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn attribute(out: &mut String, key: &str, value: &Attr) {
    out.push_str("{\"key\":");
    json_string(out, key);
    match value {
        Attr::Text(t) => {
            out.push_str(",\"value\":{\"stringValue\":");
            json_string(out, t);
            out.push_str("}}");
        }
        Attr::Int(i) => {
            let _ = write!(out, ",\"value\":{{\"intValue\":\"{i}\"}}}}");
        }
    }
}

/// The OTLP/JSON `ExportTraceServiceRequest` for `spans` of `service` (ids as hex, 64-bit
/// numbers as strings, as the OTLP JSON mapping says).
pub fn encode(service: &str, spans: &[Span]) -> String {
    let mut out = String::with_capacity(256 + spans.len() * 400);
    out.push_str("{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    attribute(&mut out, "service.name", &Attr::Text(service.to_owned()));
    out.push_str("]},\"scopeSpans\":[{\"scope\":{\"name\":\"shop\"},\"spans\":[");
    for (i, s) in spans.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"traceId\":\"{}\",\"spanId\":\"{}\"",
            s.context.trace_id(),
            s.context.span_id()
        );
        if let Some(parent) = s.context.parent_id() {
            let _ = write!(out, ",\"parentSpanId\":\"{parent}\"");
        }
        out.push_str(",\"name\":");
        json_string(&mut out, &s.name);
        let _ = write!(
            out,
            ",\"kind\":2,\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
            nanos(s.start),
            nanos(s.end)
        );
        for (j, (k, v)) in s.attributes.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            attribute(&mut out, k, v);
        }
        let _ = write!(out, "],\"status\":{{\"code\":{}}}}}", if s.error { 2 } else { 1 });
    }
    out.push_str("]}]}]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls() {
        let e = Endpoint::parse("http://127.0.0.1:4318/v1/traces").unwrap();
        assert_eq!(
            (e.host_port.as_str(), e.path.as_str()),
            ("127.0.0.1:4318", "/v1/traces")
        );
        let e = Endpoint::parse("http://collector").unwrap();
        assert_eq!(
            (e.host_port.as_str(), e.path.as_str()),
            ("collector:80", "/v1/traces")
        );
        for bad in ["https://c:4318", "c:4318", "http://", "http://a b/"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spans_are_written_in_the_otlp_json_mapping() {
        let ctx = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap()
            .child();
        let at = UNIX_EPOCH + Duration::from_nanos(1_000);
        let json = encode(
            "gateway",
            &[Span {
                context: ctx,
                name: "get \"x\"".to_owned(),
                start: at,
                end: at + Duration::from_nanos(500),
                attributes: vec![("http.response.status_code", Attr::Int(200))],
                error: false,
            }],
        );
        assert!(
            json.contains("\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e4736\""),
            "{json}"
        );
        assert!(json.contains("\"parentSpanId\":\"00f067aa0ba902b7\""), "{json}");
        assert!(json.contains("\"name\":\"get \\\"x\\\"\""), "{json}");
        assert!(
            json.contains("\"startTimeUnixNano\":\"1000\",\"endTimeUnixNano\":\"1500\""),
            "{json}"
        );
        assert!(
            json.contains("{\"key\":\"http.response.status_code\",\"value\":{\"intValue\":\"200\"}}"),
            "{json}"
        );
        assert!(
            json.contains("{\"key\":\"service.name\",\"value\":{\"stringValue\":\"gateway\"}}"),
            "{json}"
        );
    }
}
