//! Pacing for loops that talk to Consul: a token bucket that lets a burst through and then
//! settles to a steady rate, full-jitter exponential backoff, a small random source, and
//! [`Quiet`], which says when a failure that keeps happening is worth another log line. All
//! pure, with the clock passed in, so tests need no sleeps.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, one more every `every`.
#[derive(Debug, Clone)]
pub struct Bucket {
    burst: f64,
    every: Duration,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(burst: u32, every: Duration, now: Instant) -> Bucket {
        Bucket {
            burst: f64::from(burst.max(1)),
            every,
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes a token if one is there; otherwise says how long until one is.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let per_sec = 1.0 / self.every.as_secs_f64().max(1e-9);
        self.tokens = (self.tokens + elapsed * per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_sec))
        }
    }
}

/// Full-jitter exponential backoff: a uniform wait in `[0, min(cap, base * 2^(failures-1))]`.
/// Jitter keeps many clients that failed together from retrying together.
pub fn backoff(failures: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    exp.min(cap).mul_f64(unit.clamp(0.0, 1.0))
}

/// When to speak up about a failure that keeps happening: the first time, then at most once
/// per `every`, so a refusal that needs a person (an ACL token) stays visible in the log
/// without flooding it.
#[derive(Debug, Clone)]
pub struct Quiet {
    every: Duration,
    last: Option<Instant>,
}

impl Quiet {
    pub fn new(every: Duration) -> Quiet {
        Quiet { every, last: None }
    }

    /// True when a line is due now (and counts it as said).
    pub fn due(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if due {
            self.last = Some(now);
        }
        due
    }

    /// The failure is over: the next one is news again.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// xorshift64*: fast, seeded per instance from the process's random hasher keys. For jitter and
/// load balancing only, never for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos());
        Rng(h.finish() | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); n must be > 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_burst_through_then_paces() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2, Duration::from_secs(1), t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(990) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(b.take(t0 + Duration::from_millis(500)).is_err());
        assert!(b.take(t0 + Duration::from_millis(1001)).is_ok());
        // A long quiet spell refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!(b.take(later).is_ok() && b.take(later).is_ok() && b.take(later).is_err());
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let (base, cap) = (Duration::from_millis(250), Duration::from_secs(30));
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(3, base, cap, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(30, base, cap, 1.0), cap);
        assert_eq!(backoff(3, base, cap, 0.5), Duration::from_millis(500));
        assert_eq!(backoff(3, base, cap, 0.0), Duration::ZERO);
    }

    #[test]
    fn quiet_speaks_first_then_once_per_period() {
        let t0 = Instant::now();
        let mut q = Quiet::new(Duration::from_secs(60));
        assert!(q.due(t0));
        assert!(!q.due(t0 + Duration::from_secs(59)));
        assert!(q.due(t0 + Duration::from_secs(60)));
        assert!(!q.due(t0 + Duration::from_secs(61)));
        q.reset();
        assert!(q.due(t0 + Duration::from_secs(62)));
    }

    #[test]
    fn rng_is_uniform_enough_for_balancing() {
        let mut r = Rng::new();
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            counts[r.below(4)] += 1;
        }
        assert!(counts.iter().all(|c| (9_000..11_000).contains(c)), "{counts:?}");
        assert!((0..1000).map(|_| r.unit()).all(|u| (0.0..1.0).contains(&u)));
    }
}
