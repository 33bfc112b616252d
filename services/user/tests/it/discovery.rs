//! The user service in Consul: it registers on start with a gRPC health check, leaves at once on
//! a graceful stop, drops out of the healthy set soon after a `kill -9`, and several instances
//! behind one balancer share the calls and survive losing one.

use std::time::{Duration, Instant};

use shop_discovery::watch::{self, WatchConfig};
use shop_discovery::{Balancer, ConsulClient, Policy};
use shop_proto::user::v1 as pb;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_testkit::consul::ConsulAgent;
use shop_testkit::{Launch, Process, Scratch};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_user-service");

fn instance(scratch: &Scratch, agent: &ConsulAgent, name: &str) -> Launch {
    agent.service(BIN, name, scratch)
}

fn id_of(p: &Process) -> String {
    format!("user-service-127.0.0.1-{}", p.addr().port())
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn instances_register_leave_gracefully_and_drop_out_when_killed() {
    let scratch = Scratch::new("consul-user");
    let agent = ConsulAgent::start(scratch.path());
    let mut graceful = instance(&scratch, &agent, "graceful").start();
    let mut crashed = instance(&scratch, &agent, "crashed").start();
    let (g, c) = (id_of(&graceful), id_of(&crashed));
    wait_for("both healthy", Duration::from_secs(5), || {
        let ids = agent.passing_ids("user-service");
        ids.contains(&g) && ids.contains(&c)
    });
    assert!(graceful.logs().contains("registered with Consul"));

    // Graceful: gone from the agent by the time the process has exited.
    let status = graceful.terminate();
    assert!(status.success());
    assert!(
        !agent.agent_service_ids().contains(&g),
        "deregistered before exit"
    );
    assert!(graceful.logs().contains("deregistered from Consul"));

    // Crash: still registered, but out of the healthy set once its check fails (1 s interval).
    crashed.kill9();
    wait_for(
        "the killed instance fails its check",
        Duration::from_secs(5),
        || !agent.passing_ids("user-service").contains(&c),
    );
    assert!(
        agent.agent_service_ids().contains(&c),
        "Consul reaps it only after a minute"
    );
}

/// Calls served per instance: the log lines of finished GetUser calls.
fn served(p: &Process) -> usize {
    p.logs()
        .lines()
        .filter(|l| l.contains("/shop.user.v1.UserService/GetUser") && l.contains("call done"))
        .count()
}

async fn call(balancer: &Balancer) -> Result<(), shop_discovery::CallError> {
    // GetUser without a token: cheap, and answered (UNAUTHENTICATED) by whichever instance got it.
    let answer = balancer
        .call(Duration::from_secs(2), |channel, left| async move {
            let mut req = tonic::Request::new(pb::GetUserRequest { id: 1 });
            req.set_timeout(left);
            UserServiceClient::new(channel).get_user(req).await.map(|_| ())
        })
        .await;
    match answer {
        Err(shop_discovery::CallError::Answered(s)) if s.code() == Code::Unauthenticated => Ok(()),
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_share_the_calls_and_survive_losing_one() {
    let scratch = Scratch::new("balance");
    let agent = ConsulAgent::start(scratch.path());
    let mut procs: Vec<Process> = (0..3)
        .map(|i| instance(&scratch, &agent, &format!("user-{i}")).start())
        .collect();

    let mut cfg = WatchConfig::new("user-service");
    cfg.wait = Duration::from_secs(2);
    cfg.backoff_max = Duration::from_millis(500);
    let mut rx = watch::consul(ConsulClient::new(&agent.url(), None).unwrap(), cfg);
    let started = Instant::now();
    while rx.borrow_and_update().endpoints.len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "three instances in Consul"
        );
        let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
    }
    let balancer = Balancer::new("user-service", Policy::PowerOfTwo, rx);

    for _ in 0..300 {
        call(&balancer).await.expect("every call is served");
    }
    let counts: Vec<usize> = procs.iter().map(served).collect();
    assert_eq!(counts.iter().sum::<usize>(), 300, "{counts:?}");
    for c in &counts {
        assert!(
            (60..=135).contains(c),
            "each instance takes 20-45% of 300: {counts:?}"
        );
    }

    // A second stream; one instance dies a third of the way in.
    for i in 0..300 {
        if i == 100 {
            procs[0].kill9();
            // Give the client a moment to see the connection close (a crash resets it); a call
            // already on the wire when a server dies cannot be safely retried by anyone.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        call(&balancer)
            .await
            .unwrap_or_else(|s| panic!("call {i} lost: {s:?}"));
    }
    let after: Vec<usize> = procs.iter().map(served).collect();
    let gained: Vec<usize> = after.iter().zip(&counts).map(|(a, b)| a - b).collect();
    // The killed instance's last lines may die with it (its log writer runs a few ms behind),
    // so its own count is a lower bound; the survivors' is exact.
    assert!(gained.iter().sum::<usize>() <= 300, "{gained:?}");
    assert!(
        gained[0] <= 70,
        "the dead instance served only before it died: {gained:?}"
    );
    assert!(
        gained[1] + gained[2] >= 200,
        "every call after the death went to a survivor: {gained:?}"
    );
    assert!(
        gained[1] >= 100 && gained[2] >= 100,
        "the survivors took its share: {gained:?}"
    );
    // The balancer followed Consul: the dead instance is out of its list.
    let started = Instant::now();
    while balancer.instances().len() != 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the balancer still lists the dead instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
