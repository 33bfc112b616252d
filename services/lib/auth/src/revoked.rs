//! Tokens made invalid before they expire. A token carries its account's token version (`ver`);
//! when an account is deleted, its role changes or its password does, the user service records a
//! revocation: from now on, tokens of that user below a version are refused (all of them for a
//! deleted account).
//! Verifiers learn revocations by polling the user service's feed ([`follow`]) and check them
//! on every verification ([`Revocations::refuses`]): no call to the user service on a request's
//! way.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a revocation matters: longer than any access token lives (the user service allows
/// at most 7 days), plus a day for skew and settings changes. After that every token it could
/// refuse has expired.
pub const KEEP_FOR: Duration = Duration::from_secs(8 * 86_400);

/// "Every token of this user": the version of a deleted account's revocation.
pub const ALL_TOKENS: u64 = i64::MAX as u64;

/// One revocation: tokens of `user_id` with a version below `valid_from` are refused until
/// `until` (seconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub user_id: i64,
    pub valid_from: u64,
    pub until: u64,
}

/// A page of the feed: the revocations after the cursor asked for, the cursor to ask with next,
/// and whether more are waiting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub revocations: Vec<Revocation>,
    pub cursor: i64,
    pub more: bool,
}

impl From<shop_proto::user::v1::ListRevocationsResponse> for Batch {
    /// The feed's answer as verifiers keep it (negative numbers, which the user service never
    /// sends, count as 0).
    fn from(answer: shop_proto::user::v1::ListRevocationsResponse) -> Batch {
        Batch {
            revocations: answer
                .revocations
                .iter()
                .map(|r| Revocation {
                    user_id: r.user_id,
                    valid_from: u64::try_from(r.valid_from_version).unwrap_or(0),
                    until: u64::try_from(r.until).unwrap_or(0),
                })
                .collect(),
            cursor: answer.cursor,
            more: answer.more,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Per user, the lowest version still valid and until when that matters.
    by_user: HashMap<i64, (u64, u64)>,
    cursor: i64,
    synced: Option<Instant>,
}

/// The revocations a verifier knows, shared by its requests and its feed.
#[derive(Debug, Default)]
pub struct Revocations {
    state: RwLock<State>,
    /// Users with a revocation, read without the lock (most deployments have none).
    count: AtomicUsize,
}

impl Revocations {
    /// Whether a token of `user_id` at version `ver` is refused.
    pub fn refuses(&self, user_id: i64, ver: u64) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .by_user
            .get(&user_id)
            .is_some_and(|(valid_from, _)| ver < *valid_from)
    }

    /// Takes in a batch of the feed (keeping, per user, the strictest revocation) and forgets
    /// the ones that no longer matter at `now` (seconds since the Unix epoch).
    pub fn apply(&self, batch: &Batch, now: u64) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        for r in &batch.revocations {
            let entry = state.by_user.entry(r.user_id).or_insert((0, 0));
            entry.0 = entry.0.max(r.valid_from);
            entry.1 = entry.1.max(r.until);
        }
        state.by_user.retain(|_, (_, until)| *until > now);
        state.cursor = state.cursor.max(batch.cursor);
        state.synced = Some(Instant::now());
        self.count.store(state.by_user.len(), Ordering::Relaxed);
    }

    /// Takes in one revocation its verifier made itself (the user service, at the commit that
    /// recorded it), ahead of the feed, which brings it again later: the cursor and the feed's
    /// freshness are left alone.
    pub fn learn(&self, r: Revocation) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let entry = state.by_user.entry(r.user_id).or_insert((0, 0));
        entry.0 = entry.0.max(r.valid_from);
        entry.1 = entry.1.max(r.until);
        self.count.store(state.by_user.len(), Ordering::Relaxed);
    }

    /// Where the next poll starts.
    pub fn cursor(&self) -> i64 {
        self.state.read().unwrap_or_else(|p| p.into_inner()).cursor
    }

    /// Users with a revocation in force.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long ago the feed last answered; `None` before it ever did.
    pub fn age(&self) -> Option<Duration> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.synced.map(|t| t.elapsed())
    }
}

/// How often verifiers ask the feed: a deleted account's token stops working within about this
/// (plus one call), well inside the 5 s the shop promises.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Keeps `revocations` current: asks `fetch(cursor)` every `every` (at once again while the
/// feed says more are waiting), forever. A failing feed leaves what is known in force; the
/// first failure is a warning, later ones are repeated once a minute, and recovery is logged.
pub async fn follow<F, Fut, E>(revocations: &Revocations, every: Duration, mut fetch: F)
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<Batch, E>>,
    E: fmt::Display,
{
    let mut failing_since: Option<Instant> = None;
    let mut last_warned = Instant::now();
    loop {
        match fetch(revocations.cursor()).await {
            Ok(batch) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                revocations.apply(&batch, now);
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        after_secs = since.elapsed().as_secs(),
                        "the revocation feed answers again"
                    );
                }
                if batch.more {
                    continue;
                }
            }
            Err(e) => match failing_since {
                None => {
                    tracing::warn!(error = %e, "cannot read the revocation feed; known revocations stay in force");
                    failing_since = Some(Instant::now());
                    last_warned = Instant::now();
                }
                Some(since) if last_warned.elapsed() >= Duration::from_secs(60) => {
                    tracing::warn!(error = %e, failing_secs = since.elapsed().as_secs(), "the revocation feed still fails");
                    last_warned = Instant::now();
                }
                Some(_) => tracing::debug!(error = %e, "the revocation feed still fails"),
            },
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(revocations: &[(i64, u64, u64)], cursor: i64) -> Batch {
        Batch {
            revocations: revocations
                .iter()
                .map(|&(user_id, valid_from, until)| Revocation {
                    user_id,
                    valid_from,
                    until,
                })
                .collect(),
            cursor,
            more: false,
        }
    }

    #[test]
    fn versions_below_the_line_are_refused_until_it_no_longer_matters() {
        let r = Revocations::default();
        assert!(!r.refuses(7, 0) && r.is_empty() && r.age().is_none());
        r.apply(&batch(&[(7, 2, 1_000), (9, ALL_TOKENS, 1_000)], 5), 100);
        assert!(r.refuses(7, 0) && r.refuses(7, 1) && !r.refuses(7, 2));
        assert!(r.refuses(9, 0) && r.refuses(9, 1_000_000));
        assert!(!r.refuses(8, 0), "other users are untouched");
        assert_eq!((r.cursor(), r.len()), (5, 2));
        // A later, looser entry never loosens what is known.
        r.apply(&batch(&[(7, 1, 2_000)], 6), 100);
        assert!(r.refuses(7, 1));
        // Past `until` no token it could refuse is alive: forgotten.
        r.apply(&batch(&[], 6), 2_500);
        assert!(r.is_empty() && !r.refuses(7, 0));
        assert!(r.age().is_some());
    }

    #[test]
    fn a_revocation_learned_ahead_of_the_feed_moves_neither_cursor_nor_freshness() {
        let r = Revocations::default();
        r.learn(Revocation {
            user_id: 7,
            valid_from: 3,
            until: 1_000,
        });
        assert!(r.refuses(7, 2) && !r.refuses(7, 3) && !r.refuses(8, 0));
        assert_eq!((r.cursor(), r.len(), r.age()), (0, 1, None));
        // The feed brings it again later: nothing loosens.
        r.apply(&batch(&[(7, 3, 1_000)], 4), 100);
        assert!(r.refuses(7, 2));
        assert_eq!(r.cursor(), 4);
    }

    #[tokio::test]
    async fn follow_pages_through_and_keeps_going_after_failures() {
        let r = Revocations::default();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let run = follow(&r, Duration::from_millis(5), |after| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Ok(Batch {
                        more: true,
                        ..batch(&[(1, 1, u64::MAX)], 1)
                    }),
                    1 => Err("feed down"),
                    _ => Ok(batch(&[(2, ALL_TOKENS, u64::MAX)], after.max(2))),
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_millis(100), run).await;
        assert!(r.refuses(1, 0) && r.refuses(2, 5));
        assert_eq!(r.cursor(), 2);
        assert!(calls.load(Ordering::SeqCst) > 3, "it keeps polling");
    }
}
