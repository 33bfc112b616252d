//! The events feed, read: events after a given id, in id order, for admins; with `wait`, a long
//! poll that answers as soon as an event is written (woken by this instance's writes, and by a
//! short re-read for other instances sharing the database) or when the wait is over. At most
//! [`WAITING_MAX`] polls wait at once per instance.

use std::time::Duration;

use shop_auth::Identity;

use crate::domain::Refusal;
use crate::error::Error;
use crate::flows::Orders;
use crate::store::events::{self, Event};

pub const LIMIT_DEFAULT: i32 = 100;
pub const LIMIT_MAX: i32 = 1000;
/// Longest long poll a client may ask for, in seconds.
pub const WAIT_MAX: i32 = 30;
/// How long a long poll waits at most: a little under the service's own 30 s limit on any call
/// (`shop_kit::serve::CALL_TIMEOUT`), so that an empty answer always arrives in time.
const WAIT_CEILING: Duration = Duration::from_secs(28);
/// Long polls waiting at once per instance; more are refused (RESOURCE_EXHAUSTED), so polls
/// cannot take the read connections lists and recovery need.
pub const WAITING_MAX: usize = 16;
/// How often a long poll re-reads, for events other instances write.
const REREAD: Duration = Duration::from_millis(250);

/// A read of the feed, checked.
#[derive(Debug, Clone, Copy)]
pub struct FeedRequest {
    pub after: i64,
    pub limit: i32,
    pub wait: Duration,
}

impl FeedRequest {
    pub fn parse(after: i64, limit: Option<i32>, wait: i32) -> Result<FeedRequest, Refusal> {
        if after < 0 {
            return Err(Refusal::invalid(
                "after",
                format!("must be 0 or more, got {after}"),
            ));
        }
        let limit = limit.unwrap_or(LIMIT_DEFAULT);
        if !(1..=LIMIT_MAX).contains(&limit) {
            return Err(Refusal::invalid(
                "limit",
                format!("must be from 1 to {LIMIT_MAX}, got {limit}"),
            ));
        }
        if !(0..=WAIT_MAX).contains(&wait) {
            return Err(Refusal::invalid(
                "wait",
                format!("must be from 0 to {WAIT_MAX} seconds, got {wait}"),
            ));
        }
        Ok(FeedRequest {
            after,
            limit,
            wait: Duration::from_secs(u64::from(wait.unsigned_abs())).min(WAIT_CEILING),
        })
    }
}

impl Orders {
    /// Events after `q.after`; waits up to `q.wait` for the first one.
    pub async fn events(&self, who: &Identity, q: FeedRequest) -> Result<Vec<Event>, Error> {
        if !who.is_admin() {
            return Err(Error::Forbidden("the events feed is for admins".to_owned()));
        }
        let _permit = if q.wait.is_zero() {
            None
        } else {
            Some(self.feed_waiters.try_acquire().map_err(|_| {
                Error::Busy(format!(
                    "{WAITING_MAX} long polls of the events feed are already waiting here; retry, or poll without wait"
                ))
            })?)
        };
        let deadline = tokio::time::Instant::now() + q.wait;
        loop {
            // Registered before the read, so an event written during it still wakes us.
            let woken = self.feed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (after, limit) = (q.after, i64::from(q.limit));
            let found = self
                .db
                .call(move |c| events::after_kept(c, after, limit))
                .await?
                .map_err(|p| Refusal::EventsPruned {
                    after,
                    through: p.through,
                })?;
            let now = tokio::time::Instant::now();
            if !found.is_empty() || now >= deadline {
                return Ok(found);
            }
            let pause = REREAD.min(deadline - now);
            let _ = tokio::time::timeout(pause, woken).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_poll_always_answers_within_the_services_call_limit() {
        let q = FeedRequest::parse(0, None, WAIT_MAX).unwrap();
        assert!(q.wait < shop_kit::serve::CALL_TIMEOUT);
        assert_eq!(q.limit, LIMIT_DEFAULT);
        assert!(FeedRequest::parse(0, None, WAIT_MAX + 1).is_err());
        assert!(FeedRequest::parse(-1, None, 0).is_err());
        assert!(FeedRequest::parse(0, Some(0), 0).is_err());
        assert!(FeedRequest::parse(0, Some(LIMIT_MAX + 1), 0).is_err());
    }
}
