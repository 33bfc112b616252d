//! Calls to the user and product services: through the discovery balancer (Consul-watched or
//! fixed instances), each with a deadline sent as `grpc-timeout`, the request id, and the right
//! token: the customer's own for "is this user valid?", the order service's service token for
//! the inventory. A failure comes back as an [`UpstreamError`]: which service, and what
//! `shop-discovery` made of it (not sent, broken, late, or the service's own answer).

use std::fmt;
use std::time::Duration;

use shop_auth::revoked;
use shop_discovery::{Balancer, CallError};
use shop_proto::product::v1 as product;
use shop_proto::product::v1::product_service_client::ProductServiceClient;
use shop_proto::user::v1 as user;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

use crate::domain::{Lines, Offer};

/// The services the order service calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Users,
    Products,
}

impl Service {
    /// The name it registers under in Consul.
    pub fn name(self) -> &'static str {
        match self {
            Service::Users => "user-service",
            Service::Products => "product-service",
        }
    }
}

impl Service {
    /// As a sentence names it ("the product service").
    pub fn noun(self) -> &'static str {
        match self {
            Service::Users => "user",
            Service::Products => "product",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A call to another service that did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("{service}: {error}")]
pub struct UpstreamError {
    pub service: Service,
    pub error: CallError,
}

impl UpstreamError {
    /// The service's own answer, when it gave one with `code`.
    pub fn answered(&self, codes: &[Code]) -> Option<&Status> {
        match &self.error {
            CallError::Answered(s) if codes.contains(&s.code()) => Some(s),
            _ => None,
        }
    }

    /// The service turned the request down on its merits (not enough stock, unknown product, a
    /// bad field): it did nothing, and the client should see why.
    pub fn refusal(&self) -> Option<&Status> {
        self.answered(&[Code::FailedPrecondition, Code::NotFound, Code::InvalidArgument])
    }

    /// Certainly nothing happened at the service: it refused, or the call never reached it.
    pub fn nothing_happened(&self) -> bool {
        self.refusal().is_some() || !self.error.maybe_sent()
    }
}

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
        req.metadata_mut().insert(shop_base::metadata::AUTHORIZATION, v);
    }
    if let Ok(v) = MetadataValue::try_from(request_id) {
        req.metadata_mut().insert(shop_kit::serve::REQUEST_ID, v);
    }
    // The call being served, if any, is this call's parent in the trace.
    if let Some(hop) = shop_base::trace::current()
        && let Ok(v) = MetadataValue::try_from(hop.to_string())
    {
        req.metadata_mut().insert(shop_kit::serve::TRACEPARENT, v);
    }
    req
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The units went back now, or earlier, or were never held: in every case nothing is held.
    Done(String),
    /// The reservation is committed (sold for good): nothing went back.
    Committed,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// The units are sold for good, now or earlier.
    Done,
    /// The reservation was released or never made: there is nothing to commit.
    NotHeld,
}

impl Upstreams {
    /// Whether the user exists and may order, asked with the caller's own token.
    pub async fn user_is_valid(
        &self,
        user_id: i64,
        caller_bearer: &str,
        request_id: &str,
    ) -> Result<bool, UpstreamError> {
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
            .map_err(|error| UpstreamError {
                service: Service::Users,
                error,
            })?;
        Ok(answer.into_inner().valid)
    }

    /// The user service's revocation feed after `after` (no token needed).
    pub async fn revocations(&self, after: i64) -> Result<revoked::Batch, UpstreamError> {
        let answer = self
            .users
            .call(self.timeout, |channel, left| {
                let mut req = Request::new(user::ListRevocationsRequest { after });
                req.set_timeout(left);
                async move { UserServiceClient::new(channel).list_revocations(req).await }
            })
            .await
            .map_err(|error| UpstreamError {
                service: Service::Users,
                error,
            })?;
        Ok(answer.into_inner().into())
    }

    async fn products<T, F, Fut>(&self, call: F) -> Result<T, UpstreamError>
    where
        F: FnMut(ProductServiceClient<tonic::transport::Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut call = call;
        self.products
            .call(self.timeout, |channel, left| {
                call(ProductServiceClient::new(channel), left)
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|error| UpstreamError {
                service: Service::Products,
                error,
            })
    }

    /// Names and prices of the products, for pricing.
    pub async fn offers(&self, ids: Vec<i64>, request_id: &str) -> Result<Vec<Offer>, UpstreamError> {
        let answer = self
            .products(|mut client, left| {
                let req = request(
                    product::BatchGetProductsRequest { ids: ids.clone() },
                    &self.service_bearer,
                    request_id,
                    left,
                );
                async move { client.batch_get_products(req).await }
            })
            .await?;
        Ok(answer
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

    pub async fn reserve(&self, order_id: i64, lines: &Lines, request_id: &str) -> Result<(), UpstreamError> {
        let items: Vec<product::StockLine> = lines
            .as_slice()
            .iter()
            .map(|l| product::StockLine {
                product_id: l.product_id,
                quantity: l.quantity,
            })
            .collect();
        self.products(|mut client, left| {
            let req = request(
                product::ReserveStockRequest {
                    order_id,
                    items: items.clone(),
                },
                &self.service_bearer,
                request_id,
                left,
            );
            async move { client.reserve_stock(req).await }
        })
        .await?;
        Ok(())
    }

    /// Returns the units held for the order. The product service answers FAILED_PRECONDITION
    /// when the reservation is committed.
    pub async fn release(&self, order_id: i64, request_id: &str) -> Result<Release, UpstreamError> {
        let answer = self
            .products(|mut client, left| {
                let req = request(
                    product::ReleaseStockRequest { order_id },
                    &self.service_bearer,
                    request_id,
                    left,
                );
                async move { client.release_stock(req).await }
            })
            .await;
        match answer {
            Ok(a) => Ok(Release::Done(a.outcome)),
            Err(e) if e.answered(&[Code::FailedPrecondition]).is_some() => Ok(Release::Committed),
            Err(e) => Err(e),
        }
    }

    /// Sells the held units for good. The product service answers FAILED_PRECONDITION when the
    /// reservation was released or never made.
    pub async fn commit(&self, order_id: i64, request_id: &str) -> Result<Commit, UpstreamError> {
        let answer = self
            .products(|mut client, left| {
                let req = request(
                    product::CommitReservationRequest { order_id },
                    &self.service_bearer,
                    request_id,
                    left,
                );
                async move { client.commit_reservation(req).await }
            })
            .await;
        match answer {
            Ok(_) => Ok(Commit::Done),
            Err(e) if e.answered(&[Code::FailedPrecondition]).is_some() => Ok(Commit::NotHeld),
            Err(e) => Err(e),
        }
    }
}
