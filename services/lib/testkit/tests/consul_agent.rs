//! The Consul harness against a real dev agent: register, see it passing, `kill -9`, restart on
//! the same ports, and find the registration gone (a dev agent keeps nothing). With ACLs on:
//! default-deny for anyone without a token, the master token and made tokens allowed, and the
//! same master token after a restart.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use shop_testkit::Scratch;
use shop_testkit::consul::{ConsulAgent, http_get, http_put, service_rules};

#[test]
fn a_dev_agent_registers_forgets_on_kill9_and_restarts_on_the_same_ports() {
    let scratch = Scratch::new("consul-agent");
    let mut agent = ConsulAgent::start(scratch.path());
    assert!(agent.leader().is_some());
    assert_eq!(agent.url(), format!("http://{}", agent.addr()));
    assert!(agent.agent_service_ids().is_empty());

    let registration = r#"{"ID":"t1","Name":"probe","Port":1234,"Check":{"TTL":"30s","Status":"passing"}}"#;
    let (status, body) =
        http_put(&agent.addr(), "/v1/agent/service/register", registration).expect("the agent answers");
    assert_eq!(status, 200, "register: {body}");
    assert_eq!(agent.agent_service_ids(), ["t1"]);
    // The agent syncs its services into the catalog right away, but not within this call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while agent.passing_ids("probe").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(agent.passing_ids("probe"), ["t1"]);
    assert!(agent.passing_ids("no-such-service").is_empty());

    let ports = agent.ports();
    let old_pid = agent.pid();
    agent.kill9();
    assert_eq!(agent.pid(), 0);
    assert!(agent.leader().is_none(), "a killed agent should not answer");

    agent.restart();
    assert_eq!(agent.ports(), ports);
    assert_ne!(agent.pid(), old_pid);
    assert!(agent.leader().is_some());
    assert!(agent.agent_service_ids().is_empty());
    assert!(agent.passing_ids("probe").is_empty());

    agent.stop();
    assert_eq!(agent.pid(), 0);
    assert!(agent.leader().is_none(), "a stopped agent should not answer");
}

#[test]
fn an_acl_agent_denies_by_default_and_honours_its_tokens_across_a_restart() {
    let scratch = Scratch::new("consul-agent-acl");
    let (mut agent, master) = ConsulAgent::start_with_acl(scratch.path());
    assert_eq!(agent.master_token(), Some(master.as_str()));
    let registration = r#"{"ID":"t1","Name":"probe","Port":1234,"Check":{"TTL":"30s","Status":"passing"}}"#;
    let addr = agent.addr();
    let register = |token: &str| {
        shop_testkit::http::request(
            &addr,
            "PUT",
            "/v1/agent/service/register",
            &[("X-Consul-Token", token)],
            Some(registration.as_bytes()),
        )
        .expect("the agent answers")
        .status
    };

    // Default deny: no token may not register, nor read the agent's services.
    let (status, body) =
        http_put(&agent.addr(), "/v1/agent/service/register", registration).expect("the agent answers");
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        http_get(&agent.addr(), "/v1/agent/services").map(|(s, b)| (s, b.trim().to_owned())),
        Some((200, "{}".to_owned())),
        "anonymous reads are filtered"
    );
    // A token made from the rules registers; one for another service does not.
    let probe = agent.create_token("probe", &service_rules(Some("probe"), &[], None));
    let other = agent.create_token("other", &service_rules(Some("other"), &[], None));
    assert_eq!(register(&other), 403);
    assert_eq!(register(&probe), 200);
    // The agent's own helpers read with the master token.
    assert_eq!(agent.agent_service_ids(), ["t1"]);

    // A dev agent forgets its tokens on restart, but keeps the master token of its config.
    agent.restart();
    assert_eq!(register(&probe), 403, "made tokens are gone");
    assert_eq!(register(&master), 200);
    assert_eq!(agent.agent_service_ids(), ["t1"]);
}
