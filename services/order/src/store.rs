//! All of the order service's SQL: orders, their priced lines, their status history, and the
//! bookkeeping that keeps the product service's side of every order in step with the order.
//!
//! The order row is the truth; the product service follows it. Every status change is a guarded
//! update (`... WHERE id = ? AND status = <expected>`), so of two racing moves exactly one
//! wins. A move that changes what the product service must do with the units (ship: commit;
//! cancel or fail: release) sets `settlement = 'owed'` in the same transaction; the call to the
//! product service follows, and `settlement = 'done'` is written only once it answered. A crash
//! or a lost race in between leaves `owed`, which the recovery pass finishes. `diverged` marks an
//! order whose units the product service holds in the opposite state (it cannot be repaired
//! automatically; it is logged as an error and left for an operator).
//!
//! A new order: (1) written in `reserving` (`owed`) with its lines; (2) the product service
//! reserves the units under the order id (idempotent); (3) `pending` (`done`): acknowledged.
//! A failure at (2) makes it `failed`: `done` when nothing can be held, `owed` (a release
//! follows) when the reservation may have happened. An order left in `reserving` by a crash is
//! failed by recovery after a grace period, then released. A failed order gives its
//! idempotency key back, so a retry with the same key is served anew.

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::domain::{Change, Order, OrderStatus, PricedLine, Units};
use crate::error::Error;

pub mod cart;
pub mod events;
mod migrations;
pub mod payments;

pub use migrations::MIGRATIONS;

/// Whether the product service's side of an order is in step with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Done,
    /// A commit or a release is owed to the product service.
    Owed,
    /// The product service holds the units in the opposite state; an operator must look.
    Diverged,
}

impl Settlement {
    pub fn as_str(self) -> &'static str {
        match self {
            Settlement::Done => "done",
            Settlement::Owed => "owed",
            Settlement::Diverged => "diverged",
        }
    }
}

fn status_of(r: &Row<'_>, i: usize) -> rusqlite::Result<OrderStatus> {
    let text: String = r.get(i)?;
    // The CHECK constraint admits only known statuses.
    OrderStatus::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown status {text:?}").into(),
        )
    })
}

/// What the idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub id: i64,
    pub fingerprint: String,
    pub status: OrderStatus,
}

/// The earlier order created with this key within the window, if any. Failed orders have given
/// their key back.
pub fn find_keyed(conn: &Connection, user_id: i64, key: &str, since: i64) -> Result<Option<Keyed>, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT id, fingerprint, status FROM orders
             WHERE user_id = ?1 AND idempotency_key = ?2 AND created_at >= ?3",
        )?
        .query_row(params![user_id, key, since], |r| {
            Ok(Keyed {
                id: r.get(0)?,
                fingerprint: r.get(1)?,
                status: status_of(r, 2)?,
            })
        })
        .optional()?)
}

/// A new order row, or the one that already holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New(i64),
    Existing(Keyed),
    /// The owner already has this many unpaid orders (the cap).
    TooManyUnpaid(i64),
}

/// An order to write in `reserving`.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub user_id: i64,
    pub lines: &'a [PricedLine],
    pub total_cents: i64,
    pub address: &'a str,
    pub key: Option<&'a str>,
    pub fingerprint: &'a str,
    pub now: i64,
    /// Keys used before this moment may be used again.
    pub key_since: i64,
    /// How many unpaid orders (pending, or being placed) the owner may have; 0: any number.
    pub max_unpaid: i64,
}

/// Step 1 of a create: the order in `reserving`, with its priced lines.
/// Runs inside a [`shop_kit::db::Db::write`], like every function here that changes rows.
pub fn insert_reserving(conn: &Connection, new: &NewOrder<'_>) -> Result<Inserted, Error> {
    if let Some(key) = new.key
        && let Some(existing) = find_keyed(conn, new.user_id, key, new.key_since)?
    {
        return Ok(Inserted::Existing(existing));
    }
    if new.max_unpaid > 0 {
        // Counted only as far as the cap.
        let unpaid: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM orders
                     WHERE user_id = ?1 AND status IN ('reserving', 'pending') LIMIT ?2)",
            )?
            .query_row(params![new.user_id, new.max_unpaid], |r| r.get(0))?;
        if unpaid >= new.max_unpaid {
            return Ok(Inserted::TooManyUnpaid(unpaid));
        }
    }
    if let Some(key) = new.key {
        // A key older than the window may be used again.
        conn.prepare_cached(
            "UPDATE orders SET idempotency_key = NULL WHERE user_id = ?1 AND idempotency_key = ?2",
        )?
        .execute(params![new.user_id, key])?;
    }
    conn.prepare_cached(
        "INSERT INTO orders (user_id, status, settlement, total_cents, shipping_address, idempotency_key, fingerprint,
                             created_at, updated_at)
         VALUES (?1, 'reserving', 'owed', ?2, ?3, ?4, ?5, ?6, ?6)",
    )?
    .execute(params![new.user_id, new.total_cents, new.address, new.key, new.fingerprint, new.now])?;
    let id = conn.last_insert_rowid();
    let mut item = conn.prepare_cached(
        "INSERT INTO order_items (order_id, product_id, product_name, unit_price_cents, quantity, line_total_cents)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for l in new.lines {
        item.execute(params![
            id,
            l.product_id,
            l.product_name,
            l.unit_price_cents,
            l.quantity,
            l.line_total_cents
        ])?;
    }
    Ok(Inserted::New(id))
}

/// Step 3 of a create: `reserving` -> `pending`, its units held; for a checkout, the ordered
/// lines leave the owner's cart in the same transaction. False when the order is no longer
/// reserving (recovery failed it first).
pub fn finish_reserving(
    conn: &Connection,
    id: i64,
    by: i64,
    cart: Option<(i64, &[crate::domain::Line])>,
    now: i64,
) -> Result<bool, Error> {
    let n = conn
        .prepare_cached(
            "UPDATE orders SET status = 'pending', settlement = 'done', updated_at = ?2
             WHERE id = ?1 AND status = 'reserving'",
        )?
        .execute(params![id, now])?;
    if n == 1 {
        record(
            conn,
            Moved {
                id,
                from: None,
                to: OrderStatus::Pending,
                by,
                payment: None,
                now,
            },
        )?;
        if let Some((owner, lines)) = cart {
            cart::take_ordered(conn, owner, lines)?;
        }
    }
    Ok(n == 1)
}

/// `reserving` -> `failed`, with the reason, giving the idempotency key back. `settlement` is
/// `Done` when nothing can be held, `Owed` when a release must follow. False when the order was
/// no longer reserving.
pub fn fail_reserving(
    conn: &Connection,
    id: i64,
    reason: &str,
    settlement: Settlement,
    now: i64,
) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE orders SET status = 'failed', settlement = ?3, failure = ?2, idempotency_key = NULL, updated_at = ?4
         WHERE id = ?1 AND status = 'reserving'",
        params![id, reason, settlement.as_str(), now],
    )?;
    Ok(n == 1)
}

/// A status change as history and the events feed record it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moved {
    pub id: i64,
    /// `None` for a new order's first visible status.
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
    /// The user whose token made the change; 0 for the shop's own moves.
    pub by: i64,
    /// The payment that made the change, if one did.
    pub payment: Option<(i64, i64)>,
    pub now: i64,
}

/// Writes a status change to the order's history and, for visible statuses, to the events feed,
/// in the caller's transaction.
pub(crate) fn record(conn: &Connection, m: Moved) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO order_history (order_id, status, changed_at, changed_by) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![m.id, m.to.as_str(), m.now, m.by])?;
    if let Some(kind) = m.to.event() {
        let (payment_id, amount_cents) = m.payment.unwrap_or((0, 0));
        events::append(
            conn,
            &events::NewEvent {
                kind,
                order_id: m.id,
                status: m.to.as_str(),
                previous_status: m.from.map_or("", OrderStatus::as_str),
                by: m.by,
                payment_id,
                amount_cents,
            },
            m.now,
        )?;
    }
    Ok(())
}

/// Moves an order from `from` to `to` if it is still in `from`, recording who did it; when the
/// move changes what the product service must do with the units, the settlement becomes owed
/// in the same transaction. Returns false when someone else moved the order first.
pub fn transition(
    conn: &Connection,
    id: i64,
    from: OrderStatus,
    to: OrderStatus,
    by: i64,
    now: i64,
) -> Result<bool, Error> {
    let owes = from.units() != to.units();
    let n = conn
        .prepare_cached(
            "UPDATE orders SET status = ?3, updated_at = ?4,
                 settlement = CASE WHEN ?5 THEN 'owed' ELSE settlement END
             WHERE id = ?1 AND status = ?2",
        )?
        .execute(params![id, from.as_str(), to.as_str(), now, owes])?;
    if n == 1 {
        record(
            conn,
            Moved {
                id,
                from: Some(from),
                to,
                by,
                payment: None,
                now,
            },
        )?;
        if from == OrderStatus::Paid && to == OrderStatus::Cancelled {
            payments::refund_cancelled(conn, id, now)?;
        }
    }
    Ok(n == 1)
}

/// An order whose units the product service still has to commit or release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    pub id: i64,
    pub status: OrderStatus,
}

/// The order's status, when a commit or a release is owed for it.
pub fn owed(conn: &Connection, id: i64) -> Result<Option<Owed>, Error> {
    Ok(conn
        .query_row(
            "SELECT id, status FROM orders WHERE id = ?1 AND settlement = 'owed' AND status != 'reserving'",
            [id],
            |r| {
                Ok(Owed {
                    id: r.get(0)?,
                    status: status_of(r, 1)?,
                })
            },
        )
        .optional()?)
}

/// Records what came of settling an order whose units should be `units`, if it still owes that
/// (the status may have moved meanwhile only among statuses with the same units).
pub fn settled(
    conn: &Connection,
    id: i64,
    units: Units,
    outcome: Settlement,
    now: i64,
) -> Result<bool, Error> {
    let statuses: Vec<Sql> = OrderStatus::with_units(units)
        .into_iter()
        .map(|s| Sql::Text(s.as_str().to_owned()))
        .collect();
    let placeholders = (0..statuses.len())
        .map(|i| format!("?{}", i + 4))
        .collect::<Vec<_>>()
        .join(", ");
    let mut args = vec![
        Sql::Integer(id),
        Sql::Text(outcome.as_str().to_owned()),
        Sql::Integer(now),
    ];
    args.extend(statuses);
    let n = conn.execute(
        &format!(
            "UPDATE orders SET settlement = ?2, updated_at = ?3
             WHERE id = ?1 AND settlement = 'owed' AND status IN ({placeholders})"
        ),
        params_from_iter(args.iter()),
    )?;
    Ok(n == 1)
}

fn order_from_row(r: &Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: r.get(0)?,
        user_id: r.get(1)?,
        status: status_of(r, 2)?,
        total_cents: r.get(3)?,
        shipping_address: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        failure: r.get(7)?,
        items: Vec::new(),
        history: Vec::new(),
        payments: Vec::new(),
    })
}

/// The columns `order_from_row` reads, as a literal (so queries can be `concat!`ed constants).
macro_rules! columns {
    () => {
        "id, user_id, status, total_cents, shipping_address, created_at, updated_at, failure"
    };
}
const COLUMNS: &str = columns!();

fn fill(conn: &Connection, order: &mut Order) -> Result<(), Error> {
    let mut items = conn.prepare_cached(
        "SELECT product_id, product_name, unit_price_cents, quantity, line_total_cents
         FROM order_items WHERE order_id = ?1 ORDER BY product_id",
    )?;
    order.items = items
        .query_map([order.id], |r| {
            Ok(PricedLine {
                product_id: r.get(0)?,
                product_name: r.get(1)?,
                unit_price_cents: r.get(2)?,
                quantity: r.get(3)?,
                line_total_cents: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut history = conn.prepare_cached(
        "SELECT status, changed_at, changed_by FROM order_history WHERE order_id = ?1 ORDER BY id",
    )?;
    order.history = history
        .query_map([order.id], |r| {
            Ok(Change {
                status: status_of(r, 0)?,
                at: r.get(1)?,
                by: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    order.payments = payments::of_order(conn, order.id)?;
    Ok(())
}

/// An order in any status, with its lines and history.
pub fn load(conn: &Connection, id: i64) -> Result<Option<Order>, Error> {
    let order = conn
        .prepare_cached(concat!("SELECT ", columns!(), " FROM orders WHERE id = ?1"))?
        .query_row([id], order_from_row)
        .optional()?;
    match order {
        Some(mut o) => {
            fill(conn, &mut o)?;
            Ok(Some(o))
        }
        None => Ok(None),
    }
}

/// A user's acknowledged orders, newest first, and how many there are.
pub fn list(
    conn: &Connection,
    user_id: i64,
    status: Option<OrderStatus>,
    page: i32,
    size: i32,
) -> Result<(Vec<Order>, i64), Error> {
    let mut filter = "user_id = ?1 AND status NOT IN ('reserving', 'failed')".to_owned();
    let mut args = vec![Sql::Integer(user_id)];
    if let Some(s) = status {
        args.push(Sql::Text(s.as_str().to_owned()));
        filter.push_str(" AND status = ?2");
    }
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM orders WHERE {filter}"),
        params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    args.push(Sql::Integer(i64::from(size)));
    let limit = args.len();
    args.push(Sql::Integer(i64::from(page - 1) * i64::from(size)));
    let offset = args.len();
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM orders WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT ?{limit} OFFSET ?{offset}"
    ))?;
    let mut orders = stmt
        .query_map(params_from_iter(args.iter()), order_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    for o in &mut orders {
        fill(conn, o)?;
    }
    Ok((orders, total))
}

/// What a recovery pass has to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Work {
    /// Orders stuck in `reserving` since before the grace period: no create is still running
    /// for them.
    pub stuck: Vec<i64>,
    /// Orders that owe the product service a commit or a release.
    pub owed: Vec<Owed>,
}

/// Work for recovery, at most `limit` orders of each kind.
pub fn recovery_work(conn: &Connection, stuck_before: i64, limit: i64) -> Result<Work, Error> {
    let mut stuck = conn.prepare_cached(
        "SELECT id FROM orders WHERE status = 'reserving' AND updated_at < ?1 ORDER BY updated_at LIMIT ?2",
    )?;
    let stuck = stuck
        .query_map(params![stuck_before, limit], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    let mut owed = conn.prepare_cached(
        "SELECT id, status FROM orders WHERE settlement = 'owed' AND status != 'reserving' ORDER BY id LIMIT ?1",
    )?;
    let owed = owed
        .query_map([limit], |r| {
            Ok(Owed {
                id: r.get(0)?,
                status: status_of(r, 1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Work { stuck, owed })
}

/// Pending orders placed before `placed_before` (unpaid for too long), oldest first.
pub fn expirable(conn: &Connection, placed_before: i64, limit: i64) -> Result<Vec<i64>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM orders WHERE status = 'pending' AND created_at < ?1 ORDER BY created_at LIMIT ?2",
    )?;
    let ids = stmt
        .query_map(params![placed_before, limit], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

/// Orders the product service disagrees with, for the log and the audit.
pub fn diverged(conn: &Connection) -> Result<Vec<i64>, Error> {
    let mut stmt = conn.prepare_cached("SELECT id FROM orders WHERE settlement = 'diverged' ORDER BY id")?;
    let ids = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}
