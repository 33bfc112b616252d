//! Circuit breakers per upstream instance, and the retry budget per upstream.
//!
//! A breaker is closed (calls flow) until `consecutive_failures` failures in a row, or a failure
//! share above `failure_ratio` over at least `min_calls` calls in `window`; then it is open (the
//! balancer skips the instance) for `open_for`; then one probe call decides (half-open): success
//! closes it, failure opens it again. What counts as a failure is
//! `shop_discovery::CallError::counts_against_instance`; a client's mistake never is.
//!
//! The retry budget lets retries add at most a fixed share of the recent requests (plus a small
//! reserve), so that retries never multiply an outage.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Breaker;

/// What the breaker of one instance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Why a breaker opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// More than `failure_ratio` of at least `min_calls` calls in `window` failed.
    FailureRatio,
    /// The probe call after `open_for` failed.
    ProbeFailed,
}

impl Trip {
    pub fn as_str(self) -> &'static str {
        match self {
            Trip::ConsecutiveFailures => "consecutive_failures",
            Trip::FailureRatio => "failure_ratio",
            Trip::ProbeFailed => "probe_failed",
        }
    }
}

/// What the breaker of one instance says about itself (for the admin view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub state: State,
    pub trips: u64,
    /// Why it last opened, and the failure that opened it as the caller described it.
    pub last_trip: Option<(Trip, Option<String>)>,
    /// Open: how long until a probe may go.
    pub probe_in: Option<Duration>,
}

#[derive(Debug)]
struct Instance {
    state: State,
    consecutive: u32,
    window_start: Instant,
    calls: u32,
    failures: u32,
    /// Open: until when. Half-open: when the probe started.
    since: Instant,
    trips: u64,
    last_trip: Option<(Trip, Option<String>)>,
}

/// The breakers of one `[breaker.NAME]` policy, one per upstream instance: state only; the
/// policy's numbers come with every call from the configuration in use.
#[derive(Debug, Default)]
pub struct Breakers {
    instances: Mutex<HashMap<String, Instance>>,
}

/// Instances not heard from for this long are forgotten (they left the set long ago).
const FORGET_AFTER: Duration = Duration::from_secs(600);

impl Breakers {
    /// Whether a call may go to `instance` now: closed, or open long enough that a probe is due
    /// (or a probe that never reported back is overdue).
    pub fn available(&self, config: &Breaker, instance: &str, now: Instant) -> bool {
        let Ok(map) = self.instances.lock() else {
            return true;
        };
        match map.get(instance) {
            None => true,
            Some(i) => match i.state {
                State::Closed => true,
                State::Open => now >= i.since,
                State::HalfOpen => now.saturating_duration_since(i.since) >= config.open_for,
            },
        }
    }

    /// A call is starting on `instance`: an open breaker whose time is up lets it through as
    /// the probe.
    pub fn begin(&self, instance: &str, now: Instant) {
        let Ok(mut map) = self.instances.lock() else {
            return;
        };
        if let Some(i) = map.get_mut(instance)
            && i.state != State::Closed
        {
            i.state = State::HalfOpen;
            i.since = now;
        }
    }

    /// Records how a call on `instance` ended. Returns true when this call tripped the breaker.
    pub fn record(&self, config: &Breaker, instance: &str, failed: bool, now: Instant) -> bool {
        let Ok(mut map) = self.instances.lock() else {
            return false;
        };
        if !map.contains_key(instance) {
            if map.len() > 1_000 {
                map.retain(|_, i| now.saturating_duration_since(i.window_start) < FORGET_AFTER);
            }
            map.insert(
                instance.to_owned(),
                Instance {
                    state: State::Closed,
                    consecutive: 0,
                    window_start: now,
                    calls: 0,
                    failures: 0,
                    since: now,
                    trips: 0,
                    last_trip: None,
                },
            );
        }
        let Some(i) = map.get_mut(instance) else {
            return false;
        };
        if now.saturating_duration_since(i.window_start) >= config.window {
            i.window_start = now;
            i.calls = 0;
            i.failures = 0;
        }
        i.calls += 1;
        if failed {
            i.failures += 1;
            i.consecutive += 1;
        } else {
            i.consecutive = 0;
        }
        let trip = match i.state {
            // The probe decides.
            State::HalfOpen | State::Open => failed.then_some(Trip::ProbeFailed),
            State::Closed if !failed => None,
            State::Closed if i.consecutive >= config.consecutive_failures => Some(Trip::ConsecutiveFailures),
            State::Closed => (i.calls >= config.min_calls
                && f64::from(i.failures) / f64::from(i.calls) > config.failure_ratio)
                .then_some(Trip::FailureRatio),
        };
        if let Some(why) = trip {
            i.last_trip = Some((why, None));
            i.state = State::Open;
            i.since = now + config.open_for;
            i.trips += 1;
            i.window_start = now;
            i.calls = 0;
            i.failures = 0;
        } else if !failed && i.state != State::Closed {
            i.state = State::Closed;
            i.consecutive = 0;
        }
        trip.is_some()
    }

    /// Says what the failure that just opened `instance`'s breaker was (after [`Breakers::record`]
    /// returned true), for the admin view.
    pub fn explain(&self, instance: &str, failure: String) {
        let Ok(mut map) = self.instances.lock() else {
            return;
        };
        if let Some((_, cause)) = map.get_mut(instance).and_then(|i| i.last_trip.as_mut()) {
            *cause = Some(failure);
        }
    }

    /// The breaker of `instance`, if a call ever went there under this policy.
    pub fn detail(&self, instance: &str, now: Instant) -> Option<Detail> {
        let map = self.instances.lock().ok()?;
        let i = map.get(instance)?;
        Some(Detail {
            state: i.state,
            trips: i.trips,
            last_trip: i.last_trip.clone(),
            probe_in: (i.state == State::Open).then(|| i.since.saturating_duration_since(now)),
        })
    }

    /// Whole seconds until the first open breaker among `instances` lets a probe through.
    pub fn retry_after(&self, instances: &[String], now: Instant) -> u64 {
        let Ok(map) = self.instances.lock() else {
            return 1;
        };
        instances
            .iter()
            .filter_map(|id| map.get(id))
            .filter(|i| i.state == State::Open)
            .map(|i| i.since.saturating_duration_since(now).as_secs_f64().ceil() as u64)
            .min()
            .unwrap_or(1)
            .max(1)
    }

    /// `(instance, state, trips)` for every instance seen (for `/metrics`).
    pub fn states(&self) -> Vec<(String, State, u64)> {
        let Ok(map) = self.instances.lock() else {
            return Vec::new();
        };
        let mut out: Vec<_> = map.iter().map(|(k, i)| (k.clone(), i.state, i.trips)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Retries may add `ratio` of the requests (plus a reserve of `reserve` for quiet times).
/// Counted in thousandths of a retry, so that 5 requests at 20 % make exactly one.
#[derive(Debug)]
pub struct RetryBudget {
    per_request: u64,
    reserve: u64,
    tokens: Mutex<u64>,
}

/// One retry, in the budget's unit.
const RETRY: u64 = 1000;

impl RetryBudget {
    /// 20 % of requests, and a reserve of 10 retries.
    pub fn new() -> RetryBudget {
        RetryBudget::with(0.2, 10.0)
    }

    pub fn with(ratio: f64, reserve: f64) -> RetryBudget {
        let reserve = (reserve.max(0.0) * RETRY as f64).round() as u64;
        RetryBudget {
            per_request: (ratio.clamp(0.0, 1.0) * RETRY as f64).round() as u64,
            reserve,
            tokens: Mutex::new(reserve),
        }
    }

    /// A request was made: it earns `ratio` of a retry.
    pub fn deposit(&self) {
        if let Ok(mut t) = self.tokens.lock() {
            *t = (*t + self.per_request).min(self.reserve);
        }
    }

    /// Takes one retry if the budget has it.
    pub fn withdraw(&self) -> bool {
        match self.tokens.lock() {
            Ok(mut t) if *t >= RETRY => {
                *t -= RETRY;
                true
            }
            _ => false,
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Breaker {
        Breaker {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_calls: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_then_one_probe_decides() {
        let (b, p) = (Breakers::default(), policy());
        let t0 = Instant::now();
        assert!(!b.record(&p, "a", true, t0));
        assert!(!b.record(&p, "a", true, t0));
        assert!(b.record(&p, "a", true, t0), "third failure in a row trips");
        assert!(!b.available(&p, "a", t0));
        assert!(b.available(&p, "b", t0), "other instances are not affected");
        assert_eq!(b.retry_after(&["a".into()], t0), 5);
        // After open_for, one probe: while it runs, nothing else goes there.
        let t1 = t0 + Duration::from_secs(5);
        assert!(b.available(&p, "a", t1));
        b.begin("a", t1);
        assert!(!b.available(&p, "a", t1));
        // The probe fails: open again.
        assert!(b.record(&p, "a", true, t1));
        assert!(!b.available(&p, "a", t1 + Duration::from_secs(1)));
        // Next probe succeeds: closed.
        let t2 = t1 + Duration::from_secs(5);
        b.begin("a", t2);
        b.record(&p, "a", false, t2);
        assert!(b.available(&p, "a", t2));
        assert_eq!(b.states(), vec![("a".to_owned(), State::Closed, 2)]);
        let d = b.detail("a", t2).unwrap();
        assert_eq!(
            d.last_trip,
            Some((Trip::ProbeFailed, None)),
            "the last opening says why"
        );
    }

    #[test]
    fn opens_on_a_failure_ratio_over_enough_calls() {
        let (b, p) = (Breakers::default(), policy());
        let t0 = Instant::now();
        // Alternating: never 3 in a row, but 6 of 11 > 50 %.
        let mut tripped = false;
        for n in 0..11 {
            tripped |= b.record(&p, "a", n % 2 == 0, t0);
        }
        assert!(tripped);
        assert!(!b.available(&p, "a", t0));
        b.explain("a", "the call was not sent".to_owned());
        let d = b.detail("a", t0).unwrap();
        assert_eq!(d.state, State::Open);
        assert_eq!(
            d.last_trip,
            Some((Trip::FailureRatio, Some("the call was not sent".to_owned())))
        );
        assert_eq!(d.probe_in, Some(Duration::from_secs(5)));
        assert!(b.detail("b", t0).is_none());
    }

    #[test]
    fn the_retry_budget_is_a_share_of_requests() {
        let budget = RetryBudget::with(0.2, 2.0);
        assert!(budget.withdraw() && budget.withdraw());
        assert!(!budget.withdraw(), "the reserve is spent");
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.withdraw() && budget.withdraw());
        assert!(!budget.withdraw(), "10 requests earn 2 retries");
    }
}
