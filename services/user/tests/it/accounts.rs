//! Registration rules, ownership, updates and deletion.

use shop_proto::user::v1 as pb;
use tonic::Code;

use crate::support::*;

fn registration(username: &str, email: &str, password: &str, full_name: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        username: username.to_owned(),
        email: email.to_owned(),
        password: password.to_owned(),
        full_name: full_name.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_checks_every_field_and_names_it() {
    let h = Harness::start("register-rules");
    let mut c = h.client().await;
    let long_name = "n".repeat(101);
    let cases = [
        (registration("ab", "a@example.com", "password1", ""), "username"),
        (
            registration(&"x".repeat(33), "a@example.com", "password1", ""),
            "username",
        ),
        (
            registration("bad name", "a@example.com", "password1", ""),
            "username",
        ),
        (registration("ok_name", "not-an-email", "password1", ""), "email"),
        (registration("ok_name", "a@b", "password1", ""), "email"),
        (registration("ok_name", "", "password1", ""), "email"),
        (registration("ok_name", "a@example.com", "short", ""), "password"),
        (
            registration("ok_name", "a@example.com", "password1", &long_name),
            "full_name",
        ),
    ];
    for (req, field) in cases {
        let shown = format!("{req:?}");
        let result = c.register(req).await;
        let status = result.expect_err(&shown);
        assert_eq!(status.code(), Code::InvalidArgument, "{shown}");
        assert!(
            status.message().starts_with(field),
            "{:?} should name {field}",
            status.message()
        );
    }
    // Nothing was written: the name used above is still free.
    let user = register(&mut c, "ok_name").await;
    assert!(user.id > 0);
    assert_eq!(user.role, "customer");
    assert_eq!(user.full_name, "ok_name Example");
    assert!(user.created_at.is_some() && user.updated_at.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn usernames_and_emails_are_unique_whatever_their_case() {
    let h = Harness::start("register-dupes");
    let mut c = h.client().await;
    register(&mut c, "Alice").await;
    assert_status(
        c.register(registration("aLICE", "other@example.com", "password1", ""))
            .await,
        Code::AlreadyExists,
        "username",
    );
    assert_status(
        c.register(registration("alice2", "ALICE@Example.COM", "password1", ""))
            .await,
        Code::AlreadyExists,
        "email",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_registrations_of_one_name_make_one_account() {
    let h = Harness::start("register-race");
    let c = h.client().await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.register(registration(
                "racer",
                &format!("racer{i}@example.com"),
                "password1",
                "",
            ))
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) => assert_eq!(s.code(), Code::AlreadyExists, "{s:?}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_act_only_on_their_own_account_and_admins_on_any() {
    let h = Harness::start("ownership");
    let mut c = h.client().await;
    let a = register(&mut c, "alice").await;
    let b = register(&mut c, "bob").await;
    let ta = token_of(&mut c, "alice").await;
    let admin = admin_token(&mut c).await;

    // A reads herself, not B.
    let me = c
        .get_user(with_token(pb::GetUserRequest { id: a.id }, &ta))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.username, "alice");
    assert_status(
        c.get_user(with_token(pb::GetUserRequest { id: b.id }, &ta)).await,
        Code::PermissionDenied,
        "own account",
    );
    let rename = pb::UpdateUserRequest {
        id: b.id,
        full_name: Some("Hacked".to_owned()),
        ..Default::default()
    };
    assert_status(
        c.update_user(with_token(rename.clone(), &ta)).await,
        Code::PermissionDenied,
        "own account",
    );
    assert_status(
        c.delete_user(with_token(pb::DeleteUserRequest { id: b.id }, &ta))
            .await,
        Code::PermissionDenied,
        "own account",
    );
    assert_status(
        c.validate_user(with_token(pb::ValidateUserRequest { id: b.id }, &ta))
            .await,
        Code::PermissionDenied,
        "own account",
    );
    // B is untouched.
    let tb = token_of(&mut c, "bob").await;
    let b_now = c
        .get_user(with_token(pb::GetUserRequest { id: b.id }, &tb))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b_now.full_name, "bob Example");

    // The admin may do all of it.
    let got = c
        .get_user(with_token(pb::GetUserRequest { id: b.id }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.username, "bob");
    let renamed = c
        .update_user(with_token(rename, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.full_name, "Hacked");
    let valid = c
        .validate_user(with_token(pb::ValidateUserRequest { id: b.id }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid);
    assert_eq!(valid.role, "customer");
    c.delete_user(with_token(pb::DeleteUserRequest { id: b.id }, &admin))
        .await
        .unwrap();
    assert_status(
        c.get_user(with_token(pb::GetUserRequest { id: b.id }, &admin))
            .await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        c.get_user(with_token(pb::GetUserRequest { id: 999_999 }, &admin))
            .await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        c.get_user(with_token(pb::GetUserRequest { id: -1 }, &admin))
            .await,
        Code::InvalidArgument,
        "id",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_check_fields_and_own_password_changes_need_the_current_one() {
    let h = Harness::start("update");
    let mut c = h.client().await;
    let a = register(&mut c, "alice").await;
    register(&mut c, "bob").await;
    let ta = token_of(&mut c, "alice").await;
    let update = |req: pb::UpdateUserRequest| with_token(req, &ta);

    assert_status(
        c.update_user(update(pb::UpdateUserRequest {
            id: a.id,
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "nothing to change",
    );
    assert_status(
        c.update_user(update(pb::UpdateUserRequest {
            id: a.id,
            email: Some("nope".to_owned()),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "email",
    );
    assert_status(
        c.update_user(update(pb::UpdateUserRequest {
            id: a.id,
            email: Some("BOB@example.com".to_owned()),
            ..Default::default()
        }))
        .await,
        Code::AlreadyExists,
        "email",
    );
    let new_password = |current: Option<&str>| pb::UpdateUserRequest {
        id: a.id,
        password: Some("brand-new-password".to_owned()),
        current_password: current.map(str::to_owned),
        ..Default::default()
    };
    assert_status(
        c.update_user(update(new_password(None))).await,
        Code::InvalidArgument,
        "current_password",
    );
    assert_status(
        c.update_user(update(new_password(Some("wrong-password")))).await,
        Code::PermissionDenied,
        "current_password",
    );
    // The refused attempts changed nothing.
    assert!(login_as(&mut c, "alice", &password_of("alice")).await.is_ok());

    let changed = c
        .update_user(update(pb::UpdateUserRequest {
            id: a.id,
            email: Some("alice@new.example.org".to_owned()),
            full_name: Some("  Alice Liddell ".to_owned()),
            password: Some("brand-new-password".to_owned()),
            current_password: Some(password_of("alice")),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.email, "alice@new.example.org");
    assert_eq!(changed.full_name, "Alice Liddell");
    // The token the change was made with is refused by this service at once, not only after its
    // next poll of its own revocation feed.
    assert_status(
        c.get_user(with_token(pb::GetUserRequest { id: a.id }, &ta)).await,
        Code::Unauthenticated,
        "revoked",
    );
    assert!(changed.updated_at.unwrap().seconds >= changed.created_at.unwrap().seconds);
    assert_status(
        login_as(&mut c, "alice", &password_of("alice")).await,
        Code::Unauthenticated,
        "wrong",
    );
    assert!(
        login_as(&mut c, "alice@new.example.org", "brand-new-password")
            .await
            .is_ok()
    );

    // An admin resets another user's password without knowing the old one.
    let admin = admin_token(&mut c).await;
    c.update_user(with_token(
        pb::UpdateUserRequest {
            id: a.id,
            password: Some("reset-by-admin".to_owned()),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    assert!(login_as(&mut c, "alice", "reset-by-admin").await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn password_changes_are_limited_per_account_and_wrong_guesses_count() {
    let h = Harness::start("password-limit");
    let mut c = h.client().await;
    let a = register(&mut c, "alice").await;
    let b = register(&mut c, "bob").await;
    let (ta, tb) = (token_of(&mut c, "alice").await, token_of(&mut c, "bob").await);
    let change = |id: i64, current: String, token: &str| {
        with_token(
            pb::UpdateUserRequest {
                id,
                password: Some("brand-new-password".to_owned()),
                current_password: Some(current),
                ..Default::default()
            },
            token,
        )
    };
    // A stolen token guessing the current password: five guesses, then a wall.
    for i in 0..5 {
        assert_status(
            c.update_user(change(a.id, format!("guess-{i}"), &ta)).await,
            Code::PermissionDenied,
            "current_password",
        );
    }
    assert_status(
        c.update_user(change(a.id, password_of("alice"), &ta)).await,
        Code::ResourceExhausted,
        "too many password changes",
    );
    assert!(
        login_as(&mut c, "alice", &password_of("alice")).await.is_ok(),
        "nothing changed"
    );
    // Per account: bob is not held back, and other updates of alice's still work.
    c.update_user(change(b.id, password_of("bob"), &tb))
        .await
        .unwrap();
    c.update_user(with_token(
        pb::UpdateUserRequest {
            id: a.id,
            full_name: Some("Alice".to_owned()),
            ..Default::default()
        },
        &ta,
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_account_is_gone_but_its_name_stays_taken() {
    let h = Harness::start("delete");
    let mut c = h.client().await;
    let a = register(&mut c, "alice").await;
    let ta = token_of(&mut c, "alice").await;
    let valid = c
        .validate_user(with_token(pb::ValidateUserRequest { id: a.id }, &ta))
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid);

    c.delete_user(with_token(pb::DeleteUserRequest { id: a.id }, &ta))
        .await
        .unwrap();
    // Its own token is refused here at once (not only after this service's next feed poll).
    assert_status(
        c.get_user(with_token(pb::GetUserRequest { id: a.id }, &ta)).await,
        Code::Unauthenticated,
        "revoked",
    );
    let admin = admin_token(&mut c).await;
    assert_status(
        c.delete_user(with_token(pb::DeleteUserRequest { id: a.id }, &admin))
            .await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        c.get_user(with_token(pb::GetUserRequest { id: a.id }, &admin))
            .await,
        Code::NotFound,
        "not found",
    );
    let valid = c
        .validate_user(with_token(pb::ValidateUserRequest { id: a.id }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(!valid.valid);
    assert_status(
        login_as(&mut c, "alice", &password_of("alice")).await,
        Code::Unauthenticated,
        "wrong",
    );
    assert_status(
        c.register(registration("ALICE", "fresh@example.com", "password1", ""))
            .await,
        Code::AlreadyExists,
        "username",
    );
}
