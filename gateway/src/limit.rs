//! Token-bucket rate limits: one bucket per policy and client key, made on first use and
//! forgotten once idle long enough to be full again (a full bucket and no bucket behave the
//! same), with a hard cap on buckets per policy so that memory stays bounded whatever the
//! number of distinct clients.
//!
//! A [`Policy`] holds state only (the buckets); its numbers come with every call from the
//! configuration in use, so a reload changes them without touching the buckets.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Limit;

/// Buckets one policy may hold at once; past it, the least recently used bucket goes. Measured
/// through the process, a bucket costs about 270 bytes with its key and the map's share, so a
/// full policy is about 27 MiB (docs/gateway.md).
pub const MAX_BUCKETS: usize = 100_000;
/// Shards per policy, so that parallel requests rarely wait for each other's lock.
const SHARDS: usize = 16;
/// How often a shard looks for idle buckets to forget.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What a bucket said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket's size.
    pub limit: u32,
    /// Whole tokens left after this request.
    pub remaining: u32,
    /// Whole seconds until the bucket is full again (`RateLimit-Reset`).
    pub reset_secs: u64,
    /// When refused: whole seconds until one token is back (`Retry-After`), rounded up.
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Whose bucket: what the policy's `key` picks out of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Ip(IpAddr),
    User(i64),
    Service(Arc<str>),
    Route(Arc<str>),
    Global,
}

#[derive(Debug)]
struct Shard {
    buckets: HashMap<Key, Bucket>,
    swept: Instant,
}

/// The buckets of one `[limit.NAME]`.
#[derive(Debug)]
pub struct Policy {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    max_buckets: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::with_capacity(MAX_BUCKETS)
    }
}

impl Policy {
    pub fn with_capacity(max_buckets: usize) -> Policy {
        let now = Instant::now();
        Policy {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        swept: now,
                    })
                })
                .collect(),
            hasher: Default::default(),
            max_buckets: max_buckets.max(SHARDS),
        }
    }

    /// Buckets held now (for tests and metrics).
    pub fn buckets(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.buckets.len()).unwrap_or(0))
            .sum()
    }

    /// Takes one token from `key`'s bucket, as `limit` says buckets fill.
    pub fn take(&self, limit: &Limit, key: Key, now: Instant) -> Decision {
        let burst = f64::from(limit.burst.max(1));
        let per_sec = f64::from(limit.rate.max(1)) / limit.per.as_secs_f64().max(1e-3);
        let index = (self.hasher.hash_one(&key) as usize) % self.shards.len();
        let Ok(mut shard) = self.shards[index].lock() else {
            return Decision::open();
        };
        let per_shard = self.max_buckets / self.shards.len();
        // Forget buckets idle long enough to be full again: they would behave like new ones.
        let full_after = Duration::from_secs_f64(burst / per_sec);
        if now.duration_since(shard.swept) >= SWEEP_EVERY || shard.buckets.len() >= per_shard {
            shard.swept = now;
            shard
                .buckets
                .retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
            if shard.buckets.len() >= per_shard
                && let Some(oldest) = shard
                    .buckets
                    .iter()
                    .min_by_key(|(_, b)| b.updated)
                    .map(|(k, _)| k.clone())
            {
                shard.buckets.remove(&oldest);
            }
        }
        let bucket = shard.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let missing = burst - bucket.tokens;
        Decision {
            allowed,
            limit: limit.burst,
            remaining: bucket.tokens.floor() as u32,
            reset_secs: (missing / per_sec).ceil() as u64,
            retry_after_secs: if allowed {
                0
            } else {
                ((1.0 - bucket.tokens) / per_sec).ceil().max(1.0) as u64
            },
        }
    }
}

impl Decision {
    /// What a broken lock answers: let the request through rather than fail it.
    fn open() -> Decision {
        Decision {
            allowed: true,
            limit: 0,
            remaining: 0,
            reset_secs: 0,
            retry_after_secs: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitKey;

    fn limit(rate: u32, per: Duration, burst: u32) -> Limit {
        Limit {
            rate,
            per,
            burst,
            key: LimitKey::Ip,
        }
    }

    fn ip(n: u32) -> Key {
        Key::Ip(IpAddr::from(n.to_be_bytes()))
    }

    #[test]
    fn a_burst_then_refusals_with_the_time_to_the_next_token() {
        let (p, l) = (Policy::default(), limit(5, Duration::from_secs(60), 5));
        let t0 = Instant::now();
        for left in (0..5).rev() {
            let d = p.take(&l, ip(1), t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let d = p.take(&l, ip(1), t0);
        assert!(!d.allowed);
        // 5 per minute: one token every 12 s.
        assert_eq!(d.retry_after_secs, 12);
        assert_eq!(d.reset_secs, 60);
        // Another key has its own bucket.
        assert!(p.take(&l, ip(2), t0).allowed);
        assert!(p.take(&l, Key::User(1), t0).allowed, "a user is not an address");
        // 12 s later one token is back, and only one.
        let t1 = t0 + Duration::from_secs(12);
        assert!(p.take(&l, ip(1), t1).allowed);
        assert!(!p.take(&l, ip(1), t1).allowed);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let (p, l) = (Policy::default(), limit(3, Duration::from_secs(2), 1));
        let t0 = Instant::now();
        assert!(p.take(&l, Key::Global, t0).allowed);
        let d = p.take(&l, Key::Global, t0);
        // A token every 0.67 s: tell the client 1 s, never 0.
        assert_eq!((d.allowed, d.retry_after_secs), (false, 1));
    }

    #[test]
    fn idle_buckets_are_forgotten_and_the_count_stays_bounded() {
        let (p, l) = (
            Policy::with_capacity(3_200),
            limit(10, Duration::from_secs(1), 10),
        );
        let t0 = Instant::now();
        for i in 0..10_000 {
            p.take(&l, ip(i), t0);
        }
        assert!(p.buckets() <= 3_200, "{} buckets", p.buckets());
        // Full again after 1 s, and each shard sweeps at most every 10 s: 11 s later the first
        // request a shard sees forgets all of its old buckets. 1 000 new keys reach every one of
        // the 16 shards (the chance that one is missed is about 1e-27).
        let later = t0 + Duration::from_secs(11);
        for i in 0..1_000 {
            p.take(&l, Key::User(i), later);
        }
        assert_eq!(p.buckets(), 1_000);
    }
}
