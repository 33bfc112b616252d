//! The gRPC face of the product service: checks who is calling, translates protobuf to domain
//! values and back, and leaves rules to `domain` and SQL to `store`.

use std::sync::Arc;

use shop_auth::{Identity, Verifier};
use shop_kit::clock::{now_millis, timestamp};
use shop_kit::db::Db;
use shop_proto::product::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::{self, Changes, Line, ListParams, Product};
use crate::error::Error;
use crate::listing;
use crate::store::{self, Released};

pub struct ProductApi {
    pub db: Db,
    pub verifier: Arc<Verifier>,
}

fn to_pb(p: Product) -> pb::Product {
    pb::Product {
        id: p.id,
        name: p.name,
        description: p.description,
        price_cents: p.price_cents,
        stock: p.stock,
        category: p.category,
        created_at: Some(timestamp(p.created_at)),
        updated_at: Some(timestamp(p.updated_at)),
    }
}

fn lines_to_pb(lines: Vec<Line>) -> Vec<pb::StockLine> {
    lines
        .into_iter()
        .map(|l| pb::StockLine {
            product_id: l.product_id,
            quantity: l.quantity,
        })
        .collect()
}

impl ProductApi {
    fn caller<T>(&self, req: &Request<T>) -> Result<Identity, Error> {
        Ok(self.verifier.verify_metadata(req.metadata())?)
    }

    /// Reservations move stock for orders: only a shop service (the order service, with its
    /// service token) or an admin may make them, never a customer directly.
    fn inventory_caller<T>(&self, req: &Request<T>) -> Result<Identity, Error> {
        let who = self.caller(req)?;
        if !(who.is_service() || who.is_admin()) {
            return Err(Error::Forbidden(
                "only shop services may reserve or release stock",
            ));
        }
        Ok(who)
    }

    fn admin<T>(&self, req: &Request<T>) -> Result<Identity, Error> {
        let who = self.caller(req)?;
        if !who.is_admin() {
            return Err(Error::Forbidden("only an admin may change the catalogue"));
        }
        Ok(who)
    }
}

#[tonic::async_trait]
impl pb::product_service_server::ProductService for ProductApi {
    async fn create_product(
        &self,
        req: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        let who = self.admin(&req)?;
        let r = req.into_inner();
        let new = domain::check_new(&r.name, &r.description, r.price_cents, r.stock, &r.category)?;
        let product = self
            .db
            .write(move |c| store::create(c, &new, now_millis()))
            .await?;
        tracing::info!(
            product_id = product.id,
            by = who.user_id,
            stock = product.stock,
            "product created"
        );
        Ok(Response::new(to_pb(product)))
    }

    async fn get_product(
        &self,
        req: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        let id = domain::check_id("id", req.get_ref().id)?;
        let product = self
            .db
            .read(move |c| store::get(c, id))
            .await?
            .ok_or(Error::NotFound(id))?;
        Ok(Response::new(to_pb(product)))
    }

    async fn list_products(
        &self,
        req: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let r = req.into_inner();
        let query = domain::check_list(ListParams {
            page: r.page,
            page_size: r.page_size,
            category: &r.category,
            min_price_cents: r.min_price_cents,
            max_price_cents: r.max_price_cents,
            sort: &r.sort,
            q: &r.q,
            page_token: &r.page_token,
        })?;
        let (page, page_size) = (query.page, query.page_size);
        let found = self.db.call(move |c| listing::list(c, &query)).await?;
        Ok(Response::new(pb::ListProductsResponse {
            products: found.products.into_iter().map(to_pb).collect(),
            total: found.total,
            page,
            page_size,
            total_is_lower_bound: found.total_is_lower_bound,
            next_page_token: found.next_page_token.unwrap_or_default(),
        }))
    }

    async fn update_product(
        &self,
        req: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        let who = self.admin(&req)?;
        let r = req.into_inner();
        let id = domain::check_id("id", r.id)?;
        let changes = Changes {
            name: r.name.as_deref().map(domain::check_name).transpose()?,
            description: r
                .description
                .as_deref()
                .map(domain::check_description)
                .transpose()?,
            price_cents: r.price_cents.map(domain::check_price).transpose()?,
            stock: r.stock.map(domain::check_stock).transpose()?,
            category: r.category.as_deref().map(domain::check_category).transpose()?,
        };
        if changes.is_empty() {
            return Err(Error::invalid(
                "name",
                "nothing to change: send name, description, price_cents, stock and/or category",
            )
            .into());
        }
        let product = self
            .db
            .write(move |c| store::update(c, id, &changes, now_millis()))
            .await?;
        tracing::info!(product_id = id, by = who.user_id, "product updated");
        Ok(Response::new(to_pb(product)))
    }

    async fn delete_product(&self, req: Request<pb::DeleteProductRequest>) -> Result<Response<()>, Status> {
        let who = self.admin(&req)?;
        let id = domain::check_id("id", req.get_ref().id)?;
        if !self
            .db
            .write(move |c| store::soft_delete(c, id, now_millis()))
            .await?
        {
            return Err(Error::NotFound(id).into());
        }
        tracing::info!(product_id = id, by = who.user_id, "product deleted");
        Ok(Response::new(()))
    }

    async fn batch_get_products(
        &self,
        req: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsResponse>, Status> {
        let ids = req.into_inner().ids;
        if ids.is_empty() || ids.len() > domain::BATCH_MAX {
            return Err(Error::invalid(
                "ids",
                format!("must hold 1 to {} ids, got {}", domain::BATCH_MAX, ids.len()),
            )
            .into());
        }
        for id in &ids {
            domain::check_id("ids", *id)?;
        }
        let found = self.db.read(move |c| store::batch_get(c, &ids)).await?;
        let products = found
            .into_iter()
            .map(|(id, p)| match p {
                Some(p) => pb::ProductAvailability {
                    id,
                    available: true,
                    name: p.name,
                    price_cents: p.price_cents,
                    stock: p.stock,
                },
                None => pb::ProductAvailability {
                    id,
                    ..Default::default()
                },
            })
            .collect();
        Ok(Response::new(pb::BatchGetProductsResponse { products }))
    }

    async fn reserve_stock(
        &self,
        req: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        self.inventory_caller(&req)?;
        let r = req.into_inner();
        let order_id = domain::check_id("order_id", r.order_id)?;
        let lines = domain::Lines::parse(
            r.items
                .iter()
                .map(|l| Line {
                    product_id: l.product_id,
                    quantity: l.quantity,
                })
                .collect(),
            shop_kit::lines::RESERVATION,
        )
        .map_err(Error::from)?;
        let reserved = self
            .db
            .write(move |c| store::reserve(c, order_id, &lines, now_millis()))
            .await?;
        if reserved.replayed {
            tracing::info!(order_id, "reservation replayed; nothing more taken");
        } else {
            tracing::info!(order_id, lines = reserved.lines.len(), "stock reserved");
        }
        Ok(Response::new(pb::ReserveStockResponse {
            order_id,
            items: lines_to_pb(reserved.lines),
            replayed: reserved.replayed,
        }))
    }

    async fn release_stock(
        &self,
        req: Request<pb::ReleaseStockRequest>,
    ) -> Result<Response<pb::ReleaseStockResponse>, Status> {
        self.inventory_caller(&req)?;
        let order_id = domain::check_id("order_id", req.get_ref().order_id)?;
        let released = self
            .db
            .write(move |c| store::release(c, order_id, now_millis()))
            .await?;
        let (outcome, items) = match released {
            Released::Now(lines) => ("released", lines_to_pb(lines)),
            Released::Already => ("already_released", Vec::new()),
            Released::NeverReserved => ("not_found", Vec::new()),
        };
        tracing::info!(order_id, outcome, "release");
        Ok(Response::new(pb::ReleaseStockResponse {
            order_id,
            outcome: outcome.to_owned(),
            items,
        }))
    }

    async fn commit_reservation(
        &self,
        req: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        self.inventory_caller(&req)?;
        let order_id = domain::check_id("order_id", req.get_ref().order_id)?;
        let changed = self
            .db
            .write(move |c| store::commit(c, order_id, now_millis()))
            .await?;
        let outcome = if changed { "committed" } else { "already_committed" };
        tracing::info!(order_id, outcome, "commit");
        Ok(Response::new(pb::CommitReservationResponse {
            order_id,
            outcome: outcome.to_owned(),
        }))
    }
}
