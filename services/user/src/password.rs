//! Password hashing with argon2id, off the async workers, with bounded parallelism and bounded
//! memory: each hash needs ~19 MiB of working memory by design.
//!
//! The pool owns one memory arena per hash it allows at a time (one per core), allocated once;
//! a hash borrows an arena together with its permit and gives both back when the hash ends,
//! on the blocking thread that ran it. So hashing allocates nothing (the allocator never keeps
//! freed 19 MiB blocks per thread: the service's memory stays flat under any login burst), and
//! a request cancelled while its hash runs cannot free a permit early: the bound holds.
//!
//! To keep login from telling whether a user exists, a login for an unknown user is checked
//! against a dummy hash made at start-up, so both paths do the same expensive work.

use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordVerifier, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// Working memory for one hash at the shop's parameters.
type Arena = Box<[Block]>;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// One arena per permit: a task holding a permit always finds one here.
    arenas: Arc<Mutex<Vec<Arena>>>,
    dummy: Arc<str>,
}

/// A permit and the arena that goes with it, returned together when dropped.
struct Loan {
    arena: Option<Arena>,
    arenas: Arc<Mutex<Vec<Arena>>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Loan {
    fn drop(&mut self) {
        if let Some(arena) = self.arena.take() {
            self.arenas.lock().unwrap_or_else(|p| p.into_inner()).push(arena);
        }
    }
}

impl Hasher {
    /// Allocates the arenas and makes the dummy hash (blocking, ~tens of ms); call it once at
    /// start-up.
    pub fn new() -> Result<Hasher, Error> {
        // One hash per core at a time: more only queues inside the CPU and multiplies memory.
        let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self::with_parallelism(parallel)
    }

    pub fn with_parallelism(parallel: usize) -> Result<Hasher, Error> {
        let parallel = parallel.max(1);
        let blocks = Params::DEFAULT.block_count();
        let mut arenas: Vec<Arena> = (0..parallel)
            .map(|_| vec![Block::default(); blocks].into_boxed_slice())
            .collect();
        let dummy = match arenas.first_mut() {
            Some(arena) => hash_with(arena, "not a real password, used to even out login timing")?,
            None => return Err(Error::Internal("no hashing memory".to_owned())),
        };
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(parallel)),
            arenas: Arc::new(Mutex::new(arenas)),
            dummy: dummy.into(),
        })
    }

    pub async fn hash(&self, password: String) -> Result<String, Error> {
        self.run(move |arena| hash_with(arena, &password)).await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no user (and
    /// then always answers false).
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, Error> {
        let real = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.to_string());
        let ok = self
            .run(move |arena| verify_with(arena, &password, &hash))
            .await?;
        Ok(ok && real)
    }

    /// Runs `f` on the blocking pool with a permit and an arena, both held by the blocking task
    /// itself: they come back when `f` ends, even if the caller stopped waiting.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("password hasher closed".to_owned()))?;
        let arena = self.arenas.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut loan = Loan {
            arena,
            arenas: Arc::clone(&self.arenas),
            _permit: permit,
        };
        tokio::task::spawn_blocking(move || {
            let arena = loan
                .arena
                .as_mut()
                .ok_or_else(|| Error::Internal("no hashing memory for a permit".to_owned()))?;
            Ok(f(arena))
        })
        .await
        .map_err(|e| Error::Internal(format!("password hashing task failed: {e}")))?
    }
}

/// argon2id, version 0x13, with the crate's defaults (m = 19 MiB, t = 2, p = 1): the OWASP
/// recommendation, in PHC string form. Parameters are stored in each hash, so raising them
/// later keeps old hashes verifiable.
fn hash_with(arena: &mut [Block], password: &str) -> Result<String, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::Internal(format!("cannot hash a password: {e}"));
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes).map_err(|e| fail(&e))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT);
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *arena)
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(|e| fail(&e))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&Params::DEFAULT).map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches `stored` (a PHC string), computed in `arena`; a hash made with
/// larger parameters than the arena holds is checked with memory of its own.
fn verify_with(arena: &mut [Block], password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed))
    else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    if params.block_count() > arena.len() {
        return Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params);
    let computed = Output::init_with(expected.len(), |out| {
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *arena)
            .map_err(|_| argon2::password_hash::Error::Crypto)
    });
    // `Output`'s equality is constant-time.
    computed.is_ok_and(|c| c == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_do() {
        let h = Hasher::with_parallelism(2).unwrap();
        let stored = h.hash("correct horse".to_owned()).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(
            h.verify("correct horse".to_owned(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(
            !h.verify("wrong horse".to_owned(), Some(stored.clone()))
                .await
                .unwrap()
        );
        let dummy_password = "not a real password, used to even out login timing".to_owned();
        assert!(!h.verify(dummy_password, None).await.unwrap());
        // The standard verifier agrees: the hashes are ordinary PHC strings.
        let parsed = PasswordHash::new(&stored).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
    }

    #[tokio::test]
    async fn hashes_made_elsewhere_and_with_other_parameters_verify() {
        use argon2::PasswordHasher;
        let h = Hasher::with_parallelism(1).unwrap();
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 3, 1, None).unwrap(),
        );
        let salt = SaltString::generate(&mut OsRng);
        let stored = small.hash_password(b"pw-1", &salt).unwrap().to_string();
        assert!(h.verify("pw-1".to_owned(), Some(stored.clone())).await.unwrap());
        assert!(!h.verify("pw-2".to_owned(), Some(stored)).await.unwrap());
        let big = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(32 * 1024, 1, 1, None).unwrap(),
        );
        let stored = big.hash_password(b"pw-3", &salt).unwrap().to_string();
        assert!(
            h.verify("pw-3".to_owned(), Some(stored)).await.unwrap(),
            "larger than an arena"
        );
        assert!(
            !h.verify("x".to_owned(), Some("not a hash".to_owned()))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_cancelled_caller_does_not_free_its_permit_before_the_hash_ends() {
        let h = Hasher::with_parallelism(1).unwrap();
        let waiting = {
            let h = h.clone();
            tokio::spawn(async move { h.hash("first".to_owned()).await })
        };
        // Long enough for the task to take the permit, far shorter than a hash (tens of ms).
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        waiting.abort();
        // The aborted caller's hash still holds the only permit and arena until it ends; the
        // next one waits for them and then runs normally.
        assert_eq!(h.permits.available_permits(), 0);
        let next = h.hash("second".to_owned()).await.unwrap();
        assert!(next.starts_with("$argon2id$"));
        assert_eq!(h.arenas.lock().unwrap().len(), 1, "the arena came back");
    }
}
