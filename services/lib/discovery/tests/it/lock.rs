//! The session lock against a real `consul agent -dev`: one holder at a time; a holder whose
//! health check fails loses the lock and another instance takes it within seconds; a holder
//! that stops hands over at once.

use std::time::{Duration, Instant};

use shop_discovery::ConsulClient;
use shop_discovery::session::{self, Leadership, LockConfig};
use shop_testkit::Scratch;
use shop_testkit::consul::{ConsulAgent, http_put};

const KEY: &str = "shop/test/lock";

fn instance(agent: &ConsulAgent, id: &str) {
    let body = format!(
        r#"{{"ID":"{id}","Name":"locker","Port":1,"Check":{{"CheckID":"service:{id}","TTL":"60s","Status":"passing"}}}}"#
    );
    let (status, text) = http_put(&agent.addr(), "/v1/agent/service/register", &body).expect("agent answers");
    assert_eq!(status, 200, "{text}");
}

fn check(agent: &ConsulAgent, id: &str, state: &str) {
    let (status, text) = http_put(
        &agent.addr(),
        &format!("/v1/agent/check/{state}/service:{id}"),
        "",
    )
    .expect("agent answers");
    assert_eq!(status, 200, "{text}");
}

pub(crate) async fn until_held(l: &Leadership, want: bool, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    let mut held = l.held.clone();
    while *held.borrow_and_update() != want {
        let left = within.saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "{what}: not {want} within {within:?}");
        let _ = tokio::time::timeout(left, held.changed()).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_holder_at_a_time_and_failover_when_the_holder_fails() {
    let scratch = Scratch::new("lock");
    let agent = ConsulAgent::start(scratch.path());
    let client = ConsulClient::new(&agent.url(), None).unwrap();
    instance(&agent, "a");
    instance(&agent, "b");

    let a = session::lead(client.clone(), LockConfig::for_instance(KEY, "a"));
    until_held(&a, true, Duration::from_secs(5), "a").await;
    let b = session::lead(client.clone(), LockConfig::for_instance(KEY, "b"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!*b.held.borrow(), "two holders at once");

    // a's health check fails (as after kill -9): its session ends, b takes over.
    check(&agent, "a", "fail");
    let took = until_held(&b, true, Duration::from_secs(10), "b after a failed").await;
    eprintln!("the lock moved to b {took:?} after a's check failed");
    until_held(&a, false, Duration::from_secs(10), "a after its check failed").await;

    // a comes back and waits; b stops and hands over at once.
    check(&agent, "a", "pass");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(*b.held.borrow() && !*a.held.borrow());
    let stopped = Instant::now();
    b.stop().await;
    until_held(&a, true, Duration::from_secs(10), "a after b stopped").await;
    eprintln!("the lock moved back to a {:?} after b stopped", stopped.elapsed());
    a.stop().await;
}
