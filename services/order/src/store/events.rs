//! The events feed's SQL: an event appended in the transaction of the change it reports, and
//! events read in id order after a given id.

use rusqlite::{Connection, params};

use crate::error::Error;

/// An event to append; the order's owner and total are read from its row.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub kind: &'static str,
    pub order_id: i64,
    pub status: &'a str,
    pub previous_status: &'a str,
    pub by: i64,
    pub payment_id: i64,
    pub amount_cents: i64,
}

/// An event as the feed shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub order_id: i64,
    pub at: i64,
    pub status: String,
    pub previous_status: String,
    pub by: i64,
    pub user_id: i64,
    pub total_cents: i64,
    pub payment_id: i64,
    pub amount_cents: i64,
}

/// Appends an event, inside the caller's transaction.
pub fn append(conn: &Connection, e: &NewEvent<'_>, now: i64) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO events (type, order_id, at, status, previous_status, by, user_id, total_cents,
                             payment_id, amount_cents)
         SELECT ?1, id, ?3, ?4, ?5, ?6, user_id, total_cents, ?7, ?8 FROM orders WHERE id = ?2",
    )?
    .execute(params![
        e.kind,
        e.order_id,
        now,
        e.status,
        e.previous_status,
        e.by,
        e.payment_id,
        e.amount_cents
    ])?;
    Ok(())
}

/// Up to `limit` events with ids above `after`, in id order.
pub fn after(conn: &Connection, after: i64, limit: i64) -> Result<Vec<Event>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, type, order_id, at, status, previous_status, by, user_id, total_cents, payment_id,
                amount_cents
         FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], |r| {
        Ok(Event {
            id: r.get(0)?,
            kind: r.get(1)?,
            order_id: r.get(2)?,
            at: r.get(3)?,
            status: r.get(4)?,
            previous_status: r.get(5)?,
            by: r.get(6)?,
            user_id: r.get(7)?,
            total_cents: r.get(8)?,
            payment_id: r.get(9)?,
            amount_cents: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
