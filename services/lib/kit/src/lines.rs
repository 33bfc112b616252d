//! Order lines as the order and product services both take them: a product and a number of
//! units. A list of lines is checked once, where it arrives, into [`Lines`]; code past that
//! point never checks again. The two services' limits live side by side here, so that an order
//! the order service accepts can never be refused by the product service's reservation.

use std::collections::HashSet;

/// One product and a number of units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Line {
    pub product_id: i64,
    pub quantity: i64,
}

/// How many lines a list may hold and how many units a line may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub lines: usize,
    pub quantity: i64,
}

/// A customer's order (and cart): 50 lines, 999 units each.
pub const ORDER: Limits = Limits {
    lines: 50,
    quantity: 999,
};

/// A stock reservation at the product service, from any caller.
pub const RESERVATION: Limits = Limits {
    lines: 100,
    quantity: 1_000_000,
};

// Every order's lines make a valid reservation.
const _: () = assert!(ORDER.lines <= RESERVATION.lines && ORDER.quantity <= RESERVATION.quantity);

/// Why a list of lines was refused: the request field at fault and a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: String) -> Invalid {
    Invalid { field, problem }
}

/// Lines checked against their [`Limits`]: 1 to `lines` of them, positive product ids, each
/// product once, quantities 1 to `quantity`. Only [`Lines::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines(Vec<Line>);

impl Lines {
    pub fn parse(lines: Vec<Line>, limits: Limits) -> Result<Lines, Invalid> {
        let max = limits.lines;
        if lines.is_empty() || lines.len() > max {
            return Err(invalid(
                "items",
                format!("must have 1 to {max} lines, got {}", lines.len()),
            ));
        }
        let mut seen = HashSet::with_capacity(lines.len());
        for l in &lines {
            if l.product_id <= 0 {
                return Err(invalid(
                    "product_id",
                    format!("must be a positive id, got {}", l.product_id),
                ));
            }
            if !(1..=limits.quantity).contains(&l.quantity) {
                return Err(invalid(
                    "quantity",
                    format!(
                        "must be from 1 to {} (product {}), got {}",
                        limits.quantity, l.product_id, l.quantity
                    ),
                ));
            }
            if !seen.insert(l.product_id) {
                return Err(invalid(
                    "items",
                    format!("product {} appears twice", l.product_id),
                ));
            }
        }
        Ok(Lines(lines))
    }

    pub fn as_slice(&self) -> &[Line] {
        &self.0
    }

    pub fn product_ids(&self) -> Vec<i64> {
        self.0.iter().map(|l| l.product_id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(i64, i64)], limits: Limits) -> Result<Lines, &'static str> {
        let lines = pairs
            .iter()
            .map(|&(product_id, quantity)| Line { product_id, quantity })
            .collect();
        Lines::parse(lines, limits).map_err(|e| e.field)
    }

    #[test]
    fn lines_are_checked_once_against_their_limits() {
        assert!(parse(&[(1, 1), (2, 999)], ORDER).is_ok());
        assert_eq!(parse(&[], ORDER), Err("items"));
        assert_eq!(parse(&[(1, 1), (1, 2)], ORDER), Err("items"));
        assert_eq!(parse(&[(1, 0)], ORDER), Err("quantity"));
        assert_eq!(parse(&[(1, -3)], ORDER), Err("quantity"));
        assert_eq!(parse(&[(1, 1000)], ORDER), Err("quantity"));
        assert!(parse(&[(1, 1000)], RESERVATION).is_ok());
        assert_eq!(parse(&[(0, 1)], ORDER), Err("product_id"));
        assert_eq!(parse(&[(-1, 1)], RESERVATION), Err("product_id"));
        let many: Vec<(i64, i64)> = (1..=51).map(|i| (i, 1)).collect();
        assert_eq!(parse(&many, ORDER), Err("items"));
        assert!(parse(&many, RESERVATION).is_ok());
        let too_many: Vec<(i64, i64)> = (1..=101).map(|i| (i, 1)).collect();
        assert_eq!(parse(&too_many, RESERVATION), Err("items"));
    }

    #[test]
    fn a_refusal_names_the_field_and_the_product() {
        let e = Lines::parse(
            vec![Line {
                product_id: 7,
                quantity: 0,
            }],
            ORDER,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "quantity: must be from 1 to 999 (product 7), got 0"
        );
    }
}
