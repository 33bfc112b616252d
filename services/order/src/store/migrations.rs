//! The order database's schema, as versioned migrations (applied on start by `shop_kit::db`).
//! A released migration is never edited, only followed by a new one.

use shop_kit::db::Migration;

/// The order database's schema, step by step.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        name: "settlement",
        sql: "
            -- Whether the product service's side of the order matches its status (see the top of
            -- store.rs). Version 1 recorded this for cancelled orders only (stock_released).
            ALTER TABLE orders ADD COLUMN settlement TEXT NOT NULL DEFAULT 'done'
                CHECK (settlement IN ('done', 'owed', 'diverged'));
            UPDATE orders SET settlement = 'owed'
                WHERE status = 'reserving' OR (status = 'cancelled' AND stock_released = 0);
            -- Failed orders give their idempotency key back.
            UPDATE orders SET idempotency_key = NULL WHERE status = 'failed';
            DROP INDEX orders_needing_recovery;
            ALTER TABLE orders DROP COLUMN stock_released;
            CREATE INDEX orders_owed ON orders (id) WHERE settlement = 'owed';
            CREATE INDEX orders_reserving ON orders (updated_at) WHERE status = 'reserving';
        ",
    },
    Migration {
        version: 3,
        name: "payments, expiry, carts, events",
        sql: "
            -- 'expired' joins the statuses: SQLite cannot change a CHECK constraint, so the table
            -- is rebuilt (the migration runs with foreign keys off and checked before commit).
            CREATE TABLE orders_v3 (
                id               INTEGER PRIMARY KEY AUTOINCREMENT,
                user_id          INTEGER NOT NULL,
                status           TEXT    NOT NULL CHECK (status IN
                                     ('reserving', 'pending', 'paid', 'shipped', 'delivered', 'cancelled',
                                      'expired', 'failed')),
                total_cents      INTEGER NOT NULL CHECK (total_cents >= 0),
                shipping_address TEXT    NOT NULL,
                idempotency_key  TEXT,
                fingerprint      TEXT    NOT NULL,
                failure          TEXT,
                created_at       INTEGER NOT NULL,
                updated_at       INTEGER NOT NULL,
                settlement       TEXT    NOT NULL DEFAULT 'done'
                                     CHECK (settlement IN ('done', 'owed', 'diverged'))
            ) STRICT;
            INSERT INTO orders_v3 (id, user_id, status, total_cents, shipping_address, idempotency_key,
                                   fingerprint, failure, created_at, updated_at, settlement)
                SELECT id, user_id, status, total_cents, shipping_address, idempotency_key,
                       fingerprint, failure, created_at, updated_at, settlement FROM orders;
            -- Ids are never reused: the new table's counter starts where the old one was.
            UPDATE sqlite_sequence SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'orders'))
                WHERE name = 'orders_v3';
            DROP TABLE orders;
            ALTER TABLE orders_v3 RENAME TO orders;
            CREATE UNIQUE INDEX orders_idempotency ON orders (user_id, idempotency_key)
                WHERE idempotency_key IS NOT NULL;
            CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);
            CREATE INDEX orders_owed ON orders (id) WHERE settlement = 'owed';
            CREATE INDEX orders_reserving ON orders (updated_at) WHERE status = 'reserving';
            -- Unpaid orders, oldest first, for expiry and the per-customer cap.
            CREATE INDEX orders_unpaid ON orders (created_at) WHERE status = 'pending';
            CREATE INDEX orders_unpaid_by_user ON orders (user_id) WHERE status IN ('reserving', 'pending');

            CREATE TABLE payments (
                id               INTEGER PRIMARY KEY AUTOINCREMENT,
                order_id         INTEGER NOT NULL REFERENCES orders (id),
                user_id          INTEGER NOT NULL,
                amount_cents     INTEGER NOT NULL CHECK (amount_cents >= 0),
                status           TEXT    NOT NULL
                                     CHECK (status IN ('pending', 'succeeded', 'failed', 'refunded')),
                provider         TEXT    NOT NULL,
                provider_ref     TEXT    NOT NULL UNIQUE,
                -- The simulated provider's instruction ('succeed' or 'fail'); NULL for others.
                simulate         TEXT,
                idempotency_key  TEXT,
                created_at       INTEGER NOT NULL,
                updated_at       INTEGER NOT NULL
            ) STRICT;
            CREATE INDEX payments_by_order ON payments (order_id, id);
            -- At most one payment in flight per order.
            CREATE UNIQUE INDEX payments_one_pending ON payments (order_id) WHERE status = 'pending';
            CREATE UNIQUE INDEX payments_idempotency ON payments (user_id, idempotency_key)
                WHERE idempotency_key IS NOT NULL;

            CREATE TABLE cart_items (
                user_id    INTEGER NOT NULL,
                product_id INTEGER NOT NULL,
                quantity   INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 999),
                added_at   INTEGER NOT NULL,
                PRIMARY KEY (user_id, product_id)
            ) STRICT, WITHOUT ROWID;

            -- The events feed (an outbox): written in the transaction of the change it reports;
            -- ids only grow and are never reused, and SQLite commits one writer at a time, so a
            -- reader that has seen id N has seen every event below it.
            CREATE TABLE events (
                id              INTEGER PRIMARY KEY AUTOINCREMENT,
                type            TEXT    NOT NULL,
                order_id        INTEGER NOT NULL,
                at              INTEGER NOT NULL,
                status          TEXT    NOT NULL DEFAULT '',
                previous_status TEXT    NOT NULL DEFAULT '',
                by              INTEGER NOT NULL DEFAULT 0,
                user_id         INTEGER NOT NULL DEFAULT 0,
                total_cents     INTEGER NOT NULL DEFAULT 0,
                payment_id      INTEGER NOT NULL DEFAULT 0,
                amount_cents    INTEGER NOT NULL DEFAULT 0
            ) STRICT;
        ",
    },
    Migration {
        version: 4,
        name: "events kept for a while",
        sql: "
            -- Events older than `events.keep` are removed from the front of the feed; `through`
            -- is the highest id removed, so a reader asking after an id below it is told it
            -- missed events rather than silently skipping them.
            CREATE TABLE events_pruned (
                only    INTEGER PRIMARY KEY CHECK (only = 1),
                through INTEGER NOT NULL CHECK (through >= 0)
            ) STRICT;
            INSERT INTO events_pruned (only, through) VALUES (1, 0);
        ",
    },
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::Connection;
    use shop_kit::db::migrate;

    use super::MIGRATIONS;

    #[test]
    fn version_3_keeps_every_order_and_never_reuses_an_id() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        let path = Path::new(":memory:");
        migrate(&mut conn, path, &MIGRATIONS[..2]).unwrap();
        conn.execute_batch(
            "INSERT INTO orders (user_id, status, total_cents, shipping_address, fingerprint, created_at, updated_at)
                 VALUES (7, 'pending', 500, 'a', 'f', 1, 1), (7, 'cancelled', 300, 'b', 'g', 2, 2),
                        (8, 'paid', 100, 'c', 'h', 3, 3);
             INSERT INTO order_items VALUES (1, 10, 'Tea', 250, 2, 500);
             INSERT INTO order_history (order_id, status, changed_at, changed_by) VALUES (1, 'pending', 1, 7);
             DELETE FROM orders WHERE id = 3;",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, path, &MIGRATIONS[..3]).unwrap(), 1);
        let rows: Vec<(i64, String, String)> = conn
            .prepare("SELECT id, status, settlement FROM orders ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, "pending".into(), "done".into()),
                (2, "cancelled".into(), "done".into())
            ]
        );
        conn.execute(
            "INSERT INTO orders (user_id, status, total_cents, shipping_address, fingerprint, created_at, updated_at)
             VALUES (7, 'expired', 1, 'd', 'i', 4, 4)",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 4, "id 3 was used once and stays used");
        let fks: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        assert!(fks, "foreign keys are back on after the migration");
        let orphan = conn.execute("INSERT INTO order_items VALUES (99, 1, 'x', 1, 1, 1)", []);
        assert!(orphan.is_err(), "order_items still refers to orders");
    }
}
