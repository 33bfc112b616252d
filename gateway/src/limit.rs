//! Token-bucket rate limits: one bucket per policy and client key, made on first use and
//! forgotten once idle long enough to be full again (a full bucket and no bucket behave the
//! same), with a hard cap on buckets per policy so that memory stays bounded whatever the
//! number of distinct clients.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
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

#[derive(Debug)]
struct Shard {
    buckets: HashMap<String, Bucket>,
    swept: Instant,
}

/// The buckets of one `[limit.NAME]`.
#[derive(Debug)]
pub struct Policy {
    limit: Mutex<Limit>,
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    max_buckets: usize,
}

impl Policy {
    pub fn new(limit: Limit) -> Policy {
        Policy::with_capacity(limit, MAX_BUCKETS)
    }

    pub fn with_capacity(limit: Limit, max_buckets: usize) -> Policy {
        let now = Instant::now();
        Policy {
            limit: Mutex::new(limit),
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

    /// Takes the policy's new numbers (a reload); buckets are kept.
    pub fn update(&self, limit: Limit) {
        if let Ok(mut l) = self.limit.lock() {
            *l = limit;
        }
    }

    pub fn limit(&self) -> Option<Limit> {
        self.limit.lock().ok().map(|l| *l)
    }

    /// Buckets held now (for tests and metrics).
    pub fn buckets(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.buckets.len()).unwrap_or(0))
            .sum()
    }

    /// Takes one token from `key`'s bucket.
    pub fn take(&self, key: &str, now: Instant) -> Decision {
        let Some(limit) = self.limit() else {
            return Decision::open();
        };
        let burst = f64::from(limit.burst.max(1));
        let per_sec = f64::from(limit.rate.max(1)) / limit.per.as_secs_f64().max(1e-3);
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
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
        let bucket = shard.buckets.entry(key.to_owned()).or_insert(Bucket {
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

    #[test]
    fn a_burst_then_refusals_with_the_time_to_the_next_token() {
        let p = Policy::new(limit(5, Duration::from_secs(60), 5));
        let t0 = Instant::now();
        for left in (0..5).rev() {
            let d = p.take("a", t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let d = p.take("a", t0);
        assert!(!d.allowed);
        // 5 per minute: one token every 12 s.
        assert_eq!(d.retry_after_secs, 12);
        assert_eq!(d.reset_secs, 60);
        // Another key has its own bucket.
        assert!(p.take("b", t0).allowed);
        // 12 s later one token is back, and only one.
        let t1 = t0 + Duration::from_secs(12);
        assert!(p.take("a", t1).allowed);
        assert!(!p.take("a", t1).allowed);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let p = Policy::new(limit(3, Duration::from_secs(2), 1));
        let t0 = Instant::now();
        assert!(p.take("a", t0).allowed);
        let d = p.take("a", t0);
        // A token every 0.67 s: tell the client 1 s, never 0.
        assert_eq!((d.allowed, d.retry_after_secs), (false, 1));
    }

    #[test]
    fn idle_buckets_are_forgotten_and_the_count_stays_bounded() {
        let p = Policy::with_capacity(limit(10, Duration::from_secs(1), 10), 3_200);
        let t0 = Instant::now();
        for i in 0..10_000 {
            p.take(&format!("client-{i}"), t0);
        }
        assert!(p.buckets() <= 3_200, "{} buckets", p.buckets());
        // Full again after 1 s, and each shard sweeps at most every 10 s: 11 s later the first
        // request a shard sees forgets all of its old buckets. 1 000 new keys reach every one of
        // the 16 shards (the chance that one is missed is about 1e-27).
        let later = t0 + Duration::from_secs(11);
        for i in 0..1_000 {
            p.take(&format!("late-{i}"), later);
        }
        assert_eq!(p.buckets(), 1_000);
    }
}
