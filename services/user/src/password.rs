//! Password hashing with argon2id, off the async workers, with bounded parallelism and bounded
//! memory: each hash needs ~19 MiB of working memory by design.
//!
//! Each hash runs in a memory arena borrowed together with its permit and given back, with the
//! permit, when the hash ends on the blocking thread that ran it; there are never more arenas
//! than permits (one per core). So a login burst allocates at most that many (the allocator
//! never keeps freed 19 MiB blocks per thread: memory stays flat under any burst), and a request
//! cancelled while its hash runs cannot free a permit early: the bound holds. Arenas are made
//! on first need and freed once no hash has run for [`KEEP_SPARE_FOR`], so an idle service
//! holds none.
//!
//! To keep login from telling whether a user exists, a login for an unknown user is checked
//! against a dummy hash made at start-up, so both paths do the same expensive work.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordVerifier, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// How long arenas stay allocated after the last hash: a burst of logins reuses them; an idle
/// service gives the memory back.
pub const KEEP_SPARE_FOR: Duration = Duration::from_secs(30);

/// Working memory for one hash at the shop's parameters.
type Arena = Vec<Block>;

/// Address space reserved per arena, of which a hash touches 19 MiB. Above glibc's largest
/// dynamic mmap threshold (32 MiB), an allocation always gets a mapping of its own that goes
/// back to the system when freed. At the exact size the first free would raise that threshold
/// past the arena's size, and the next arena would come from a heap that is never trimmed: an
/// idle service would keep 19 MiB per arena it ever made.
const ARENA_RESERVE_BYTES: usize = 33 << 20;

fn new_arena() -> Arena {
    let blocks = Params::DEFAULT.block_count();
    let mut arena = Vec::with_capacity(blocks.max(ARENA_RESERVE_BYTES / std::mem::size_of::<Block>()));
    arena.resize(blocks, Block::default());
    arena
}

/// Arenas not lent out, and when one last came back.
struct Spare {
    arenas: Vec<Arena>,
    returned: Instant,
    /// Whether a task is waiting to free them.
    reaping: bool,
    keep_for: Duration,
}

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    spare: Arc<Mutex<Spare>>,
    dummy: Arc<str>,
}

/// A permit and the arena that goes with it, returned together when dropped.
struct Loan {
    arena: Option<Arena>,
    spare: Arc<Mutex<Spare>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Loan {
    fn drop(&mut self) {
        let Some(arena) = self.arena.take() else {
            return;
        };
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        spare.arenas.push(arena);
        spare.returned = Instant::now();
        if !spare.reaping
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            spare.reaping = true;
            runtime.spawn(reap(Arc::clone(&self.spare)));
        }
    }
}

/// Frees the spare arenas once none has come back for their keep time.
async fn reap(spare: Arc<Mutex<Spare>>) {
    let mut wait = spare.lock().unwrap_or_else(|p| p.into_inner()).keep_for;
    loop {
        tokio::time::sleep(wait).await;
        let mut s = spare.lock().unwrap_or_else(|p| p.into_inner());
        let idle = s.returned.elapsed();
        if idle >= s.keep_for {
            let freed = std::mem::take(&mut s.arenas);
            s.reaping = false;
            drop(s);
            drop(freed);
            return;
        }
        wait = s.keep_for - idle;
    }
}

impl Hasher {
    /// Makes the dummy hash (blocking, ~tens of ms); call it once at start-up.
    pub fn new() -> Result<Hasher, Error> {
        // One hash per core at a time: more only queues inside the CPU and multiplies memory.
        let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self::with_parallelism(parallel, KEEP_SPARE_FOR)
    }

    pub fn with_parallelism(parallel: usize, keep_spare_for: Duration) -> Result<Hasher, Error> {
        let parallel = parallel.max(1);
        let dummy = hash_with(
            &mut new_arena(),
            "not a real password, used to even out login timing",
        )?;
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(parallel)),
            spare: Arc::new(Mutex::new(Spare {
                arenas: Vec::new(),
                returned: Instant::now(),
                reaping: false,
                keep_for: keep_spare_for,
            })),
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
        let arena = self.spare.lock().unwrap_or_else(|p| p.into_inner()).arenas.pop();
        let mut loan = Loan {
            arena,
            spare: Arc::clone(&self.spare),
            _permit: permit,
        };
        tokio::task::spawn_blocking(move || {
            // Made here, off the async workers, when no spare one is left.
            let arena = loan.arena.get_or_insert_with(new_arena);
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
        let h = Hasher::with_parallelism(2, KEEP_SPARE_FOR).unwrap();
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
        let h = Hasher::with_parallelism(1, KEEP_SPARE_FOR).unwrap();
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
        let h = Hasher::with_parallelism(1, KEEP_SPARE_FOR).unwrap();
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
        assert_eq!(h.spare.lock().unwrap().arenas.len(), 1, "the arena came back");
    }

    #[tokio::test]
    async fn an_idle_hasher_frees_its_arenas_and_makes_new_ones_when_needed() {
        let h = Hasher::with_parallelism(2, Duration::from_millis(100)).unwrap();
        assert!(
            h.spare.lock().unwrap().arenas.is_empty(),
            "none until a hash needs one"
        );
        let (a, b) = tokio::join!(h.hash("one".to_owned()), h.hash("two".to_owned()));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(h.spare.lock().unwrap().arenas.len(), 2, "one per hash at a time");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(h.spare.lock().unwrap().arenas.is_empty(), "freed once idle");
        assert!(h.verify("one".to_owned(), Some(a)).await.unwrap());
        assert!(h.verify("two".to_owned(), Some(b)).await.unwrap());
        assert_eq!(h.spare.lock().unwrap().arenas.len(), 1);
    }
}
