//! Orders as the service understands them: the status machine (which moves are legal, who may
//! make them, and what each status asks of the product service), the validated parts of a new
//! order, and exact integer pricing. Pure: no I/O, no gRPC; refusals are [`Refusal`]s.

use std::fmt;

pub use shop_kit::lines::{Line, Lines};

pub const MAX_LINES: usize = shop_kit::lines::ORDER.lines;
pub const MAX_QUANTITY: i64 = shop_kit::lines::ORDER.quantity;
pub const ADDRESS_MAX: usize = 500;
/// Long enough for a UUID or any client's scheme; what the gateway also accepts.
pub const IDEMPOTENCY_KEY_MAX: usize = 255;
/// How long an idempotency key protects against a repeat.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
pub const PAGE_SIZE_DEFAULT: i32 = 10;
pub const PAGE_SIZE_MAX: i32 = 100;
/// Lines a cart may hold (as many as an order).
pub const CART_MAX_LINES: usize = MAX_LINES;

/// Why the domain refuses something. Each variant names what a client got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A request field breaks a rule; the message names the field.
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("order {id} cannot move from {from} to {to}")]
    IllegalMove {
        id: i64,
        from: OrderStatus,
        to: OrderStatus,
    },
    #[error("only an admin may mark an order {0}")]
    AdminOnly(OrderStatus),
    #[error("product {0} does not exist or is no longer sold")]
    UnknownProduct(i64),
    /// Customers pay through a payment; only an admin marks an order paid by hand.
    #[error("order {0} is paid by starting a payment for it; only an admin may mark an order paid by hand")]
    PayByPayment(i64),
    /// A reader of the events feed asked after an id whose successors are no longer kept.
    #[error(
        "events up to id {through} are no longer kept, so some events after {after} are gone; \
         read again from after=0 (the oldest kept) and reconcile"
    )]
    EventsPruned { after: i64, through: i64 },
}

impl Refusal {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Refusal {
        Refusal::Invalid {
            field,
            problem: problem.into(),
        }
    }
}

impl From<shop_kit::lines::Invalid> for Refusal {
    fn from(e: shop_kit::lines::Invalid) -> Refusal {
        Refusal::Invalid {
            field: e.field,
            problem: e.problem,
        }
    }
}

/// Where an order is. `Reserving` and `Failed` are internal: such orders were never acknowledged
/// and are never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Reserving,
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    /// Not paid within the shop's pay-within period; its units went back to stock.
    Expired,
    Failed,
}

/// What the product service must have done with an order's units, by the order's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// Taken out of stock and held for the order.
    Held,
    /// Sold for good (the order shipped).
    Committed,
    /// Back in stock, or never taken.
    Released,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::Reserving,
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
        OrderStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Reserving => "reserving",
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::Failed => "failed",
        }
    }

    /// Any status, as stored.
    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A status a client may name.
    pub fn parse_public(s: &str) -> Option<OrderStatus> {
        OrderStatus::parse(s).filter(|st| st.visible())
    }

    pub fn visible(self) -> bool {
        !matches!(self, OrderStatus::Reserving | OrderStatus::Failed)
    }

    /// What the product service must have done with the units once this status is settled;
    /// `None` while the reservation itself is in flight.
    pub fn units(self) -> Option<Units> {
        match self {
            OrderStatus::Reserving => None,
            OrderStatus::Pending | OrderStatus::Paid => Some(Units::Held),
            OrderStatus::Shipped | OrderStatus::Delivered => Some(Units::Committed),
            OrderStatus::Cancelled | OrderStatus::Expired | OrderStatus::Failed => Some(Units::Released),
        }
    }

    /// The type of the event a move to this status writes to the feed; none for the internal
    /// statuses.
    pub fn event(self) -> Option<&'static str> {
        match self {
            OrderStatus::Reserving | OrderStatus::Failed => None,
            OrderStatus::Pending => Some("order.created"),
            OrderStatus::Paid => Some("order.paid"),
            OrderStatus::Shipped => Some("order.shipped"),
            OrderStatus::Delivered => Some("order.delivered"),
            OrderStatus::Cancelled => Some("order.cancelled"),
            OrderStatus::Expired => Some("order.expired"),
        }
    }

    /// The statuses whose units are `units`: a settlement made for one of them still holds
    /// after a move among them (shipped -> delivered).
    pub fn with_units(units: Units) -> Vec<OrderStatus> {
        OrderStatus::ALL
            .into_iter()
            .filter(|s| s.units() == Some(units))
            .collect()
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a status move a caller asks for: legal moves only, and the ones only an admin may
/// make. An owner may only cancel; `expired` (and `paid` through a payment) are the
/// shop's own moves from `pending`, never a caller's.
pub fn check_move(id: i64, from: OrderStatus, to: OrderStatus, admin: bool) -> Result<(), Refusal> {
    use OrderStatus::*;
    let legal = matches!(
        (from, to),
        (Pending, Paid) | (Paid, Shipped) | (Shipped, Delivered) | (Pending, Cancelled) | (Paid, Cancelled)
    );
    if !legal {
        return Err(Refusal::IllegalMove { id, from, to });
    }
    if admin || to == Cancelled {
        return Ok(());
    }
    if to == Paid {
        return Err(Refusal::PayByPayment(id));
    }
    Err(Refusal::AdminOnly(to))
}

/// A shipping address: trimmed, 1 to [`ADDRESS_MAX`] characters, line breaks allowed, no other
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address(String);

impl Address {
    pub fn parse(a: &str) -> Result<Address, Refusal> {
        let a = a.trim();
        if a.is_empty() {
            return Err(Refusal::invalid("shipping_address", "is required"));
        }
        if a.chars().count() > ADDRESS_MAX {
            return Err(Refusal::invalid(
                "shipping_address",
                format!("must be at most {ADDRESS_MAX} characters"),
            ));
        }
        if a.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Refusal::invalid(
                "shipping_address",
                "must not contain control characters",
            ));
        }
        Ok(Address(a.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `Idempotency-Key`: 1 to [`IDEMPOTENCY_KEY_MAX`] printable ASCII characters (space
/// included), the same rule the gateway applies to the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(k: &str) -> Result<IdempotencyKey, Refusal> {
        if k.is_empty() || k.len() > IDEMPOTENCY_KEY_MAX || !k.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(Refusal::invalid(
                "idempotency-key",
                format!("must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters"),
            ));
        }
        Ok(IdempotencyKey(k.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key in a namespace of its own (`cart:<key>` for checkouts), so that one key used on
    /// two different calls never answers one with the other's order.
    pub fn scoped(&self, namespace: &str) -> IdempotencyKey {
        IdempotencyKey(format!("{namespace}:{}", self.0))
    }
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
    pub status: OrderStatus,
    pub at: i64,
    pub by: i64,
}

/// Where a payment is. Only `Pending` moves, and only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
    /// The money arrived for an order that had been cancelled or had expired meanwhile.
    Refunded,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 4] = [
        PaymentStatus::Pending,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<PaymentStatus> {
        PaymentStatus::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// What a provider reported about a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// A provider's report: the outcome, and the amount it says it collected when it says one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    pub amount_cents: Option<i64>,
}

/// What a payment report does, given the payment's amount and status and the order's status
/// when it arrives: the payment's new status and whether the order becomes paid. `None`: the
/// payment has had its outcome, and a repeat changes nothing.
///
/// Money that arrives and cannot pay the order goes back (`Refunded`): a success for an order
/// cancelled, expired or paid by hand meanwhile, a success after the payment was reported
/// failed (out-of-order delivery), and a success for another amount than the order's.
pub fn settle_payment(
    payment: PaymentStatus,
    amount_cents: i64,
    order: OrderStatus,
    report: Report,
) -> Option<(PaymentStatus, bool)> {
    let right_amount = report.amount_cents.is_none_or(|a| a == amount_cents);
    match (payment, report.outcome) {
        (PaymentStatus::Pending, Outcome::Failed) => Some((PaymentStatus::Failed, false)),
        (PaymentStatus::Pending, Outcome::Succeeded) if order == OrderStatus::Pending && right_amount => {
            Some((PaymentStatus::Succeeded, true))
        }
        (PaymentStatus::Pending | PaymentStatus::Failed, Outcome::Succeeded) => {
            Some((PaymentStatus::Refunded, false))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: i64,
    pub order_id: i64,
    pub amount_cents: i64,
    pub status: PaymentStatus,
    pub provider: String,
    pub provider_ref: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub status: OrderStatus,
    pub items: Vec<PricedLine>,
    pub total_cents: i64,
    pub shipping_address: String,
    pub history: Vec<Change>,
    pub created_at: i64,
    pub updated_at: i64,
    /// For `Failed` orders: why.
    pub failure: Option<String>,
    /// Oldest first.
    pub payments: Vec<Payment>,
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
pub fn price(lines: &Lines, offers: &[Offer]) -> Result<(Vec<PricedLine>, i64), Refusal> {
    let mut priced = Vec::with_capacity(lines.as_slice().len());
    let mut total: i64 = 0;
    for l in lines.as_slice() {
        let offer = offers
            .iter()
            .find(|o| o.product_id == l.product_id && o.available)
            .ok_or(Refusal::UnknownProduct(l.product_id))?;
        let too_big = || Refusal::invalid("items", "the order total is too large");
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
pub fn fingerprint(user_id: i64, lines: &Lines, address: &Address) -> String {
    let mut sorted = lines.as_slice().to_vec();
    sorted.sort();
    let lines: Vec<String> = sorted
        .iter()
        .map(|l| format!("{}x{}", l.product_id, l.quantity))
        .collect();
    format!("user={user_id};lines={};address={}", lines.join(","), address.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    fn lines(pairs: &[(i64, i64)]) -> Result<Lines, Refusal> {
        Lines::parse(
            pairs
                .iter()
                .map(|&(product_id, quantity)| Line { product_id, quantity })
                .collect(),
            shop_kit::lines::ORDER,
        )
        .map_err(Refusal::from)
    }

    #[test]
    fn the_status_machine() {
        let all = [Pending, Paid, Shipped, Delivered, Cancelled, Expired];
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
        assert_eq!(
            check_move(1, Pending, Paid, false),
            Err(Refusal::PayByPayment(1)),
            "owners pay through a payment"
        );
        assert!(
            check_move(1, Pending, Paid, true).is_ok(),
            "admins mark paid by hand"
        );
        assert!(check_move(1, Paid, Cancelled, false).is_ok(), "owners cancel");
        assert!(
            check_move(1, Pending, Expired, true).is_err(),
            "expiry is the shop's move"
        );
        assert_eq!(
            check_move(1, Paid, Shipped, false),
            Err(Refusal::AdminOnly(Shipped))
        );
        assert_eq!(
            check_move(7, Delivered, Cancelled, true).unwrap_err().to_string(),
            "order 7 cannot move from delivered to cancelled"
        );
        assert_eq!(OrderStatus::parse_public("reserving"), None);
        assert_eq!(OrderStatus::parse_public("failed"), None);
        assert_eq!(OrderStatus::parse("failed"), Some(Failed));
        assert_eq!(OrderStatus::parse("lost"), None);
    }

    #[test]
    fn every_status_says_what_the_product_service_owes() {
        assert_eq!(Reserving.units(), None);
        assert_eq!(OrderStatus::with_units(Units::Held), [Pending, Paid]);
        assert_eq!(OrderStatus::with_units(Units::Committed), [Shipped, Delivered]);
        assert_eq!(
            OrderStatus::with_units(Units::Released),
            [Cancelled, Expired, Failed]
        );
    }

    #[test]
    fn a_payment_report_counts_once_and_never_revives_an_order() {
        use PaymentStatus as P;
        let ok = Report {
            outcome: Outcome::Succeeded,
            amount_cents: None,
        };
        let failed = Report {
            outcome: Outcome::Failed,
            amount_cents: None,
        };
        assert_eq!(
            settle_payment(P::Pending, 500, Pending, ok),
            Some((P::Succeeded, true))
        );
        assert_eq!(
            settle_payment(P::Pending, 500, Pending, failed),
            Some((P::Failed, false))
        );
        for gone in [Cancelled, Expired, Paid] {
            assert_eq!(
                settle_payment(P::Pending, 500, gone, ok),
                Some((P::Refunded, false))
            );
        }
        assert_eq!(
            settle_payment(P::Failed, 500, Pending, ok),
            Some((P::Refunded, false)),
            "a success after a failure is money to give back"
        );
        for done in [P::Succeeded, P::Refunded] {
            assert_eq!(settle_payment(done, 500, Pending, ok), None, "{done:?}");
            assert_eq!(settle_payment(done, 500, Pending, failed), None, "{done:?}");
        }
        assert_eq!(settle_payment(P::Failed, 500, Pending, failed), None);
        let amount = |a| Report {
            outcome: Outcome::Succeeded,
            amount_cents: Some(a),
        };
        assert_eq!(
            settle_payment(P::Pending, 500, Pending, amount(500)),
            Some((P::Succeeded, true))
        );
        assert_eq!(
            settle_payment(P::Pending, 500, Pending, amount(499)),
            Some((P::Refunded, false)),
            "another amount never pays the order"
        );
    }

    #[test]
    fn lines_addresses_and_keys() {
        assert!(lines(&[(1, 1), (2, 999)]).is_ok());
        assert!(lines(&[]).is_err());
        assert!(lines(&[(1, 1000)]).is_err());
        assert!(lines(&[(1, 0)]).is_err());
        assert!(lines(&[(0, 1)]).is_err());
        assert!(lines(&[(1, 1), (1, 1)]).is_err());
        let many: Vec<(i64, i64)> = (1..=51).map(|i| (i, 1)).collect();
        assert!(lines(&many).is_err());
        assert_eq!(
            Address::parse(" 1 Main St\nSpringfield ").unwrap().as_str(),
            "1 Main St\nSpringfield"
        );
        assert!(Address::parse("  ").is_err());
        assert!(Address::parse(&"a".repeat(501)).is_err());
        assert!(Address::parse("bell\u{7}").is_err());
        assert!(IdempotencyKey::parse("abc-123").is_ok());
        assert!(IdempotencyKey::parse("with space").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("naïve").is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
    }

    #[test]
    fn prices_are_exact_and_overflow_is_refused() {
        let offer = |id, price| Offer {
            product_id: id,
            available: true,
            name: format!("p{id}"),
            price_cents: price,
        };
        let two = lines(&[(1, 3), (2, 2)]).unwrap();
        let (priced, total) = price(&two, &[offer(1, 1999), offer(2, 5)]).unwrap();
        assert_eq!(total, 3 * 1999 + 2 * 5);
        assert_eq!(priced[0].line_total_cents, 5997);
        assert_eq!(price(&two, &[offer(1, 1999)]), Err(Refusal::UnknownProduct(2)));
        let huge = lines(&[(1, 999), (2, 999)]).unwrap();
        assert!(matches!(
            price(&huge, &[offer(1, i64::MAX / 999), offer(2, i64::MAX / 999)]),
            Err(Refusal::Invalid { .. })
        ));
    }

    #[test]
    fn fingerprints_ignore_line_order() {
        let a = lines(&[(1, 2), (3, 1)]).unwrap();
        let b = lines(&[(3, 1), (1, 2)]).unwrap();
        let x = Address::parse("x").unwrap();
        let y = Address::parse("y").unwrap();
        assert_eq!(fingerprint(5, &a, &x), fingerprint(5, &b, &x));
        assert_ne!(fingerprint(5, &a, &x), fingerprint(6, &a, &x));
        assert_ne!(fingerprint(5, &a, &x), fingerprint(5, &a, &y));
    }
}
