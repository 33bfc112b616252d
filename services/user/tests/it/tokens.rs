//! Login and access tokens: what a token carries, and which tokens the service refuses.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use shop_auth::{Claims, Role};
use shop_proto::user::v1 as pb;
use shop_testkit::tokens::TokenMint;
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
        let claims: Claims = jsonwebtoken::dangerous::insecure_decode_claims(&r.access_token).unwrap();
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
        ver: 0,
        nbf: None,
    };
    let real_key = EncodingKey::from_ed_pem(&h.private_key_pem()).unwrap();
    let sign =
        |c: &Claims, key: &EncodingKey| jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), c, key).unwrap();

    // Signed by the real key but expired (beyond the leeway).
    let expired = sign(&claims("customer", now - 120), &real_key);
    assert_status(c.get_user(get(&expired)).await, Code::Unauthenticated, "expired");

    // Signed by the real key, not valid for another hour (nbf).
    let mut early = claims("customer", now + 7200);
    early.nbf = Some(now + 3600);
    assert_status(
        c.get_user(get(&sign(&early, &real_key))).await,
        Code::Unauthenticated,
        "not valid",
    );

    // A well-formed admin token for this user, signed by another key pair.
    let foreign = TokenMint::create(&h.scratch.join("foreign-keys")).token(a.id, "admin");
    assert_status(
        c.get_user(get(&foreign)).await,
        Code::Unauthenticated,
        "not valid",
    );

    // The genuine token with its payload swapped for the admin one: the signature no longer
    // matches.
    let (good_parts, admin_parts): (Vec<&str>, Vec<&str>) =
        (good.split('.').collect(), foreign.split('.').collect());
    let tampered = format!("{}.{}.{}", good_parts[0], admin_parts[1], good_parts[2]);
    assert_status(
        c.get_user(get(&tampered)).await,
        Code::Unauthenticated,
        "not valid",
    );

    // alg: none, with the admin payload and no signature.
    let none = format!("{ALG_NONE_HEADER}.{}.", admin_parts[1]);
    assert_status(c.get_user(get(&none)).await, Code::Unauthenticated, "not valid");

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

/// `{"alg":"none","typ":"JWT"}`, base64url-encoded: the header of an unsigned token.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
