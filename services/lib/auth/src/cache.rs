//! Tokens that verified, remembered so a token's signature is checked once rather than on every
//! request (an Ed25519 verification costs tens of microseconds; a lookup, well under one).
//!
//! Bounded: at most [`CAPACITY`] tokens, each kept until the earlier of its expiry and
//! [`REMEMBER_SECS`]; when full, expired entries go first, then everything. Only tokens that
//! verified in full are ever stored, under their exact text, so a forged token cannot match an
//! entry. What can change while a token is remembered (a revocation) is checked on every use.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::Identity;

/// How long a verified token is remembered at most, in seconds.
pub const REMEMBER_SECS: u64 = 60;
/// Tokens remembered at most (a few hundred bytes each).
pub const CAPACITY: usize = 10_000;

#[derive(Debug)]
struct Entry {
    who: Identity,
    ver: u64,
    /// Seconds since the Unix epoch.
    until: u64,
}

#[derive(Debug, Default)]
pub struct Cache {
    entries: RwLock<HashMap<Box<str>, Entry>>,
}

impl Cache {
    /// The identity and token version of a remembered token still valid at `now`.
    pub fn get(&self, token: &str, now: u64) -> Option<(Identity, u64)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let e = entries.get(token).filter(|e| now < e.until)?;
        Some((e.who.clone(), e.ver))
    }

    /// Remembers a token that verified, until `until` (not at all when that has passed).
    pub fn put(&self, token: &str, who: &Identity, ver: u64, until: u64, now: u64) {
        if until <= now {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| now < e.until);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            token.into(),
            Entry {
                who: who.clone(),
                ver,
                until,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn who(id: i64) -> Identity {
        Identity {
            user_id: id,
            service: None,
            role: Role::Customer,
            token_id: "t".into(),
            expires_at: 0,
        }
    }

    #[test]
    fn remembered_until_the_end_and_bounded() {
        let c = Cache::default();
        c.put("a", &who(1), 3, 100, 10);
        assert_eq!(c.get("a", 99).map(|(w, v)| (w.user_id, v)), Some((1, 3)));
        assert!(c.get("a", 100).is_none(), "not past its end");
        assert!(c.get("b", 10).is_none());
        c.put("late", &who(2), 0, 10, 10);
        assert!(c.get("late", 10).is_none(), "an expired token is not remembered");
        for i in 0..CAPACITY + 5 {
            c.put(&format!("t{i}"), &who(3), 0, 1_000, 50);
        }
        assert!(c.len() <= CAPACITY, "{}", c.len());
    }
}
