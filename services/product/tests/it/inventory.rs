//! Reservations: all or nothing, idempotent per order, never overselling, and balanced after a
//! crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shop_proto::product::v1 as pb;
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn reserve_release_and_commit_move_stock_exactly_once() {
    let h = Harness::start("reserve-basics");
    let mut c = h.client().await;
    let (admin, user) = (h.admin(), h.order_service());
    let a = create(&mut c, &admin, new_product("A", 100, 10, "")).await;
    let b = create(&mut c, &admin, new_product("B", 200, 5, "")).await;

    let first = c
        .reserve_stock(reserve_req(1, &[(a.id, 3), (b.id, 2)], &user))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    assert_eq!(
        (stock_of(&mut c, a.id).await, stock_of(&mut c, b.id).await),
        (7, 3)
    );

    // Same order again: the first answer, nothing more taken (lines in another order are the same).
    let again = c
        .reserve_stock(reserve_req(1, &[(b.id, 2), (a.id, 3)], &user))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.items, first.items);
    assert_eq!(
        (stock_of(&mut c, a.id).await, stock_of(&mut c, b.id).await),
        (7, 3)
    );
    assert_status(
        c.reserve_stock(reserve_req(1, &[(a.id, 4)], &user)).await,
        Code::FailedPrecondition,
        "different reservation",
    );

    let release = |order_id| with_token(pb::ReleaseStockRequest { order_id }, &user);
    let r = c.release_stock(release(1)).await.unwrap().into_inner();
    assert_eq!(r.outcome, "released");
    assert_eq!(r.items, lines(&[(a.id, 3), (b.id, 2)]));
    assert_eq!(
        (stock_of(&mut c, a.id).await, stock_of(&mut c, b.id).await),
        (10, 5)
    );
    let r = c.release_stock(release(1)).await.unwrap().into_inner();
    assert_eq!((r.outcome.as_str(), r.items.len()), ("already_released", 0));
    assert_eq!(
        stock_of(&mut c, a.id).await,
        10,
        "a second release returns nothing"
    );
    assert_status(
        c.reserve_stock(reserve_req(1, &[(a.id, 3), (b.id, 2)], &user))
            .await,
        Code::FailedPrecondition,
        "released",
    );

    // Releasing an order that never reserved says so, and fences off a late reserve for it.
    assert_eq!(
        c.release_stock(release(2)).await.unwrap().into_inner().outcome,
        "not_found"
    );
    assert_status(
        c.reserve_stock(reserve_req(2, &[(a.id, 1)], &user)).await,
        Code::FailedPrecondition,
        "released",
    );
    assert_eq!(stock_of(&mut c, a.id).await, 10);

    // Shipping commits: the units stay sold and can no longer come back.
    c.reserve_stock(reserve_req(3, &[(a.id, 4)], &user))
        .await
        .unwrap();
    let commit = |order_id| with_token(pb::CommitReservationRequest { order_id }, &user);
    assert_eq!(
        c.commit_reservation(commit(3))
            .await
            .unwrap()
            .into_inner()
            .outcome,
        "committed"
    );
    assert_eq!(
        c.commit_reservation(commit(3))
            .await
            .unwrap()
            .into_inner()
            .outcome,
        "already_committed"
    );
    assert_status(
        c.release_stock(release(3)).await,
        Code::FailedPrecondition,
        "committed",
    );
    assert_status(
        c.commit_reservation(commit(1)).await,
        Code::FailedPrecondition,
        "released",
    );
    assert_status(
        c.commit_reservation(commit(99)).await,
        Code::FailedPrecondition,
        "no reservation",
    );
    assert_eq!(stock_of(&mut c, a.id).await, 6);

    // Only shop services (and admins) touch the inventory; never a customer directly.
    assert_status(
        c.reserve_stock(reserve_req(4, &[(a.id, 1)], &h.customer())).await,
        Code::PermissionDenied,
        "only shop services",
    );
    assert_status(
        c.release_stock(with_token(pb::ReleaseStockRequest { order_id: 3 }, &h.customer()))
            .await,
        Code::PermissionDenied,
        "only shop services",
    );
    assert_status(
        c.reserve_stock(pb::ReserveStockRequest {
            order_id: 4,
            items: lines(&[(a.id, 1)]),
        })
        .await,
        Code::Unauthenticated,
        "no access token",
    );
    let (balanced, report) = h.audit();
    assert!(balanced, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_line_reserves_nothing_and_names_the_product() {
    let h = Harness::start("reserve-short");
    let mut c = h.client().await;
    let (admin, user) = (h.admin(), h.order_service());
    let plenty = create(&mut c, &admin, new_product("Plenty", 100, 100, "")).await;
    let scarce = create(&mut c, &admin, new_product("Scarce", 100, 2, "")).await;

    let s = c
        .reserve_stock(reserve_req(1, &[(plenty.id, 5), (scarce.id, 3)], &user))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(
        s.message().contains(&format!("product {}", scarce.id)) && s.message().contains("Scarce"),
        "{}",
        s.message()
    );
    assert!(
        s.message().contains("3 requested, 2 available"),
        "{}",
        s.message()
    );
    assert_eq!(
        (
            stock_of(&mut c, plenty.id).await,
            stock_of(&mut c, scarce.id).await
        ),
        (100, 2)
    );
    // The failed attempt left no reservation behind: the same order id can try again.
    c.reserve_stock(reserve_req(1, &[(plenty.id, 5), (scarce.id, 2)], &user))
        .await
        .unwrap();
    assert_eq!(stock_of(&mut c, scarce.id).await, 0);

    assert_status(
        c.reserve_stock(reserve_req(2, &[(plenty.id, 1), (777, 1)], &user))
            .await,
        Code::NotFound,
        "product 777",
    );
    assert_status(
        c.reserve_stock(reserve_req(3, &[], &user)).await,
        Code::InvalidArgument,
        "items",
    );
    assert_status(
        c.reserve_stock(reserve_req(3, &[(plenty.id, 0)], &user)).await,
        Code::InvalidArgument,
        "quantity",
    );
    assert_status(
        c.reserve_stock(reserve_req(3, &[(plenty.id, 1), (plenty.id, 1)], &user))
            .await,
        Code::InvalidArgument,
        "twice",
    );
    assert_status(
        c.reserve_stock(reserve_req(0, &[(plenty.id, 1)], &user)).await,
        Code::InvalidArgument,
        "order_id",
    );
    assert_eq!(stock_of(&mut c, plenty.id).await, 95);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_buyers_for_ten_units_sell_exactly_ten() {
    let h = Harness::start("reserve-race");
    let mut c = h.client().await;
    let product = create(&mut c, &h.admin(), new_product("Last ten", 100, 10, "")).await;
    let user = h.order_service();
    let mut tasks = Vec::new();
    for order_id in 1..=50 {
        let mut c = c.clone();
        let req = reserve_req(order_id, &[(product.id, 1)], &user);
        tasks.push(tokio::spawn(async move { c.reserve_stock(req).await }));
    }
    let (mut sold, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => sold += 1,
            Err(s) if s.code() == Code::FailedPrecondition => refused += 1,
            Err(s) => panic!("only 'not enough stock' may refuse a buyer, got {s:?}"),
        }
    }
    assert_eq!((sold, refused), (10, 40));
    assert_eq!(stock_of(&mut c, product.id).await, 0);
    assert!(
        !h.process.logs().contains("locked"),
        "no 'database is locked' anywhere"
    );
    let (balanced, report) = h.audit();
    assert!(balanced, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_repeats_of_one_order_move_stock_once() {
    let h = Harness::start("reserve-repeat");
    let mut c = h.client().await;
    let product = create(&mut c, &h.admin(), new_product("Once", 100, 50, "")).await;
    let user = h.order_service();

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut c = c.clone();
        let req = reserve_req(42, &[(product.id, 7)], &user);
        tasks.push(tokio::spawn(async move {
            c.reserve_stock(req).await.unwrap().into_inner().replayed
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        if !t.await.unwrap() {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one call took the units");
    assert_eq!(stock_of(&mut c, product.id).await, 43);

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut c = c.clone();
        let req = with_token(pb::ReleaseStockRequest { order_id: 42 }, &user);
        tasks.push(tokio::spawn(async move {
            c.release_stock(req).await.unwrap().into_inner().outcome
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "released").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(outcomes.iter().filter(|o| *o == "already_released").count(), 19);
    assert_eq!(stock_of(&mut c, product.id).await, 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_burst_leaves_stock_balanced_and_keeps_acknowledged_reservations() {
    let mut h = Harness::start("reserve-kill9");
    let mut c = h.client().await;
    let admin = h.admin();
    let a = create(&mut c, &admin, new_product("A", 100, 10_000, "")).await;
    let b = create(&mut c, &admin, new_product("B", 100, 5_000, "")).await;
    let user = h.order_service();

    // Far more calls than can finish in the moment between the 40th answer and the kill, so
    // the kill always lands mid-burst, however fast the machine.
    const BURST: i64 = 1_500;
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for order_id in 1..=BURST {
        let mut c = c.clone();
        let req = reserve_req(order_id, &[(a.id, 1 + order_id % 3), (b.id, 1)], &user);
        let (acknowledged, done) = (Arc::clone(&acknowledged), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            if c.reserve_stock(req).await.is_ok() {
                acknowledged.lock().unwrap().push(order_id);
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    // Crash in the middle of the burst.
    while done.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    h.process.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 40 && (acknowledged.len() as i64) < BURST,
        "{} acknowledged",
        acknowledged.len()
    );

    h.restart();
    let (balanced, report) = h.audit();
    assert!(
        balanced,
        "stock + reserved = set by admins after kill -9:\n{report}"
    );
    // Every acknowledged reservation survived: releasing it gives its units back.
    let mut c = h.client().await;
    for order_id in acknowledged {
        let r = c
            .release_stock(with_token(pb::ReleaseStockRequest { order_id }, &user))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.outcome, "released",
            "order {order_id} was acknowledged but lost"
        );
    }
    let (balanced, report) = h.audit();
    assert!(balanced, "{report}");
}
