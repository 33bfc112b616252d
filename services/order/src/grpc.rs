//! The gRPC face of the order service: checks who is calling, turns requests into validated
//! domain values and orders into protobuf, and leaves the work to `flows`.

use std::sync::Arc;

use shop_auth::Verifier;
use shop_kit::clock::timestamp;
use shop_proto::order::v1 as pb;
use tonic::{Request, Response, Status};

use crate::cart::Cart;
use crate::domain::{self, Address, IdempotencyKey, Line, Lines, Order, OrderStatus, Payment, Refusal};
use crate::error::Error;
use crate::feed::FeedRequest;
use crate::flows::{Caller, ListRequest, NewOrderRequest, Orders};
use crate::store::events::Event;

pub struct OrderApi {
    pub orders: Arc<Orders>,
    pub verifier: Arc<Verifier>,
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
        payments: o.payments.into_iter().map(payment_pb).collect(),
    }
}

fn payment_pb(p: Payment) -> pb::Payment {
    pb::Payment {
        id: p.id,
        order_id: p.order_id,
        amount_cents: p.amount_cents,
        status: p.status.as_str().to_owned(),
        provider: p.provider,
        provider_ref: p.provider_ref,
        created_at: Some(timestamp(p.created_at)),
    }
}

fn cart_pb(c: Cart) -> pb::Cart {
    pb::Cart {
        items: c
            .items
            .into_iter()
            .map(|i| pb::CartItem {
                product_id: i.product_id,
                name: i.name,
                unit_price_cents: i.unit_price_cents,
                quantity: i.quantity,
                line_total_cents: i.line_total_cents,
                available: i.available,
            })
            .collect(),
        total_cents: c.total_cents,
    }
}

fn event_pb(e: Event) -> pb::Event {
    pb::Event {
        id: e.id,
        r#type: e.kind,
        order_id: e.order_id,
        at: Some(timestamp(e.at)),
        data: Some(pb::EventData {
            status: e.status,
            previous_status: e.previous_status,
            by: e.by,
            user_id: e.user_id,
            total_cents: e.total_cents,
            payment_id: e.payment_id,
            amount_cents: e.amount_cents,
        }),
    }
}

fn text<'a, T>(req: &'a Request<T>, key: &str) -> Option<&'a str> {
    req.metadata().get(key).and_then(|v| v.to_str().ok())
}

fn public_status(s: &str) -> Result<OrderStatus, Refusal> {
    OrderStatus::parse_public(s).ok_or_else(|| {
        Refusal::invalid(
            "status",
            "must be pending, paid, shipped, delivered, cancelled or expired",
        )
    })
}

impl OrderApi {
    /// The verified caller, with what is forwarded on its behalf.
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Error> {
        let who = self.verifier.verify_metadata(req.metadata())?;
        if who.is_service() {
            return Err(Error::Forbidden(
                "orders are placed and changed by users, not services".to_owned(),
            ));
        }
        Ok(Caller {
            who,
            bearer: text(req, shop_base::metadata::AUTHORIZATION)
                .unwrap_or_default()
                .to_owned(),
            request_id: text(req, shop_kit::serve::REQUEST_ID).unwrap_or("-").to_owned(),
        })
    }
}

/// The `idempotency-key` metadata entry. A key that is not valid text is refused like any other
/// bad key, never ignored.
fn idempotency_key<T>(req: &Request<T>) -> Result<Option<IdempotencyKey>, Refusal> {
    match req.metadata().get(shop_base::metadata::IDEMPOTENCY_KEY) {
        Some(v) => Ok(Some(IdempotencyKey::parse(v.to_str().unwrap_or("\u{0}"))?)),
        None => Ok(None),
    }
}

fn new_order(req: Request<pb::CreateOrderRequest>) -> Result<NewOrderRequest, Refusal> {
    let key = idempotency_key(&req)?;
    let r = req.into_inner();
    let lines = r
        .items
        .iter()
        .map(|i| Line {
            product_id: i.product_id,
            quantity: i.quantity,
        })
        .collect();
    Ok(NewOrderRequest {
        user_id: r.user_id,
        lines: Lines::parse(lines, shop_kit::lines::ORDER).map_err(Refusal::from)?,
        address: Address::parse(&r.shipping_address)?,
        key,
        from_cart: false,
    })
}

fn list_request(r: &pb::ListUserOrdersRequest) -> Result<ListRequest, Refusal> {
    if r.user_id <= 0 {
        return Err(Refusal::invalid("user_id", "must be a positive user id"));
    }
    let page = r.page.unwrap_or(1);
    if page < 1 {
        return Err(Refusal::invalid("page", format!("must be 1 or more, got {page}")));
    }
    let page_size = r.page_size.unwrap_or(domain::PAGE_SIZE_DEFAULT);
    if !(1..=domain::PAGE_SIZE_MAX).contains(&page_size) {
        return Err(Refusal::invalid(
            "page_size",
            format!("must be from 1 to {}, got {page_size}", domain::PAGE_SIZE_MAX),
        ));
    }
    let status = match r.status.as_str() {
        "" => None,
        s => Some(public_status(s)?),
    };
    Ok(ListRequest {
        user_id: r.user_id,
        status,
        page,
        page_size,
    })
}

#[tonic::async_trait]
impl pb::order_service_server::OrderService for OrderApi {
    async fn create_order(
        &self,
        req: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = self.caller(&req)?;
        let new = new_order(req).map_err(Error::from)?;
        Ok(Response::new(to_pb(self.orders.create(&caller, new).await?)))
    }

    async fn get_order(&self, req: Request<pb::GetOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let caller = self.caller(&req)?;
        Ok(Response::new(to_pb(
            self.orders.visible(&caller.who, req.get_ref().id).await?,
        )))
    }

    async fn list_user_orders(
        &self,
        req: Request<pb::ListUserOrdersRequest>,
    ) -> Result<Response<pb::ListUserOrdersResponse>, Status> {
        let caller = self.caller(&req)?;
        let q = list_request(req.get_ref()).map_err(Error::from)?;
        let (orders, total) = self.orders.list(&caller.who, q).await?;
        Ok(Response::new(pb::ListUserOrdersResponse {
            orders: orders.into_iter().map(to_pb).collect(),
            total,
            page: q.page,
            page_size: q.page_size,
        }))
    }

    async fn update_order_status(
        &self,
        req: Request<pb::UpdateOrderStatusRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = self.caller(&req)?;
        let r = req.get_ref();
        let to = public_status(&r.status).map_err(Error::from)?;
        Ok(Response::new(to_pb(
            self.orders.change_status(&caller, r.id, to).await?,
        )))
    }

    async fn cancel_order(
        &self,
        req: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = self.caller(&req)?;
        let id = req.get_ref().id;
        Ok(Response::new(to_pb(
            self.orders
                .change_status(&caller, id, OrderStatus::Cancelled)
                .await?,
        )))
    }

    async fn start_payment(
        &self,
        req: Request<pb::StartPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let caller = self.caller(&req)?;
        let key = idempotency_key(&req).map_err(Error::from)?;
        let r = req.get_ref();
        let payment = self.orders.start_payment(&caller, r.id, &r.simulate, key).await?;
        Ok(Response::new(payment_pb(payment)))
    }

    async fn handle_payment_webhook(
        &self,
        req: Request<pb::PaymentWebhookRequest>,
    ) -> Result<Response<pb::PaymentWebhookResponse>, Status> {
        // No token: the signature is the provider's credential.
        let r = req.into_inner();
        let p = self.orders.payment_report(r.payload, &r.signature).await?;
        Ok(Response::new(pb::PaymentWebhookResponse {
            payment_id: p.id,
            payment_status: p.status.as_str().to_owned(),
        }))
    }

    async fn get_cart(&self, req: Request<pb::GetCartRequest>) -> Result<Response<pb::Cart>, Status> {
        let caller = self.caller(&req)?;
        Ok(Response::new(cart_pb(self.orders.cart(&caller).await?)))
    }

    async fn set_cart_item(
        &self,
        req: Request<pb::SetCartItemRequest>,
    ) -> Result<Response<pb::Cart>, Status> {
        let caller = self.caller(&req)?;
        let r = req.get_ref();
        let cart = self
            .orders
            .set_cart_item(&caller, r.product_id, r.quantity)
            .await?;
        Ok(Response::new(cart_pb(cart)))
    }

    async fn remove_cart_item(
        &self,
        req: Request<pb::RemoveCartItemRequest>,
    ) -> Result<Response<pb::Cart>, Status> {
        let caller = self.caller(&req)?;
        let cart = self
            .orders
            .remove_cart_item(&caller, req.get_ref().product_id)
            .await?;
        Ok(Response::new(cart_pb(cart)))
    }

    async fn checkout_cart(
        &self,
        req: Request<pb::CheckoutCartRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = self.caller(&req)?;
        let key = idempotency_key(&req).map_err(Error::from)?;
        let order = self
            .orders
            .checkout(&caller, &req.get_ref().shipping_address, key)
            .await?;
        Ok(Response::new(to_pb(order)))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.get_ref();
        let q = FeedRequest::parse(r.after, r.limit, r.wait).map_err(Error::from)?;
        let events = self.orders.events(&caller.who, q).await?;
        let next_after = events.last().map_or(q.after, |e| e.id);
        Ok(Response::new(pb::ListEventsResponse {
            events: events.into_iter().map(event_pb).collect(),
            next_after,
        }))
    }
}
