//! What the order service does, step by step: place an order (validate, price, write, reserve,
//! acknowledge), show and list orders, move an order's status, cancel it, and settle an order's
//! units with the product service after any move. The rules live in `domain`, the SQL in
//! `store`, the calls to other services in `upstream`; `grpc` only translates to and from
//! protobuf.
//!
//! Every move is decided by the order row first (a guarded update: of two racing moves exactly
//! one wins), and the product service's side follows the order's final status: commit for a
//! shipped order, release for a cancelled or failed one. See `store` for the bookkeeping that
//! lets a crash anywhere be repaired.

use std::sync::Arc;

use shop_auth::Identity;
use shop_kit::clock::now_millis;
use shop_kit::db::Db;

use crate::domain::{self, Address, IdempotencyKey, Lines, Order, OrderStatus, Refusal, Units};
use crate::error::Error;
use crate::store::{self, Inserted, Keyed, NewOrder, Settlement};
use crate::upstream::{Commit, Release, UpstreamError, Upstreams};

/// The order service's state: its database, its way to the other services, the payment
/// provider, and the rules that come from settings.
pub struct Orders {
    pub db: Db,
    pub up: Arc<Upstreams>,
    pub pay: Payments,
    pub rules: Rules,
    /// Woken whenever this instance writes an event (long polls of the feed wait on it).
    pub feed: tokio::sync::Notify,
    /// Permits for long polls waiting at once (`feed::WAITING_MAX`).
    pub feed_waiters: tokio::sync::Semaphore,
    /// Users with a checkout running on this instance: a second one (a double click) is refused
    /// rather than placing the cart twice.
    pub checkouts: std::sync::Mutex<std::collections::HashSet<i64>>,
}

/// How payments are taken: the provider (none: payments cannot start) and the secret its
/// reports are signed with (empty: every report is refused).
pub struct Payments {
    pub provider: Option<Box<dyn crate::provider::Provider>>,
    pub webhook_secret: String,
}

/// The shop's order rules from settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// A pending order older than this expires.
    pub pay_within: std::time::Duration,
    /// Unpaid orders a customer may hold at once.
    pub max_unpaid: i64,
    /// Events older than this leave the feed; zero keeps them all.
    pub events_keep: std::time::Duration,
}

/// Who is calling: the verified identity, the bearer value (forwarded to the user service) and
/// the request id (forwarded everywhere).
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Identity,
    pub bearer: String,
    pub request_id: String,
}

/// A create request, parsed.
#[derive(Debug, Clone)]
pub struct NewOrderRequest {
    /// The owner; 0 means the caller.
    pub user_id: i64,
    pub lines: Lines,
    pub address: Address,
    pub key: Option<IdempotencyKey>,
    /// Placed from the caller's cart: the ordered lines leave it when the order exists.
    pub from_cart: bool,
}

/// One page of a user's orders, asked for.
#[derive(Debug, Clone, Copy)]
pub struct ListRequest {
    pub user_id: i64,
    pub status: Option<OrderStatus>,
    pub page: i32,
    pub page_size: i32,
}

impl Orders {
    async fn load(&self, id: i64) -> Result<Order, Error> {
        self.db
            .read(move |c| store::load(c, id))
            .await?
            .ok_or(Error::NotFound(id))
    }

    /// A visible order the caller may see. Someone else's order is "not found" to a customer,
    /// exactly like a missing one, so ids cannot be probed.
    pub async fn visible(&self, who: &Identity, id: i64) -> Result<Order, Error> {
        if id <= 0 {
            return Err(Refusal::invalid("id", format!("must be a positive id, got {id}")).into());
        }
        let order = self.load(id).await?;
        if !order.status.visible() || !who.may_act_for(order.user_id) {
            return Err(Error::NotFound(id));
        }
        Ok(order)
    }

    pub async fn list(&self, who: &Identity, q: ListRequest) -> Result<(Vec<Order>, i64), Error> {
        if !who.may_act_for(q.user_id) {
            return Err(Error::Forbidden("you may only list your own orders".to_owned()));
        }
        self.db
            .call(move |c| store::list(c, q.user_id, q.status, q.page, q.page_size))
            .await
    }

    /// The order an idempotency key of `user_id` placed within the window, if any; `ABORTED`
    /// while that order is still being placed.
    pub(crate) async fn keyed_order(
        &self,
        user_id: i64,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, Error> {
        let since = now_millis() - domain::IDEMPOTENCY_WINDOW_MS;
        let k = key.as_str().to_owned();
        let Some(existing) = self
            .db
            .read(move |c| store::find_keyed(c, user_id, &k, since))
            .await?
        else {
            return Ok(None);
        };
        if existing.status == OrderStatus::Reserving {
            return Err(Error::InProgress(format!(
                "the first request with Idempotency-Key {:?} is still being processed; retry shortly",
                key.as_str()
            )));
        }
        Ok(Some(self.load(existing.id).await?))
    }

    /// The answer to a repeated idempotency key.
    async fn replay(&self, existing: Keyed, fingerprint: &str, key: &IdempotencyKey) -> Result<Order, Error> {
        if existing.fingerprint != fingerprint {
            return Err(Error::Conflict(format!(
                "Idempotency-Key {:?} was already used for a different order",
                key.as_str()
            )));
        }
        if existing.status == OrderStatus::Reserving {
            return Err(Error::InProgress(format!(
                "the first request with Idempotency-Key {:?} is still being processed; retry shortly",
                key.as_str()
            )));
        }
        tracing::info!(order_id = existing.id, "idempotent replay");
        self.load(existing.id).await
    }

    /// The order's owner: the caller, or for an admin the user named.
    fn owner(who: &Identity, user_id: i64) -> Result<i64, Error> {
        let owner = if user_id == 0 { who.user_id } else { user_id };
        if owner <= 0 {
            return Err(Refusal::invalid("user_id", "must be a positive user id").into());
        }
        if owner != who.user_id && !who.is_admin() {
            return Err(Error::Forbidden(
                "you may only place orders for yourself".to_owned(),
            ));
        }
        Ok(owner)
    }

    pub async fn create(&self, caller: &Caller, req: NewOrderRequest) -> Result<Order, Error> {
        let owner = Self::owner(&caller.who, req.user_id)?;
        let fingerprint = domain::fingerprint(owner, &req.lines, &req.address);
        let since = now_millis() - domain::IDEMPOTENCY_WINDOW_MS;
        if let Some(k) = &req.key {
            let key = k.as_str().to_owned();
            let found = self
                .db
                .read(move |c| store::find_keyed(c, owner, &key, since))
                .await?;
            if let Some(existing) = found {
                return self.replay(existing, &fingerprint, k).await;
            }
        }
        if !self
            .up
            .user_is_valid(owner, &caller.bearer, &caller.request_id)
            .await?
        {
            return Err(Error::Conflict(format!(
                "user {owner} cannot place orders (unknown or deleted)"
            )));
        }
        let offers = self
            .up
            .offers(req.lines.product_ids(), &caller.request_id)
            .await?;
        let (priced, total_cents) = domain::price(&req.lines, &offers)?;
        let inserted = {
            let (key, fingerprint, address) = (req.key.clone(), fingerprint.clone(), req.address.clone());
            let max_unpaid = self.rules.max_unpaid;
            self.db
                .write(move |c| {
                    store::insert_reserving(
                        c,
                        &NewOrder {
                            user_id: owner,
                            lines: &priced,
                            total_cents,
                            address: address.as_str(),
                            key: key.as_ref().map(IdempotencyKey::as_str),
                            fingerprint: &fingerprint,
                            now: now_millis(),
                            key_since: since,
                            max_unpaid,
                        },
                    )
                })
                .await?
        };
        let id = match (inserted, &req.key) {
            (Inserted::New(id), _) => id,
            // A concurrent request with the same key won the race.
            (Inserted::Existing(existing), Some(k)) => return self.replay(existing, &fingerprint, k).await,
            (Inserted::Existing(existing), None) => {
                return Err(Error::Conflict(format!("order {} already exists", existing.id)));
            }
            (Inserted::TooManyUnpaid(n), _) => {
                return Err(Error::Conflict(format!(
                    "user {owner} has {n} unpaid orders, the most the shop allows; pay or cancel one \
                     before placing another"
                )));
            }
        };
        self.reserve_and_acknowledge(caller, id, owner, &req).await
    }

    /// Steps 2 and 3 of a create: the product service reserves the units, then the order is
    /// acknowledged (`pending`; for a checkout, the ordered lines leave the cart).
    async fn reserve_and_acknowledge(
        &self,
        caller: &Caller,
        id: i64,
        owner: i64,
        req: &NewOrderRequest,
    ) -> Result<Order, Error> {
        if let Err(e) = self.up.reserve(id, &req.lines, &caller.request_id).await {
            return Err(self.reserve_failed(id, e, &caller.request_id).await);
        }
        let by = caller.who.user_id;
        let cart = req.from_cart.then(|| req.lines.as_slice().to_vec());
        if !self
            .db
            .write(move |c| {
                let cart = cart.as_deref().map(|lines| (owner, lines));
                store::finish_reserving(c, id, by, cart, now_millis())
            })
            .await?
        {
            return Err(Error::Interrupted(id));
        }
        self.feed.notify_waiters();
        let order = self.load(id).await?;
        tracing::info!(
            order_id = id,
            user_id = owner,
            total_cents = order.total_cents,
            "order placed"
        );
        Ok(order)
    }

    /// A reservation that did not happen, or may have: the order fails (giving its key back);
    /// when units may be held, a release follows now, or from recovery.
    async fn reserve_failed(&self, id: i64, e: UpstreamError, request_id: &str) -> Error {
        let settlement = if e.nothing_happened() {
            Settlement::Done
        } else {
            Settlement::Owed
        };
        let reason = e.to_string();
        let failed = self
            .db
            .write(move |c| store::fail_reserving(c, id, &reason, settlement, now_millis()))
            .await;
        match failed {
            Ok(true) if settlement == Settlement::Owed => {
                if let Err(again) = self.settle(id, request_id).await {
                    tracing::warn!(order_id = id, error = %again, "release failed too; recovery will finish it");
                }
            }
            Ok(_) => {}
            Err(db) => tracing::warn!(order_id = id, error = %db, "could not fail the order; recovery will"),
        }
        e.into()
    }

    /// Moves an order as the caller asks (cancel included), then settles its units.
    pub async fn change_status(&self, caller: &Caller, id: i64, to: OrderStatus) -> Result<Order, Error> {
        let order = self.visible(&caller.who, id).await?;
        self.apply_move(caller, id, order.status, to).await?;
        if let Err(e) = self.settle(id, &caller.request_id).await {
            tracing::warn!(order_id = id, error = %e, "units not settled yet; recovery will finish it");
        }
        self.load(id).await
    }

    /// The guarded move from the status the caller saw. When someone moved the order first (a
    /// payment, a ship, another cancel), the move is judged again from where the order is now:
    /// a cancel that finds it cancelled is done, a cancel that finds it paid cancels the paid
    /// order, and a move that became illegal is refused as the move it is now.
    async fn apply_move(
        &self,
        caller: &Caller,
        id: i64,
        mut from: OrderStatus,
        to: OrderStatus,
    ) -> Result<(), Error> {
        let by = caller.who.user_id;
        // Each retry follows a move someone else made; an order moves a few times at most.
        for _ in 0..4 {
            // A cancel that finds the order cancelled, or expired (its units are back too), is
            // done.
            if to == OrderStatus::Cancelled && matches!(from, OrderStatus::Cancelled | OrderStatus::Expired) {
                return Ok(());
            }
            domain::check_move(id, from, to, caller.who.is_admin())?;
            let moved = self
                .db
                .write(move |c| store::transition(c, id, from, to, by, now_millis()))
                .await?;
            if moved {
                self.feed.notify_waiters();
                tracing::info!(
                    order_id = id,
                    from = from.as_str(),
                    to = to.as_str(),
                    by,
                    "order status changed"
                );
                return Ok(());
            }
            from = self.load(id).await?.status;
        }
        Err(Error::InProgress(format!(
            "order {id} keeps changing; retry shortly"
        )))
    }

    /// Brings the product service's side of order `id` in step with its status, if it owes
    /// that: a commit for a shipped (or delivered) order, a release for a cancelled or failed
    /// one. Safe to run any number of times, from anywhere: both calls are idempotent and the
    /// outcome is recorded only while the order still owes it.
    pub async fn settle(&self, id: i64, request_id: &str) -> Result<(), Error> {
        let Some(owed) = self.db.read(move |c| store::owed(c, id)).await? else {
            return Ok(());
        };
        let Some(units) = owed.status.units() else {
            return Ok(());
        };
        let outcome = match units {
            Units::Held => Settlement::Done,
            Units::Committed => match self.up.commit(id, request_id).await? {
                Commit::Done => Settlement::Done,
                Commit::NotHeld => Settlement::Diverged,
            },
            Units::Released => match self.up.release(id, request_id).await? {
                Release::Done(outcome) => {
                    tracing::info!(order_id = id, outcome, "units returned");
                    Settlement::Done
                }
                // Never reported as a release: the units did not come back.
                Release::Committed => Settlement::Diverged,
            },
        };
        if outcome == Settlement::Diverged {
            tracing::error!(
                order_id = id,
                status = owed.status.as_str(),
                "the product service holds this order's units in the opposite state; \
                 stock was not moved; an operator must decide (docs/order-service.md)"
            );
        }
        self.db
            .write(move |c| store::settled(c, id, units, outcome, now_millis()))
            .await?;
        Ok(())
    }
}
