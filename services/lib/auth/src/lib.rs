//! Verify-only access tokens: the one place that decides whether a bearer token is genuine and
//! who it speaks for.
//!
//! The gateway and every service verify with this crate. It holds a public key only and offers
//! no way to sign: the user service is the single signer (it shares [`Claims`] so both sides
//! agree on the shape). The algorithm is pinned by configuration, never taken from the token's
//! header, so `alg: none` and algorithm-confusion tokens fail like any other forgery. `exp`,
//! `nbf`, issuer and audience are checked; [`revoked`] refuses tokens of deleted accounts and of
//! accounts whose role or password changed.

mod cache;
pub mod revoked;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// The issuer the user service writes into tokens unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "shop-user-service";
/// The audience every shop component expects unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "shop";
/// Clock skew tolerated on `exp` and `iat`. Small, because our hosts share NTP and a stolen
/// token should not live much past its expiry.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// The only algorithm supported: Ed25519 signatures (JWS `EdDSA`).
pub const ALGORITHM: &str = "EdDSA";

/// The claims of a shop access token, as signed by the user service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a decimal string (JWT `sub` is a string).
    pub sub: String,
    /// `customer` or `admin`.
    pub role: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    pub iss: String,
    pub aud: String,
    /// A unique token id (random, hex).
    pub jti: String,
    /// The account's token version when the token was issued; a revocation refuses versions
    /// below a line. Tokens from before versions existed count as 0.
    #[serde(default)]
    pub ver: u64,
    /// Not valid before, seconds since the Unix epoch (checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// What a caller may do, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Customer,
    Admin,
    /// Another shop service acting on its own behalf (the order service's inventory calls). Its
    /// `sub` is the service's name, not a user id.
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "customer" => Some(Role::Customer),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified caller. Cheap to clone (shared strings): the verifier's cache hands out copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id; 0 for a service.
    pub user_id: i64,
    /// The service's name when `role` is [`Role::Service`].
    pub service: Option<Arc<str>>,
    pub role: Role,
    /// The token's `jti`, for logs and audit.
    pub token_id: Arc<str>,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn is_service(&self) -> bool {
        self.role == Role::Service
    }

    /// The ownership rule shared by every service: a user acts for themself, an admin for anyone.
    /// A service acts for no user.
    pub fn may_act_for(&self, user_id: i64) -> bool {
        self.is_admin() || (self.role == Role::Customer && self.user_id == user_id)
    }
}

/// Why a token was refused. Every variant means "not authenticated"; the variants exist for
/// logs and tests, and [`AuthError::client_message`] keeps what a client sees short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no access token: send `authorization: Bearer <token>`")]
    Missing,
    #[error("the authorization value is not `Bearer <token>`")]
    NotBearer,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is malformed")]
    Malformed,
    #[error("the access token's signature or algorithm is not accepted")]
    BadSignature,
    #[error("the access token was issued by someone else")]
    WrongIssuer,
    #[error("the access token is meant for another audience")]
    WrongAudience,
    #[error("the access token has a bad claim: {0}")]
    BadClaim(String),
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// The account was deleted, or its role changed, after the token was issued.
    #[error("the access token was revoked; sign in again")]
    Revoked,
}

impl AuthError {
    /// A sentence a client can act on, without details that help a forger.
    pub fn client_message(&self) -> String {
        match self {
            AuthError::Missing | AuthError::NotBearer | AuthError::Expired | AuthError::Revoked => {
                self.to_string()
            }
            _ => "the access token is not valid".to_owned(),
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        tonic::Status::unauthenticated(e.client_message())
    }
}

/// A service name as it appears in `sub`: 1-64 lowercase letters, digits and '-'.
pub fn is_service_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Problems loading the verification key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the public key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an Ed25519 public key in PEM (SubjectPublicKeyInfo) form")]
    Format { path: String },
    #[error("algorithm {0:?} is not supported; the shop signs with \"EdDSA\"")]
    Algorithm(String),
}

/// How tokens are checked: who must have issued them and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
}

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// Checks access tokens against one public key and one set of rules. A token that verified is
/// remembered ([`cache`]) until the earlier of its expiry and a minute, so the signature is
/// checked once per token rather than once per request; revocations are checked every time.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    revocations: Option<Arc<revoked::Revocations>>,
    cache: cache::Cache,
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `algorithm` (which must be `EdDSA`) and a PEM public key.
    pub fn new(algorithm: &str, public_key_pem: &[u8], rules: &TokenRules) -> Result<Self, KeyError> {
        Self::build(algorithm, public_key_pem, rules, "<inline key>")
    }

    /// Reads the PEM public key at `path`.
    pub fn from_file(algorithm: &str, path: &Path, rules: &TokenRules) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::build(algorithm, &pem, rules, &shown)
    }

    fn build(algorithm: &str, pem: &[u8], rules: &TokenRules, shown: &str) -> Result<Self, KeyError> {
        if algorithm != ALGORITHM {
            return Err(KeyError::Algorithm(algorithm.to_owned()));
        }
        let key = DecodingKey::from_ed_pem(pem).map_err(|_| KeyError::Format {
            path: shown.to_owned(),
        })?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&rules.issuer]);
        validation.set_audience(&[&rules.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = rules.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Ok(Verifier {
            key,
            validation,
            revocations: None,
            cache: cache::Cache::default(),
        })
    }

    /// Also refuses tokens that `revocations` (kept current by [`revoked::follow`]) names.
    pub fn with_revocations(mut self, revocations: Arc<revoked::Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// Verifies a bare token (no `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let now = now_secs();
        let (who, ver) = match self.cache.get(token, now) {
            Some(hit) => hit,
            None => {
                let (who, ver) = self.check_signed(token)?;
                // Remembered until the earlier of its expiry (with the leeway, as jsonwebtoken
                // judges it) and a minute from now.
                let until = who
                    .expires_at
                    .saturating_add(self.validation.leeway)
                    .min(now + cache::REMEMBER_SECS);
                self.cache.put(token, &who, ver, until, now);
                (who, ver)
            }
        };
        if who.role != Role::Service
            && self
                .revocations
                .as_ref()
                .is_some_and(|r| r.refuses(who.user_id, ver))
        {
            return Err(AuthError::Revoked);
        }
        Ok(who)
    }

    /// The full check: signature, algorithm, claims. Returns the identity and the token version.
    fn check_signed(&self, token: &str) -> Result<(Identity, u64), AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::InvalidEddsaKey => AuthError::BadSignature,
            ErrorKind::MissingRequiredClaim(c) => AuthError::BadClaim(format!("{c} is missing")),
            ErrorKind::InvalidClaimFormat(c) => AuthError::BadClaim(format!("{c} has the wrong type")),
            _ => AuthError::Malformed,
        })?;
        let claims = data.claims;
        let role = Role::parse(&claims.role)
            .ok_or_else(|| AuthError::BadClaim(format!("role {:?} is unknown", claims.role)))?;
        let (user_id, service) = if role == Role::Service {
            if !is_service_name(&claims.sub) {
                return Err(AuthError::BadClaim("sub is not a service name".to_owned()));
            }
            (0, Some(Arc::from(claims.sub)))
        } else {
            let id = claims
                .sub
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| AuthError::BadClaim("sub is not a user id".to_owned()))?;
            (id, None)
        };
        let who = Identity {
            user_id,
            service,
            role,
            token_id: Arc::from(claims.jti),
            expires_at: claims.exp,
        };
        Ok((who, claims.ver))
    }

    /// Verifies an `authorization` header value of the form `Bearer <token>`.
    pub fn verify_bearer(&self, value: &str) -> Result<Identity, AuthError> {
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::NotBearer);
        }
        self.verify(token.trim())
    }

    /// Verifies the `authorization` entry of gRPC metadata; [`AuthError::Missing`] without one.
    pub fn verify_metadata(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Identity, AuthError> {
        let value = metadata.get("authorization").ok_or(AuthError::Missing)?;
        let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
        self.verify_bearer(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
    use jsonwebtoken::{EncodingKey, Header};

    fn keypair(seed: u8) -> (EncodingKey, Vec<u8>) {
        let signing = SigningKey::from_bytes(&[seed; 32]);
        let private = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
        let public = signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        (
            EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
            public.into_bytes(),
        )
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> Claims {
        Claims {
            sub: "42".to_owned(),
            role: "customer".to_owned(),
            exp: now() + 600,
            iat: now(),
            iss: DEFAULT_ISSUER.to_owned(),
            aud: DEFAULT_AUDIENCE.to_owned(),
            jti: "abc".to_owned(),
            ver: 0,
            nbf: None,
        }
    }

    fn sign(key: &EncodingKey, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, key).unwrap()
    }

    fn verifier(public: &[u8]) -> Verifier {
        Verifier::new(ALGORITHM, public, &TokenRules::default()).unwrap()
    }

    #[test]
    fn a_genuine_token_gives_the_identity() {
        let (key, public) = keypair(1);
        let id = verifier(&public).verify(&sign(&key, &claims())).unwrap();
        assert_eq!(id.user_id, 42);
        assert_eq!(id.role, Role::Customer);
        assert_eq!(&*id.token_id, "abc");
        assert!(id.may_act_for(42));
        assert!(!id.may_act_for(43));
    }

    #[test]
    fn refusals() {
        let (key, public) = keypair(1);
        let (other_key, _) = keypair(2);
        let v = verifier(&public);
        let check =
            |token: String, want: AuthError| assert_eq!(v.verify(&token), Err(want.clone()), "{want:?}");

        let mut expired = claims();
        expired.exp = now() - DEFAULT_LEEWAY_SECS - 5;
        check(sign(&key, &expired), AuthError::Expired);

        let mut issuer = claims();
        issuer.iss = "someone-else".to_owned();
        check(sign(&key, &issuer), AuthError::WrongIssuer);

        let mut audience = claims();
        audience.aud = "another-app".to_owned();
        check(sign(&key, &audience), AuthError::WrongAudience);

        check(sign(&other_key, &claims()), AuthError::BadSignature);

        let mut role = claims();
        role.role = "root".to_owned();
        check(
            sign(&key, &role),
            AuthError::BadClaim("role \"root\" is unknown".to_owned()),
        );

        let mut sub = claims();
        sub.sub = "alice".to_owned();
        check(
            sign(&key, &sub),
            AuthError::BadClaim("sub is not a user id".to_owned()),
        );

        let mut early = claims();
        early.nbf = Some(now() + DEFAULT_LEEWAY_SECS + 60);
        check(sign(&key, &early), AuthError::NotYetValid);
        let mut ready = claims();
        ready.nbf = Some(now());
        assert!(v.verify(&sign(&key, &ready)).is_ok(), "nbf in the past is fine");

        check("not.a.token".to_owned(), AuthError::Malformed);
        check(String::new(), AuthError::Malformed);
    }

    #[test]
    fn revoked_versions_are_refused_and_later_ones_pass() {
        let (key, public) = keypair(1);
        let revocations = Arc::new(revoked::Revocations::default());
        let v = verifier(&public).with_revocations(Arc::clone(&revocations));
        let mut old = claims();
        old.ver = 3;
        let mut new = claims();
        new.ver = 4;
        assert!(v.verify(&sign(&key, &old)).is_ok());
        revocations.apply(
            &revoked::Batch {
                revocations: vec![revoked::Revocation {
                    user_id: 42,
                    valid_from: 4,
                    until: u64::MAX,
                }],
                cursor: 1,
                more: false,
            },
            now(),
        );
        assert_eq!(v.verify(&sign(&key, &old)), Err(AuthError::Revoked));
        assert!(
            v.verify(&sign(&key, &new)).is_ok(),
            "a token issued after the change"
        );
        let mut other = claims();
        other.sub = "43".to_owned();
        assert!(v.verify(&sign(&key, &other)).is_ok(), "another user");
        assert_eq!(
            AuthError::Revoked.client_message(),
            "the access token was revoked; sign in again"
        );
    }

    #[test]
    fn service_tokens_name_a_service_and_act_for_no_user() {
        let (key, public) = keypair(1);
        let mut c = claims();
        c.sub = "order-service".to_owned();
        c.role = "service".to_owned();
        let id = verifier(&public).verify(&sign(&key, &c)).unwrap();
        assert_eq!(
            (id.role, id.user_id, id.service.as_deref()),
            (Role::Service, 0, Some("order-service"))
        );
        assert!(id.is_service() && !id.is_admin());
        assert!(!id.may_act_for(0) && !id.may_act_for(1));
        c.sub = "42".to_owned();
        assert!(
            verifier(&public).verify(&sign(&key, &c)).is_ok(),
            "digits are a valid name"
        );
        c.sub = "Order Service!".to_owned();
        assert_eq!(
            verifier(&public).verify(&sign(&key, &c)),
            Err(AuthError::BadClaim("sub is not a service name".to_owned()))
        );
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let (key, public) = keypair(1);
        let (other_key, _) = keypair(2);
        let token = sign(&key, &claims());
        let mut admin = claims();
        admin.role = "admin".to_owned();
        // The genuine header and signature around an admin payload (taken from a token signed
        // with another key, so no hand-made encoding is needed).
        let forged = sign(&other_key, &admin);
        let (t, f): (Vec<&str>, Vec<&str>) = (token.split('.').collect(), forged.split('.').collect());
        let tampered = format!("{}.{}.{}", t[0], f[1], t[2]);
        assert_eq!(verifier(&public).verify(&tampered), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_and_hmac_confusion_are_refused() {
        let (key, public) = keypair(1);
        let v = verifier(&public);
        let payload = sign(&key, &claims()).split('.').nth(1).unwrap().to_owned();

        // `{"alg":"none","typ":"JWT"}`, base64url: an unsigned token.
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        // jsonwebtoken knows no "none" algorithm: the header itself does not parse.
        assert_eq!(v.verify(&none), Err(AuthError::Malformed));

        // HS256 "signed" with the public key as the secret: the classic confusion attack.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert_eq!(v.verify(&hs), Err(AuthError::BadSignature));
    }

    #[test]
    fn bearer_parsing() {
        let (key, public) = keypair(1);
        let v = verifier(&public);
        let token = sign(&key, &claims());
        assert!(v.verify_bearer(&format!("Bearer {token}")).is_ok());
        assert!(v.verify_bearer(&format!("bearer  {token}")).is_ok());
        assert_eq!(v.verify_bearer(&token), Err(AuthError::NotBearer));
        assert_eq!(
            v.verify_bearer(&format!("Basic {token}")),
            Err(AuthError::NotBearer)
        );
        assert_eq!(v.verify_bearer("Bearer "), Err(AuthError::NotBearer));

        let md = tonic::metadata::MetadataMap::new();
        assert_eq!(v.verify_metadata(&md), Err(AuthError::Missing));
    }

    #[test]
    fn only_eddsa_keys_and_algorithm_are_accepted() {
        let (_, public) = keypair(1);
        assert!(matches!(
            Verifier::new("HS256", &public, &TokenRules::default()),
            Err(KeyError::Algorithm(_))
        ));
        assert!(matches!(
            Verifier::new(ALGORITHM, b"not a key", &TokenRules::default()),
            Err(KeyError::Format { .. })
        ));
    }
}
