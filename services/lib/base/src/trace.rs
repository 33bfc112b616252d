//! W3C trace context (`traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`): the
//! header (and gRPC metadata key) that carries it, reading one strictly, continuing it with a
//! span of our own, or starting a trace. The trace id is what every log line of a request
//! carries, so `grep <trace id>` over all logs shows the request's whole way.
//!
//! Ids are unique, not secret: a random start per process, then a counter mixed so that
//! neighbours look unrelated (the same scheme as request ids).

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The header and metadata key.
pub const HEADER: &str = "traceparent";

/// One hop of a trace: the trace id, this hop's span id, and whether the trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    /// The span this one continues (0: none known, a trace's first span).
    parent_id: u64,
    flags: u8,
}

fn hex_field<const N: usize>(text: &str) -> Option<&str> {
    (text.len() == N && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(text)
}

impl TraceContext {
    /// A `traceparent` value, or `None` when it is not one: version `00` exactly (later
    /// versions by their first four fields, as the specification asks), lowercase hex, neither
    /// id all zeros, version `ff` refused.
    pub fn parse(text: &str) -> Option<TraceContext> {
        let mut parts = text.split('-');
        let version = hex_field::<2>(parts.next()?)?;
        let trace = hex_field::<32>(parts.next()?)?;
        let parent = hex_field::<16>(parts.next()?)?;
        let flags = hex_field::<2>(parts.next()?)?;
        if version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let ctx = TraceContext {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(parent, 16).ok()?,
            parent_id: 0,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (ctx.trace_id != 0 && ctx.span_id != 0).then_some(ctx)
    }

    /// A new trace (sampled), with its first span.
    pub fn start() -> TraceContext {
        let hi = u128::from(next());
        let lo = u128::from(next());
        TraceContext {
            trace_id: (hi << 64 | lo).max(1),
            span_id: next().max(1),
            parent_id: 0,
            flags: 1,
        }
    }

    /// The next hop of this trace: the same trace id and flags, a span of its own.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: next().max(1),
            parent_id: self.span_id,
            ..*self
        }
    }

    /// The hop that follows an incoming `traceparent` (its child), or a new trace when there is
    /// none or it is not valid.
    pub fn continue_from(incoming: Option<&str>) -> TraceContext {
        incoming
            .and_then(TraceContext::parse)
            .map_or_else(TraceContext::start, |c| c.child())
    }

    /// The trace id as 32 hex digits, as logs show it.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// This span's id as 16 hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The id of the span this one continues, when there is one.
    pub fn parent_id(&self) -> Option<String> {
        (self.parent_id != 0).then(|| format!("{:016x}", self.parent_id))
    }
}

/// The `traceparent` value (version 00) naming this hop as the parent of the next.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

tokio::task_local! {
    /// The hop of the call a task is serving, for the calls it makes in turn.
    static CURRENT: TraceContext;
}

/// Runs `work` as hop `ctx`: inside it, [`current`] answers `ctx` (the service kit wraps every
/// call's handler in this).
pub async fn scope<F: std::future::Future>(ctx: TraceContext, work: F) -> F::Output {
    CURRENT.scope(ctx, work).await
}

/// The hop of the call this task is serving, if it serves one: a call made from here sends it
/// as its `traceparent`, so the callee's span is this span's child.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

fn next() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    crate::request_id::mix(seed ^ NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_knows_the_hop_it_serves() {
        assert_eq!(current(), None);
        let hop = TraceContext::start();
        let seen = scope(hop, async { current() }).await;
        assert_eq!(seen, Some(hop));
    }

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_is_continued_and_anything_else_starts_a_trace() {
        let incoming = TraceContext::parse(GOOD).unwrap();
        assert_eq!(incoming.to_string(), GOOD);
        let next = TraceContext::continue_from(Some(GOOD));
        assert_eq!(next.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(next.parent_id().as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(TraceContext::start().parent_id(), None);
        assert_ne!(next.to_string(), GOOD, "a span of its own");
        assert!(next.to_string().ends_with("-01"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
            let started = TraceContext::continue_from(Some(bad));
            assert!(TraceContext::parse(&started.to_string()).is_some());
        }
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some()
        );
        let a = TraceContext::start();
        let b = TraceContext::start();
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(a.trace_id().len(), 32);
    }
}
