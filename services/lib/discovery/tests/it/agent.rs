//! Registration and watching against a real `consul agent -dev` on free ports (the scenarios of
//! the Consul notes' test plan): instances added and removed, checks failing and recovering,
//! tag filters, the agent stopped and restarted, re-registration, graceful deregistration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shop_discovery::watch::{self, EndpointSet, Endpoints, WatchConfig};
use shop_discovery::{ConsulClient, Registrar, Registration};
use shop_testkit::Scratch;
use shop_testkit::consul::{ConsulAgent, http_put};

/// How long a change may take to show: Consul answers a blocking query within milliseconds of a
/// change; two seconds absorbs a loaded two-core CI machine.
pub(crate) const SOON: Duration = Duration::from_secs(2);

pub(crate) fn config(service: &str) -> WatchConfig {
    let mut c = WatchConfig::new(service);
    c.wait = Duration::from_secs(2);
    c.every = Duration::from_millis(100);
    c.backoff_base = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(500);
    c
}

/// Registers an instance with a TTL check that starts passing (its health is ours to set).
fn ttl_instance(agent: &ConsulAgent, id: &str, service: &str, port: u16, tags: &[&str]) {
    let tags: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
    let body = format!(
        r#"{{"ID":"{id}","Name":"{service}","Address":"","Port":{port},"Tags":[{}],"Check":{{"CheckID":"service:{id}","TTL":"30s","Status":"passing"}}}}"#,
        tags.join(",")
    );
    let (status, text) = http_put(&agent.addr(), "/v1/agent/service/register", &body).expect("agent answers");
    assert_eq!(status, 200, "{text}");
}

fn put(agent: &ConsulAgent, path: &str) {
    let (status, text) = http_put(&agent.addr(), path, "").expect("agent answers");
    assert_eq!(status, 200, "{path}: {text}");
}

pub(crate) fn ids(set: &EndpointSet) -> Vec<&str> {
    set.endpoints.iter().map(|e| e.id.as_str()).collect()
}

/// Waits until the published set satisfies `want`, or fails naming what it saw.
pub(crate) async fn until(
    rx: &mut Endpoints,
    within: Duration,
    what: &str,
    want: impl Fn(&EndpointSet) -> bool,
) -> Arc<EndpointSet> {
    let deadline = Instant::now() + within;
    loop {
        let now = rx.borrow_and_update().clone();
        if want(&now) {
            return now;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: not within {within:?}; last seen {now:?}"
        );
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_join_fail_recover_and_leave() {
    let scratch = Scratch::new("consul-watch");
    let agent = ConsulAgent::start(scratch.path());
    ttl_instance(&agent, "a", "svc", 7001, &["v1"]);
    let client = ConsulClient::new(&agent.url(), None).unwrap();
    let mut rx = watch::consul(client.clone(), config("svc"));

    let first = until(&mut rx, SOON, "initial {a}", |s| ids(s) == ["a"]).await;
    assert_eq!(first.epoch, 1);
    assert!(first.fresh);
    assert_eq!(
        first.endpoints[0].authority(),
        "127.0.0.1:7001",
        "no service address: the node's is used"
    );

    ttl_instance(&agent, "b", "svc", 7002, &["v2"]);
    let two = until(&mut rx, SOON, "b joins", |s| ids(s) == ["a", "b"]).await;
    assert_eq!(two.epoch, 2);

    put(&agent, "/v1/agent/check/fail/service:b");
    until(&mut rx, SOON, "b's check fails", |s| ids(s) == ["a"]).await;
    put(&agent, "/v1/agent/check/pass/service:b");
    until(&mut rx, SOON, "b recovers", |s| ids(s) == ["a", "b"]).await;

    // A watch filtered by tag sees only matching instances.
    let mut v1 = watch::consul(client.clone(), {
        let mut c = config("svc");
        c.tag = Some("v1".into());
        c
    });
    until(&mut v1, SOON, "tag v1", |s| ids(s) == ["a"]).await;

    put(&agent, "/v1/agent/service/deregister/b");
    let last = until(&mut rx, SOON, "b leaves", |s| ids(s) == ["a"]).await;

    // An idle watch does not churn: no new epoch over a few blocking rounds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(rx.borrow().epoch, last.epoch);

    put(&agent, "/v1/agent/service/deregister/a");
    let empty = until(&mut rx, SOON, "an answered empty set", |s| s.endpoints.is_empty()).await;
    assert!(empty.fresh);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_restart_is_survived_by_watchers_and_registrations() {
    let scratch = Scratch::new("consul-restart");
    let mut agent = ConsulAgent::start(scratch.path());
    ttl_instance(&agent, "a", "svc", 7001, &[]);
    let client = ConsulClient::new(&agent.url(), None).unwrap();
    let mut rx = watch::consul(client.clone(), config("svc"));
    until(&mut rx, SOON, "initial {a}", |s| ids(s) == ["a"]).await;

    let registration = Registration {
        id: "me-1".into(),
        name: "me".into(),
        address: "127.0.0.1".into(),
        port: 7100,
        tags: vec![],
        meta: [("version".to_owned(), "test".to_owned())].into(),
        grpc_check: "127.0.0.1:7100/nothing".into(),
        check_interval: Duration::from_secs(10),
        check_timeout: Duration::from_secs(1),
        deregister_after: Duration::from_secs(60),
    };
    let registrar = Registrar::start(client.clone(), registration, Duration::from_millis(500));
    let started = Instant::now();
    while !agent.agent_service_ids().contains(&"me-1".to_owned()) {
        assert!(started.elapsed() < SOON, "the registrar did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Consul goes away: the watcher keeps the last known set, marked stale.
    agent.kill9();
    let stale = until(
        &mut rx,
        Duration::from_secs(10),
        "stale while Consul is down",
        |s| !s.fresh,
    )
    .await;
    assert_eq!(ids(&stale), ["a"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ids(&rx.borrow()), ["a"], "still the last known set");

    // A dev agent restarts empty, with its index starting low again.
    agent.restart();
    let restarted = Instant::now();
    // Our registrar notices and registers again without any help.
    while !agent.agent_service_ids().contains(&"me-1".to_owned()) {
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "the registrar did not re-register"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Until a re-registers, Consul truthfully answers "no instance", and that is published.
    until(&mut rx, Duration::from_secs(10), "empty after the restart", |s| {
        s.fresh && s.endpoints.is_empty()
    })
    .await;
    ttl_instance(&agent, "a", "svc", 7001, &[]);
    // Within seconds, not the old index's full wait: the index was reset after the errors.
    until(&mut rx, Duration::from_secs(5), "a is back", |s| {
        s.fresh && ids(s) == ["a"]
    })
    .await;

    registrar.deregister().await;
    assert!(
        !agent.agent_service_ids().contains(&"me-1".to_owned()),
        "deregistered at once"
    );
}
