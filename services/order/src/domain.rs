//! Orders as the service understands them: the status machine, the rules for a new order, and
//! exact integer pricing. Pure functions, unit-tested here.

use std::collections::HashSet;

use crate::error::Error;

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 999;
pub const ADDRESS_MAX: usize = 500;
/// Long enough for a UUID or any client's scheme, short enough to index cheaply.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;
/// How long an idempotency key protects against a repeat.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
pub const PAGE_SIZE_DEFAULT: i32 = 10;
pub const PAGE_SIZE_MAX: i32 = 100;

/// Where an order is. `Reserving` and `Failed` are internal: such orders were never acknowledged
/// and are never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Reserving,
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Reserving => "reserving",
            Status::Pending => "pending",
            Status::Paid => "paid",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }

    pub fn from_db(s: &str) -> Status {
        match s {
            "pending" => Status::Pending,
            "paid" => Status::Paid,
            "shipped" => Status::Shipped,
            "delivered" => Status::Delivered,
            "cancelled" => Status::Cancelled,
            "failed" => Status::Failed,
            _ => Status::Reserving,
        }
    }

    /// A status a client may name.
    pub fn parse_public(s: &str) -> Option<Status> {
        match s {
            "pending" => Some(Status::Pending),
            "paid" => Some(Status::Paid),
            "shipped" => Some(Status::Shipped),
            "delivered" => Some(Status::Delivered),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        }
    }

    pub fn visible(self) -> bool {
        !matches!(self, Status::Reserving | Status::Failed)
    }
}

/// Checks a status move: legal moves only, and the ones only an admin may make.
pub fn check_move(id: i64, from: Status, to: Status, admin: bool) -> Result<(), Error> {
    use Status::*;
    let legal = matches!(
        (from, to),
        (Pending, Paid) | (Paid, Shipped) | (Shipped, Delivered) | (Pending, Cancelled) | (Paid, Cancelled)
    );
    if !legal {
        return Err(Error::Conflict(format!(
            "order {id} cannot move from {} to {}",
            from.as_str(),
            to.as_str()
        )));
    }
    let owner_may = matches!(to, Paid | Cancelled);
    if !owner_may && !admin {
        return Err(Error::Forbidden(format!(
            "only an admin may mark an order {}",
            to.as_str()
        )));
    }
    Ok(())
}

/// A line as the client asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Line {
    pub product_id: i64,
    pub quantity: i64,
}

/// A line priced by the product service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: i64,
    pub product_name: String,
    pub unit_price_cents: i64,
    pub quantity: i64,
    pub line_total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub status: Status,
    pub at: i64,
    pub by: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub status: Status,
    pub items: Vec<PricedLine>,
    pub total_cents: i64,
    pub shipping_address: String,
    pub history: Vec<Change>,
    pub created_at: i64,
    pub updated_at: i64,
    /// For `Failed` orders: why.
    pub failure: Option<String>,
}

pub fn check_lines(lines: &[Line]) -> Result<(), Error> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(Error::invalid(
            "items",
            format!("must have 1 to {MAX_LINES} lines, got {}", lines.len()),
        ));
    }
    let mut seen = HashSet::new();
    for l in lines {
        if l.product_id <= 0 {
            return Err(Error::invalid(
                "product_id",
                format!("must be a positive id, got {}", l.product_id),
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&l.quantity) {
            return Err(Error::invalid(
                "quantity",
                format!(
                    "must be from 1 to {MAX_QUANTITY} (product {}), got {}",
                    l.product_id, l.quantity
                ),
            ));
        }
        if !seen.insert(l.product_id) {
            return Err(Error::invalid(
                "items",
                format!("product {} appears twice", l.product_id),
            ));
        }
    }
    Ok(())
}

/// Returns the address trimmed. Line breaks are fine in an address; other control characters
/// are not.
pub fn check_address(a: &str) -> Result<String, Error> {
    let a = a.trim();
    if a.is_empty() {
        return Err(Error::invalid("shipping_address", "is required"));
    }
    if a.chars().count() > ADDRESS_MAX {
        return Err(Error::invalid(
            "shipping_address",
            format!("must be at most {ADDRESS_MAX} characters"),
        ));
    }
    if a.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::invalid(
            "shipping_address",
            "must not contain control characters",
        ));
    }
    Ok(a.to_owned())
}

pub fn check_idempotency_key(k: &str) -> Result<(), Error> {
    if k.is_empty() || k.len() > IDEMPOTENCY_KEY_MAX || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "idempotency-key",
            format!("must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// A product as the product service described it for pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub product_id: i64,
    pub available: bool,
    pub name: String,
    pub price_cents: i64,
}

/// Prices the lines with the shop's prices: exact integer arithmetic, overflow refused. An
/// unknown or deleted product is named.
pub fn price(lines: &[Line], offers: &[Offer]) -> Result<(Vec<PricedLine>, i64), Error> {
    let mut priced = Vec::with_capacity(lines.len());
    let mut total: i64 = 0;
    for l in lines {
        let offer = offers
            .iter()
            .find(|o| o.product_id == l.product_id && o.available)
            .ok_or_else(|| {
                Error::Upstream(tonic::Status::not_found(format!(
                    "product {} does not exist or is no longer sold",
                    l.product_id
                )))
            })?;
        let too_big = || Error::invalid("items", "the order total is too large");
        let line_total = offer.price_cents.checked_mul(l.quantity).ok_or_else(too_big)?;
        total = total.checked_add(line_total).ok_or_else(too_big)?;
        priced.push(PricedLine {
            product_id: l.product_id,
            product_name: offer.name.clone(),
            unit_price_cents: offer.price_cents,
            quantity: l.quantity,
            line_total_cents: line_total,
        });
    }
    Ok((priced, total))
}

/// What makes two create requests "the same order" for an idempotency key: owner, lines in any
/// order, and address.
pub fn fingerprint(user_id: i64, lines: &[Line], address: &str) -> String {
    let mut sorted = lines.to_vec();
    sorted.sort();
    let lines: Vec<String> = sorted
        .iter()
        .map(|l| format!("{}x{}", l.product_id, l.quantity))
        .collect();
    format!("user={user_id};lines={};address={address}", lines.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn the_status_machine() {
        let all = [Pending, Paid, Shipped, Delivered, Cancelled];
        let legal = [
            (Pending, Paid),
            (Paid, Shipped),
            (Shipped, Delivered),
            (Pending, Cancelled),
            (Paid, Cancelled),
        ];
        for from in all {
            for to in all {
                let ok = check_move(1, from, to, true).is_ok();
                assert_eq!(ok, legal.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
        assert!(check_move(1, Pending, Paid, false).is_ok(), "owners pay");
        assert!(check_move(1, Paid, Cancelled, false).is_ok(), "owners cancel");
        assert!(matches!(
            check_move(1, Paid, Shipped, false),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            check_move(1, Shipped, Delivered, false),
            Err(Error::Forbidden(_))
        ));
        match check_move(7, Delivered, Cancelled, true) {
            Err(Error::Conflict(m)) => assert_eq!(m, "order 7 cannot move from delivered to cancelled"),
            other => panic!("{other:?}"),
        }
        assert_eq!(Status::parse_public("reserving"), None);
        assert_eq!(Status::parse_public("failed"), None);
    }

    #[test]
    fn lines_and_addresses() {
        let l = |product_id, quantity| Line { product_id, quantity };
        assert!(check_lines(&[l(1, 1), l(2, 999)]).is_ok());
        assert!(check_lines(&[]).is_err());
        assert!(check_lines(&[l(1, 1000)]).is_err());
        assert!(check_lines(&[l(1, 0)]).is_err());
        assert!(check_lines(&[l(1, 1), l(1, 1)]).is_err());
        let many: Vec<Line> = (1..=51).map(|i| l(i, 1)).collect();
        assert!(check_lines(&many).is_err());
        assert_eq!(
            check_address(" 1 Main St\nSpringfield ").unwrap(),
            "1 Main St\nSpringfield"
        );
        assert!(check_address("  ").is_err());
        assert!(check_address(&"a".repeat(501)).is_err());
        assert!(check_address("bell\u{7}").is_err());
        assert!(check_idempotency_key("abc-123").is_ok());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key(&"k".repeat(129)).is_err());
    }

    #[test]
    fn prices_are_exact_and_overflow_is_refused() {
        let offer = |id, price| Offer {
            product_id: id,
            available: true,
            name: format!("p{id}"),
            price_cents: price,
        };
        let lines = [
            Line {
                product_id: 1,
                quantity: 3,
            },
            Line {
                product_id: 2,
                quantity: 2,
            },
        ];
        let (priced, total) = price(&lines, &[offer(1, 1999), offer(2, 5)]).unwrap();
        assert_eq!(total, 3 * 1999 + 2 * 5);
        assert_eq!(priced[0].line_total_cents, 5997);
        assert!(
            matches!(price(&lines, &[offer(1, 1999)]), Err(Error::Upstream(_))),
            "missing product"
        );
        let huge = [
            Line {
                product_id: 1,
                quantity: 999,
            },
            Line {
                product_id: 2,
                quantity: 999,
            },
        ];
        assert!(matches!(
            price(&huge, &[offer(1, i64::MAX / 999), offer(2, i64::MAX / 999)]),
            Err(Error::Invalid { .. })
        ));
    }

    #[test]
    fn fingerprints_ignore_line_order() {
        let a = [
            Line {
                product_id: 1,
                quantity: 2,
            },
            Line {
                product_id: 3,
                quantity: 1,
            },
        ];
        let b = [
            Line {
                product_id: 3,
                quantity: 1,
            },
            Line {
                product_id: 1,
                quantity: 2,
            },
        ];
        assert_eq!(fingerprint(5, &a, "x"), fingerprint(5, &b, "x"));
        assert_ne!(fingerprint(5, &a, "x"), fingerprint(6, &a, "x"));
        assert_ne!(fingerprint(5, &a, "x"), fingerprint(5, &a, "y"));
    }
}
