//! The access log: one line per request, in the fields and format `[access_log]` chooses (text
//! in the shape of the other log lines, or one JSON object), formatted straight into one buffer
//! and handed to a writer thread: no `tracing` event to build and format per request. Lines go
//! to stderr under the target `access` (so `RUST_LOG=access=info,warn` keeps only these),
//! through the log writer every line shares, or appended to `[access_log] file` by a writer
//! thread of their own ([`Sink`]).

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

/// What the access log says about one request.
pub struct Entry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub upstream: &'a str,
    pub retried: bool,
    /// The response body's length.
    pub bytes: u64,
    pub request_id: &'a str,
    /// The W3C trace id, once the gateway takes part in traces; `-` (text) or `null` (JSON)
    /// until then.
    pub trace_id: Option<&'a str>,
    pub peer: SocketAddr,
}

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `<time>  INFO access: method=GET path=/api/products/1 ...`: the other log lines' shape.
    Text,
    /// One JSON object per line: `{"time":"...","method":"GET",...}`.
    Json,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

/// One field a line may carry, written in the order `[access_log] fields` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Route,
    Method,
    Path,
    Status,
    /// Written as `latency_ms`, milliseconds with two decimals.
    Latency,
    /// The instance that answered last (`host:port`).
    Upstream,
    Retried,
    /// The response body's length in bytes.
    Bytes,
    Peer,
    RequestId,
    TraceId,
}

impl Field {
    /// Every field, by its name in the file.
    pub const ALL: [Field; 11] = [
        Field::Route,
        Field::Method,
        Field::Path,
        Field::Status,
        Field::Latency,
        Field::Upstream,
        Field::Retried,
        Field::Bytes,
        Field::Peer,
        Field::RequestId,
        Field::TraceId,
    ];

    /// The fields of a line unless the file lists others: the line the gateway always wrote,
    /// and the trace id.
    pub const DEFAULT: [Field; 10] = [
        Field::Method,
        Field::Path,
        Field::Route,
        Field::Status,
        Field::Latency,
        Field::Upstream,
        Field::Retried,
        Field::RequestId,
        Field::TraceId,
        Field::Peer,
    ];

    pub fn parse(text: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == text)
    }

    /// The name in `[access_log] fields`.
    pub fn name(self) -> &'static str {
        match self {
            Field::Route => "route",
            Field::Method => "method",
            Field::Path => "path",
            Field::Status => "status",
            Field::Latency => "latency",
            Field::Upstream => "upstream",
            Field::Retried => "retried",
            Field::Bytes => "bytes",
            Field::Peer => "peer",
            Field::RequestId => "request_id",
            Field::TraceId => "trace_id",
        }
    }

    /// The key in a line (the name, but `latency_ms` for the latency, which says its unit).
    fn key(self) -> &'static str {
        match self {
            Field::Latency => "latency_ms",
            other => other.name(),
        }
    }
}

/// The access log of one configuration: its format, its fields and where lines go.
pub struct Log {
    pub format: Format,
    pub fields: Vec<Field>,
    sink: Sink,
}

impl Log {
    /// Lines in `format` with `fields`, to `file` (opened now, for appending; a reload opens it
    /// again, which is how a rotated file is let go) or to stderr.
    pub fn open(format: Format, fields: Vec<Field>, file: Option<&Path>) -> Result<Log, String> {
        let sink = match file {
            None => Sink::Stderr,
            Some(path) => Sink::File(FileSink::open(path)?),
        };
        Ok(Log { format, fields, sink })
    }

    /// Whether lines are wanted: always with a file; on stderr, the log filter's answer (no
    /// work is done when not).
    pub fn enabled(&self) -> bool {
        match self.sink {
            Sink::Stderr => tracing::enabled!(target: "access", tracing::Level::INFO),
            Sink::File(_) => true,
        }
    }

    /// Writes `entry` as one line.
    pub fn write(&self, entry: &Entry<'_>) {
        if !self.enabled() {
            return;
        }
        let mut line = Vec::with_capacity(256);
        match self.format {
            Format::Text => self.text(entry, &mut line),
            Format::Json => self.json(entry, &mut line),
        }
        match &self.sink {
            Sink::Stderr => shop_base::logs::emit(line),
            Sink::File(f) => f.send(line),
        }
    }

    /// Waits (up to `within`) until every line handed over so far is written (at a stop).
    pub async fn flush(&self, within: Duration) {
        if let Sink::File(f) = &self.sink {
            f.flush(within).await;
        }
    }

    /// `<time>  INFO access: method=GET path=/api/products/1 route="get-product" status=200
    /// latency_ms=1.21 upstream="127.0.0.1:5003" retried=false request_id=... peer=...`.
    fn text(&self, e: &Entry<'_>, out: &mut Vec<u8>) {
        shop_base::logs::timestamp(out);
        out.extend_from_slice(b"  INFO access:");
        for f in &self.fields {
            let _ = write!(out, " {}=", f.key());
            let _ = match f {
                Field::Route => write!(out, "{:?}", e.route),
                Field::Method => write!(out, "{}", e.method),
                Field::Path => write!(out, "{}", e.path),
                Field::Status => write!(out, "{}", e.status),
                Field::Latency => write!(out, "{:.2}", e.latency.as_secs_f64() * 1000.0),
                Field::Upstream => write!(out, "{:?}", e.upstream),
                Field::Retried => write!(out, "{}", e.retried),
                Field::Bytes => write!(out, "{}", e.bytes),
                Field::Peer => write!(out, "{}", e.peer),
                Field::RequestId => write!(out, "{}", e.request_id),
                Field::TraceId => write!(out, "{}", e.trace_id.unwrap_or("-")),
            };
        }
        out.push(b'\n');
    }

    /// `{"time":"...","method":"GET",...}`: strings escaped as JSON, numbers as numbers, an
    /// absent upstream or trace id as `null`.
    fn json(&self, e: &Entry<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        shop_base::logs::timestamp(out);
        out.push(b'"');
        for f in &self.fields {
            let _ = write!(out, ",\"{}\":", f.key());
            let _ = match f {
                Field::Route => string(out, e.route),
                Field::Method => string(out, e.method),
                Field::Path => string(out, e.path),
                Field::Status => write!(out, "{}", e.status),
                Field::Latency => write!(out, "{:.2}", e.latency.as_secs_f64() * 1000.0),
                Field::Upstream if e.upstream == "-" => write!(out, "null"),
                Field::Upstream => string(out, e.upstream),
                Field::Retried => write!(out, "{}", e.retried),
                Field::Bytes => write!(out, "{}", e.bytes),
                Field::Peer => write!(out, "\"{}\"", e.peer),
                Field::RequestId => string(out, e.request_id),
                Field::TraceId => match e.trace_id {
                    Some(t) => string(out, t),
                    None => write!(out, "null"),
                },
            };
        }
        out.extend_from_slice(b"}\n");
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it (no allocation).
fn string(out: &mut Vec<u8>, text: &str) -> std::io::Result<()> {
    serde_json::to_writer(out, text).map_err(std::io::Error::other)
}

/// Where lines go.
enum Sink {
    /// The log writer thread every log line goes through.
    Stderr,
    File(FileSink),
}

/// Lines that may wait for a file's writer thread before new ones are dropped (as the stderr
/// writer does: a request never waits for a slow disk).
const BACKLOG: usize = 16_384;
/// How much the writer gathers into one write at most.
const BATCH_BYTES: usize = 64 * 1024;
/// How long a busy writer lets lines gather between writes: a steady stream costs one write
/// every few milliseconds, not a wake-up and a write per line.
const PACE: Duration = Duration::from_millis(2);

enum Message {
    Line(Vec<u8>),
    /// Answered once every line before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// An access log file and its writer thread, which ends (after writing what is queued) when
/// the configuration that opened it is gone.
struct FileSink {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl FileSink {
    fn open(path: &Path) -> Result<FileSink, String> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                format!(
                    "access_log.file {}: cannot open for appending: {e}",
                    path.display()
                )
            })?;
        let (tx, rx) = sync_channel(BACKLOG);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&dropped);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_out(file, &path, &rx, &counted))
            .map_err(|e| format!("access_log.file: cannot start its writer: {e}"))?;
        Ok(FileSink { tx, dropped })
    }

    fn send(&self, line: Vec<u8>) {
        if self.tx.try_send(Message::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn flush(&self, within: Duration) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.tx.try_send(Message::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(within, written).await;
        }
    }
}

/// The writer thread: sleeps on the channel while idle; busy, writes what gathered every
/// [`PACE`]. Lines dropped for a full backlog are reported on stderr, once it catches up.
fn write_out(mut file: File, path: &Path, rx: &Receiver<Message>, dropped: &AtomicU64) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut flushed = Vec::new();
    let mut reported = 0;
    let mut waiting = rx.recv().ok();
    while let Some(first) = waiting {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => batch.extend_from_slice(&line),
                Message::Flush(done) => flushed.push(done),
            }
            next = if batch.len() < BATCH_BYTES {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if let Err(e) = file.write_all(&batch) {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the access log");
        }
        batch.clear();
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
        let lost = dropped.load(Ordering::Relaxed);
        if lost != reported {
            tracing::warn!(file = %path.display(), lines = lost - reported, "access log lines dropped: the file's writer fell behind");
            reported = lost;
        }
        std::thread::sleep(PACE);
        waiting = match rx.try_recv() {
            Ok(m) => Some(m),
            Err(_) => rx.recv().ok(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            method: "GET",
            path: "/api/products/1",
            route: "get-product",
            status: 200,
            latency: Duration::from_micros(1214),
            upstream: "127.0.0.1:5003",
            retried: false,
            bytes: 42,
            request_id: "r\"1",
            trace_id: None,
            peer: "127.0.0.1:56386".parse().unwrap(),
        }
    }

    fn line(format: Format, fields: &[Field], e: &Entry<'_>) -> String {
        let log = Log::open(format, fields.to_vec(), None).unwrap();
        let mut out = Vec::new();
        match format {
            Format::Text => log.text(e, &mut out),
            Format::Json => log.json(e, &mut out),
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_default_text_line_is_the_one_the_gateway_always_wrote_with_the_trace_id() {
        let text = line(Format::Text, &Field::DEFAULT, &entry());
        let (_, rest) = text.split_once("  INFO access: ").unwrap();
        assert_eq!(
            rest,
            "method=GET path=/api/products/1 route=\"get-product\" status=200 latency_ms=1.21 \
             upstream=\"127.0.0.1:5003\" retried=false request_id=r\"1 trace_id=- peer=127.0.0.1:56386\n"
        );
        let picked = line(
            Format::Text,
            &[Field::Status, Field::Bytes, Field::TraceId],
            &entry(),
        );
        assert!(
            picked.ends_with(" INFO access: status=200 bytes=42 trace_id=-\n"),
            "{picked}"
        );
    }

    #[test]
    fn a_json_line_is_one_object_with_the_chosen_fields_in_order() {
        let mut e = entry();
        e.upstream = "-";
        let text = line(Format::Json, &Field::ALL, &e);
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["route"], "get-product");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 1.21);
        assert_eq!(v["upstream"], serde_json::Value::Null);
        assert_eq!(v["bytes"], 42);
        assert_eq!(v["request_id"], "r\"1");
        assert_eq!(v["trace_id"], serde_json::Value::Null);
        assert_eq!(v["peer"], "127.0.0.1:56386");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 12, "time and the 11 fields: {keys:?}");
    }
}
