//! Password hashing with argon2id, off the async workers and with bounded parallelism (each
//! hash takes ~19 MiB and tens of milliseconds by design).
//!
//! To keep login from telling whether a user exists, a login for an unknown user is checked
//! against a dummy hash made at start-up, so both paths do the same expensive work.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;

use crate::error::Error;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    dummy: Arc<str>,
}

impl Hasher {
    /// Makes the dummy hash (blocking, ~tens of ms); call it once at start-up.
    pub fn new() -> Result<Hasher, Error> {
        // One hash per core at a time: more only queues inside the CPU and multiplies memory.
        let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let dummy = hash_blocking("not a real password, used to even out login timing")?;
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(parallel)),
            dummy: dummy.into(),
        })
    }

    pub async fn hash(&self, password: String) -> Result<String, Error> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no user (and
    /// then always answers false).
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, Error> {
        let real = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.to_string());
        let ok = self.run(move || verify_blocking(&password, &hash)).await?;
        Ok(ok && real)
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("password hasher closed".to_owned()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::Internal(format!("password hashing task failed: {e}")))
    }
}

/// argon2id, version 0x13, with the crate's defaults (m = 19 MiB, t = 2, p = 1): the OWASP
/// recommendation. Parameters are stored in each hash, so raising them later keeps old hashes
/// verifiable.
fn hash_blocking(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("cannot hash a password: {e}")))
}

fn verify_blocking(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_do() {
        let h = Hasher::new().unwrap();
        let stored = h.hash("correct horse".to_owned()).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(
            h.verify("correct horse".to_owned(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(!h.verify("wrong horse".to_owned(), Some(stored)).await.unwrap());
        let dummy_password = "not a real password, used to even out login timing".to_owned();
        assert!(!h.verify(dummy_password, None).await.unwrap());
    }
}
