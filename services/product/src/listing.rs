//! Lists and searches against SQLite: the search index's rows, kept in step by every write that
//! changes a product's text (in the same transaction), and pages that start at an offset or
//! right after a position, with totals counted only as far as [`TOTAL_CAP`] (searches:
//! [`TOTAL_CAP_SEARCH`]).
//!
//! A search sorted by relevance reads two tiers one after the other: products with every term
//! in the name, then products with the terms elsewhere; within a tier, newest (highest id)
//! first. Both tiers come out of the FTS5 index in id order, so a page costs the rows it
//! returns, not the number of matches. A page token is a position `(tier, key, id)`: the next
//! page continues strictly after it, so products added meanwhile (newer ids) never shift it.

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, params_from_iter};

use crate::domain::{ListQuery, Product, Sort, Start, TOTAL_CAP, TOTAL_CAP_SEARCH};
use crate::error::Error;
use crate::search::{self, Position};

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub products: Vec<Product>,
    /// Matches over all pages, up to [`TOTAL_CAP`] ([`TOTAL_CAP_SEARCH`] for a search).
    pub total: i64,
    /// More than that match: `total` is a lower bound.
    pub total_is_lower_bound: bool,
    /// Continues after this page's last product; `None` when the page is not full.
    pub next_page_token: Option<String>,
}

/// Puts (or puts back) a product's terms into the search index.
pub fn index(conn: &Connection, id: i64, name: &str, description: &str) -> Result<(), Error> {
    unindex(conn, id)?;
    conn.prepare_cached("INSERT INTO product_search (rowid, name_terms, desc_terms) VALUES (?1, ?2, ?3)")?
        .execute(rusqlite::params![
            id,
            search::index_terms(name),
            search::index_terms(description)
        ])?;
    Ok(())
}

/// Takes a product out of the search index (a deleted product is never found).
pub fn unindex(conn: &Connection, id: i64) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM product_search WHERE rowid = ?1")?
        .execute([id])?;
    Ok(())
}

/// Products indexed per transaction by [`backfill`].
const BACKFILL_BATCH: i64 = 5_000;

/// One batch of the backfill: indexes the next live products the migration left unindexed, and
/// says how many ids it moved past (0: done). Safe from several processes: the progress row is
/// read and moved in the same transaction.
pub fn backfill_batch(conn: &Connection) -> Result<i64, Error> {
    let (upto, target): (i64, i64) = conn.query_row(
        "SELECT indexed_upto, target FROM search_backfill WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if upto >= target {
        return Ok(0);
    }
    let end = (upto + BACKFILL_BATCH).min(target);
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, description FROM products WHERE id > ?1 AND id <= ?2 AND deleted_at IS NULL",
    )?;
    let rows = stmt
        .query_map([upto, end], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, name, description) in rows {
        index(conn, id, &name, &description)?;
    }
    conn.execute("UPDATE search_backfill SET indexed_upto = ?1 WHERE id = 1", [end])?;
    Ok(end - upto)
}

/// One tier of a list: the FTS5 expression it matches (none: no search) and its number.
struct Tier {
    matched: Option<String>,
    number: u8,
}

fn tiers(q: &ListQuery) -> Vec<Tier> {
    match (&q.search, q.sort) {
        (Some(s), Sort::Relevance) => vec![
            Tier {
                matched: Some(s.in_name()),
                number: 0,
            },
            Tier {
                matched: Some(s.not_all_in_name()),
                number: 1,
            },
        ],
        (s, _) => vec![Tier {
            matched: s.as_ref().map(search::Query::anywhere),
            number: 0,
        }],
    }
}

/// The FROM and WHERE of a tier, with their arguments.
fn scope(q: &ListQuery, matched: Option<&str>) -> (String, Vec<String>, Vec<Sql>) {
    let mut filters = vec!["p.deleted_at IS NULL".to_owned()];
    let mut args = Vec::new();
    let from = match matched {
        Some(expr) => {
            args.push(Sql::Text(expr.to_owned()));
            filters.push(format!("product_search MATCH ?{}", args.len()));
            "product_search s JOIN products p ON p.id = s.rowid"
        }
        None => "products p",
    };
    if let Some(category) = &q.category {
        args.push(Sql::Text(category.clone()));
        filters.push(format!("p.category = ?{} COLLATE NOCASE", args.len()));
    }
    if let Some(min) = q.min_price_cents {
        args.push(Sql::Integer(min));
        filters.push(format!("p.price_cents >= ?{}", args.len()));
    }
    if let Some(max) = q.max_price_cents {
        args.push(Sql::Integer(max));
        filters.push(format!("p.price_cents <= ?{}", args.len()));
    }
    (from.to_owned(), filters, args)
}

/// ORDER BY, the sort key's column, and the comparison that continues after a position.
fn ordering(sort: Sort) -> (&'static str, &'static str, &'static str) {
    match sort {
        Sort::Relevance => ("s.rowid DESC", "0", "s.rowid < ?{id}"),
        Sort::Newest => (
            "p.created_at DESC, p.id DESC",
            "p.created_at",
            "(p.created_at, p.id) < (?{key}, ?{id})",
        ),
        Sort::PriceAsc => (
            "p.price_cents, p.id",
            "p.price_cents",
            "(p.price_cents, p.id) > (?{key}, ?{id})",
        ),
        Sort::PriceDesc => (
            "p.price_cents DESC, p.id DESC",
            "p.price_cents",
            "(p.price_cents, p.id) < (?{key}, ?{id})",
        ),
    }
}

/// Matches of one scope, counted up to `cap` (the counting stops there).
fn count(conn: &Connection, from: &str, filters: &[String], args: &[Sql], cap: i64) -> Result<i64, Error> {
    let sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM {from} WHERE {} LIMIT ?{})",
        filters.join(" AND "),
        args.len() + 1
    );
    let args = args.iter().cloned().chain([Sql::Integer(cap)]);
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params_from_iter(args), |r| r.get(0))?)
}

/// Up to `limit` products of `tier` after `after` (a position in this tier) or `skip` rows.
fn fetch(
    conn: &Connection,
    q: &ListQuery,
    tier: &Tier,
    after: Option<Position>,
    skip: i64,
    limit: i64,
) -> Result<Vec<(Product, Position)>, Error> {
    let (from, mut filters, mut args) = scope(q, tier.matched.as_deref());
    let (order, key, continues) = ordering(q.sort);
    if let Some(at) = after {
        args.push(Sql::Integer(at.key));
        let k = args.len();
        args.push(Sql::Integer(at.id));
        let i = args.len();
        filters.push(
            continues
                .replace("{key}", &k.to_string())
                .replace("{id}", &i.to_string()),
        );
    }
    args.push(Sql::Integer(limit));
    args.push(Sql::Integer(skip));
    let sql = format!(
        "SELECT {}, {key} FROM {from} WHERE {} ORDER BY {order} LIMIT ?{} OFFSET ?{}",
        crate::store::COLUMNS,
        filters.join(" AND "),
        args.len() - 1,
        args.len(),
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
        let product = crate::store::product_from_row(r)?;
        let position = Position {
            tier: tier.number,
            key: r.get(8)?,
            id: product.id,
        };
        Ok((product, position))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// One page of live products.
pub fn list(conn: &Connection, q: &ListQuery) -> Result<Page, Error> {
    if q.search.as_ref().is_some_and(search::Query::matches_nothing) {
        return Ok(Page {
            products: Vec::new(),
            total: 0,
            total_is_lower_bound: false,
            next_page_token: None,
        });
    }
    let limit = i64::from(q.page_size);
    let mut rows: Vec<(Product, Position)> = Vec::new();
    let mut skip = match q.start {
        Start::Offset(n) => n,
        Start::After(_) => 0,
    };
    for tier in tiers(q) {
        let left = limit - rows.len() as i64;
        if left == 0 {
            break;
        }
        let after = match q.start {
            Start::After(at) if tier.number < at.tier => continue,
            Start::After(at) if tier.number == at.tier => Some(at),
            _ => None,
        };
        if skip > 0 {
            let (from, filters, args) = scope(q, tier.matched.as_deref());
            let here = count(conn, &from, &filters, &args, skip + left)?;
            if here <= skip {
                skip -= here;
                continue;
            }
        }
        rows.extend(fetch(conn, q, &tier, after, skip, left)?);
        skip = 0;
    }
    let cap = if q.search.is_some() {
        TOTAL_CAP_SEARCH
    } else {
        TOTAL_CAP
    };
    let (from, filters, args) = scope(q, q.search.as_ref().map(search::Query::anywhere).as_deref());
    let counted = count(conn, &from, &filters, &args, cap + 1)?;
    let next_page_token = match rows.last() {
        Some((_, at)) if rows.len() as i64 == limit => Some(search::page_token(q.list, q.sort, *at)),
        _ => None,
    };
    Ok(Page {
        products: rows.into_iter().map(|(p, _)| p).collect(),
        total: counted.min(cap),
        total_is_lower_bound: counted > cap,
        next_page_token,
    })
}
