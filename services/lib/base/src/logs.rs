//! Logs: `tracing` events to stderr, filtered by a directive string such as `info` or
//! `info,user_service=debug` (`RUST_LOG` wins over the one passed in).
//!
//! A request never waits for a log write: each event is formatted into a buffer of its own and
//! handed to a background thread that writes whatever has gathered in one go (every couple of
//! milliseconds while lines keep coming; at once after a quiet spell). When that thread
//! falls behind by [`BACKLOG`] lines, new lines are dropped (a request must not stall on a slow
//! disk) and the writer says how many, once it catches up. The [`Guard`] that [`init`] returns
//! writes out what is pending when it is dropped: keep it for the life of `main`.

use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Lines that may wait for the writer thread before new ones are dropped.
pub const BACKLOG: usize = 16_384;

/// How much the writer gathers into one write at most.
const BATCH_BYTES: usize = 64 * 1024;

/// How long a busy writer lets lines gather between writes (how late a line may appear).
const PACE: std::time::Duration = std::time::Duration::from_millis(2);

enum Message {
    Line(Vec<u8>),
    /// Write what is pending and stop (sent by [`Guard`]'s drop).
    Stop,
}

/// Hands formatted events to the writer thread.
#[derive(Clone)]
struct Handoff {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

/// One event's text, sent when the event is fully written.
pub struct Line<'a> {
    buf: Vec<u8>,
    to: &'a Handoff,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        match self.to.tx.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.to.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for Handoff {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            buf: Vec::with_capacity(256),
            to: self,
        }
    }
}

/// Where [`emit`] sends lines: set by [`init`].
static HANDOFF: OnceLock<Handoff> = OnceLock::new();

/// Sends one line formatted elsewhere (the gateway's access log) to the writer thread, as the
/// `tracing` events go: dropped (and counted) when the writer has fallen [`BACKLOG`] lines
/// behind, dropped silently before [`init`]. `line` ends with a newline.
pub fn emit(line: Vec<u8>) {
    if let Some(h) = HANDOFF.get()
        && h.tx.try_send(Message::Line(line)).is_err()
    {
        h.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends the time now as the log lines show it: RFC 3339, UTC, microseconds
/// (`2026-11-29T15:10:37.158426Z`).
pub fn timestamp(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(i64::try_from(days).unwrap_or(0));
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        now.subsec_micros()
    );
}

/// The calendar date (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), for anything that writes dates without a date crate.
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Writes pending lines out when dropped; hold it for the life of `main`.
pub struct Guard {
    tx: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // A blocking send: the stop waits behind the lines already queued.
        let _ = self.tx.send(Message::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Gathers what is queued (up to [`BATCH_BYTES`]) into `batch`; true when a stop came.
fn gather(first: Message, rx: &Receiver<Message>, batch: &mut Vec<u8>) -> bool {
    let mut next = Some(first);
    while let Some(message) = next {
        match message {
            Message::Line(line) => batch.extend_from_slice(&line),
            Message::Stop => return true,
        }
        next = if batch.len() < BATCH_BYTES {
            rx.try_recv().ok()
        } else {
            None
        };
    }
    false
}

/// The writer thread. Idle, it sleeps on the channel (the first line wakes it); busy, it
/// writes what gathered every [`PACE`], so senders never have to wake it: a steady stream of
/// lines costs one write a few milliseconds, not a wake-up and a write per line.
fn write_out(rx: &Receiver<Message>, dropped: &AtomicU64) {
    let mut err = std::io::stderr();
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut reported = 0;
    let mut waiting = rx.recv().ok();
    while let Some(first) = waiting {
        let stop = gather(first, rx, &mut batch);
        let lost = dropped.load(Ordering::Relaxed);
        if lost != reported {
            let _ = writeln!(
                batch,
                "log writer: {} lines dropped because it fell behind",
                lost - reported
            );
            reported = lost;
        }
        let _ = err.write_all(&batch);
        batch.clear();
        if stop {
            return;
        }
        std::thread::sleep(PACE);
        waiting = match rx.try_recv() {
            Ok(m) => Some(m),
            // Nothing came meanwhile: idle again, sleep on the channel.
            Err(_) => rx.recv().ok(),
        };
    }
}

/// Installs the global subscriber: stderr through the non-blocking writer, ANSI colours only on
/// a terminal and without `NO_COLOR`, event targets shown when `targets` (the gateway's
/// `access` lines). Returns an error naming a directive that does not parse; calling it twice
/// keeps the first subscriber.
pub fn init(directive: &str, targets: bool) -> Result<Guard, String> {
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| directive.to_owned());
    let filter = Targets::from_str(&directive).map_err(|e| format!("log level {directive:?}: {e}"))?;
    let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (tx, rx) = sync_channel(BACKLOG);
    let dropped = Arc::new(AtomicU64::new(0));
    let thread = {
        let dropped = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || write_out(&rx, &dropped))
            .map_err(|e| format!("cannot start the log writer: {e}"))?
    };
    let handoff = Handoff {
        tx: tx.clone(),
        dropped,
    };
    let _ = HANDOFF.set(handoff.clone());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(handoff)
        .with_ansi(ansi)
        .with_target(targets);
    let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
    Ok(Guard {
        tx,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_come_out_right() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(civil(20_786), (2026, 11, 29));
        assert_eq!(civil(-1), (1969, 12, 31));
        let mut out = Vec::new();
        timestamp(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.len(), "2026-11-29T15:10:37.158426Z".len(), "{text}");
        assert!(text.ends_with('Z') && text.as_bytes()[10] == b'T', "{text}");
    }

    #[test]
    fn lines_arrive_whole_and_a_full_backlog_drops_instead_of_blocking() {
        let (tx, rx) = sync_channel(2);
        let h = Handoff {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        for i in 0..4 {
            let mut w = h.make_writer();
            write!(w, "line {i}").unwrap();
            writeln!(w).unwrap();
        }
        assert_eq!(h.dropped.load(Ordering::Relaxed), 2, "the two past the backlog");
        let got: Vec<String> = rx
            .try_iter()
            .map(|m| match m {
                Message::Line(l) => String::from_utf8(l).unwrap(),
                Message::Stop => "stop".to_owned(),
            })
            .collect();
        assert_eq!(got, ["line 0\n", "line 1\n"]);
    }
}
