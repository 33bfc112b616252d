//! Search, as text: how a product's name and description become index terms, how a shopper's
//! query becomes an FTS5 expression over them, and the tokens that continue a list where the
//! last page ended. Pure functions; `listing.rs` runs them against SQLite.
//!
//! **Terms.** Text is lowercased and cut into runs of letters and digits. A run in a script
//! written without spaces (Chinese, Japanese, Korean) becomes its two-character pieces followed
//! by its single characters: 蓝牙耳机 → `蓝牙 牙耳 耳机 蓝 牙 耳 机`. Any other run is one word:
//! `iPhone15` → `iphone15`. The index (FTS5, `ascii` tokenizer: spaces separate terms, every
//! non-ASCII character is part of one) stores these terms, so:
//! - one CJK character matches the single-character terms (`茶`);
//! - two match a two-character term (`手机`);
//! - three or more match their two-character pieces as a phrase, one after another, which is
//!   exactly "contains this substring" (the single characters after each run keep two runs'
//!   pieces from ever sitting side by side);
//! - a word matches that word; the query's last word, while it is still being typed, matches
//!   as a prefix too (`pho` finds `phone`) when it has 2 to [`PREFIX_MAX`] characters, the
//!   lengths FTS5's prefix index holds. (A prefix the index does not hold would make FTS5 merge
//!   the lists of every word it starts, a cost that grows with the catalogue.)
//!
//! Every term of a query must match. Nothing in the query is syntax: only letters and digits
//! reach the expression, each inside quotes.

use crate::domain::Sort;
use crate::error::Error;

/// At most this many terms in a query; the rest are refused rather than ignored.
pub const TERMS_MAX: usize = 8;

/// The longest prefix the index holds (`prefix = '2 3 4 5'` in migration 3).
pub const PREFIX_MAX: usize = 5;

/// Whether `c` belongs to a script written without spaces between words.
fn unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30ff      // Hiragana, Katakana
        | 0x3400..=0x4dbf    // CJK Extension A
        | 0x4e00..=0x9fff    // CJK Unified Ideographs
        | 0xac00..=0xd7af    // Hangul syllables
        | 0xf900..=0xfaff    // CJK Compatibility Ideographs
        | 0x20000..=0x3134f  // CJK Extensions B-G
    )
}

/// One run of a text: a word, or a run of CJK characters.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Run {
    Word(String),
    Cjk(Vec<char>),
}

fn runs(text: &str) -> Vec<Run> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut cjk: Vec<char> = Vec::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if unspaced(c) {
            if !word.is_empty() {
                out.push(Run::Word(std::mem::take(&mut word)));
            }
            cjk.push(c);
        } else {
            if !cjk.is_empty() {
                out.push(Run::Cjk(std::mem::take(&mut cjk)));
            }
            if c.is_alphanumeric() {
                word.push(c);
            } else if !word.is_empty() {
                out.push(Run::Word(std::mem::take(&mut word)));
            }
        }
    }
    if !word.is_empty() {
        out.push(Run::Word(word));
    }
    if !cjk.is_empty() {
        out.push(Run::Cjk(cjk));
    }
    out
}

/// The index terms of `text`, separated by spaces (see the module comment).
pub fn index_terms(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    let mut push = |term: &str| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(term);
    };
    for run in runs(text) {
        match run {
            Run::Word(w) => push(&w),
            Run::Cjk(chars) => {
                for pair in chars.windows(2) {
                    push(&pair.iter().collect::<String>());
                }
                for c in &chars {
                    push(c.encode_utf8(&mut [0; 4]));
                }
            }
        }
    }
    out
}

/// A shopper's query, ready to become FTS5 expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// One FTS5 phrase per term, quoted (and `*` for a prefix).
    phrases: Vec<String>,
    /// The terms as the index spells them, for page tokens.
    normal: String,
}

impl Query {
    /// `None` for a blank `q` (no search); a query with no letter or digit in it matches
    /// nothing.
    pub fn parse(q: &str) -> Result<Option<Query>, Error> {
        if q.trim().is_empty() {
            return Ok(None);
        }
        let runs = runs(q);
        if runs.len() > TERMS_MAX {
            return Err(Error::invalid(
                "q",
                format!("at most {TERMS_MAX} words, got {}", runs.len()),
            ));
        }
        let last = runs.len().saturating_sub(1);
        let phrases = runs
            .iter()
            .enumerate()
            .map(|(i, r)| phrase(r, i == last))
            .collect();
        let normal = runs
            .iter()
            .map(|r| match r {
                Run::Word(w) => w.clone(),
                Run::Cjk(c) => c.iter().collect(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Some(Query { phrases, normal }))
    }

    /// True for a query of punctuation alone: there is nothing to look for.
    pub fn matches_nothing(&self) -> bool {
        self.phrases.is_empty()
    }

    /// Every term, anywhere.
    pub fn anywhere(&self) -> String {
        self.phrases.join(" AND ")
    }

    /// Every term in the name.
    pub fn in_name(&self) -> String {
        format!("name_terms : ({})", self.anywhere())
    }

    /// Every term, but not every one in the name: the second tier of relevance.
    pub fn not_all_in_name(&self) -> String {
        format!("({}) NOT {}", self.anywhere(), self.in_name())
    }

    pub fn normal(&self) -> &str {
        &self.normal
    }
}

/// The FTS5 phrase for one run of the query; `last`: the run being typed.
fn phrase(run: &Run, last: bool) -> String {
    match run {
        Run::Word(w) if last && (2..=PREFIX_MAX).contains(&w.chars().count()) => format!("\"{w}\"*"),
        Run::Word(w) => format!("\"{w}\""),
        Run::Cjk(chars) if chars.len() <= 2 => format!("\"{}\"", chars.iter().collect::<String>()),
        Run::Cjk(chars) => {
            let pairs: Vec<String> = chars.windows(2).map(|p| p.iter().collect()).collect();
            format!("\"{}\"", pairs.join(" "))
        }
    }
}

/// Where a page ended: its tier of relevance (0: every term in the name; 1: elsewhere), the
/// sort key of its last product (creation time or price; unused for relevance) and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub tier: u8,
    pub key: i64,
    pub id: i64,
}

/// What a page token belongs to: the search, filters and sort it continues.
pub fn fingerprint(parts: &[&str]) -> u32 {
    // FNV-1a: enough to tell one list's token from another's, not a secret.
    let mut h: u32 = 0x811c_9dc5;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

fn sort_letter(sort: Sort) -> char {
    match sort {
        Sort::Newest => 'n',
        Sort::PriceAsc => 'a',
        Sort::PriceDesc => 'd',
        Sort::Relevance => 'r',
    }
}

/// The token that continues after `at`: `1.<sort>.<tier>.<key>.<id>.<fingerprint>`.
pub fn page_token(list: u32, sort: Sort, at: Position) -> String {
    format!(
        "1.{}.{}.{}.{}.{list:08x}",
        sort_letter(sort),
        at.tier,
        at.key,
        at.id
    )
}

/// Reads a token made by [`page_token`] for the same list; anything else is INVALID_ARGUMENT.
pub fn read_page_token(token: &str, list: u32, sort: Sort) -> Result<Position, Error> {
    let bad = |why: &str| Error::invalid("page_token", why.to_owned());
    let parts: Vec<&str> = token.split('.').collect();
    let [version, letter, tier, key, id, fp] = parts.as_slice() else {
        return Err(bad("is not a page token from this service"));
    };
    if *version != "1" {
        return Err(bad("is not a page token from this service"));
    }
    if u32::from_str_radix(fp, 16).ok() != Some(list) || *letter != sort_letter(sort).to_string() {
        return Err(bad(
            "belongs to another list: keep q, category, prices and sort as they were",
        ));
    }
    let number = |s: &str| s.parse::<i64>().map_err(|_| bad("is damaged"));
    let tier = u8::try_from(number(tier)?)
        .ok()
        .filter(|t| *t <= 1)
        .ok_or_else(|| bad("is damaged"))?;
    Ok(Position {
        tier,
        key: number(key)?,
        id: number(id)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_becomes_words_and_cjk_pieces() {
        assert_eq!(index_terms("Acme Wireless-Phone 15"), "acme wireless phone 15");
        assert_eq!(index_terms("蓝牙耳机"), "蓝牙 牙耳 耳机 蓝 牙 耳 机");
        assert_eq!(index_terms("茶"), "茶");
        assert_eq!(
            index_terms("iPhone手机壳，好用"),
            "iphone 手机 机壳 手 机 壳 好用 好 用"
        );
        assert_eq!(index_terms("Café ÉTÉ"), "café été");
        assert_eq!(index_terms("  \"*(:)^ "), "");
    }

    fn phrases(q: &str) -> Vec<String> {
        Query::parse(q).unwrap().unwrap().phrases
    }

    #[test]
    fn queries_become_quoted_phrases_and_nothing_else() {
        assert_eq!(phrases("pho"), ["\"pho\"*"]);
        assert_eq!(phrases("phone"), ["\"phone\"*"]);
        assert_eq!(phrases("iphone"), ["\"iphone\""], "longer than the prefix index");
        assert_eq!(phrases("wireless ult"), ["\"wireless\"", "\"ult\"*"]);
        assert_eq!(phrases("a"), ["\"a\""]);
        assert_eq!(phrases("茶"), ["\"茶\""]);
        assert_eq!(phrases("手机"), ["\"手机\""]);
        assert_eq!(phrases("蓝牙耳机"), ["\"蓝牙 牙耳 耳机\""]);
        assert_eq!(phrases("iPhone 手机"), ["\"iphone\"", "\"手机\""]);
        // Operators and quotes are text: only letters and digits get through.
        assert_eq!(
            phrases("NOT \"phone\" OR x* NEAR(a bc)"),
            [
                "\"not\"",
                "\"phone\"",
                "\"or\"",
                "\"x\"",
                "\"near\"",
                "\"a\"",
                "\"bc\"*"
            ]
        );
        assert!(Query::parse("\"*(:)^").unwrap().unwrap().matches_nothing());
        assert_eq!(Query::parse("  ").unwrap(), None);
        assert!(Query::parse("a b c d e f g h i").is_err());
        let q = Query::parse("Wireless 耳机").unwrap().unwrap();
        assert_eq!(q.anywhere(), "\"wireless\" AND \"耳机\"");
        assert_eq!(q.in_name(), "name_terms : (\"wireless\" AND \"耳机\")");
        assert_eq!(q.normal(), "wireless 耳机");
    }

    #[test]
    fn page_tokens_come_back_for_their_own_list_only() {
        let at = Position {
            tier: 1,
            key: -5,
            id: 42,
        };
        let list = fingerprint(&["phone", "home"]);
        let t = page_token(list, Sort::Relevance, at);
        assert_eq!(read_page_token(&t, list, Sort::Relevance).unwrap(), at);
        assert!(read_page_token(&t, list, Sort::Newest).is_err());
        assert!(read_page_token(&t, fingerprint(&["phone", "garden"]), Sort::Relevance).is_err());
        for bad in [
            "",
            "x",
            "1.r.7.0.1.00000000",
            "2.r.0.0.1.00000000",
            "1.r.0.zz.1.00000000",
        ] {
            assert!(read_page_token(bad, 0, Sort::Relevance).is_err(), "{bad}");
        }
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }
}
