//! The events feed's SQL: an event appended in the transaction of the change it reports,
//! events read in id order after a given id, and the oldest events removed once they are older
//! than the shop keeps them (from the front only, remembering the highest id removed).

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

/// Why a read of the feed cannot be answered as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// The highest id removed: events up to it are gone.
    pub through: i64,
}

/// The highest event id removed so far (0: none).
pub fn pruned_through(conn: &Connection) -> Result<i64, Error> {
    Ok(conn
        .prepare_cached("SELECT through FROM events_pruned WHERE only = 1")?
        .query_row([], |r| r.get(0))?)
}

/// Up to `limit` events with ids above `after`, in id order; [`Pruned`] when some of the events
/// right after `after` were removed (a reader that far behind has missed events, and is told so
/// instead of skipping them). `after = 0` asks for the oldest events kept.
pub fn after_kept(conn: &Connection, after: i64, limit: i64) -> Result<Result<Vec<Event>, Pruned>, Error> {
    let through = pruned_through(conn)?;
    if after > 0 && after < through {
        return Ok(Err(Pruned { through }));
    }
    after_id(conn, after, limit).map(Ok)
}

/// Removes up to `limit` of the oldest events, stopping at the first written at or after
/// `before` (unix ms), so that only a prefix of the feed ever goes; returns how many. Runs in
/// the writer's transaction with the `through` mark it moves.
pub fn prune(conn: &Connection, before: i64, limit: i64) -> Result<usize, Error> {
    let mut last = None;
    let mut n = 0;
    {
        let mut stmt = conn.prepare_cached("SELECT id, at FROM events ORDER BY id LIMIT ?1")?;
        let mut rows = stmt.query([limit])?;
        while let Some(row) = rows.next()? {
            let (id, at): (i64, i64) = (row.get(0)?, row.get(1)?);
            if at >= before {
                break;
            }
            last = Some(id);
            n += 1;
        }
    }
    let Some(last) = last else {
        return Ok(0);
    };
    conn.prepare_cached("DELETE FROM events WHERE id <= ?1")?
        .execute([last])?;
    conn.prepare_cached("UPDATE events_pruned SET through = max(through, ?1) WHERE only = 1")?
        .execute([last])?;
    Ok(n)
}

/// Up to `limit` events with ids above `after`, in id order.
fn after_id(conn: &Connection, after: i64, limit: i64) -> Result<Vec<Event>, Error> {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn feed(events_at: &[i64]) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        shop_kit::db::migrate(
            &mut conn,
            Path::new(":memory:"),
            crate::store::migrations::MIGRATIONS,
        )
        .unwrap();
        for at in events_at {
            conn.execute(
                "INSERT INTO events (type, order_id, at) VALUES ('order.created', 1, ?1)",
                [at],
            )
            .unwrap();
        }
        conn
    }

    fn ids(conn: &Connection, after: i64) -> Result<Vec<i64>, Pruned> {
        after_kept(conn, after, 100)
            .unwrap()
            .map(|events| events.into_iter().map(|e| e.id).collect())
    }

    #[test]
    fn only_the_front_of_the_feed_goes_and_readers_behind_it_are_told() {
        // Ids 1..=6; id 4 carries an earlier time (a clock stepped back) and must stay, since
        // id 3 before it is young enough to keep.
        let conn = feed(&[10, 20, 50, 15, 60, 70]);
        assert_eq!(prune(&conn, 30, 1000).unwrap(), 2);
        assert_eq!(pruned_through(&conn).unwrap(), 2);
        assert_eq!(
            ids(&conn, 0),
            Ok(vec![3, 4, 5, 6]),
            "0 reads from the oldest kept"
        );
        assert_eq!(ids(&conn, 2), Ok(vec![3, 4, 5, 6]), "caught up to the mark");
        assert_eq!(ids(&conn, 1), Err(Pruned { through: 2 }), "event 2 was missed");
        assert_eq!(prune(&conn, 30, 1000).unwrap(), 0, "nothing more is old enough");
        // In batches, never past the limit; the mark only grows.
        assert_eq!(prune(&conn, 65, 2).unwrap(), 2);
        assert_eq!(pruned_through(&conn).unwrap(), 4);
        assert_eq!(prune(&conn, 65, 2).unwrap(), 1);
        assert_eq!(ids(&conn, 3), Err(Pruned { through: 5 }));
        assert_eq!(ids(&conn, 5), Ok(vec![6]));
        // An emptied feed keeps its mark and its ids: the next event is 7, never 1.
        assert_eq!(prune(&conn, 100, 1000).unwrap(), 1);
        assert_eq!(ids(&conn, 0), Ok(vec![]));
        conn.execute(
            "INSERT INTO events (type, order_id, at) VALUES ('order.paid', 1, 80)",
            [],
        )
        .unwrap();
        assert_eq!(ids(&conn, 6), Ok(vec![7]));
        assert_eq!(ids(&conn, 5), Err(Pruned { through: 6 }));
    }
}
