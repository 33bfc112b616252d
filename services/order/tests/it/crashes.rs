//! Crashes in the middle of bursts: every acknowledged order survives, nothing stays half-done
//! after recovery, and for every product stock + units held by live orders = starting stock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shop_proto::order::v1 as pb;
use tonic::Code;

use crate::support::*;

const START: i64 = 1_000;

/// Eight workers each place `per_worker` orders one after another (so creates keep coming
/// whenever a crash lands); returns the workers' outcomes and the acknowledged (id, quantity).
async fn burst(
    s: &Stack,
    product: i64,
    per_worker: usize,
) -> (
    Vec<tokio::task::JoinHandle<Vec<tonic::Status>>>,
    Arc<Mutex<Vec<(i64, i64)>>>,
) {
    let mut customers = Vec::new();
    for i in 0..4 {
        customers.push(s.customer(&format!("customer{i}")).await.1);
    }
    let acked = Arc::new(Mutex::new(Vec::new()));
    let orders = s.orders().await;
    let mut workers = Vec::new();
    for w in 0..8 {
        let mut o = orders.clone();
        let token = customers[w % customers.len()].clone();
        let acked = Arc::clone(&acked);
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for i in 0..per_worker {
                let quantity = 1 + (i as i64 % 3);
                let key = format!("burst-{w}-{i}");
                match o
                    .create_order(order_req(&[(product, quantity)], &token, Some(&key)))
                    .await
                {
                    Ok(order) => acked.lock().unwrap().push((order.into_inner().id, quantity)),
                    Err(st) => errors.push(st),
                }
            }
            errors
        }));
    }
    (workers, acked)
}

async fn wait_acked(acked: &Arc<Mutex<Vec<(i64, i64)>>>, n: usize) {
    let started = Instant::now();
    while acked.lock().unwrap().len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {} acknowledged",
            acked.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until recovery has nothing left to do: no order reserving, every order's units where
/// its status says.
async fn wait_recovered(s: &Stack) {
    s.wait_settled().await;
    assert_eq!(s.count_status("reserving"), 0);
    let apart = s.disagreements();
    assert!(apart.is_empty(), "{apart:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_order_service_loses_no_acknowledged_order() {
    let mut s = Stack::start("crash-order");
    let a = s.product("Widget", 1_000, START).await;
    let (workers, acked) = burst(&s, a, 40).await;
    wait_acked(&acked, 25).await;
    s.order.kill9();
    let mut failed = 0;
    for w in workers {
        failed += w.await.unwrap().len();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        failed > 0 && acked.len() < 320,
        "the kill landed mid-burst ({} acknowledged)",
        acked.len()
    );

    s.order = s.order_launch.start();
    wait_recovered(&s).await;
    let admin = s.admin().await;
    let mut orders = s.orders().await;
    for (id, quantity) in &acked {
        let o = orders
            .get_order(with_token(pb::GetOrderRequest { id: *id }, &admin))
            .await
            .unwrap_or_else(|st| panic!("acknowledged order {id} is gone: {st:?}"))
            .into_inner();
        assert_eq!((o.status.as_str(), o.items[0].quantity), ("pending", *quantity));
    }
    assert_eq!(
        s.stock(a).await + s.held_by_orders(a),
        START,
        "stock + held by live orders = starting stock"
    );
    let (balanced, report) = s.product_audit();
    assert!(balanced, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_product_service_gives_unavailable_not_hangs() {
    let mut s = Stack::start("crash-product");
    let a = s.product("Gadget", 1_000, START).await;
    let (workers, acked) = burst(&s, a, 25).await;
    wait_acked(&acked, 20).await;
    s.product.kill9();
    let started = Instant::now();
    let mut unavailable = 0;
    for w in workers {
        for st in w.await.unwrap() {
            assert_eq!(
                st.code(),
                Code::Unavailable,
                "a caller got {st:?}; expected success or UNAVAILABLE"
            );
            unavailable += 1;
        }
    }
    // Every call ends within its deadlines (1 s per upstream call here), never hanging.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "callers waited {:?}",
        started.elapsed()
    );
    assert!(unavailable > 0, "some creates met the dead product service");
    let acked = acked.lock().unwrap().clone();

    // The product service comes back; recovery returns whatever interrupted orders held.
    s.product = s.product_launch.start();
    s.wait_healthy("product-service", 1);
    wait_recovered(&s).await;
    let admin = s.admin().await;
    let mut orders = s.orders().await;
    for (id, _) in &acked {
        let o = orders
            .get_order(with_token(pb::GetOrderRequest { id: *id }, &admin))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(o.status, "pending");
    }
    assert_eq!(s.stock(a).await + s.held_by_orders(a), START);
    let (balanced, report) = s.product_audit();
    assert!(balanced, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_that_failed_for_want_of_the_product_service_gives_its_key_back() {
    let mut s = Stack::start("crash-key-back");
    let a = s.product("Kettle", 1_000, START).await;
    let (_, alice) = s.customer("alice").await;
    let mut orders = s.orders().await;
    s.product.kill9();
    let first = orders
        .create_order(order_req(&[(a, 2)], &alice, Some("key-1")))
        .await
        .unwrap_err();
    assert_eq!(first.code(), Code::Unavailable, "{first:?}");

    s.product = s.product_launch.start();
    s.wait_healthy("product-service", 1);
    // The retry with the same key is served anew, not answered with the failure. The restarted
    // instance has a new port, which reaches the order service through its Consul watch a
    // moment after the test sees it: until then the client retries UNAVAILABLE, as any would.
    let started = Instant::now();
    let retried = loop {
        match orders
            .create_order(order_req(&[(a, 2)], &alice, Some("key-1")))
            .await
        {
            Err(e) if e.code() == Code::Unavailable && started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => break answer.unwrap().into_inner(),
        }
    };
    assert_eq!(retried.status, "pending");
    let again = orders
        .create_order(order_req(&[(a, 2)], &alice, Some("key-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, retried.id, "from now on the key names this order");
    wait_recovered(&s).await;
    assert_eq!(s.stock(a).await, START - 2, "reserved once");
    let (balanced, report) = s.product_audit();
    assert!(balanced, "{report}");
}
