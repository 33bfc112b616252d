//! Hostile timing: a ship racing a cancel of the same order, two cancels at once, and `kill -9`
//! of the order service in the middle of a burst of ships and cancels. After each, the order
//! service and the product service agree on every order (shipped: units committed; cancelled:
//! units back), and for every product stock + held = units set by admins.

use std::time::Duration;

use shop_proto::order::v1 as pb;
use tonic::Code;

use crate::support::*;

const PRODUCTS: usize = 5;
const STOCK: i64 = 100;

/// `n` paid orders of one unit each, spread over the products, placed by the customer whose
/// token this is and marked paid by an admin (a customer pays through StartPayment, which
/// these races do not need); returns their ids.
async fn paid_orders(s: &Stack, token: &str, products: &[i64], n: usize) -> Vec<i64> {
    let admin = s.admin().await;
    let mut orders = s.orders().await;
    let mut ids = Vec::new();
    for i in 0..n {
        let product = products[i % products.len()];
        let id = orders
            .create_order(order_req(&[(product, 1)], token, None))
            .await
            .unwrap()
            .into_inner()
            .id;
        orders
            .update_order_status(status_req(id, "paid", &admin))
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn products(s: &Stack) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..PRODUCTS {
        ids.push(s.product(&format!("Racer {i}"), 500, STOCK).await);
    }
    ids
}

/// Every order either shipped with its units committed or cancelled with its units back, and
/// the inventory balanced.
async fn assert_agreement(s: &Stack, products: &[i64]) {
    s.wait_settled().await;
    let disagreements = s.disagreements();
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    for p in products {
        assert_eq!(
            s.stock(*p).await + s.held_by_orders(*p),
            STOCK,
            "product {p}: stock + held = set"
        );
    }
    let (balanced, report) = s.product_audit();
    assert!(balanced, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ship_racing_a_cancel_loses_no_stock() {
    let s = Stack::start("race-ship-cancel");
    let products = products(&s).await;
    let (_, customer) = s.customer("racer").await;
    let admin = s.admin().await;
    let ids = paid_orders(&s, &customer, &products, 50).await;

    let orders = s.orders().await;
    let mut pairs = Vec::new();
    for (i, id) in ids.iter().copied().enumerate() {
        let (mut shipper, mut canceller) = (orders.clone(), orders.clone());
        let (admin, customer) = (admin.clone(), customer.clone());
        let (ship_after, cancel_after) = (jitter(i, 0), jitter(i, 1));
        let ship = tokio::spawn(async move {
            tokio::time::sleep(ship_after).await;
            shipper
                .update_order_status(status_req(id, "shipped", &admin))
                .await
        });
        let cancel = tokio::spawn(async move {
            tokio::time::sleep(cancel_after).await;
            canceller
                .cancel_order(with_token(pb::CancelOrderRequest { id }, &customer))
                .await
        });
        pairs.push((id, ship, cancel));
    }
    let (mut shipped, mut cancelled) = (0, 0);
    for (id, ship, cancel) in pairs {
        let (ship, cancel) = (ship.await.unwrap(), cancel.await.unwrap());
        // Exactly one of the two wins; the other is told the order moved.
        match (&ship, &cancel) {
            (Ok(_), Err(st)) => {
                assert_eq!(st.code(), Code::FailedPrecondition, "order {id}: {st:?}");
                shipped += 1;
            }
            (Err(st), Ok(_)) => {
                assert_eq!(st.code(), Code::FailedPrecondition, "order {id}: {st:?}");
                cancelled += 1;
            }
            other => panic!("order {id}: ship and cancel both {other:?}"),
        }
    }
    assert_eq!(shipped + cancelled, 50);
    assert_agreement(&s, &products).await;
    eprintln!("ship/cancel races: {shipped} shipped, {cancelled} cancelled; stock agrees");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cancels_return_the_units_once() {
    let s = Stack::start("race-cancel-cancel");
    let products = products(&s).await;
    let (_, customer) = s.customer("doubler").await;
    let admin = s.admin().await;
    let ids = paid_orders(&s, &customer, &products, 30).await;

    let orders = s.orders().await;
    let mut calls = Vec::new();
    for (i, id) in ids.iter().copied().enumerate() {
        // The owner twice and an admin once, each after its own jitter.
        for (k, token) in [&customer, &customer, &admin].into_iter().enumerate() {
            let mut o = orders.clone();
            let (token, after) = (token.clone(), jitter(i, k));
            calls.push(tokio::spawn(async move {
                tokio::time::sleep(after).await;
                o.cancel_order(with_token(pb::CancelOrderRequest { id }, &token))
                    .await
                    .map(|r| r.into_inner().status)
            }));
        }
    }
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), "cancelled");
    }
    assert_agreement(&s, &products).await;
    for p in &products {
        assert_eq!(s.stock(*p).await, STOCK, "every unit came back, once");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_ships_and_cancels_leaves_nothing_apart() {
    let mut s = Stack::start("race-kill");
    let products = products(&s).await;
    let (_, customer) = s.customer("crasher").await;
    let admin = s.admin().await;
    let ids = paid_orders(&s, &customer, &products, 120).await;

    let orders = s.orders().await;
    let mut calls = Vec::new();
    for (i, id) in ids.iter().copied().enumerate() {
        let mut o = orders.clone();
        let (admin, customer) = (admin.clone(), customer.clone());
        calls.push(tokio::spawn(async move {
            // Spread over about a second, so the kill lands in the middle.
            tokio::time::sleep(Duration::from_millis(8 * i as u64)).await;
            if i % 2 == 0 {
                o.update_order_status(status_req(id, "shipped", &admin))
                    .await
                    .map(|_| ())
            } else {
                o.cancel_order(with_token(pb::CancelOrderRequest { id }, &customer))
                    .await
                    .map(|_| ())
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    s.order.kill9();
    let mut failed = 0;
    for c in calls {
        if c.await.unwrap().is_err() {
            failed += 1;
        }
    }
    assert!(
        failed > 0 && failed < 120,
        "the kill landed mid-burst ({failed} failed)"
    );
    s.order = s.order_launch.start();
    assert_agreement(&s, &products).await;
    eprintln!("kill -9 mid-burst: {failed} of 120 calls failed; every order agrees");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_that_finds_the_units_sold_is_not_counted_as_a_return() {
    let s = Stack::start("race-diverged");
    let products = products(&s).await;
    let (_, customer) = s.customer("oddball").await;
    let ids = paid_orders(&s, &customer, &products, 1).await;
    let id = ids[0];
    // The product side sold the units behind the order's back (what the old ship path could
    // leave behind): the cancel must not say the stock came back.
    s.products()
        .await
        .commit_reservation(with_token(
            shop_proto::product::v1::CommitReservationRequest { order_id: id },
            &s.service_token(),
        ))
        .await
        .unwrap();
    let before = s.stock(products[0]).await;
    let cancelled = s
        .orders()
        .await
        .cancel_order(with_token(pb::CancelOrderRequest { id }, &customer))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, "cancelled");
    assert_eq!(s.stock(products[0]).await, before, "no unit came back");
    assert_eq!(s.settlement(id), "diverged");
    assert!(
        s.order.logs().contains("in the opposite state"),
        "logged for an operator"
    );
    let (balanced, report) = s.product_audit();
    assert!(balanced, "the product side still balances: {report}");
}

/// A few milliseconds, different for each (order, caller) pair and each run.
fn jitter(i: usize, k: usize) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(i * 4 + k);
    Duration::from_micros(h.finish() % 5_000)
}
