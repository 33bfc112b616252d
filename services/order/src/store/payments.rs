//! Payments' SQL: starting one (at most one pending per order, the amount read from the order
//! row), finding one by provider reference, and applying a provider's report in one
//! transaction with the order's move, so of a report and a cancel (or expiry) exactly one wins.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::domain::{self, OrderStatus, Payment, PaymentStatus, Report};
use crate::error::Error;
use crate::store::{Moved, events, record};

const COLUMNS: &str = "id, order_id, amount_cents, status, provider, provider_ref, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Payment> {
    let text: String = r.get(3)?;
    let status = PaymentStatus::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown payment status {text:?}").into(),
        )
    })?;
    Ok(Payment {
        id: r.get(0)?,
        order_id: r.get(1)?,
        amount_cents: r.get(2)?,
        status,
        provider: r.get(4)?,
        provider_ref: r.get(5)?,
        created_at: r.get(6)?,
    })
}

/// An order's payments, oldest first.
pub fn of_order(conn: &Connection, order_id: i64) -> Result<Vec<Payment>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([order_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A payment to start, as the flow asks for it.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    pub order_id: i64,
    pub user_id: i64,
    pub provider: &'a str,
    pub provider_ref: &'a str,
    pub simulate: Option<&'a str>,
    pub key: Option<&'a str>,
    pub now: i64,
}

/// What starting a payment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A new payment, pending.
    New(Payment),
    /// The payment already in flight for the order, or the one this idempotency key started.
    Existing(Payment),
    /// The key started a payment for another order.
    KeyReused { order_id: i64 },
    /// The order is not pending (its status now), or does not exist.
    NotPending(Option<OrderStatus>),
}

fn by_key(conn: &Connection, user_id: i64, key: &str) -> Result<Option<Payment>, Error> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM payments WHERE user_id = ?1 AND idempotency_key = ?2"
        ))?
        .query_row(params![user_id, key], from_row)
        .optional()?)
}

fn pending_of(conn: &Connection, order_id: i64) -> Result<Option<Payment>, Error> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM payments WHERE order_id = ?1 AND status = 'pending'"
        ))?
        .query_row([order_id], from_row)
        .optional()?)
}

fn order_status(conn: &Connection, order_id: i64) -> Result<Option<OrderStatus>, Error> {
    let text: Option<String> = conn
        .prepare_cached("SELECT status FROM orders WHERE id = ?1")?
        .query_row([order_id], |r| r.get(0))
        .optional()?;
    Ok(text.as_deref().and_then(OrderStatus::parse))
}

/// Starts a payment of the order's total if the order is pending and has none in flight.
/// Runs inside a write transaction, so the checks and the insert are one step.
pub fn start(conn: &Connection, p: &NewPayment<'_>) -> Result<Started, Error> {
    if let Some(key) = p.key
        && let Some(existing) = by_key(conn, p.user_id, key)?
    {
        if existing.order_id != p.order_id {
            return Ok(Started::KeyReused {
                order_id: existing.order_id,
            });
        }
        return Ok(Started::Existing(existing));
    }
    let status = order_status(conn, p.order_id)?;
    if status != Some(OrderStatus::Pending) {
        return Ok(Started::NotPending(status));
    }
    if let Some(existing) = pending_of(conn, p.order_id)? {
        return Ok(Started::Existing(existing));
    }
    conn.prepare_cached(
        "INSERT INTO payments (order_id, user_id, amount_cents, status, provider, provider_ref, simulate,
                               idempotency_key, created_at, updated_at)
         SELECT id, ?2, total_cents, 'pending', ?3, ?4, ?5, ?6, ?7, ?7 FROM orders WHERE id = ?1",
    )?
    .execute(params![
        p.order_id,
        p.user_id,
        p.provider,
        p.provider_ref,
        p.simulate,
        p.key,
        p.now
    ])?;
    let id = conn.last_insert_rowid();
    let payment = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM payments WHERE id = ?1"))?
        .query_row([id], from_row)?;
    Ok(Started::New(payment))
}

/// What a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// The provider reference names no payment.
    Unknown,
    /// The payment as it is after the report (unchanged when it had its outcome already).
    Payment { payment: Payment, changed: bool },
}

/// Applies a provider's report in one transaction: the payment's move, and when it succeeded
/// for a pending order, the order's move to `paid` (guarded), with their events.
pub fn report(conn: &Connection, provider_ref: &str, report: Report, now: i64) -> Result<Reported, Error> {
    let Some(payment) = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM payments WHERE provider_ref = ?1"))?
        .query_row([provider_ref], from_row)
        .optional()?
    else {
        return Ok(Reported::Unknown);
    };
    let order = order_status(conn, payment.order_id)?.unwrap_or(OrderStatus::Failed);
    let Some((to, pays)) = domain::settle_payment(payment.status, payment.amount_cents, order, report) else {
        return Ok(Reported::Payment {
            payment,
            changed: false,
        });
    };
    conn.prepare_cached("UPDATE payments SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status = ?4")?
        .execute(params![payment.id, to.as_str(), now, payment.status.as_str()])?;
    if pays {
        let n = conn
            .prepare_cached(
                "UPDATE orders SET status = 'paid', updated_at = ?2 WHERE id = ?1 AND status = 'pending'",
            )?
            .execute(params![payment.order_id, now])?;
        if n == 1 {
            let m = Moved {
                id: payment.order_id,
                from: Some(OrderStatus::Pending),
                to: OrderStatus::Paid,
                by: 0,
                payment: Some((payment.id, payment.amount_cents)),
                now,
            };
            record(conn, m)?;
        }
    } else {
        let kind = match to {
            PaymentStatus::Failed => "payment.failed",
            _ => "payment.refunded",
        };
        events::append(
            conn,
            &events::NewEvent {
                kind,
                order_id: payment.order_id,
                status: order.as_str(),
                previous_status: "",
                by: 0,
                payment_id: payment.id,
                amount_cents: payment.amount_cents,
            },
            now,
        )?;
    }
    Ok(Reported::Payment {
        payment: Payment {
            status: to,
            ..payment
        },
        changed: true,
    })
}

/// Marks the succeeded payments of an order that was just cancelled after it was paid as
/// refunded, each with its event, in the cancel's transaction (the money goes back).
pub fn refund_cancelled(conn: &Connection, order_id: i64, now: i64) -> Result<(), Error> {
    let refunded: Vec<Payment> = of_order(conn, order_id)?
        .into_iter()
        .filter(|p| p.status == PaymentStatus::Succeeded)
        .collect();
    for p in refunded {
        conn.prepare_cached("UPDATE payments SET status = 'refunded', updated_at = ?2 WHERE id = ?1")?
            .execute(params![p.id, now])?;
        events::append(
            conn,
            &events::NewEvent {
                kind: "payment.refunded",
                order_id,
                status: OrderStatus::Cancelled.as_str(),
                previous_status: "",
                by: 0,
                payment_id: p.id,
                amount_cents: p.amount_cents,
            },
            now,
        )?;
    }
    Ok(())
}

/// Simulated payments still pending after `before`: their reports may have been lost to a
/// crash, so the simulated provider sends them again.
pub fn simulated_pending(
    conn: &Connection,
    before: i64,
    limit: i64,
) -> Result<Vec<(Payment, String)>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, simulate FROM payments
         WHERE status = 'pending' AND simulate IS NOT NULL AND created_at < ?1 ORDER BY id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![before, limit], |r| Ok((from_row(r)?, r.get(7)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
