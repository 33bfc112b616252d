//! Test tokens: a throwaway Ed25519 key pair written where a service looks for the public key,
//! and a minting function for any user and role. Dev-only: in the running shop only the user
//! service signs.

use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use shop_auth::Claims;

/// Signs test tokens with a key whose public half it wrote to disk.
pub struct TokenMint {
    key: EncodingKey,
}

impl TokenMint {
    /// Writes `<keys_dir>/token-signing.pub.pem` (the default place services read) from a fixed
    /// seed, so tests are repeatable.
    pub fn create(keys_dir: &Path) -> TokenMint {
        let signing = SigningKey::from_bytes(&[42u8; 32]);
        std::fs::create_dir_all(keys_dir).unwrap();
        let public = signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        std::fs::write(keys_dir.join("token-signing.pub.pem"), public).unwrap();
        let private = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
        TokenMint {
            key: EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
        }
    }

    /// A mint with a private key already on disk (PKCS#8 PEM): the user service's own, to make
    /// tokens the running shop accepts with claims it would never issue (a future `nbf`).
    pub fn load(private_key: &Path) -> TokenMint {
        let pem = std::fs::read(private_key).unwrap();
        TokenMint {
            key: EncodingKey::from_ed_pem(&pem).unwrap(),
        }
    }

    /// The claims of a valid one-hour token for `user_id` with `role` (`customer` or `admin`),
    /// to adjust before [`TokenMint::sign`].
    pub fn claims(&self, user_id: i64, role: &str) -> Claims {
        let now = jsonwebtoken::get_current_timestamp();
        Claims {
            sub: user_id.to_string(),
            role: role.to_owned(),
            exp: now + 3600,
            iat: now,
            iss: shop_auth::DEFAULT_ISSUER.to_owned(),
            aud: shop_auth::DEFAULT_AUDIENCE.to_owned(),
            jti: format!("test-{user_id}-{now}"),
            ver: 0,
            nbf: None,
        }
    }

    /// `claims`, signed.
    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key).unwrap()
    }

    /// A valid one-hour token for `user_id` with `role` (`customer` or `admin`).
    pub fn token(&self, user_id: i64, role: &str) -> String {
        self.sign(&self.claims(user_id, role))
    }

    pub fn customer(&self, user_id: i64) -> String {
        self.token(user_id, "customer")
    }

    pub fn admin(&self) -> String {
        self.token(1, "admin")
    }

    /// A token for another shop service acting on its own behalf (`sub` = its name).
    pub fn service(&self, name: &str) -> String {
        let mut claims = self.claims(1, "service");
        claims.sub = name.to_owned();
        claims.jti = format!("test-{name}-{}", claims.iat);
        self.sign(&claims)
    }
}
