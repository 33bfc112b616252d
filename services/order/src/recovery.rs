//! The recovery pass: finishes what a crash, a lost race or an unreachable product service left
//! half done, and does the shop's own timed work. Orders stuck in `reserving` past a grace
//! period (no create can still be running for them) fail and release their units; pending
//! orders unpaid for longer than `orders.pay_within` expire and release theirs; orders that owe
//! the product service a commit or a release get it; simulated payment reports lost to a crash
//! are sent again; events older than `events.keep` leave the feed. Every step is a guarded update or an idempotent call, so a pass may overlap
//! a request, another pass, or another instance's pass without doing anything twice: an order
//! expires once, and its units come back once, whatever is killed when.
//!
//! Passes run on one instance at a time: the one holding the Consul session lock
//! (`recovery.lock`), or the only one when there is no Consul. A holder that loses the lock in
//! the middle of a pass finishes it harmlessly; the next pass runs wherever the lock is then.

use std::time::Duration;

use shop_kit::clock::now_millis;
use tokio::sync::watch;

use crate::domain::OrderStatus;
use crate::error::Error;
use crate::flows::Orders;
use crate::store::{self, Settlement};

/// Orders looked at per pass; a backlog larger than this is worked off over several passes.
const BATCH: i64 = 500;
/// Events removed per write, and writes per pass: a short transaction each, so orders placed
/// meanwhile wait for none of them long; a larger backlog goes over several passes.
const PRUNE_BATCH: i64 = 1000;
const PRUNE_WRITES: usize = 10;

/// What one pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Orders failed because they were stuck in `reserving`.
    pub stuck: usize,
    /// Orders whose commit or release was owed.
    pub owed: usize,
    /// Of those, how many are still owed after the pass (the product service did not answer).
    pub left: usize,
    /// Pending orders expired for want of payment.
    pub expired: usize,
    /// Simulated payment reports sent again.
    pub resent: usize,
    /// Events removed from the front of the feed.
    pub pruned: usize,
}

impl Orders {
    /// One recovery pass; `grace` is how long an order may stay in `reserving` before it is
    /// considered abandoned.
    pub async fn recover_once(&self, grace: Duration) -> Result<Pass, Error> {
        // Expiry first: the orders it expires owe their release, which this pass then pays.
        // Its failures and the resends' are logged, never allowed to stop the repairs.
        let expired = self.expire_once().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "expiring unpaid orders failed; next pass");
            0
        });
        let resent = self.resend_simulated(BATCH).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "resending payment reports failed; next pass");
            0
        });
        let pruned = self.prune_events().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "removing old events failed; next pass");
            0
        });
        let stuck_before = now_millis() - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let work = self
            .db
            .call(move |c| store::recovery_work(c, stuck_before, BATCH))
            .await?;
        let mut pass = Pass {
            stuck: work.stuck.len(),
            owed: work.owed.len(),
            left: 0,
            expired,
            resent,
            pruned,
        };
        for id in work.stuck {
            // First the order (guarded: a create that finished meanwhile wins), then the units.
            let failed = self
                .db
                .write(move |c| {
                    store::fail_reserving(
                        c,
                        id,
                        "interrupted before it completed",
                        Settlement::Owed,
                        now_millis(),
                    )
                })
                .await?;
            if failed {
                tracing::info!(order_id = id, "abandoned an interrupted order");
                if let Err(e) = self.settle(id, "recovery").await {
                    tracing::warn!(order_id = id, error = %e, "could not release yet; next pass");
                    pass.left += 1;
                }
            }
        }
        for owed in work.owed {
            if let Err(e) = self.settle(owed.id, "recovery").await {
                tracing::warn!(order_id = owed.id, error = %e, "could not settle yet; next pass");
                pass.left += 1;
            }
        }
        Ok(pass)
    }
}

impl Orders {
    /// Removes the events older than `events.keep` from the front of the feed (none when it is
    /// zero); readers behind what was removed are told so (`Refusal::EventsPruned`).
    async fn prune_events(&self) -> Result<usize, Error> {
        if self.rules.events_keep.is_zero() {
            return Ok(0);
        }
        let keep = i64::try_from(self.rules.events_keep.as_millis()).unwrap_or(i64::MAX);
        let before = now_millis().saturating_sub(keep);
        let mut pruned = 0;
        for _ in 0..PRUNE_WRITES {
            let n = self
                .db
                .write(move |c| store::events::prune(c, before, PRUNE_BATCH))
                .await?;
            pruned += n;
            if n < usize::try_from(PRUNE_BATCH).unwrap_or(usize::MAX) {
                break;
            }
        }
        Ok(pruned)
    }

    /// Moves pending orders unpaid for longer than `pay_within` to `expired` (guarded: a payment
    /// or a cancel that got there first wins). Each move leaves the release owed, in the same
    /// transaction; the owed loop of the pass pays it.
    async fn expire_once(&self) -> Result<usize, Error> {
        let window = i64::try_from(self.rules.pay_within.as_millis()).unwrap_or(i64::MAX);
        let placed_before = now_millis().saturating_sub(window);
        let ids = self
            .db
            .call(move |c| store::expirable(c, placed_before, BATCH))
            .await?;
        let mut expired = 0;
        for id in ids {
            let moved = self
                .db
                .write(move |c| {
                    store::transition(c, id, OrderStatus::Pending, OrderStatus::Expired, 0, now_millis())
                })
                .await?;
            if moved {
                expired += 1;
                self.feed.notify_waiters();
                tracing::info!(order_id = id, "unpaid order expired");
            }
        }
        Ok(expired)
    }
}

/// Runs a pass every `every` while `held` says this instance holds the recovery lock, and one at
/// once whenever it takes the lock. Never returns.
pub async fn run(orders: &Orders, grace: Duration, every: Duration, mut held: watch::Receiver<bool>) {
    loop {
        if *held.borrow_and_update() {
            match orders.recover_once(grace).await {
                Ok(pass) if pass == Pass::default() => {}
                Ok(pass) => tracing::info!(
                    stuck = pass.stuck,
                    owed = pass.owed,
                    left = pass.left,
                    expired = pass.expired,
                    resent = pass.resent,
                    pruned = pass.pruned,
                    "recovery pass"
                ),
                Err(e) => tracing::warn!(error = %e, "recovery pass failed"),
            }
            tokio::time::sleep(every).await;
        } else {
            // Not ours: wait until it is (a pass then runs at once), or look again later.
            let _ = tokio::time::timeout(every, held.wait_for(|h| *h)).await;
        }
    }
}
