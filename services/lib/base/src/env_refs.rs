//! `${NAME}` and `${NAME:-default}` in settings files: references to environment variables,
//! replaced by their values when the file is read, so a secret (a webhook key, a Consul token)
//! can stay out of the file. Pure: the caller passes the lookup, so tests need no environment.
//!
//! The rules, shell-like and small:
//! - `${NAME}` is the variable's value; a variable that is not set is an error (naming it), an
//!   empty one gives an empty value;
//! - `${NAME:-default}` is the value, or `default` when the variable is unset or empty (the
//!   default is taken literally, up to the first `}`);
//! - `NAME` is letters, digits and `_`, not starting with a digit;
//! - `$${` is a literal `${`; any other `$` is just a dollar sign.

use std::borrow::Cow;

/// A reference that cannot be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `${NAME}` without a default, and `NAME` is not set.
    Missing { name: String },
    /// A `${` at byte `at` that is not a well-formed reference.
    Malformed { at: usize, problem: &'static str },
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Missing { name } => write!(
                f,
                "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
            ),
            ExpandError::Malformed { at, problem } => {
                write!(
                    f,
                    "the reference at byte {at}: {problem} (write $${{ for a literal ${{)"
                )
            }
        }
    }
}

impl std::error::Error for ExpandError {}

const UNCLOSED: &str = "`${` without a closing `}`";
const BAD_NAME: &str =
    "expected ${NAME} or ${NAME:-default}, NAME made of letters, digits and _ and not starting with a digit";

/// Replaces every reference in `text` with what `lookup` gives for its name. Text without a
/// reference comes back borrowed, unchanged; `Cow::Owned` means something was replaced (or
/// unescaped).
///
/// ```
/// use shop_base::env_refs::expand;
/// let env = |name: &str| (name == "SECRET").then(|| "s3cr3t".to_owned());
/// assert_eq!(expand("${SECRET}", env).unwrap(), "s3cr3t");
/// assert_eq!(expand("http://${HOST:-127.0.0.1}:8500", env).unwrap(), "http://127.0.0.1:8500");
/// assert!(expand("${MISSING}", env).is_err());
/// ```
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Cow<'_, str>, ExpandError> {
    if !text.contains("${") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let at = text.len() - rest.len() + start;
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(ExpandError::Malformed {
            at,
            problem: UNCLOSED,
        })?;
        let body = &after[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if !is_name(name) {
            return Err(ExpandError::Malformed {
                at,
                problem: BAD_NAME,
            });
        }
        match (lookup(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(ExpandError::Missing {
                    name: name.to_owned(),
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// An environment variable's name as POSIX shells accept it.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr3t".to_owned()),
            "EMPTY" => Some(String::new()),
            "_under_9" => Some("u".to_owned()),
            "DOLLARS" => Some("a${B}$$c".to_owned()),
            _ => None,
        }
    }

    fn check(text: &str, want: Result<&str, ExpandError>) {
        let got = expand(text, env);
        assert_eq!(got.as_deref().map_err(Clone::clone), want, "{text:?}");
    }

    fn malformed(at: usize, problem: &'static str) -> Result<&'static str, ExpandError> {
        Err(ExpandError::Malformed { at, problem })
    }

    #[test]
    fn references_are_replaced_whole_or_embedded() {
        check("${SECRET}", Ok("s3cr3t"));
        check("key=${SECRET};again=${SECRET}", Ok("key=s3cr3t;again=s3cr3t"));
        check("${_under_9}", Ok("u"));
        check("${EMPTY}", Ok(""));
        check("${MISSING:-fallback}", Ok("fallback"));
        check("${EMPTY:-fallback}", Ok("fallback"));
        check("${SECRET:-fallback}", Ok("s3cr3t"));
        check("${MISSING:-}", Ok(""));
        check("${MISSING:-http://a:1/b}", Ok("http://a:1/b"));
        // A value is not expanded again.
        check("${DOLLARS}", Ok("a${B}$$c"));
    }

    #[test]
    fn text_without_references_is_borrowed_unchanged() {
        for text in ["", "plain", "cost: $5", "$", "{x}", "$ {X}"] {
            assert!(matches!(expand(text, env), Ok(Cow::Borrowed(t)) if t == text));
        }
    }

    #[test]
    fn an_escaped_reference_is_literal() {
        check("$${SECRET}", Ok("${SECRET}"));
        check("pa$$${SECRET}", Ok("pa$${SECRET}"));
        check("$${X} and ${SECRET}", Ok("${X} and s3cr3t"));
    }

    #[test]
    fn problems_are_named() {
        check(
            "${MISSING}",
            Err(ExpandError::Missing {
                name: "MISSING".to_owned(),
            }),
        );
        check("abc${SECRET", malformed(3, UNCLOSED));
        check("${}", malformed(0, BAD_NAME));
        check("${9X}", malformed(0, BAD_NAME));
        check("${ SECRET }", malformed(0, BAD_NAME));
        check("${SECRET-x}", malformed(0, BAD_NAME));
        check("${SECRET:?x}", malformed(0, BAD_NAME));
        check("ok ${SECRET} ${A.B}", malformed(13, BAD_NAME));
        let message = expand("${WEBHOOK}", env).unwrap_err().to_string();
        assert_eq!(
            message,
            "environment variable WEBHOOK is not set (write ${WEBHOOK:-default} to give a default)"
        );
    }
}
