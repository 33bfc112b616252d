//! Users as the service understands them, and the rules their fields must follow. Pure
//! functions: no I/O, so every rule is unit-tested here.

use shop_auth::Role;

use crate::error::Error;

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
/// RFC 5321 caps a forward path at 256 octets including the angle brackets.
pub const EMAIL_MAX: usize = 254;
pub const PASSWORD_MIN: usize = 8;
/// Long enough for any passphrase; short enough that hashing cost stays bounded per request.
pub const PASSWORD_MAX: usize = 128;
pub const FULL_NAME_MAX: usize = 100;

/// A stored account (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub full_name: String,
    pub role: Role,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// Written into the account's tokens (`ver`); raised when its role or password changes, so
    /// older tokens can be revoked.
    pub token_version: u64,
}

/// A checked registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub full_name: String,
}

/// Checked changes to an account; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub email: Option<String>,
    pub full_name: Option<String>,
    /// The new password hash.
    pub password_hash: Option<String>,
    /// The stored hash the caller's current password was checked against: the change applies
    /// only while it is still the stored one (a change that raced another changes nothing).
    pub password_was: Option<String>,
}

pub fn check_username(u: &str) -> Result<(), Error> {
    let n = u.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&n) {
        return Err(Error::invalid(
            "username",
            format!("must be {USERNAME_MIN} to {USERNAME_MAX} characters, got {n}"),
        ));
    }
    if let Some(c) = u
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(Error::invalid(
            "username",
            format!("may contain only letters, digits, '_', '-' and '.', not {c:?}"),
        ));
    }
    Ok(())
}

/// A practical syntax check: `local@domain`, ASCII, no spaces, a dotted domain of DNS labels.
/// (Deliverability can only be proven by sending mail; this catches typos and junk.)
pub fn check_email(e: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::invalid("email", why.to_owned()));
    if e.is_empty() {
        return bad("is required");
    }
    if e.len() > EMAIL_MAX {
        return bad("is longer than 254 characters");
    }
    if !e.is_ascii() || e.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return bad("must be plain ASCII without spaces");
    }
    let Some((local, domain)) = e.rsplit_once('@') else {
        return bad("is not an email address (no '@')");
    };
    const LOCAL_EXTRA: &str = "!#$%&'*+/=?^_`{|}~.-";
    if local.is_empty()
        || local.len() > 64
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_EXTRA.contains(c))
    {
        return bad("has an invalid part before the '@'");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return bad("has an invalid domain after the '@'");
    }
    Ok(())
}

pub fn check_password(field: &'static str, p: &str) -> Result<(), Error> {
    let n = p.chars().count();
    if n < PASSWORD_MIN {
        return Err(Error::invalid(
            field,
            format!("must be at least {PASSWORD_MIN} characters"),
        ));
    }
    if n > PASSWORD_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {PASSWORD_MAX} characters"),
        ));
    }
    Ok(())
}

/// Returns the name trimmed.
pub fn check_full_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.chars().count() > FULL_NAME_MAX {
        return Err(Error::invalid(
            "full_name",
            format!("must be at most {FULL_NAME_MAX} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("full_name", "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// Checks a registration; the password is checked but not kept here (it goes to the hasher).
pub fn check_registration(
    username: &str,
    email: &str,
    password: &str,
    full_name: &str,
) -> Result<NewUser, Error> {
    check_username(username)?;
    check_email(email)?;
    check_password("password", password)?;
    let full_name = check_full_name(full_name)?;
    Ok(NewUser {
        username: username.to_owned(),
        email: email.to_owned(),
        full_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<(), Error>) -> Option<&'static str> {
        match r {
            Err(Error::Invalid { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn usernames() {
        for ok in ["abc", "a.b-c_d", "User123", &"x".repeat(32)] {
            assert!(check_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "",
            &"x".repeat(33),
            "has space",
            "ünïcode",
            "semi;colon",
            "tab\t",
        ] {
            assert_eq!(field_of(check_username(bad)), Some("username"), "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        for ok in [
            "a@b.co",
            "first.last+tag@example.com",
            "x@sub.domain-1.org",
            "o'brien@ie.ie",
        ] {
            assert!(check_email(ok).is_ok(), "{ok}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        let too_long = format!("a@{}.com", "b".repeat(260));
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@.com",
            "a@b..com",
            "a b@c.com",
            ".a@b.com",
            "a.@b.com",
            "a..b@c.com",
            "a@-b.com",
            "a@b-.com",
            "ü@b.com",
            "a@b_c.com",
            &long_local,
            &too_long,
        ] {
            assert_eq!(field_of(check_email(bad)), Some("email"), "{bad:?}");
        }
    }

    #[test]
    fn passwords_and_names() {
        assert!(check_password("password", "12345678").is_ok());
        assert_eq!(field_of(check_password("password", "1234567")), Some("password"));
        assert_eq!(
            field_of(check_password("password", &"p".repeat(129))),
            Some("password")
        );
        assert_eq!(check_full_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(check_full_name("张伟").unwrap(), "张伟");
        assert!(check_full_name(&"n".repeat(101)).is_err());
        assert!(check_full_name("bell\u{7}").is_err());
    }
}
