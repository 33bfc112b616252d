//! The only signer of access tokens in the shop: the Ed25519 key pair (created on first start
//! when missing, never committed) and the JWTs issued at login. Everyone else verifies with the
//! public key through `shop_auth`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand_core::{OsRng, RngCore};
use shop_auth::{Claims, Role};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an Ed25519 private key in PKCS#8 PEM form")]
    Format { path: PathBuf },
    #[error("cannot encode the key: {0}")]
    Encode(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `token` to `path` readable by its owner only (replacing any earlier token).
pub fn write_secret(path: &Path, token: &str) -> Result<(), KeyError> {
    write_atomically(path, format!("{token}\n").as_bytes(), 0o600)
}

/// Makes sure a key pair exists: loads the private key, or creates one (mode 0600) when the file
/// is missing, then (re)writes the public key derived from it. Safe when several instances start
/// at once on the same folder: the private key is published with an atomic link, so exactly one
/// wins and the others load it.
pub fn ensure_keys(private: &Path, public: &Path) -> Result<SigningKey, KeyError> {
    let key = match std::fs::read_to_string(private) {
        Ok(pem) => SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Format {
            path: private.to_owned(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_private_key(private)?,
        Err(e) => return Err(io(private)(e)),
    };
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    if std::fs::read_to_string(public).ok().as_deref() != Some(public_pem.as_str()) {
        write_atomically(public, public_pem.as_bytes(), 0o644)?;
        tracing::info!(path = %public.display(), "wrote the token public key");
    }
    Ok(key)
}

fn create_private_key(path: &Path) -> Result<SigningKey, KeyError> {
    let key = SigningKey::generate(&mut OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let temp = temp_beside(path);
    write_new(&temp, pem.as_bytes(), 0o600)?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created a new token signing key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another instance won the race: use its key.
            let pem = std::fs::read_to_string(path).map_err(io(path))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Format {
                path: path.to_owned(),
            })
        }
        Err(e) => Err(io(path)(e)),
    }
}

fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.{}.tmp", std::process::id(), OsRng.next_u32()));
    path.with_file_name(name)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io(path))
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let temp = temp_beside(path);
    write_new(&temp, bytes, mode)?;
    std::fs::rename(&temp, path).map_err(io(path))
}

/// Issues access tokens.
pub struct Signer {
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl Signer {
    pub fn new(
        key: &SigningKey,
        issuer: String,
        audience: String,
        ttl: Duration,
    ) -> Result<Signer, KeyError> {
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(Signer {
            key,
            issuer,
            audience,
            ttl,
        })
    }

    /// A signed token for the user at their current token version, and its lifetime in
    /// seconds.
    pub fn issue(
        &self,
        user_id: i64,
        role: Role,
        version: u64,
    ) -> Result<(String, u64), jsonwebtoken::errors::Error> {
        let token = self.sign(user_id.to_string(), role, self.ttl, version)?;
        Ok((token, self.ttl.as_secs()))
    }

    /// A token with which another shop service acts on its own behalf (role `service`, `sub` =
    /// its name). Long-lived by design; re-issue it to rotate.
    pub fn issue_service(&self, service: &str, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign(service.to_owned(), Role::Service, ttl, 0)
    }

    fn sign(
        &self,
        sub: String,
        role: Role,
        ttl: Duration,
        ver: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = shop_kit::clock::now_secs();
        let mut jti = [0u8; 16];
        OsRng.fill_bytes(&mut jti);
        let claims = Claims {
            sub,
            role: role.as_str().to_owned(),
            iat: now,
            exp: now + ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
            ver,
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_and_tokens_verify() {
        let dir = std::env::temp_dir().join(format!("shop-user-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (private, public) = (dir.join("k.pem"), dir.join("k.pub.pem"));
        let first = ensure_keys(&private, &public).unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&private).unwrap().permissions());
        assert_eq!(
            mode & 0o777,
            0o600,
            "the private key is readable by its owner only"
        );
        std::fs::remove_file(&public).unwrap();
        let again = ensure_keys(&private, &public).unwrap();
        assert_eq!(first.to_bytes(), again.to_bytes(), "an existing key is kept");
        assert!(public.exists(), "the public key is rewritten when missing");

        let signer = Signer::new(&again, "iss".into(), "aud".into(), Duration::from_secs(60)).unwrap();
        let (token, ttl) = signer.issue(7, Role::Admin, 0).unwrap();
        assert_eq!(ttl, 60);
        let rules = shop_auth::TokenRules {
            issuer: "iss".into(),
            audience: "aud".into(),
            leeway_secs: 0,
        };
        let verifier = shop_auth::Verifier::from_file(shop_auth::ALGORITHM, &public, &rules).unwrap();
        let id = verifier.verify(&token).unwrap();
        assert_eq!((id.user_id, id.role), (7, Role::Admin));
        assert_eq!(id.token_id.len(), 32);
    }
}
