//! Request ids: the header that carries them (in HTTP and in gRPC metadata), which ids a client
//! may choose, and fresh ones.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The header (and gRPC metadata key) that carries a request's id, in and out.
pub const HEADER: &str = "x-request-id";

/// Longest request id taken from a client; longer ones are replaced.
pub const MAX_LEN: usize = 128;

/// Whether a client's id is kept: 1 to [`MAX_LEN`] visible ASCII characters.
pub fn acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(u8::is_ascii_graphic)
}

/// A fresh id: 16 hex digits, unique within the process and unlikely to repeat across
/// processes (a random start, then a counter mixed so that neighbours look unrelated). Not a
/// secret.
pub fn fresh() -> String {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", mix(seed ^ n))
}

/// splitmix64's finaliser: a bijection, so distinct counters give distinct ids.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_clients_ids_checked() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| fresh()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|i| i.len() == 16));
        assert!(acceptable(b"abc-123"));
        assert!(!acceptable(b"has space"));
        assert!(!acceptable(b""));
        assert!(!acceptable(&[b'x'; 129]));
    }
}
