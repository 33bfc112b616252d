//! Consul ACLs against a real agent started with ACLs on and a default-deny policy
//! (`ConsulAgent::start_with_acl`). With a token holding the least a shop service needs
//! (`service_rules`), an instance registers, a watch sees it, the session lock is taken, and the
//! instance leaves. Without a token, or with one Consul does not know, every call is refused with
//! an error that says so, and a watch reports the refusal instead of showing an empty service.
//! Each rule of that least set is needed. Every log line is captured to show that no token is
//! in one.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use shop_discovery::consul::ConsulError;
use shop_discovery::session::{self, LockConfig};
use shop_discovery::{ConsulClient, Registrar, Registration, watch};
use shop_testkit::Scratch;
use shop_testkit::consul::{ConsulAgent, parse, service_rules};

use crate::agent::{SOON, config, ids, until};
use crate::lock::until_held;

/// The service the tests register, and another one they watch.
const SERVICE: &str = "acl-svc";
const OTHER: &str = "acl-other";
const KEY: &str = "shop/acl-test/lock";
/// The gRPC service name Consul's health check asks about.
const GRPC_SERVICE: &str = "acl.Test";

/// A grpc.health.v1 server reporting [`GRPC_SERVICE`] as serving, for Consul's checks (a
/// session tied to `service:<id>` needs that check to pass). Returns its port.
async fn health_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(GRPC_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    tokio::spawn(async move {
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    port
}

fn registration(id: &str, port: u16) -> Registration {
    Registration {
        id: id.to_owned(),
        name: SERVICE.to_owned(),
        address: "127.0.0.1".to_owned(),
        port,
        tags: vec![],
        meta: Default::default(),
        grpc_check: format!("127.0.0.1:{port}/{GRPC_SERVICE}"),
        check_interval: Duration::from_secs(1),
        check_timeout: Duration::from_secs(1),
        deregister_after: Duration::from_secs(60),
    }
}

/// Registers `id` of `service` with the master token and a passing TTL check.
fn register_as_master(agent: &ConsulAgent, id: &str, service: &str) {
    let body = format!(
        r#"{{"ID":"{id}","Name":"{service}","Port":7001,"Check":{{"CheckID":"service:{id}","TTL":"600s","Status":"passing"}}}}"#
    );
    let (status, text) = agent.admin("PUT", "/v1/agent/service/register", Some(&body));
    assert_eq!(status, 200, "{text}");
}

/// Who holds `KEY` according to Consul (read with the master token).
fn lock_session(agent: &ConsulAgent) -> Option<String> {
    let (status, body) = agent.admin("GET", &format!("/v1/kv/{KEY}"), None);
    assert_eq!(status, 200, "{body}");
    parse(&body)?
        .as_array()?
        .first()?
        .get("Session")?
        .as_str()
        .map(str::to_owned)
}

/// Every log line (all levels, every crate) written on this thread while the guard lives. The
/// tests that use it run on a current-thread runtime, so the watch, registrar and lock tasks
/// log here too.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        // While at most one dispatcher is registered, tracing-core decides whether a callsite is
        // on by asking only the default of the thread that hits it first; a callsite first hit
        // by another test's thread (no subscriber) would then be off for this test too. A
        // second dispatcher, registered once and kept for the whole run, rules that shortcut
        // out; it wants nothing, so it changes nothing else.
        static SECOND: OnceLock<tracing::Dispatch> = OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until a line containing all of `words` was logged.
    async fn until(&self, words: &[&str], within: Duration) -> String {
        let started = Instant::now();
        loop {
            let text = self.text();
            if let Some(line) = text.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return line.to_owned();
            }
            assert!(
                started.elapsed() < within,
                "no log line with {words:?} within {within:?}; the log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn with_the_least_a_service_needs_it_registers_is_watched_takes_the_lock_and_leaves() {
    let (logs, _guard) = Logs::capture();
    let scratch = Scratch::new("consul-acl");
    let (agent, master) = ConsulAgent::start_with_acl(scratch.path());
    let token = agent.create_token(
        "shop-acl-svc",
        &service_rules(Some(SERVICE), &[SERVICE], Some(KEY)),
    );
    let client = ConsulClient::new(&agent.url(), Some(token.clone())).unwrap();
    let port = health_server().await;
    let id = format!("{SERVICE}-1");

    let registrar = Registrar::start(
        client.clone(),
        registration(&id, port),
        Duration::from_millis(500),
    );
    let mut rx = watch::consul(client.clone(), config(SERVICE));
    let seen = until(
        &mut rx,
        Duration::from_secs(10),
        "the instance, watched with the token",
        |s| s.fresh && ids(s) == [id.as_str()],
    )
    .await;
    assert_eq!(seen.error, None);

    // The session lock: session create and renew, KV acquire, blocking KV reads.
    let lock = session::lead(client.clone(), LockConfig::for_instance(KEY, &id));
    until_held(&lock, true, Duration::from_secs(10), "the lock, with the token").await;
    assert!(lock_session(&agent).is_some(), "Consul shows the key held");
    // Stopping releases the key and destroys the session.
    lock.stop().await;
    assert_eq!(lock_session(&agent), None, "released");

    registrar.deregister().await;
    assert!(!agent.agent_service_ids().contains(&id), "deregistered");
    let empty = until(&mut rx, SOON, "no instance once it left", |s| {
        s.fresh && s.endpoints.is_empty()
    })
    .await;
    assert_eq!(
        empty.error, None,
        "the token may read the service and its nodes, so an empty answer is believed"
    );
    drop(rx);

    let text = logs.text();
    for line in ["registered with Consul", "lock held", "deregistered from Consul"] {
        assert!(
            text.contains(line),
            "the log is captured: {line:?} missing in\n{text}"
        );
    }
    assert!(
        !text.contains(&token),
        "the service's token is in the log:\n{text}"
    );
    assert!(!text.contains(&master), "the master token is in the log:\n{text}");
}

#[tokio::test]
async fn without_a_token_or_with_an_unknown_one_every_call_is_refused_and_says_so() {
    let (logs, _guard) = Logs::capture();
    let scratch = Scratch::new("consul-acl-refused");
    let (agent, master) = ConsulAgent::start_with_acl(scratch.path());
    // An instance registered with the master token: there is something to hide.
    let existing = format!("{SERVICE}-0");
    register_as_master(&agent, &existing, SERVICE);
    let unknown = "00000000-1111-4222-8333-444444444444";

    for (what, token) in [("no token", None), ("an unknown token", Some(unknown))] {
        let sent = token.is_some();
        let client = ConsulClient::new(&agent.url(), token.map(str::to_owned)).unwrap();
        let says = if sent {
            "the configured ACL token is unknown to Consul"
        } else {
            "no ACL token is configured"
        };
        let denied = |step: &str, result: Result<(), ConsulError>| {
            let e = result.expect_err(&format!("{what}: {step} should be refused"));
            assert!(
                matches!(&e, ConsulError::Denied { token_sent, .. } if *token_sent == sent),
                "{what}: {step}: {e:?}"
            );
            let text = e.to_string();
            assert!(text.contains(says), "{what}: {step}: {text}");
            if let Some(t) = token {
                assert!(!text.contains(t), "{what}: {step}: the token is in {text}");
            }
        };

        let id = format!("{SERVICE}-9");
        denied("register", client.register(&registration(&id, 1)).await);
        assert!(!agent.agent_service_ids().contains(&id));
        denied("deregister", client.deregister(&existing).await);
        assert!(agent.agent_service_ids().contains(&existing), "still there");
        denied(
            "session create",
            client
                .create_session(&LockConfig::for_instance(KEY, &existing))
                .await
                .map(drop),
        );
        denied(
            "lock read",
            client.lock_holder(KEY, 0, Duration::from_secs(1)).await.map(drop),
        );

        // The watch: refused (unknown token), or answered with the instance filtered out (no
        // token), which the visibility check finds. Either way it reports the refusal and never
        // shows the service as having no instances.
        let mut rx = watch::consul(client.clone(), config(SERVICE));
        let refused = until(&mut rx, SOON, what, |s| s.error.is_some()).await;
        assert!(
            !refused.fresh && refused.epoch == 0 && refused.endpoints.is_empty(),
            "{what}: nothing published as an answer: {refused:?}"
        );
        match refused.error.as_ref().unwrap() {
            ConsulError::Filtered {
                rule,
                token_sent: false,
                ..
            } if !sent => assert_eq!(rule, &format!("service \"{SERVICE}\" {{ policy = \"read\" }}")),
            ConsulError::Denied { token_sent: true, .. } if sent => {}
            e => panic!("{what}: the watch reports {e:?}"),
        }
        assert!(refused.error.as_ref().unwrap().to_string().contains(says));
        drop(rx);

        // A registrar with this client says so in the log, at error level.
        let registrar = Registrar::start(client.clone(), registration(&id, 1), Duration::from_secs(10));
        let line = logs
            .until(&["ERROR", "Consul refused to register this instance", says], SOON)
            .await;
        drop(registrar);
        assert!(line.contains(&id), "{line}");
    }

    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains("Consul refused the watch")),
        "{text}"
    );
    assert!(!text.contains(unknown), "the token is in the log:\n{text}");
    assert!(!text.contains(&master), "the master token is in the log:\n{text}");
}

/// What each step did with one token: register (and later deregister), watch [`OTHER`], create a
/// session, take and give back the lock.
async fn steps(
    agent: &ConsulAgent,
    port: u16,
    name: &str,
    rules: &str,
) -> Vec<(&'static str, Result<(), ConsulError>)> {
    let client = ConsulClient::new(&agent.url(), Some(agent.create_token(name, rules))).unwrap();
    let id = format!("{SERVICE}-{name}");
    let mut out = Vec::new();

    let registered = client.register(&registration(&id, port)).await;
    let is_registered = registered.is_ok();
    out.push(("register", registered));

    let mut rx = watch::consul(client.clone(), config(OTHER));
    let set = until(&mut rx, SOON, name, |s| s.fresh || s.error.is_some()).await;
    out.push((
        "watch",
        match &set.error {
            Some(e) => Err(e.clone()),
            None => {
                assert_eq!(ids(&set), [format!("{OTHER}-1")], "{name}");
                Ok(())
            }
        },
    ));
    drop(rx);

    let mut lock = LockConfig::for_instance(KEY, &id);
    if !is_registered {
        // No instance, so no instance check to tie the session to.
        lock.checks = vec!["serfHealth".to_owned()];
    }
    match client.create_session(&lock).await {
        Err(e) => out.push(("session", Err(e))),
        Ok(session) => {
            out.push(("session", Ok(())));
            let took = client.acquire(KEY, &session, &id).await;
            if took.is_ok() {
                assert_eq!(took, Ok(true), "{name}: the lock was free");
                client.release(KEY, &session).await.unwrap();
            }
            out.push(("lock", took.map(drop)));
            client.destroy_session(&session).await.unwrap();
        }
    }

    if is_registered {
        client.deregister(&id).await.unwrap();
        assert!(!agent.agent_service_ids().contains(&id), "{name}");
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn each_rule_of_the_least_a_service_needs_is_needed() {
    let scratch = Scratch::new("consul-acl-rules");
    let (agent, _master) = ConsulAgent::start_with_acl(scratch.path());
    register_as_master(&agent, &format!("{OTHER}-1"), OTHER);
    let port = health_server().await;

    // Each rule and the step that fails without it.
    let cases = [
        (r#"service "acl-svc" { policy = "write" }"#, "register"),
        (r#"service "acl-other" { policy = "read" }"#, "watch"),
        (r#"node_prefix "" { policy = "read" }"#, "watch"),
        (r#"session_prefix "" { policy = "write" }"#, "session"),
        (r#"key "shop/acl-test/lock" { policy = "write" }"#, "lock"),
    ];
    let all = service_rules(Some(SERVICE), &[OTHER], Some(KEY));
    assert_eq!(
        cases.map(|(rule, _)| rule).join("\n"),
        all,
        "the table covers every rule"
    );

    for (step, result) in steps(&agent, port, "all", &all).await {
        assert!(result.is_ok(), "with every rule, {step}: {result:?}");
    }
    for (n, (missing, failing)) in cases.into_iter().enumerate() {
        let rules: Vec<&str> = all.lines().filter(|l| *l != missing).collect();
        let outcome = steps(&agent, port, &format!("without-{n}"), &rules.join("\n")).await;
        for (step, result) in outcome {
            match result {
                Ok(()) => assert_ne!(step, failing, "without `{missing}`, {step} worked"),
                Err(e) => {
                    assert_eq!(step, failing, "without `{missing}`, {step} failed: {e}");
                    match e {
                        ConsulError::Denied { token_sent: true, .. } => {
                            assert_ne!(step, "watch", "without `{missing}`: {e}")
                        }
                        ConsulError::Filtered { rule, .. } => {
                            assert_eq!(rule, missing, "the error names the missing rule")
                        }
                        e => panic!("without `{missing}`, {step}: {e:?}"),
                    }
                }
            }
        }
    }
}
