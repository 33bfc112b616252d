//! Carts, step by step: a customer's lines shown with today's prices (prices are fixed only at
//! checkout), set and removed one at a time, and checkout, which places the order exactly as
//! CreateOrder does and takes the ordered lines out of the cart in the transaction that
//! acknowledges the order, so the cart is emptied only when the order exists. One checkout per
//! user runs at a time on an instance (a double click is refused, not ordered twice); an
//! `Idempotency-Key` makes a retry safe across instances.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use shop_kit::clock::now_millis;

use crate::domain::{self, Address, IdempotencyKey, Line, Lines, Offer, Order, Refusal};
use crate::error::Error;
use crate::flows::{Caller, NewOrderRequest, Orders};
use crate::store;

/// A cart line priced today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartLine {
    pub product_id: i64,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: i64,
    pub line_total_cents: i64,
    /// False when the product is no longer sold: not counted, and checkout refuses it.
    pub available: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    pub items: Vec<CartLine>,
    pub total_cents: i64,
}

fn priced(lines: &[Line], offers: &[Offer]) -> Cart {
    let mut total: i64 = 0;
    let items = lines
        .iter()
        .map(|l| {
            let offer = offers
                .iter()
                .find(|o| o.product_id == l.product_id && o.available);
            let (name, price) = offer.map_or((String::new(), 0), |o| (o.name.clone(), o.price_cents));
            // Prices and quantities are bounded (999 units); saturate rather than wrap.
            let line_total = price.saturating_mul(l.quantity);
            total = total.saturating_add(line_total);
            CartLine {
                product_id: l.product_id,
                name,
                unit_price_cents: price,
                quantity: l.quantity,
                line_total_cents: line_total,
                available: offer.is_some(),
            }
        })
        .collect();
    Cart {
        items,
        total_cents: total,
    }
}

fn product_id(id: i64) -> Result<i64, Refusal> {
    if id <= 0 {
        return Err(Refusal::invalid(
            "product_id",
            format!("must be a positive id, got {id}"),
        ));
    }
    Ok(id)
}

impl Orders {
    /// The caller's cart at today's prices.
    pub async fn cart(&self, caller: &Caller) -> Result<Cart, Error> {
        let user_id = caller.who.user_id;
        let lines = self.db.read(move |c| store::cart::lines(c, user_id)).await?;
        if lines.is_empty() {
            return Ok(priced(&[], &[]));
        }
        let ids = lines.iter().map(|l| l.product_id).collect();
        let offers = self.up.offers(ids, &caller.request_id).await?;
        Ok(priced(&lines, &offers))
    }

    /// Adds a line or replaces its quantity; the product must be on sale.
    pub async fn set_cart_item(&self, caller: &Caller, id: i64, quantity: i64) -> Result<Cart, Error> {
        let product_id = product_id(id)?;
        if !(1..=domain::MAX_QUANTITY).contains(&quantity) {
            return Err(Refusal::invalid(
                "quantity",
                format!("must be from 1 to {}, got {quantity}", domain::MAX_QUANTITY),
            )
            .into());
        }
        let offers = self.up.offers(vec![product_id], &caller.request_id).await?;
        if !offers.iter().any(|o| o.product_id == product_id && o.available) {
            return Err(Refusal::UnknownProduct(product_id).into());
        }
        let user_id = caller.who.user_id;
        let line = Line { product_id, quantity };
        let fits = self
            .db
            .write(move |c| store::cart::set(c, user_id, line, now_millis()))
            .await?;
        if !fits {
            return Err(Error::Conflict(format!(
                "a cart holds at most {} lines; remove one first",
                domain::CART_MAX_LINES
            )));
        }
        self.cart(caller).await
    }

    pub async fn remove_cart_item(&self, caller: &Caller, id: i64) -> Result<Cart, Error> {
        let product_id = product_id(id)?;
        let user_id = caller.who.user_id;
        self.db
            .write(move |c| store::cart::remove(c, user_id, product_id))
            .await?;
        self.cart(caller).await
    }

    /// Places an order from the caller's cart, as [`Orders::create`] does.
    pub async fn checkout(
        &self,
        caller: &Caller,
        address: &str,
        key: Option<IdempotencyKey>,
    ) -> Result<Order, Error> {
        let address = Address::parse(address)?;
        let user_id = caller.who.user_id;
        let _running = Running::take(&self.checkouts, user_id).ok_or_else(|| {
            Error::InProgress("a checkout of your cart is already running; retry shortly".to_owned())
        })?;
        // Checkout keys live apart from POST /api/orders keys. A repeated key answers its order,
        // although the cart it came from is gone by now.
        let key = key.map(|k| k.scoped("cart"));
        if let Some(k) = &key
            && let Some(order) = self.keyed_order(user_id, k).await?
        {
            return Ok(order);
        }
        let lines = self.db.read(move |c| store::cart::lines(c, user_id)).await?;
        if lines.is_empty() {
            return Err(Error::Conflict("your cart is empty".to_owned()));
        }
        let req = NewOrderRequest {
            user_id: 0,
            lines: Lines::parse(lines, shop_kit::lines::ORDER).map_err(Refusal::from)?,
            address,
            key,
            from_cart: true,
        };
        self.create(caller, req).await
    }
}

/// A user's checkout running on this instance; dropping it ends it.
struct Running<'a> {
    users: &'a Mutex<HashSet<i64>>,
    user_id: i64,
}

impl<'a> Running<'a> {
    /// `None` when the user has a checkout running already.
    fn take(users: &'a Mutex<HashSet<i64>>, user_id: i64) -> Option<Running<'a>> {
        let fresh = users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user_id);
        fresh.then_some(Running { users, user_id })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_checkout_per_user_at_a_time() {
        let users = Mutex::default();
        let first = Running::take(&users, 7);
        assert!(first.is_some());
        assert!(
            Running::take(&users, 7).is_none(),
            "a double click waits its turn"
        );
        assert!(Running::take(&users, 8).is_some(), "other users are not held up");
        drop(first);
        assert!(Running::take(&users, 7).is_some());
    }

    #[test]
    fn a_cart_is_priced_today_and_unsold_lines_do_not_count() {
        let lines = [
            Line {
                product_id: 1,
                quantity: 2,
            },
            Line {
                product_id: 2,
                quantity: 1,
            },
        ];
        let offers = [Offer {
            product_id: 1,
            available: true,
            name: "Tea".to_owned(),
            price_cents: 450,
        }];
        let cart = priced(&lines, &offers);
        assert_eq!(cart.total_cents, 900);
        assert_eq!(cart.items[0].line_total_cents, 900);
        assert!(!cart.items[1].available);
        assert_eq!(cart.items[1].line_total_cents, 0);
    }
}
