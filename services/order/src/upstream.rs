//! Calls to the user and product services: through the discovery balancer (Consul-watched or
//! fixed instances), each with a deadline sent as `grpc-timeout`, the request id, and the right
//! token: the customer's own for "is this user valid?", the order service's service token for
//! the inventory.

use std::time::Duration;

use shop_discovery::Balancer;
use shop_proto::product::v1 as product;
use shop_proto::product::v1::product_service_client::ProductServiceClient;
use shop_proto::user::v1 as user;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use tonic::Request;
use tonic::metadata::MetadataValue;

use crate::domain::{Line, Offer};
use crate::error::Error;

pub const USER_SERVICE: &str = "user-service";
pub const PRODUCT_SERVICE: &str = "product-service";

pub struct Upstreams {
    pub users: Balancer,
    pub products: Balancer,
    pub timeout: Duration,
    /// `Bearer <service token>`.
    pub service_bearer: String,
}

fn request<T>(msg: T, bearer: &str, request_id: &str, left: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(left);
    if let Ok(v) = MetadataValue::try_from(bearer) {
        req.metadata_mut().insert("authorization", v);
    }
    if let Ok(v) = MetadataValue::try_from(request_id) {
        req.metadata_mut().insert(shop_kit::serve::REQUEST_ID, v);
    }
    req
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The units went back now, or earlier, or were never held: in every case nothing is held.
    Done(String),
    /// The reservation was committed (the order shipped): nothing to give back.
    Committed,
}

impl Upstreams {
    /// Whether the user exists and may order, asked with the caller's own token.
    pub async fn user_is_valid(
        &self,
        user_id: i64,
        caller_bearer: &str,
        request_id: &str,
    ) -> Result<bool, Error> {
        let answer = self
            .users
            .call(self.timeout, |channel, left| {
                let req = request(
                    user::ValidateUserRequest { id: user_id },
                    caller_bearer,
                    request_id,
                    left,
                );
                async move { UserServiceClient::new(channel).validate_user(req).await }
            })
            .await
            .map_err(|s| Error::from_upstream(USER_SERVICE, s))?;
        Ok(answer.into_inner().valid)
    }

    /// Names and prices of the products, for pricing.
    pub async fn offers(&self, ids: Vec<i64>, request_id: &str) -> Result<Vec<Offer>, Error> {
        let answer = self
            .products
            .call(self.timeout, |channel, left| {
                let req = request(
                    product::BatchGetProductsRequest { ids: ids.clone() },
                    &self.service_bearer,
                    request_id,
                    left,
                );
                async move { ProductServiceClient::new(channel).batch_get_products(req).await }
            })
            .await
            .map_err(|s| Error::from_upstream(PRODUCT_SERVICE, s))?;
        Ok(answer
            .into_inner()
            .products
            .into_iter()
            .map(|p| Offer {
                product_id: p.id,
                available: p.available,
                name: p.name,
                price_cents: p.price_cents,
            })
            .collect())
    }

    pub async fn reserve(&self, order_id: i64, lines: &[Line], request_id: &str) -> Result<(), Error> {
        let items: Vec<product::StockLine> = lines
            .iter()
            .map(|l| product::StockLine {
                product_id: l.product_id,
                quantity: l.quantity,
            })
            .collect();
        self.products
            .call(self.timeout, |channel, left| {
                let req = request(
                    product::ReserveStockRequest {
                        order_id,
                        items: items.clone(),
                    },
                    &self.service_bearer,
                    request_id,
                    left,
                );
                async move { ProductServiceClient::new(channel).reserve_stock(req).await }
            })
            .await
            .map_err(|s| Error::from_upstream(PRODUCT_SERVICE, s))?;
        Ok(())
    }

    pub async fn release(&self, order_id: i64, request_id: &str) -> Result<Release, Error> {
        let answer = self
            .products
            .call(self.timeout, |channel, left| {
                let req = request(
                    product::ReleaseStockRequest { order_id },
                    &self.service_bearer,
                    request_id,
                    left,
                );
                async move { ProductServiceClient::new(channel).release_stock(req).await }
            })
            .await;
        match answer {
            Ok(a) => Ok(Release::Done(a.into_inner().outcome)),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(Release::Committed),
            Err(s) => Err(Error::from_upstream(PRODUCT_SERVICE, s)),
        }
    }

    pub async fn commit(&self, order_id: i64, request_id: &str) -> Result<(), Error> {
        self.products
            .call(self.timeout, |channel, left| {
                let req = request(
                    product::CommitReservationRequest { order_id },
                    &self.service_bearer,
                    request_id,
                    left,
                );
                async move { ProductServiceClient::new(channel).commit_reservation(req).await }
            })
            .await
            .map_err(|s| Error::from_upstream(PRODUCT_SERVICE, s))?;
        Ok(())
    }
}
