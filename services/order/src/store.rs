//! All of the order service's SQL: orders, their priced lines, their status history, and the
//! bookkeeping that lets recovery finish what a crash interrupted.
//!
//! The write order of a new order: (1) the order row is written in `reserving` with its lines;
//! (2) the product service reserves stock under the order id (idempotent); (3) the order becomes
//! `pending` (acknowledged). Recovery releases the reservation of any order still `reserving`
//! after a grace period and marks it `failed`. A cancel is (1) `cancelled` with
//! `stock_released = 0`, (2) the release, (3) `stock_released = 1`; recovery redoes (2) for any
//! cancelled order not yet released. The product service makes each release happen once.

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};
use shop_kit::db::Migration;

use crate::domain::{Change, Order, PricedLine, Status};
use crate::error::Error;

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "orders",
    sql: "
        CREATE TABLE orders (
            id               INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id          INTEGER NOT NULL,
            status           TEXT    NOT NULL CHECK (status IN
                                 ('reserving', 'pending', 'paid', 'shipped', 'delivered', 'cancelled', 'failed')),
            total_cents      INTEGER NOT NULL CHECK (total_cents >= 0),
            shipping_address TEXT    NOT NULL,
            idempotency_key  TEXT,
            fingerprint      TEXT    NOT NULL,
            failure          TEXT,
            stock_released   INTEGER NOT NULL DEFAULT 0,
            created_at       INTEGER NOT NULL,
            updated_at       INTEGER NOT NULL
        ) STRICT;
        CREATE UNIQUE INDEX orders_idempotency ON orders (user_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);
        CREATE INDEX orders_needing_recovery ON orders (status, stock_released);
        CREATE TABLE order_items (
            order_id         INTEGER NOT NULL REFERENCES orders (id),
            product_id       INTEGER NOT NULL,
            product_name     TEXT    NOT NULL,
            unit_price_cents INTEGER NOT NULL,
            quantity         INTEGER NOT NULL CHECK (quantity > 0),
            line_total_cents INTEGER NOT NULL,
            PRIMARY KEY (order_id, product_id)
        ) STRICT;
        CREATE TABLE order_history (
            id         INTEGER PRIMARY KEY,
            order_id   INTEGER NOT NULL REFERENCES orders (id),
            status     TEXT    NOT NULL,
            changed_at INTEGER NOT NULL,
            changed_by INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX order_history_by_order ON order_history (order_id, id);
    ",
}];

/// What the idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub id: i64,
    pub fingerprint: String,
    pub status: Status,
    pub failure: Option<String>,
}

/// The earlier order created with this key within the window, if any.
pub fn find_keyed(conn: &Connection, user_id: i64, key: &str, since: i64) -> Result<Option<Keyed>, Error> {
    Ok(conn
        .query_row(
            "SELECT id, fingerprint, status, failure FROM orders
             WHERE user_id = ?1 AND idempotency_key = ?2 AND created_at >= ?3",
            params![user_id, key, since],
            |r| {
                Ok(Keyed {
                    id: r.get(0)?,
                    fingerprint: r.get(1)?,
                    status: Status::from_db(&r.get::<_, String>(2)?),
                    failure: r.get(3)?,
                })
            },
        )
        .optional()?)
}

/// A new order row, or the one that already holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New(i64),
    Existing(Keyed),
}

/// Step 1 of a create: the order in `reserving`, with its priced lines.
#[allow(
    clippy::too_many_arguments,
    reason = "one row's columns; a struct would only rename them"
)]
pub fn insert_reserving(
    conn: &mut Connection,
    user_id: i64,
    lines: &[PricedLine],
    total: i64,
    address: &str,
    key: Option<&str>,
    fingerprint: &str,
    now: i64,
    since: i64,
) -> Result<Inserted, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(key) = key {
        if let Some(existing) = find_keyed(&tx, user_id, key, since)? {
            return Ok(Inserted::Existing(existing));
        }
        // A key older than the window may be used again.
        tx.execute(
            "UPDATE orders SET idempotency_key = NULL WHERE user_id = ?1 AND idempotency_key = ?2",
            params![user_id, key],
        )?;
    }
    tx.execute(
        "INSERT INTO orders (user_id, status, total_cents, shipping_address, idempotency_key, fingerprint, created_at, updated_at)
         VALUES (?1, 'reserving', ?2, ?3, ?4, ?5, ?6, ?6)",
        params![user_id, total, address, key, fingerprint, now],
    )?;
    let id = tx.last_insert_rowid();
    for l in lines {
        tx.execute(
            "INSERT INTO order_items (order_id, product_id, product_name, unit_price_cents, quantity, line_total_cents)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, l.product_id, l.product_name, l.unit_price_cents, l.quantity, l.line_total_cents],
        )?;
    }
    tx.commit()?;
    Ok(Inserted::New(id))
}

/// Step 3 of a create: `reserving` -> `pending`. False when the order is no longer reserving
/// (recovery got to it first).
pub fn finish_reserving(conn: &mut Connection, id: i64, by: i64, now: i64) -> Result<bool, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx.execute(
        "UPDATE orders SET status = 'pending', updated_at = ?2 WHERE id = ?1 AND status = 'reserving'",
        params![id, now],
    )?;
    if n == 1 {
        tx.execute(
            "INSERT INTO order_history (order_id, status, changed_at, changed_by) VALUES (?1, 'pending', ?2, ?3)",
            params![id, now, by],
        )?;
    }
    tx.commit()?;
    Ok(n == 1)
}

/// `reserving` -> `failed`, with the reason. Only after the reservation is known not to exist
/// (refused, or released).
pub fn fail_reserving(conn: &Connection, id: i64, reason: &str, now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE orders SET status = 'failed', failure = ?2, stock_released = 1, updated_at = ?3
         WHERE id = ?1 AND status = 'reserving'",
        params![id, reason, now],
    )?;
    Ok(n == 1)
}

fn order_from_row(r: &Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: r.get(0)?,
        user_id: r.get(1)?,
        status: Status::from_db(&r.get::<_, String>(2)?),
        total_cents: r.get(3)?,
        shipping_address: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        failure: r.get(7)?,
        items: Vec::new(),
        history: Vec::new(),
    })
}

const COLUMNS: &str = "id, user_id, status, total_cents, shipping_address, created_at, updated_at, failure";

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
                status: Status::from_db(&r.get::<_, String>(0)?),
                at: r.get(1)?,
                by: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(())
}

/// An order in any status, with its lines and history.
pub fn load(conn: &Connection, id: i64) -> Result<Option<Order>, Error> {
    let order = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM orders WHERE id = ?1"),
            [id],
            order_from_row,
        )
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
    status: Option<Status>,
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

/// Moves an order from `from` to `to` if it is still in `from`, recording who did it. Returns
/// false when someone else moved it first.
pub fn transition(
    conn: &mut Connection,
    id: i64,
    from: Status,
    to: Status,
    by: i64,
    now: i64,
) -> Result<bool, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx.execute(
        "UPDATE orders SET status = ?3, updated_at = ?4 WHERE id = ?1 AND status = ?2",
        params![id, from.as_str(), to.as_str(), now],
    )?;
    if n == 1 {
        tx.execute(
            "INSERT INTO order_history (order_id, status, changed_at, changed_by) VALUES (?1, ?2, ?3, ?4)",
            params![id, to.as_str(), now, by],
        )?;
    }
    tx.commit()?;
    Ok(n == 1)
}

pub fn stock_released(conn: &Connection, id: i64) -> Result<bool, Error> {
    Ok(
        conn.query_row("SELECT stock_released FROM orders WHERE id = ?1", [id], |r| {
            r.get::<_, i64>(0)
        })? == 1,
    )
}

pub fn mark_stock_released(conn: &Connection, id: i64, now: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE orders SET stock_released = 1, updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

/// Work for recovery: orders stuck in `reserving` since before `older_than`, and cancelled
/// orders whose stock has not been confirmed returned.
pub fn recovery_work(conn: &Connection, older_than: i64) -> Result<(Vec<i64>, Vec<i64>), Error> {
    let ids = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<Vec<i64>, Error> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt
            .query_map(p, |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(rows)
    };
    let stuck = ids(
        "SELECT id FROM orders WHERE status = 'reserving' AND updated_at < ?1 ORDER BY id",
        &[&older_than],
    )?;
    let unreleased = ids(
        "SELECT id FROM orders WHERE status = 'cancelled' AND stock_released = 0 ORDER BY id",
        &[],
    )?;
    Ok((stuck, unreleased))
}
