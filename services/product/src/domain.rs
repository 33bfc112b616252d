//! Products, stock lines and list queries as the service understands them, and the rules their
//! fields must follow. Pure functions: no I/O, so every rule is unit-tested here.

use crate::error::Error;
use crate::search::{self, Position, Query};

pub const NAME_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 5_000;
pub const CATEGORY_MAX: usize = 50;
/// 10 million in currency units. Far above any real item, and low enough that the order service's
/// 50 lines x 999 units can never overflow an i64 total.
pub const PRICE_MAX: i64 = 1_000_000_000;
pub const STOCK_MAX: i64 = 1_000_000_000;
pub const PAGE_SIZE_DEFAULT: i32 = 10;
pub const PAGE_SIZE_MAX: i32 = 100;
pub const QUERY_MAX: usize = 100;
/// Ids per BatchGetProducts: as many as a reservation's lines (`shop_kit::lines::RESERVATION`),
/// and an order has at most 50.
pub const BATCH_MAX: usize = shop_kit::lines::RESERVATION.lines;
/// `page` reaches at most this many products deep; deeper lists follow `next_page_token`, whose
/// cost does not grow with depth.
pub const PAGE_DEPTH_MAX: i64 = 10_000;
/// Counting stops here: `total` is exact up to this many matches and a lower bound beyond.
pub const TOTAL_CAP: i64 = 1_000;
/// The same for searches, where counting a rare combination of words means reading far down
/// the index: a search counts to 100.
pub const TOTAL_CAP_SEARCH: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i64,
    pub category: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i64,
    pub category: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price_cents: Option<i64>,
    pub stock: Option<i64>,
    pub category: Option<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

pub use shop_kit::lines::{Line, Lines};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Newest,
    PriceAsc,
    PriceDesc,
    Relevance,
}

/// Where a list page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `page`: this many products skipped (at most [`PAGE_DEPTH_MAX`]).
    Offset(i64),
    /// `page_token`: right after this position.
    After(Position),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub page: i32,
    pub page_size: i32,
    pub category: Option<String>,
    pub min_price_cents: Option<i64>,
    pub max_price_cents: Option<i64>,
    pub sort: Sort,
    pub search: Option<Query>,
    pub start: Start,
    /// What this list's page tokens are tied to (see [`search::fingerprint`]).
    pub list: u32,
}

pub fn check_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > NAME_MAX {
        return Err(Error::invalid(
            "name",
            format!("must be 1 to {NAME_MAX} characters, got {n}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("name", "must not contain control characters"));
    }
    Ok(name.to_owned())
}

pub fn check_description(d: &str) -> Result<String, Error> {
    let d = d.trim();
    if d.chars().count() > DESCRIPTION_MAX {
        return Err(Error::invalid(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters"),
        ));
    }
    Ok(d.to_owned())
}

pub fn check_price(p: i64) -> Result<i64, Error> {
    if p <= 0 || p > PRICE_MAX {
        return Err(Error::invalid(
            "price_cents",
            format!("must be a whole number of cents from 1 to {PRICE_MAX}, got {p}"),
        ));
    }
    Ok(p)
}

pub fn check_stock(s: i64) -> Result<i64, Error> {
    if !(0..=STOCK_MAX).contains(&s) {
        return Err(Error::invalid(
            "stock",
            format!("must be from 0 to {STOCK_MAX}, got {s}"),
        ));
    }
    Ok(s)
}

pub fn check_category(c: &str) -> Result<String, Error> {
    let c = c.trim();
    if c.chars().count() > CATEGORY_MAX {
        return Err(Error::invalid(
            "category",
            format!("must be at most {CATEGORY_MAX} characters"),
        ));
    }
    if c.chars().any(char::is_control) {
        return Err(Error::invalid("category", "must not contain control characters"));
    }
    Ok(c.to_owned())
}

pub fn check_new(
    name: &str,
    description: &str,
    price: i64,
    stock: i64,
    category: &str,
) -> Result<NewProduct, Error> {
    Ok(NewProduct {
        name: check_name(name)?,
        description: check_description(description)?,
        price_cents: check_price(price)?,
        stock: check_stock(stock)?,
        category: check_category(category)?,
    })
}

pub fn check_id(field: &'static str, id: i64) -> Result<i64, Error> {
    if id > 0 {
        Ok(id)
    } else {
        Err(Error::invalid(field, format!("must be a positive id, got {id}")))
    }
}

/// Raw list parameters as they arrive.
#[derive(Debug, Clone, Default)]
pub struct ListParams<'a> {
    pub page: Option<i32>,
    pub page_size: Option<i32>,
    pub category: &'a str,
    pub min_price_cents: Option<i64>,
    pub max_price_cents: Option<i64>,
    pub sort: &'a str,
    pub q: &'a str,
    pub page_token: &'a str,
}

pub fn check_list(p: ListParams<'_>) -> Result<ListQuery, Error> {
    let page = p.page.unwrap_or(1);
    if page < 1 {
        return Err(Error::invalid("page", format!("must be 1 or more, got {page}")));
    }
    let page_size = p.page_size.unwrap_or(PAGE_SIZE_DEFAULT);
    if !(1..=PAGE_SIZE_MAX).contains(&page_size) {
        return Err(Error::invalid(
            "page_size",
            format!("must be from 1 to {PAGE_SIZE_MAX}, got {page_size}"),
        ));
    }
    let category = check_category(p.category)?;
    check_prices(p.min_price_cents, p.max_price_cents)?;
    let search = check_query(p.q)?;
    let sort = check_sort(p.sort, search.is_some())?;
    let price = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let list = search::fingerprint(&[
        search.as_ref().map_or("", Query::normal),
        &category.to_lowercase(),
        &price(p.min_price_cents),
        &price(p.max_price_cents),
    ]);
    let start = check_start(p.page, page, page_size, p.page_token, list, sort)?;
    Ok(ListQuery {
        page,
        page_size,
        category: (!category.is_empty()).then_some(category),
        min_price_cents: p.min_price_cents,
        max_price_cents: p.max_price_cents,
        sort,
        search,
        start,
        list,
    })
}

fn check_prices(min: Option<i64>, max: Option<i64>) -> Result<(), Error> {
    for (field, v) in [("min_price_cents", min), ("max_price_cents", max)] {
        if let Some(v) = v
            && v < 0
        {
            return Err(Error::invalid(field, format!("must be 0 or more, got {v}")));
        }
    }
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        return Err(Error::invalid(
            "min_price_cents",
            format!("must not exceed max_price_cents ({min} > {max})"),
        ));
    }
    Ok(())
}

fn check_sort(sort: &str, searching: bool) -> Result<Sort, Error> {
    match (sort, searching) {
        ("", true) | ("relevance", true) => Ok(Sort::Relevance),
        ("", false) | ("newest", _) => Ok(Sort::Newest),
        ("price_asc", _) => Ok(Sort::PriceAsc),
        ("price_desc", _) => Ok(Sort::PriceDesc),
        ("relevance", false) => Err(Error::invalid("sort", "relevance needs a search query q")),
        (other, _) => Err(Error::invalid(
            "sort",
            format!("must be newest, price_asc, price_desc or relevance, got {other:?}"),
        )),
    }
}

/// `page` (bounded in depth) or `page_token`, never both.
fn check_start(
    asked_page: Option<i32>,
    page: i32,
    page_size: i32,
    token: &str,
    list: u32,
    sort: Sort,
) -> Result<Start, Error> {
    if !token.is_empty() {
        if asked_page.is_some() {
            return Err(Error::invalid("page", "give page or page_token, not both"));
        }
        return Ok(Start::After(search::read_page_token(token, list, sort)?));
    }
    let offset = i64::from(page - 1) * i64::from(page_size);
    if offset >= PAGE_DEPTH_MAX {
        return Err(Error::invalid(
            "page",
            format!(
                "reaches {offset} products deep; page goes to {PAGE_DEPTH_MAX}, \
                 beyond that follow next_page_token"
            ),
        ));
    }
    Ok(Start::Offset(offset))
}

/// The search query, if `q` has anything to search for. Everything in `q` is plain text:
/// quotes, `*`, `%`, parentheses and the like carry no meaning.
pub fn check_query(q: &str) -> Result<Option<Query>, Error> {
    let q = q.trim();
    if q.chars().count() > QUERY_MAX {
        return Err(Error::invalid(
            "q",
            format!("must be at most {QUERY_MAX} characters"),
        ));
    }
    if q.chars().any(char::is_control) {
        return Err(Error::invalid("q", "must not contain control characters"));
    }
    Query::parse(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: Error) -> &'static str {
        match e {
            Error::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn product_fields() {
        assert!(check_new("Kettle", "", 1, 0, "home").is_ok());
        assert_eq!(field(check_new("", "", 1, 0, "").unwrap_err()), "name");
        assert_eq!(field(check_new("   ", "", 1, 0, "").unwrap_err()), "name");
        assert_eq!(
            field(check_new(&"n".repeat(201), "", 1, 0, "").unwrap_err()),
            "name"
        );
        assert_eq!(
            check_new(&"名".repeat(200), "", 1, 0, "")
                .unwrap()
                .name
                .chars()
                .count(),
            200
        );
        assert_eq!(field(check_new("x", "", 0, 0, "").unwrap_err()), "price_cents");
        assert_eq!(field(check_new("x", "", -5, 0, "").unwrap_err()), "price_cents");
        assert_eq!(
            field(check_new("x", "", PRICE_MAX + 1, 0, "").unwrap_err()),
            "price_cents"
        );
        assert_eq!(field(check_new("x", "", 1, -1, "").unwrap_err()), "stock");
        assert_eq!(
            field(check_new("x", &"d".repeat(5001), 1, 0, "").unwrap_err()),
            "description"
        );
        assert_eq!(
            field(check_new("x", "", 1, 0, &"c".repeat(51)).unwrap_err()),
            "category"
        );
    }

    #[test]
    fn list_parameters_are_refused_not_replaced() {
        let ok = check_list(ListParams::default()).unwrap();
        assert_eq!((ok.page, ok.page_size, ok.sort), (1, 10, Sort::Newest));
        let bad = |p: ListParams<'static>| field(check_list(p).unwrap_err());
        assert_eq!(
            bad(ListParams {
                page: Some(0),
                ..Default::default()
            }),
            "page"
        );
        assert_eq!(
            bad(ListParams {
                page_size: Some(0),
                ..Default::default()
            }),
            "page_size"
        );
        assert_eq!(
            bad(ListParams {
                page_size: Some(101),
                ..Default::default()
            }),
            "page_size"
        );
        assert_eq!(
            bad(ListParams {
                min_price_cents: Some(-1),
                ..Default::default()
            }),
            "min_price_cents"
        );
        assert_eq!(
            bad(ListParams {
                min_price_cents: Some(10),
                max_price_cents: Some(5),
                ..Default::default()
            }),
            "min_price_cents"
        );
        assert_eq!(
            bad(ListParams {
                sort: "cheapest",
                ..Default::default()
            }),
            "sort"
        );
        assert_eq!(
            bad(ListParams {
                sort: "relevance",
                ..Default::default()
            }),
            "sort"
        );
        let searched = check_list(ListParams {
            q: "iphone",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(searched.sort, Sort::Relevance);
        let priced = check_list(ListParams {
            q: "iphone",
            sort: "price_asc",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(priced.sort, Sort::PriceAsc);
    }

    #[test]
    fn queries_and_pages() {
        assert_eq!(check_query("  ").unwrap(), None);
        assert!(check_query("!?*").unwrap().unwrap().matches_nothing());
        assert!(check_query("手机").unwrap().is_some());
        assert!(check_query(&"q".repeat(101)).is_err());
        let deep = ListParams {
            page: Some(1_001),
            ..Default::default()
        };
        assert_eq!(field(check_list(deep).unwrap_err()), "page");
        let both = ListParams {
            page: Some(2),
            page_token: "1.n.0.5.5.00000000",
            ..Default::default()
        };
        assert_eq!(field(check_list(both).unwrap_err()), "page");
        let foreign = ListParams {
            page_token: "1.n.0.5.5.00000000",
            ..Default::default()
        };
        assert_eq!(field(check_list(foreign).unwrap_err()), "page_token");
        let first = check_list(ListParams::default()).unwrap();
        let token = search::page_token(
            first.list,
            Sort::Newest,
            Position {
                tier: 0,
                key: 9,
                id: 3,
            },
        );
        let next = check_list(ListParams {
            page_token: &token,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            next.start,
            Start::After(Position {
                tier: 0,
                key: 9,
                id: 3
            })
        );
    }
}
