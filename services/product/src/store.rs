//! All of the product service's SQL: the catalogue with its full-text index, and the inventory
//! (reservations keyed by order id, and a ledger of every stock move).
//!
//! Every read-modify-write runs in one `BEGIN IMMEDIATE` transaction, so concurrent reservations
//! queue on SQLite's write lock (waiting up to the busy timeout) and stock can never go below
//! zero; a `CHECK (stock >= 0)` backs that up. The ledger makes the invariant checkable at any
//! quiet moment, for every product:
//!
//! ```text
//! stock now = sum of its ledger moves
//! stock now + units held or committed by reservations = units set by admins (create + admin_set)
//! ```

use rusqlite::{Connection, OptionalExtension, Row, params};
use shop_kit::db::Migration;

use crate::domain::{Changes, Line, Lines, NewProduct, Product};
use crate::error::Error;

/// The schema, step by step. Never edit a released step; add the next one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "catalogue",
        sql: "
            CREATE TABLE products (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                name        TEXT    NOT NULL,
                description TEXT    NOT NULL DEFAULT '',
                price_cents INTEGER NOT NULL CHECK (price_cents > 0),
                stock       INTEGER NOT NULL CHECK (stock >= 0),
                category    TEXT    NOT NULL DEFAULT '',
                created_at  INTEGER NOT NULL,
                updated_at  INTEGER NOT NULL,
                deleted_at  INTEGER
            ) STRICT;
            CREATE INDEX products_live_newest ON products (created_at DESC, id DESC) WHERE deleted_at IS NULL;
            CREATE INDEX products_live_category ON products (category COLLATE NOCASE, created_at DESC)
                WHERE deleted_at IS NULL;
            CREATE INDEX products_live_price ON products (price_cents, id) WHERE deleted_at IS NULL;

            -- Substring search in any script: the trigram tokenizer indexes every run of three
            -- characters, case-insensitively. The index mirrors name and description through
            -- triggers (an external-content table: the text is stored once, in products).
            CREATE VIRTUAL TABLE products_fts USING fts5(
                name, description, content = 'products', content_rowid = 'id', tokenize = 'trigram'
            );
            CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN
                INSERT INTO products_fts (rowid, name, description) VALUES (new.id, new.name, new.description);
            END;
            CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN
                INSERT INTO products_fts (products_fts, rowid, name, description)
                    VALUES ('delete', old.id, old.name, old.description);
            END;
            CREATE TRIGGER products_fts_update AFTER UPDATE OF name, description ON products BEGIN
                INSERT INTO products_fts (products_fts, rowid, name, description)
                    VALUES ('delete', old.id, old.name, old.description);
                INSERT INTO products_fts (rowid, name, description) VALUES (new.id, new.name, new.description);
            END;
        ",
    },
    Migration {
        version: 2,
        name: "inventory",
        sql: "
            -- One row per order that ever asked for stock. A release of an order that never
            -- reserved leaves a 'released' row with no items, so a late reserve for it is refused.
            CREATE TABLE reservations (
                order_id   INTEGER PRIMARY KEY,
                state      TEXT    NOT NULL CHECK (state IN ('held', 'released', 'committed')),
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            ) STRICT;
            CREATE TABLE reservation_items (
                order_id   INTEGER NOT NULL REFERENCES reservations (order_id),
                product_id INTEGER NOT NULL REFERENCES products (id),
                quantity   INTEGER NOT NULL CHECK (quantity > 0),
                PRIMARY KEY (order_id, product_id)
            ) STRICT;
            -- Every change of a product's stock, with its reason.
            CREATE TABLE stock_moves (
                id         INTEGER PRIMARY KEY,
                product_id INTEGER NOT NULL REFERENCES products (id),
                delta      INTEGER NOT NULL,
                reason     TEXT    NOT NULL CHECK (reason IN ('create', 'admin_set', 'reserve', 'release')),
                order_id   INTEGER,
                at         INTEGER NOT NULL
            ) STRICT;
            CREATE INDEX stock_moves_product ON stock_moves (product_id);
        ",
    },
    Migration {
        version: 3,
        name: "search at shop size",
        sql: "
            -- The trigram index could not serve one- and two-character Chinese terms (they fell
            -- back to LIKE, a full scan) and could not rank. product_search holds terms made in
            -- Rust (search.rs): words, and Chinese as single characters and pairs. It keeps no
            -- copy of the text (contentless); rows are kept in step by the writes in store.rs
            -- and filled for existing products by listing::backfill at start.
            DROP TRIGGER products_fts_insert;
            DROP TRIGGER products_fts_delete;
            DROP TRIGGER products_fts_update;
            DROP TABLE products_fts;
            CREATE VIRTUAL TABLE product_search USING fts5(
                name_terms, desc_terms, tokenize = 'ascii', prefix = '2 3 4 5', content = '', contentless_delete = 1
            );
            -- Products that existed before this migration are indexed by listing::backfill, in
            -- batches: ids up to indexed_upto are done, up to target is the work.
            CREATE TABLE search_backfill (
                id           INTEGER PRIMARY KEY CHECK (id = 1),
                indexed_upto INTEGER NOT NULL,
                target       INTEGER NOT NULL
            ) STRICT;
            INSERT INTO search_backfill (id, indexed_upto, target)
                VALUES (1, 0, (SELECT coalesce(max(id), 0) FROM products));
            -- Pages by position: the sort keys with the id, for every list shape.
            DROP INDEX products_live_category;
            CREATE INDEX products_live_category ON products (category COLLATE NOCASE, created_at DESC, id DESC)
                WHERE deleted_at IS NULL;
            CREATE INDEX products_live_category_price ON products (category COLLATE NOCASE, price_cents, id)
                WHERE deleted_at IS NULL;
        ",
    },
];

pub(crate) const COLUMNS: &str =
    "p.id, p.name, p.description, p.price_cents, p.stock, p.category, p.created_at, p.updated_at";
/// The same columns for `RETURNING`, which cannot name a table alias.
const RETURNING: &str = "id, name, description, price_cents, stock, category, created_at, updated_at";

pub(crate) fn product_from_row(r: &Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        price_cents: r.get(3)?,
        stock: r.get(4)?,
        category: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

fn record_move(
    conn: &Connection,
    product_id: i64,
    delta: i64,
    reason: &str,
    order_id: Option<i64>,
    now: i64,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO stock_moves (product_id, delta, reason, order_id, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![product_id, delta, reason, order_id, now])?;
    Ok(())
}

pub fn create(conn: &Connection, new: &NewProduct, now: i64) -> Result<Product, Error> {
    let product = conn.query_row(
        &format!(
            "INSERT INTO products (name, description, price_cents, stock, category, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING {RETURNING}"
        ),
        params![
            new.name,
            new.description,
            new.price_cents,
            new.stock,
            new.category,
            now
        ],
        product_from_row,
    )?;
    record_move(conn, product.id, new.stock, "create", None, now)?;
    crate::listing::index(conn, product.id, &product.name, &product.description)?;
    Ok(product)
}

/// A live (not deleted) product.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Product>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.id, p.name, p.description, p.price_cents, p.stock, p.category, p.created_at, p.updated_at
         FROM products p WHERE p.id = ?1 AND p.deleted_at IS NULL",
    )?;
    Ok(stmt.query_row([id], product_from_row).optional()?)
}

pub fn update(conn: &Connection, id: i64, c: &Changes, now: i64) -> Result<Product, Error> {
    let before = get(conn, id)?.ok_or(Error::NotFound(id))?;
    let product = conn.query_row(
        &format!(
            "UPDATE products SET
                name = coalesce(?2, name),
                description = coalesce(?3, description),
                price_cents = coalesce(?4, price_cents),
                stock = coalesce(?5, stock),
                category = coalesce(?6, category),
                updated_at = ?7
             WHERE id = ?1 RETURNING {RETURNING}"
        ),
        params![id, c.name, c.description, c.price_cents, c.stock, c.category, now],
        product_from_row,
    )?;
    if product.stock != before.stock {
        record_move(conn, id, product.stock - before.stock, "admin_set", None, now)?;
    }
    if product.name != before.name || product.description != before.description {
        crate::listing::index(conn, id, &product.name, &product.description)?;
    }
    Ok(product)
}

/// Marks the product deleted; false when it was not live. Held reservations stay releasable.
pub fn soft_delete(conn: &Connection, id: i64, now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE products SET deleted_at = ?2, updated_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
        params![id, now],
    )?;
    if n == 1 {
        crate::listing::unindex(conn, id)?;
    }
    Ok(n == 1)
}

/// Live products among `ids`, in the order asked; `None` for unknown or deleted ids.
pub fn batch_get(conn: &Connection, ids: &[i64]) -> Result<Vec<(i64, Option<Product>)>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM products p WHERE p.id = ?1 AND p.deleted_at IS NULL"
    ))?;
    ids.iter()
        .map(|id| Ok((*id, stmt.query_row([id], product_from_row).optional()?)))
        .collect()
}

/// What a reservation call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub lines: Vec<Line>,
    /// True when the order already held these units and nothing more was taken.
    pub replayed: bool,
}

fn reservation_state(conn: &Connection, order_id: i64) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached("SELECT state FROM reservations WHERE order_id = ?1")?
        .query_row([order_id], |r| r.get(0))
        .optional()?)
}

fn reservation_lines(conn: &Connection, order_id: i64) -> Result<Vec<Line>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT product_id, quantity FROM reservation_items WHERE order_id = ?1 ORDER BY product_id",
    )?;
    let lines = stmt
        .query_map([order_id], |r| {
            Ok(Line {
                product_id: r.get(0)?,
                quantity: r.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(lines)
}

/// Takes the units of a whole order out of stock, or nothing. Idempotent per order id: a repeat
/// with the same lines answers the first result and takes nothing more.
pub fn reserve(conn: &Connection, order_id: i64, lines: &Lines, now: i64) -> Result<Reserved, Error> {
    let lines = lines.as_slice();
    let mut asked = lines.to_vec();
    asked.sort_by_key(|l| l.product_id);
    match reservation_state(conn, order_id)?.as_deref() {
        None => {}
        Some("released") => {
            return Err(Error::Reservation(format!(
                "order {order_id}'s reservation was released; a released order cannot reserve again"
            )));
        }
        Some(_) => {
            let held = reservation_lines(conn, order_id)?;
            if held != asked {
                return Err(Error::Reservation(format!(
                    "order {order_id} already holds a different reservation"
                )));
            }
            return Ok(Reserved {
                lines: held,
                replayed: true,
            });
        }
    }
    // Check every line first (in the caller's order, so the first short product is named), then
    // write: all or nothing.
    for line in lines {
        let row: Option<(String, i64)> = conn
            .prepare_cached("SELECT name, stock FROM products WHERE id = ?1 AND deleted_at IS NULL")?
            .query_row([line.product_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (name, stock) = row.ok_or(Error::UnknownProduct(line.product_id))?;
        if stock < line.quantity {
            return Err(Error::OutOfStock {
                id: line.product_id,
                name,
                requested: line.quantity,
                available: stock,
            });
        }
    }
    conn.prepare_cached(
        "INSERT INTO reservations (order_id, state, created_at, updated_at) VALUES (?1, 'held', ?2, ?2)",
    )?
    .execute(params![order_id, now])?;
    let mut take =
        conn.prepare_cached("UPDATE products SET stock = stock - ?2, updated_at = ?3 WHERE id = ?1")?;
    let mut hold = conn.prepare_cached(
        "INSERT INTO reservation_items (order_id, product_id, quantity) VALUES (?1, ?2, ?3)",
    )?;
    for line in &asked {
        take.execute(params![line.product_id, line.quantity, now])?;
        hold.execute(params![order_id, line.product_id, line.quantity])?;
        record_move(
            conn,
            line.product_id,
            -line.quantity,
            "reserve",
            Some(order_id),
            now,
        )?;
    }
    Ok(Reserved {
        lines: asked,
        replayed: false,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// The units went back to stock now.
    Now(Vec<Line>),
    Already,
    /// Nothing was ever reserved for the order; it is now marked released so a late reserve is
    /// refused.
    NeverReserved,
}

/// Returns exactly the units held for an order. Idempotent.
pub fn release(conn: &Connection, order_id: i64, now: i64) -> Result<Released, Error> {
    let outcome = match reservation_state(conn, order_id)?.as_deref() {
        None => {
            conn.execute(
                "INSERT INTO reservations (order_id, state, created_at, updated_at) VALUES (?1, 'released', ?2, ?2)",
                params![order_id, now],
            )?;
            Released::NeverReserved
        }
        Some("released") => Released::Already,
        Some("committed") => {
            return Err(Error::Reservation(format!(
                "order {order_id}'s reservation is committed (the order shipped); it cannot be released"
            )));
        }
        Some(_) => {
            let lines = reservation_lines(conn, order_id)?;
            for line in &lines {
                conn.execute(
                    "UPDATE products SET stock = stock + ?2, updated_at = ?3 WHERE id = ?1",
                    params![line.product_id, line.quantity, now],
                )?;
                record_move(
                    conn,
                    line.product_id,
                    line.quantity,
                    "release",
                    Some(order_id),
                    now,
                )?;
            }
            conn.execute(
                "UPDATE reservations SET state = 'released', updated_at = ?2 WHERE order_id = ?1",
                params![order_id, now],
            )?;
            Released::Now(lines)
        }
    };
    Ok(outcome)
}

/// Marks a held reservation as sold for good (the order shipped). True when it changed now,
/// false when it was already committed.
pub fn commit(conn: &Connection, order_id: i64, now: i64) -> Result<bool, Error> {
    let changed = match reservation_state(conn, order_id)?.as_deref() {
        Some("held") => {
            conn.execute(
                "UPDATE reservations SET state = 'committed', updated_at = ?2 WHERE order_id = ?1",
                params![order_id, now],
            )?;
            true
        }
        Some("committed") => false,
        Some(_) => {
            return Err(Error::Reservation(format!(
                "order {order_id}'s reservation was released; it cannot be committed"
            )));
        }
        None => return Err(Error::Reservation(format!("order {order_id} has no reservation"))),
    };
    Ok(changed)
}

/// One product's stock, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockAudit {
    pub product_id: i64,
    pub name: String,
    pub stock: i64,
    /// Units in reservations that are held or committed.
    pub reserved: i64,
    /// Units set by admins: the creation stock plus every admin change.
    pub set_by_admins: i64,
    /// Sum of every ledger move.
    pub ledger: i64,
}

impl StockAudit {
    /// The inventory invariant holds for this product.
    pub fn balanced(&self) -> bool {
        self.stock == self.ledger && self.stock + self.reserved == self.set_by_admins
    }
}

/// Checks the inventory invariant for every product (deleted ones included).
pub fn audit(conn: &Connection) -> Result<Vec<StockAudit>, Error> {
    let mut stmt = conn.prepare(
        "SELECT p.id, p.name, p.stock,
            (SELECT coalesce(sum(i.quantity), 0) FROM reservation_items i
                JOIN reservations r ON r.order_id = i.order_id
                WHERE i.product_id = p.id AND r.state IN ('held', 'committed')),
            (SELECT coalesce(sum(delta), 0) FROM stock_moves m
                WHERE m.product_id = p.id AND m.reason IN ('create', 'admin_set')),
            (SELECT coalesce(sum(delta), 0) FROM stock_moves m WHERE m.product_id = p.id)
         FROM products p ORDER BY p.id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(StockAudit {
                product_id: r.get(0)?,
                name: r.get(1)?,
                stock: r.get(2)?,
                reserved: r.get(3)?,
                set_by_admins: r.get(4)?,
                ledger: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
