//! The gRPC face of the order service: who is calling, the create flow (validate, price,
//! write, reserve, acknowledge), status moves and cancellation. Rules live in `domain`, SQL in
//! `store`, calls to other services in `upstream`.

use std::sync::Arc;

use shop_auth::{Identity, Verifier};
use shop_kit::clock::{now_millis, timestamp};
use shop_kit::db::Db;
use shop_proto::order::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::{self, Line, Order, Status as S};
use crate::error::Error;
use crate::store::{self, Inserted, Keyed};
use crate::upstream::{Release, Upstreams};

pub struct OrderApi {
    pub db: Db,
    pub verifier: Arc<Verifier>,
    pub up: Arc<Upstreams>,
}

fn to_pb(o: Order) -> pb::Order {
    pb::Order {
        id: o.id,
        user_id: o.user_id,
        status: o.status.as_str().to_owned(),
        items: o
            .items
            .into_iter()
            .map(|i| pb::OrderItem {
                product_id: i.product_id,
                product_name: i.product_name,
                unit_price_cents: i.unit_price_cents,
                quantity: i.quantity,
                line_total_cents: i.line_total_cents,
            })
            .collect(),
        total_cents: o.total_cents,
        shipping_address: o.shipping_address,
        history: o
            .history
            .into_iter()
            .map(|c| pb::StatusChange {
                status: c.status.as_str().to_owned(),
                changed_at: Some(timestamp(c.at)),
                changed_by: c.by,
            })
            .collect(),
        created_at: Some(timestamp(o.created_at)),
        updated_at: Some(timestamp(o.updated_at)),
    }
}

fn request_id<T>(req: &Request<T>) -> String {
    req.metadata()
        .get(shop_kit::serve::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

impl OrderApi {
    /// The verified caller and their bearer value (forwarded to the user service).
    fn caller<T>(&self, req: &Request<T>) -> Result<(Identity, String), Error> {
        let who = self.verifier.verify_metadata(req.metadata())?;
        if who.is_service() {
            return Err(Error::Forbidden(
                "orders are placed and changed by users, not services".to_owned(),
            ));
        }
        let bearer = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((who, bearer))
    }

    /// A visible order the caller may see.
    async fn visible(&self, who: &Identity, id: i64) -> Result<Order, Error> {
        if id <= 0 {
            return Err(Error::invalid("id", format!("must be a positive id, got {id}")));
        }
        let order = self
            .db
            .call(move |c| store::load(c, id))
            .await?
            .filter(|o| o.status.visible())
            .ok_or(Error::NotFound(id))?;
        if !who.may_act_for(order.user_id) {
            return Err(Error::Forbidden(
                "you may only see and change your own orders".to_owned(),
            ));
        }
        Ok(order)
    }

    async fn load(&self, id: i64) -> Result<Order, Error> {
        self.db
            .call(move |c| store::load(c, id))
            .await?
            .ok_or(Error::NotFound(id))
    }

    /// The answer to a repeated idempotency key.
    async fn replay(&self, existing: Keyed, fingerprint: &str, key: &str) -> Result<Order, Error> {
        if existing.fingerprint != fingerprint {
            return Err(Error::Conflict(format!(
                "Idempotency-Key {key:?} was already used for a different order"
            )));
        }
        match existing.status {
            S::Reserving => Err(Error::InProgress(format!(
                "the first request with Idempotency-Key {key:?} is still being processed; retry shortly"
            ))),
            S::Failed => Err(Error::Conflict(format!(
                "the order placed with Idempotency-Key {key:?} failed: {}",
                existing.failure.unwrap_or_default()
            ))),
            _ => {
                tracing::info!(order_id = existing.id, "idempotent replay");
                self.load(existing.id).await
            }
        }
    }

    /// Releases an order's stock and records it; used by cancel and by recovery.
    pub async fn release_cancelled(&self, id: i64, request_id: &str) -> Result<(), Error> {
        match self.up.release(id, request_id).await? {
            Release::Done(outcome) => tracing::info!(order_id = id, outcome, "stock returned"),
            Release::Committed => {
                tracing::warn!(order_id = id, "cancelled order's reservation was committed")
            }
        }
        self.db
            .call(move |c| store::mark_stock_released(c, id, now_millis()))
            .await
    }

    /// Gives up an order stuck in `reserving`: release (which also fences off a late reserve),
    /// then `failed`.
    pub async fn abandon(&self, id: i64, reason: &'static str, request_id: &str) -> Result<(), Error> {
        self.up.release(id, request_id).await?;
        if self
            .db
            .call(move |c| store::fail_reserving(c, id, reason, now_millis()))
            .await?
        {
            tracing::info!(order_id = id, reason, "order abandoned; its stock is released");
        }
        Ok(())
    }

    /// One recovery pass: abandons orders stuck in `reserving` for longer than `grace` (no
    /// create can still be running for them) and returns the stock of cancelled orders not yet
    /// confirmed released. Returns how many of each it found.
    pub async fn recover_once(&self, grace: std::time::Duration) -> Result<(usize, usize), Error> {
        let older_than = now_millis() - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let (stuck, unreleased) = self.db.call(move |c| store::recovery_work(c, older_than)).await?;
        for id in &stuck {
            if let Err(e) = self
                .abandon(*id, "interrupted before it completed", "recovery")
                .await
            {
                tracing::warn!(order_id = id, error = %e, "recovery could not abandon the order yet");
            }
        }
        for id in &unreleased {
            if let Err(e) = self.release_cancelled(*id, "recovery").await {
                tracing::warn!(order_id = id, error = %e, "recovery could not return the stock yet");
            }
        }
        Ok((stuck.len(), unreleased.len()))
    }

    async fn create(&self, req: Request<pb::CreateOrderRequest>) -> Result<Order, Error> {
        let (who, bearer) = self.caller(&req)?;
        let rid = request_id(&req);
        let key = req
            .metadata()
            .get("idempotency-key")
            .map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
        let r = req.into_inner();
        let owner = if r.user_id == 0 { who.user_id } else { r.user_id };
        if owner <= 0 {
            return Err(Error::invalid("user_id", "must be a positive user id"));
        }
        if owner != who.user_id && !who.is_admin() {
            return Err(Error::Forbidden(
                "you may only place orders for yourself".to_owned(),
            ));
        }
        let lines: Vec<Line> = r
            .items
            .iter()
            .map(|i| Line {
                product_id: i.product_id,
                quantity: i.quantity,
            })
            .collect();
        domain::check_lines(&lines)?;
        let address = domain::check_address(&r.shipping_address)?;
        if let Some(k) = &key {
            domain::check_idempotency_key(k)?;
        }
        let fingerprint = domain::fingerprint(owner, &lines, &address);
        let since = now_millis() - domain::IDEMPOTENCY_WINDOW_MS;
        if let Some(k) = key.clone() {
            let found = self
                .db
                .call(move |c| store::find_keyed(c, owner, &k, since))
                .await?;
            if let Some(existing) = found {
                return self
                    .replay(existing, &fingerprint, key.as_deref().unwrap_or_default())
                    .await;
            }
        }

        if !self.up.user_is_valid(owner, &bearer, &rid).await? {
            return Err(Error::Conflict(format!(
                "user {owner} cannot place orders (unknown or deleted)"
            )));
        }
        let offers = self
            .up
            .offers(lines.iter().map(|l| l.product_id).collect(), &rid)
            .await?;
        let (priced, total) = domain::price(&lines, &offers)?;

        let inserted = {
            let (key, fingerprint, address) = (key.clone(), fingerprint.clone(), address.clone());
            self.db
                .call(move |c| {
                    store::insert_reserving(
                        c,
                        owner,
                        &priced,
                        total,
                        &address,
                        key.as_deref(),
                        &fingerprint,
                        now_millis(),
                        since,
                    )
                })
                .await?
        };
        let id = match inserted {
            Inserted::New(id) => id,
            // A concurrent request with the same key won the race.
            Inserted::Existing(existing) => {
                return self
                    .replay(existing, &fingerprint, key.as_deref().unwrap_or_default())
                    .await;
            }
        };

        match self.up.reserve(id, &lines, &rid).await {
            Ok(()) => {}
            Err(e @ Error::Upstream(_)) => {
                // A definite refusal (not enough stock, unknown product): nothing is held.
                let reason = e.to_string();
                self.db
                    .call(move |c| store::fail_reserving(c, id, &reason, now_millis()))
                    .await?;
                return Err(e);
            }
            Err(e) => {
                // Unknown outcome: take back whatever may be held, now if possible, else later.
                if let Err(again) = self
                    .abandon(id, "the product service was unavailable", &rid)
                    .await
                {
                    tracing::warn!(order_id = id, error = %again, "release failed too; recovery will finish it");
                }
                return Err(e);
            }
        }
        let by = who.user_id;
        if !self
            .db
            .call(move |c| store::finish_reserving(c, id, by, now_millis()))
            .await?
        {
            return Err(Error::Unavailable {
                service: "order-service",
                detail: "the order was interrupted; retry".to_owned(),
            });
        }
        let order = self.load(id).await?;
        tracing::info!(
            order_id = id,
            user_id = owner,
            total_cents = order.total_cents,
            "order placed"
        );
        Ok(order)
    }

    async fn cancel(&self, who: &Identity, id: i64, rid: &str) -> Result<Order, Error> {
        let order = self.visible(who, id).await?;
        match order.status {
            S::Cancelled => {}
            from @ (S::Pending | S::Paid) => {
                let by = who.user_id;
                let moved = self
                    .db
                    .call(move |c| store::transition(c, id, from, S::Cancelled, by, now_millis()))
                    .await?;
                if moved {
                    tracing::info!(order_id = id, by, "order cancelled");
                } else {
                    // Someone moved it meanwhile (a concurrent cancel, or shipping): look again.
                    let now = self.load(id).await?;
                    if now.status != S::Cancelled {
                        return Err(Error::Conflict(format!(
                            "order {id} cannot move from {} to cancelled",
                            now.status.as_str()
                        )));
                    }
                }
            }
            other => {
                return Err(Error::Conflict(format!(
                    "order {id} cannot move from {} to cancelled",
                    other.as_str()
                )));
            }
        }
        if !self.db.call(move |c| store::stock_released(c, id)).await? {
            // The product service returns the units once, however many of us ask.
            if let Err(e) = self.release_cancelled(id, rid).await {
                tracing::warn!(order_id = id, error = %e, "stock not returned yet; recovery will retry");
            }
        }
        self.load(id).await
    }
}

#[tonic::async_trait]
impl pb::order_service_server::OrderService for OrderApi {
    async fn create_order(
        &self,
        req: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        Ok(Response::new(to_pb(self.create(req).await?)))
    }

    async fn get_order(&self, req: Request<pb::GetOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let (who, _) = self.caller(&req)?;
        Ok(Response::new(to_pb(self.visible(&who, req.get_ref().id).await?)))
    }

    async fn list_user_orders(
        &self,
        req: Request<pb::ListUserOrdersRequest>,
    ) -> Result<Response<pb::ListUserOrdersResponse>, Status> {
        let (who, _) = self.caller(&req)?;
        let r = req.into_inner();
        if r.user_id <= 0 {
            return Err(Error::invalid("user_id", "must be a positive user id").into());
        }
        if !who.may_act_for(r.user_id) {
            return Err(Error::Forbidden("you may only list your own orders".to_owned()).into());
        }
        let page = r.page.unwrap_or(1);
        if page < 1 {
            return Err(Error::invalid("page", format!("must be 1 or more, got {page}")).into());
        }
        let size = r.page_size.unwrap_or(domain::PAGE_SIZE_DEFAULT);
        if !(1..=domain::PAGE_SIZE_MAX).contains(&size) {
            return Err(Error::invalid(
                "page_size",
                format!("must be from 1 to {}, got {size}", domain::PAGE_SIZE_MAX),
            )
            .into());
        }
        let status = match r.status.as_str() {
            "" => None,
            s => Some(S::parse_public(s).ok_or_else(|| {
                Error::invalid("status", "must be pending, paid, shipped, delivered or cancelled")
            })?),
        };
        let user_id = r.user_id;
        let (orders, total) = self
            .db
            .call(move |c| store::list(c, user_id, status, page, size))
            .await?;
        Ok(Response::new(pb::ListUserOrdersResponse {
            orders: orders.into_iter().map(to_pb).collect(),
            total,
            page,
            page_size: size,
        }))
    }

    async fn update_order_status(
        &self,
        req: Request<pb::UpdateOrderStatusRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let (who, _) = self.caller(&req)?;
        let rid = request_id(&req);
        let r = req.into_inner();
        let to = S::parse_public(&r.status).ok_or_else(|| {
            Error::invalid("status", "must be pending, paid, shipped, delivered or cancelled")
        })?;
        if to == S::Cancelled {
            return Ok(Response::new(to_pb(self.cancel(&who, r.id, &rid).await?)));
        }
        let order = self.visible(&who, r.id).await?;
        let id = order.id;
        domain::check_move(id, order.status, to, who.is_admin())?;
        if to == S::Shipped {
            // The units are sold for good before the order says so; a retry after a crash in
            // between finds the reservation already committed.
            self.up.commit(id, &rid).await?;
        }
        let (from, by) = (order.status, who.user_id);
        if !self
            .db
            .call(move |c| store::transition(c, id, from, to, by, now_millis()))
            .await?
        {
            let now = self.load(id).await?;
            return Err(Error::Conflict(format!(
                "order {id} cannot move from {} to {}",
                now.status.as_str(),
                to.as_str()
            ))
            .into());
        }
        tracing::info!(
            order_id = id,
            from = from.as_str(),
            to = to.as_str(),
            by,
            "order status changed"
        );
        Ok(Response::new(to_pb(self.load(id).await?)))
    }

    async fn cancel_order(
        &self,
        req: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let (who, _) = self.caller(&req)?;
        let rid = request_id(&req);
        Ok(Response::new(to_pb(
            self.cancel(&who, req.get_ref().id, &rid).await?,
        )))
    }
}
