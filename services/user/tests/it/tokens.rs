//! Login and access tokens: what a token carries, and which tokens the service refuses.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use shop_auth::{Claims, Role};
use shop_proto::user::v1 as pb;
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn login_gives_a_signed_token_that_verifies_with_the_public_key() {
    let h = Harness::start("login-token");
    let mut c = h.client().await;
    let a = register(&mut c, "alice").await;

    for login in ["alice", "ALICE", "alice@example.com", "Alice@Example.com"] {
        let r = login_as(&mut c, login, &password_of("alice")).await.unwrap();
        assert_eq!(r.token_type, "Bearer");
        assert_eq!(r.expires_in, 3600);
        assert_eq!(r.user.as_ref().unwrap().id, a.id);

        let id = h.verifier().verify(&r.access_token).unwrap();
        assert_eq!((id.user_id, id.role), (a.id, Role::Customer));

        // The raw claims: sub, role, exp, iat, iss, aud, jti as the design page lists them.
        let payload = r.access_token.split('.').nth(1).unwrap();
        let claims: Claims = serde_json_from_b64(payload);
        assert_eq!(claims.sub, a.id.to_string());
        assert_eq!(claims.role, "customer");
        assert_eq!(claims.exp - claims.iat, 3600);
        assert_eq!(
            (claims.iss.as_str(), claims.aud.as_str()),
            (shop_auth::DEFAULT_ISSUER, shop_auth::DEFAULT_AUDIENCE)
        );
        assert_eq!(claims.jti.len(), 32);
    }
    let admin = login_as(&mut c, ADMIN, ADMIN_PASSWORD).await.unwrap();
    assert_eq!(
        h.verifier().verify(&admin.access_token).unwrap().role,
        Role::Admin
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_look_the_same() {
    let h = Harness::start("login-enumeration");
    let mut c = h.client().await;
    register(&mut c, "alice").await;
    let wrong = login_as(&mut c, "alice", "not-her-password").await.unwrap_err();
    let unknown = login_as(&mut c, "nobody", "not-her-password").await.unwrap_err();
    let unknown_email = login_as(&mut c, "nobody@example.com", "x-password")
        .await
        .unwrap_err();
    for s in [&wrong, &unknown, &unknown_email] {
        assert_eq!(s.code(), Code::Unauthenticated);
        assert_eq!(s.message(), wrong.message());
    }
    assert_status(login_as(&mut c, "", "x").await, Code::InvalidArgument, "username");
    assert_status(
        login_as(&mut c, "alice", "").await,
        Code::InvalidArgument,
        "password",
    );
    // Absurd input is refused like any wrong password, without an error of its own.
    let huge = "a".repeat(20_000);
    assert_eq!(
        login_as(&mut c, &huge, &huge).await.unwrap_err().message(),
        wrong.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let h = Harness::start("token-refusals");
    let mut c = h.client().await;
    let a = register(&mut c, "alice").await;
    let good = token_of(&mut c, "alice").await;
    let get = |token: &str| with_token(pb::GetUserRequest { id: a.id }, token);
    assert!(c.get_user(get(&good)).await.is_ok());

    // No token, or not a bearer token.
    assert_status(
        c.get_user(pb::GetUserRequest { id: a.id }).await,
        Code::Unauthenticated,
        "no access token",
    );
    let mut basic = tonic::Request::new(pb::GetUserRequest { id: a.id });
    basic
        .metadata_mut()
        .insert("authorization", "Basic YWxpY2U6eA==".parse().unwrap());
    assert_status(c.get_user(basic).await, Code::Unauthenticated, "Bearer");

    let now = jsonwebtoken::get_current_timestamp();
    let claims = |role: &str, exp: u64| Claims {
        sub: a.id.to_string(),
        role: role.to_owned(),
        exp,
        iat: now,
        iss: shop_auth::DEFAULT_ISSUER.to_owned(),
        aud: shop_auth::DEFAULT_AUDIENCE.to_owned(),
        jti: "t".to_owned(),
    };
    let real_key = EncodingKey::from_ed_pem(&h.private_key_pem()).unwrap();
    let sign =
        |c: &Claims, key: &EncodingKey| jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), c, key).unwrap();

    // Signed by the real key but expired (beyond the leeway).
    let expired = sign(&claims("customer", now - 120), &real_key);
    assert_status(c.get_user(get(&expired)).await, Code::Unauthenticated, "expired");

    // Payload edited to claim admin: the signature no longer matches.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = b64(&serde_json_vec(&claims("admin", now + 600)));
    assert_status(
        c.get_user(get(&parts.join("."))).await,
        Code::Unauthenticated,
        "not valid",
    );

    // alg: none.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(&serde_json_vec(&claims("admin", now + 600)))
    );
    assert_status(c.get_user(get(&none)).await, Code::Unauthenticated, "not valid");

    // A well-formed admin token from another key pair.
    let other = ed25519_pem(7);
    let foreign = sign(
        &claims("admin", now + 600),
        &EncodingKey::from_ed_pem(other.as_bytes()).unwrap(),
    );
    assert_status(
        c.get_user(get(&foreign)).await,
        Code::Unauthenticated,
        "not valid",
    );

    // HS256 with the public key as the shared secret.
    let public = std::fs::read(h.public_key_path()).unwrap();
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("admin", now + 600),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert_status(
        c.get_user(get(&confused)).await,
        Code::Unauthenticated,
        "not valid",
    );
}

fn serde_json_vec(c: &Claims) -> Vec<u8> {
    format!(
        r#"{{"sub":"{}","role":"{}","exp":{},"iat":{},"iss":"{}","aud":"{}","jti":"{}"}}"#,
        c.sub, c.role, c.exp, c.iat, c.iss, c.aud, c.jti
    )
    .into_bytes()
}

fn serde_json_from_b64(segment: &str) -> Claims {
    let bytes = unb64(segment);
    let text = String::from_utf8(bytes).unwrap();
    let field = |name: &str| -> String {
        let start = text.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
        let rest = &text[start..];
        let rest = rest.strip_prefix('"').unwrap_or(rest);
        rest.chars()
            .take_while(|c| *c != '"' && *c != ',' && *c != '}')
            .collect()
    };
    Claims {
        sub: field("sub"),
        role: field("role"),
        exp: field("exp").parse().unwrap(),
        iat: field("iat").parse().unwrap(),
        iss: field("iss"),
        aud: field("aud"),
        jti: field("jti"),
    }
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = B64.iter().position(|x| *x == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn ed25519_pem(seed: u8) -> String {
    // PKCS#8 v1 wrapping of a raw Ed25519 seed (RFC 8410): a fixed 16-byte prefix, then the seed.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    der.extend_from_slice(&[seed; 32]);
    let std_b64: String = b64(&der).replace('-', "+").replace('_', "/");
    let padded = format!("{std_b64}{}", "=".repeat((4 - std_b64.len() % 4) % 4));
    format!("-----BEGIN PRIVATE KEY-----\n{padded}\n-----END PRIVATE KEY-----\n")
}
