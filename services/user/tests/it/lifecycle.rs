//! The process around the service: health, logs, restarts, crashes, shutdown, the command line.

use shop_proto::user::v1 as pb;
use shop_testkit::{Launch, Scratch};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_serving_for_the_service() {
    let h = Harness::start("health");
    let channel = tonic::transport::Channel::from_shared(h.process.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", shop_proto::names::USER_SERVICE] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_carry_the_request_id_and_never_a_password_or_hash() {
    let h = Harness::start("logs");
    let mut c = h.client().await;
    let mut req = tonic::Request::new(pb::RegisterRequest {
        username: "carol".to_owned(),
        email: "carol@example.com".to_owned(),
        password: password_of("carol"),
        full_name: String::new(),
    });
    req.metadata_mut()
        .insert("x-request-id", "it-req-0042".parse().unwrap());
    let response = c.register(req).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "it-req-0042");
    let login = login_as(&mut c, "carol", &password_of("carol")).await.unwrap();
    let _ = login_as(&mut c, "carol", "a-wrong-guess").await;
    let got = c
        .get_user(with_token(
            pb::GetUserRequest {
                id: response.get_ref().id,
            },
            &login.access_token,
        ))
        .await
        .unwrap();

    // Nothing a client receives carries the hash.
    for shown in [
        format!("{:?}", response.get_ref()),
        format!("{login:?}"),
        format!("{:?}", got.get_ref()),
    ] {
        assert!(!shown.contains("$argon2"), "{shown}");
    }
    let logs = h.process.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("request_id=it-req-0042") && l.contains("registered")),
        "the register log line carries the request id:\n{logs}"
    );
    assert!(logs.contains("/shop.user.v1.UserService/Login"), "{logs}");
    for secret in [
        "$argon2",
        &password_of("carol"),
        "a-wrong-guess",
        ADMIN_PASSWORD,
        &login.access_token,
    ] {
        assert!(!logs.contains(secret), "logs contain {secret:?}:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn data_and_keys_survive_a_graceful_restart() {
    let mut h = Harness::start("restart");
    let mut c = h.client().await;
    let a = register(&mut c, "alice").await;
    let old_token = token_of(&mut c, "alice").await;
    drop(c);

    let status = h.process.terminate();
    assert!(status.success(), "SIGTERM ends with exit 0, got {status:?}");
    assert!(h.process.logs().contains("drained, stopped"));

    h.restart();
    let mut c = h.client().await;
    // Same account, same signing key: a token issued before the restart still works.
    let me = c
        .get_user(with_token(pb::GetUserRequest { id: a.id }, &old_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.username, "alice");
    assert!(login_as(&mut c, "alice", &password_of("alice")).await.is_ok());
    // The admin seed ran again and found the account already there.
    assert!(h.process.logs().contains("the admin account exists"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_registration_survives_kill_9() {
    let mut h = Harness::start("kill9");
    let mut c = h.client().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(register(&mut c, &format!("user{i}")).await.id);
    }
    // Killed the instant the last reply arrived: no shutdown, no flush.
    h.process.kill9();
    h.restart();
    let mut c = h.client().await;
    let admin = admin_token(&mut c).await;
    for (i, id) in ids.iter().enumerate() {
        let u = c
            .get_user(with_token(pb::GetUserRequest { id: *id }, &admin))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(u.username, format!("user{i}"));
    }
    assert!(login_as(&mut c, "user4", &password_of("user4")).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_calls_in_flight_finish() {
    let mut h = Harness::start("drain");
    let c = h.client().await;
    // Each registration spends tens of milliseconds in argon2, and the server hashes at most one
    // per core at a time: eight of them are still running when SIGTERM arrives.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.register(pb::RegisterRequest {
                username: format!("drain{i}"),
                email: format!("drain{i}@example.com"),
                password: password_of("drain"),
                full_name: String::new(),
            })
            .await
        }));
    }
    // Wait until the server has started on them (its log shows the first one done).
    let started = std::time::Instant::now();
    while !h.process.logs().contains("registered") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no registration finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let status = tokio::task::block_in_place(|| h.process.terminate());
    assert!(status.success(), "{status:?}");
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.is_ok(), "a call in flight was cut off by the shutdown: {r:?}");
    }
    h.restart();
    let mut c = h.client().await;
    for i in 0..8 {
        assert!(
            login_as(&mut c, &format!("drain{i}"), &password_of("drain"))
                .await
                .is_ok()
        );
    }
}

#[test]
fn create_admin_from_the_command_line_is_idempotent() {
    let scratch = Scratch::new("create-admin");
    let data = scratch.join("data");
    let launch = Launch::new(env!("CARGO_BIN_EXE_user-service"), "create-admin", scratch.path())
        .arg("create-admin")
        .arg("--username")
        .arg("boss")
        .arg("--data-dir")
        .arg(data.to_str().unwrap());
    let (status, _, stderr) = launch.run(Some("boss-password-1\n"));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("created the admin account"), "{stderr}");
    let (status, _, stderr) = launch
        .clone()
        .env("SHOP_ADMIN_PASSWORD", "boss-password-1")
        .run(None);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("the admin account exists"), "{stderr}");

    let (status, _, stderr) = launch
        .clone()
        .env("SHOP_ADMIN_PASSWORD", "short")
        .arg("--username")
        .arg("boss2")
        .run(None);
    assert!(!status.success());
    assert!(stderr.contains("password"), "{stderr}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = Launch::new(env!("CARGO_BIN_EXE_user-service"), "server", scratch.path())
        .arg("--port")
        .arg("0")
        .arg("--data-dir")
        .arg(data.to_str().unwrap())
        .start();
    rt.block_on(async {
        let mut c = shop_proto::user::v1::user_service_client::UserServiceClient::connect(server.url())
            .await
            .unwrap();
        let r = login_as(&mut c, "boss", "boss-password-1").await.unwrap();
        assert_eq!(r.user.unwrap().role, "admin");
        // Nobody becomes admin through the public API: Register has no role field at all, and
        // what it creates is a customer.
        let u = register(&mut c, "wannabe").await;
        assert_eq!(u.role, "customer");
    });
}

#[test]
fn bad_settings_stop_the_start_with_a_clear_message() {
    let scratch = Scratch::new("bad-settings");
    let bin = env!("CARGO_BIN_EXE_user-service");
    let check = |args: &[&str], file: Option<&str>, want: &str| {
        let mut launch = Launch::new(bin, "bad", scratch.path());
        if let Some(text) = file {
            let path = scratch.join("user.toml");
            std::fs::write(&path, text).unwrap();
            launch = launch.arg("--config").arg(path.to_str().unwrap());
        }
        for a in args {
            launch = launch.arg(*a);
        }
        let (status, _, stderr) = launch.run(None);
        assert!(!status.success(), "{args:?} should fail");
        assert!(stderr.contains(want), "{stderr:?} should contain {want:?}");
    };
    check(
        &["--port", "http"],
        None,
        "flag --port: server.port: expected a whole number",
    );
    check(
        &["--check"],
        Some("[server]\nport = 99999\n"),
        "user.toml: server.port: expected a port number",
    );
    check(
        &["--check"],
        Some("[auth]\ntoken_tll = \"1h\"\n"),
        "user.toml: auth.token_tll: unknown key",
    );
    check(
        &["--check"],
        Some("[auth]\ntoken_ttl = \"30s\"\n"),
        "auth.token_ttl: expected between 1m and 7d",
    );
    check(
        &["--check", "--set", "auth.algorithm=HS256"],
        None,
        "auth.algorithm: only \"EdDSA\"",
    );
    check(&["frobnicate"], None, "unknown argument \"frobnicate\"");

    let (status, stdout, _) = Launch::new(bin, "ok", scratch.path()).arg("--check").run(None);
    assert!(status.success());
    assert!(stdout.contains("settings are valid"));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_refused() {
    let h = Harness::start("limits");
    let mut c = h.client().await;
    let huge = "x".repeat(200 * 1024);
    let r = c
        .register(pb::RegisterRequest {
            username: "big".to_owned(),
            email: "big@example.com".to_owned(),
            password: "password1".to_owned(),
            full_name: huge,
        })
        .await;
    assert_eq!(r.unwrap_err().code(), Code::OutOfRange);
}

#[test]
fn service_tokens_are_issued_with_the_same_keys() {
    let scratch = Scratch::new("service-token");
    let data = scratch.join("data");
    let out = scratch.join("order-service.token");
    let issue = |args: &[&str]| {
        let mut l = Launch::new(env!("CARGO_BIN_EXE_user-service"), "issue", scratch.path())
            .arg("issue-service-token")
            .arg("--data-dir")
            .arg(data.to_str().unwrap());
        for a in args {
            l = l.arg(*a);
        }
        l.run(None)
    };
    let (status, _, stderr) = issue(&["--service", "order-service", "--out", out.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&out).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&out).unwrap();
    let verifier = shop_auth::Verifier::from_file(
        shop_auth::ALGORITHM,
        &data.join("keys/token-signing.pub.pem"),
        &shop_auth::TokenRules::default(),
    )
    .unwrap();
    let id = verifier.verify(token.trim()).unwrap();
    assert_eq!(
        (id.role, id.service.as_deref(), id.user_id),
        (shop_auth::Role::Service, Some("order-service"), 0)
    );
    assert!(id.expires_at > shop_kit_now() + 29 * 86_400, "30 days by default");

    let (status, _, stderr) = issue(&["--service", "Bad Name"]);
    assert!(
        !status.success() && stderr.contains("not a service name"),
        "{stderr}"
    );
    let (status, _, stderr) = issue(&["--service", "x", "--ttl", "5"]);
    assert!(!status.success() && stderr.contains("--ttl"), "{stderr}");
}

fn shop_kit_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
