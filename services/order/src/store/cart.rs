//! Carts' SQL: a customer's lines (product and quantity; prices are looked up when the cart is
//! shown), set and removed one at a time, and the ordered lines taken out when checkout's
//! order exists (in that order's transaction).

use rusqlite::{Connection, params};

use crate::domain::{CART_MAX_LINES, Line};
use crate::error::Error;

/// A customer's lines, in the order they were first added.
pub fn lines(conn: &Connection, user_id: i64) -> Result<Vec<Line>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT product_id, quantity FROM cart_items WHERE user_id = ?1 ORDER BY added_at, product_id",
    )?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(Line {
            product_id: r.get(0)?,
            quantity: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sets a line (adds it or replaces its quantity). False when it would be a new line past
/// [`CART_MAX_LINES`].
pub fn set(conn: &Connection, user_id: i64, line: Line, now: i64) -> Result<bool, Error> {
    let changed = conn
        .prepare_cached("UPDATE cart_items SET quantity = ?3 WHERE user_id = ?1 AND product_id = ?2")?
        .execute(params![user_id, line.product_id, line.quantity])?;
    if changed == 1 {
        return Ok(true);
    }
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM cart_items WHERE user_id = ?1")?
        .query_row([user_id], |r| r.get(0))?;
    if count >= CART_MAX_LINES as i64 {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO cart_items (user_id, product_id, quantity, added_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![user_id, line.product_id, line.quantity, now])?;
    Ok(true)
}

pub fn remove(conn: &Connection, user_id: i64, product_id: i64) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM cart_items WHERE user_id = ?1 AND product_id = ?2")?
        .execute(params![user_id, product_id])?;
    Ok(())
}

/// Takes the ordered lines out of the cart: each only if it is still as it was ordered (a line
/// changed meanwhile stays).
pub fn take_ordered(conn: &Connection, user_id: i64, ordered: &[Line]) -> Result<(), Error> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM cart_items WHERE user_id = ?1 AND product_id = ?2 AND quantity = ?3")?;
    for l in ordered {
        stmt.execute(params![user_id, l.product_id, l.quantity])?;
    }
    Ok(())
}
