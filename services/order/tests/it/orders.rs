//! Orders as a customer and an admin see them: priced by the shop, reserved stock, idempotent
//! retries, the status machine, ownership, and the last units under contention.

use shop_proto::order::v1 as pb;
use shop_proto::product::v1 as product;
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_shop_sets_the_prices_and_reserves_the_stock() {
    let s = Stack::start("order-pricing");
    let (a, b) = (
        s.product("Kettle", 1_999, 10).await,
        s.product("Mug", 500, 5).await,
    );
    let (_, alice) = s.customer("alice").await;
    let mut orders = s.orders().await;

    let order = orders
        .create_order(order_req(&[(a, 3), (b, 2)], &alice, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.status, "pending");
    assert_eq!(order.total_cents, 3 * 1_999 + 2 * 500);
    let lines: Vec<(i64, &str, i64, i64, i64)> = order
        .items
        .iter()
        .map(|i| {
            (
                i.product_id,
                i.product_name.as_str(),
                i.unit_price_cents,
                i.quantity,
                i.line_total_cents,
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![(a, "Kettle", 1_999, 3, 5_997), (b, "Mug", 500, 2, 1_000)]
    );
    assert_eq!(
        order
            .history
            .iter()
            .map(|h| h.status.as_str())
            .collect::<Vec<_>>(),
        vec!["pending"]
    );
    assert_eq!((s.stock(a).await, s.stock(b).await), (7, 3));

    // A later price change does not touch the order's copy.
    let admin = s.admin().await;
    s.products()
        .await
        .update_product(with_token(
            product::UpdateProductRequest {
                id: a,
                price_cents: Some(2_999),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();
    let again = orders
        .get_order(with_token(pb::GetOrderRequest { id: order.id }, &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.items[0].unit_price_cents, again.total_cents),
        (1_999, order.total_cents)
    );

    // Refusals name what is wrong and hold nothing.
    assert_status(
        orders
            .create_order(order_req(&[(a, 1), (b, 4)], &alice, None))
            .await,
        Code::FailedPrecondition,
        "Mug",
    );
    assert_status(
        orders
            .create_order(order_req(&[(a, 1), (9_999, 1)], &alice, None))
            .await,
        Code::NotFound,
        "product 9999",
    );
    assert_status(
        orders.create_order(order_req(&[(a, 0)], &alice, None)).await,
        Code::InvalidArgument,
        "quantity",
    );
    assert_status(
        orders.create_order(order_req(&[(a, 1000)], &alice, None)).await,
        Code::InvalidArgument,
        "quantity",
    );
    assert_status(
        orders
            .create_order(order_req(&[(a, 1), (a, 1)], &alice, None))
            .await,
        Code::InvalidArgument,
        "twice",
    );
    assert_status(
        orders.create_order(order_req(&[], &alice, None)).await,
        Code::InvalidArgument,
        "items",
    );
    let many: Vec<(i64, i64)> = (1..=51).map(|i| (i, 1)).collect();
    assert_status(
        orders.create_order(order_req(&many, &alice, None)).await,
        Code::InvalidArgument,
        "items",
    );
    let mut no_address = order_req(&[(a, 1)], &alice, None);
    no_address.get_mut().shipping_address = "  ".to_owned();
    assert_status(
        orders.create_order(no_address).await,
        Code::InvalidArgument,
        "shipping_address",
    );
    assert_status(
        orders
            .create_order(order_req(&[(a, 1)], "not-a-token", None))
            .await,
        Code::Unauthenticated,
        "not valid",
    );
    assert_eq!(
        (s.stock(a).await, s.stock(b).await),
        (7, 3),
        "refused orders hold nothing"
    );

    // Only the acknowledged order is listed; refused attempts never show.
    let (alice_id, _) = (order.user_id, ());
    let list = orders
        .list_user_orders(with_token(
            pb::ListUserOrdersRequest {
                user_id: alice_id,
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (list.total, list.orders.len(), list.page, list.page_size),
        (1, 1, 1, 10)
    );
    // The out-of-stock attempt got as far as a reservation and is kept internally as failed; the
    // others were refused before anything was written.
    assert_eq!(s.count_status("failed"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_create_with_the_same_key_reserves_once() {
    let s = Stack::start("order-idempotency");
    let a = s.product("Lamp", 2_500, 10).await;
    let (_, alice) = s.customer("alice").await;
    let (_, bob) = s.customer("bob").await;
    let mut orders = s.orders().await;

    let first = orders
        .create_order(order_req(&[(a, 2)], &alice, Some("key-1")))
        .await
        .unwrap()
        .into_inner();
    let again = orders
        .create_order(order_req(&[(a, 2)], &alice, Some("key-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, first.id);
    assert_eq!(s.stock(a).await, 8, "reserved once");
    assert_status(
        orders
            .create_order(order_req(&[(a, 3)], &alice, Some("key-1")))
            .await,
        Code::FailedPrecondition,
        "different order",
    );
    // Keys belong to a user: bob's "key-1" is his own.
    let bobs = orders
        .create_order(order_req(&[(a, 2)], &bob, Some("key-1")))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(bobs.id, first.id);
    assert_eq!(s.stock(a).await, 6);

    // Concurrent retries of one request: one order.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut o = orders.clone();
        let req = order_req(&[(a, 1)], &alice, Some("key-2"));
        tasks.push(tokio::spawn(async move { o.create_order(req).await }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => {
                ids.insert(o.into_inner().id);
            }
            Err(st) => assert_eq!(
                st.code(),
                Code::Aborted,
                "in progress while the first runs: {st:?}"
            ),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(s.stock(a).await, 5);
    assert_status(
        orders
            .create_order(order_req(&[(a, 1)], &alice, Some(&"k".repeat(256))))
            .await,
        Code::InvalidArgument,
        "idempotency-key",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_machine_and_cancelling_exactly_once() {
    let s = Stack::start("order-status");
    let a = s.product("Chair", 10_000, 20).await;
    let (alice_id, alice) = s.customer("alice").await;
    let admin = s.admin().await;
    let mut orders = s.orders().await;
    let o = orders
        .create_order(order_req(&[(a, 2)], &alice, None))
        .await
        .unwrap()
        .into_inner();

    assert_status(
        orders
            .update_order_status(status_req(o.id, "shipped", &admin))
            .await,
        Code::FailedPrecondition,
        "from pending to shipped",
    );
    assert_status(
        orders
            .update_order_status(status_req(o.id, "delivered", &admin))
            .await,
        Code::FailedPrecondition,
        "from pending to delivered",
    );
    assert_status(
        orders
            .update_order_status(status_req(o.id, "pending", &alice))
            .await,
        Code::FailedPrecondition,
        "from pending to pending",
    );
    assert_status(
        orders
            .update_order_status(status_req(o.id, "refunded", &alice))
            .await,
        Code::InvalidArgument,
        "status",
    );
    // The owner pays through a payment, never by setting the status; an admin may mark it
    // paid by hand, and the history names the admin.
    assert_status(
        orders.update_order_status(status_req(o.id, "paid", &alice)).await,
        Code::PermissionDenied,
        &format!("order {} is paid by starting a payment", o.id),
    );
    let paid = orders
        .update_order_status(status_req(o.id, "paid", &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, "paid");
    let by_hand = paid.history.last().unwrap();
    assert_eq!(by_hand.status, "paid");
    assert!(
        by_hand.changed_by != 0 && by_hand.changed_by != alice_id,
        "marked paid by the admin: {by_hand:?}"
    );
    assert_status(
        orders
            .update_order_status(status_req(o.id, "shipped", &alice))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    let shipped = orders
        .update_order_status(status_req(o.id, "shipped", &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shipped.status, "shipped");
    assert_status(
        orders
            .cancel_order(with_token(pb::CancelOrderRequest { id: o.id }, &alice))
            .await,
        Code::FailedPrecondition,
        "from shipped to cancelled",
    );
    let delivered = orders
        .update_order_status(status_req(o.id, "delivered", &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        delivered
            .history
            .iter()
            .map(|h| h.status.as_str())
            .collect::<Vec<_>>(),
        vec!["pending", "paid", "shipped", "delivered"]
    );
    assert!(delivered.updated_at.unwrap().seconds >= delivered.created_at.unwrap().seconds);
    assert_status(
        orders
            .update_order_status(status_req(o.id, "cancelled", &admin))
            .await,
        Code::FailedPrecondition,
        "from delivered",
    );
    assert_eq!(s.stock(a).await, 18, "a delivered order keeps its units sold");

    // Cancel twice, and ten at once: the units come back exactly once.
    let c1 = orders
        .create_order(order_req(&[(a, 3)], &alice, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.stock(a).await, 15);
    let cancelled = orders
        .cancel_order(with_token(pb::CancelOrderRequest { id: c1.id }, &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, "cancelled");
    let again = orders
        .cancel_order(with_token(pb::CancelOrderRequest { id: c1.id }, &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, "cancelled");
    assert_eq!(s.stock(a).await, 18);

    let c2 = orders
        .create_order(order_req(&[(a, 4)], &alice, None))
        .await
        .unwrap()
        .into_inner();
    let c2_paid = orders
        .update_order_status(status_req(c2.id, "paid", &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c2_paid.status, "paid");
    assert_eq!(s.stock(a).await, 14);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut o = orders.clone();
        let token = if i % 2 == 0 { alice.clone() } else { admin.clone() };
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                o.update_order_status(status_req(c2.id, "cancelled", &token))
                    .await
            } else {
                o.cancel_order(with_token(pb::CancelOrderRequest { id: c2.id }, &token))
                    .await
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().into_inner().status, "cancelled");
    }
    assert_eq!(s.stock(a).await, 18, "returned exactly once");
    let (balanced, report) = s.product_audit();
    assert!(balanced, "{report}");
    assert_eq!(s.stock(a).await + s.held_by_orders(a), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_see_only_their_own_orders_and_admins_see_all() {
    let s = Stack::start("order-ownership");
    let a = s.product("Pen", 100, 100).await;
    let (alice_id, alice) = s.customer("alice").await;
    let (bob_id, bob) = s.customer("bob").await;
    let admin = s.admin().await;
    let mut orders = s.orders().await;
    let mine = orders
        .create_order(order_req(&[(a, 1)], &alice, None))
        .await
        .unwrap()
        .into_inner();

    assert_status(
        orders
            .get_order(with_token(pb::GetOrderRequest { id: mine.id }, &bob))
            .await,
        Code::NotFound,
        "not found",
    );
    let list = |user_id, token: &str| {
        with_token(
            pb::ListUserOrdersRequest {
                user_id,
                ..Default::default()
            },
            token,
        )
    };
    assert_status(
        orders.list_user_orders(list(alice_id, &bob)).await,
        Code::PermissionDenied,
        "your own",
    );
    assert_status(
        orders
            .cancel_order(with_token(pb::CancelOrderRequest { id: mine.id }, &bob))
            .await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        orders
            .update_order_status(status_req(mine.id, "paid", &bob))
            .await,
        Code::NotFound,
        "not found",
    );
    // Someone else's order and a missing one look the same to a customer.
    let missing = orders
        .get_order(with_token(pb::GetOrderRequest { id: 424_242 }, &bob))
        .await
        .unwrap_err();
    let theirs = orders
        .get_order(with_token(pb::GetOrderRequest { id: mine.id }, &bob))
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code(), missing.message().replace("424242", "N")),
        (theirs.code(), theirs.message().replace(&mine.id.to_string(), "N"))
    );
    assert_eq!(
        orders
            .get_order(with_token(pb::GetOrderRequest { id: mine.id }, &admin))
            .await
            .unwrap()
            .into_inner()
            .id,
        mine.id
    );
    assert_eq!(
        orders
            .list_user_orders(list(alice_id, &admin))
            .await
            .unwrap()
            .into_inner()
            .total,
        1
    );
    assert_status(
        orders
            .get_order(with_token(pb::GetOrderRequest { id: 424_242 }, &admin))
            .await,
        Code::NotFound,
        "424242",
    );

    // Ordering for someone else: refused for a customer, allowed for an admin.
    let mut for_bob = order_req(&[(a, 1)], &alice, None);
    for_bob.get_mut().user_id = bob_id;
    assert_status(
        orders.create_order(for_bob).await,
        Code::PermissionDenied,
        "yourself",
    );
    let mut by_admin = order_req(&[(a, 2)], &admin, None);
    by_admin.get_mut().user_id = bob_id;
    let placed = orders.create_order(by_admin).await.unwrap().into_inner();
    assert_eq!(placed.user_id, bob_id);
    let bobs = orders
        .list_user_orders(list(bob_id, &bob))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((bobs.total, bobs.orders[0].id), (1, placed.id));

    // A customer holds at most 10 unpaid orders (orders.max_unpaid); a paid one no longer
    // counts.
    for _ in 0..9 {
        orders
            .create_order(order_req(&[(a, 1)], &alice, None))
            .await
            .unwrap();
    }
    assert_status(
        orders.create_order(order_req(&[(a, 1)], &alice, None)).await,
        Code::FailedPrecondition,
        "10 unpaid orders",
    );
    orders
        .update_order_status(status_req(mine.id, "paid", &admin))
        .await
        .unwrap();
    orders
        .create_order(order_req(&[(a, 1)], &alice, None))
        .await
        .unwrap();

    // Paging and the status filter: 11 orders, 10 of them pending.
    let page3 = orders
        .list_user_orders(with_token(
            pb::ListUserOrdersRequest {
                user_id: alice_id,
                page: Some(3),
                page_size: Some(4),
                status: "pending".to_owned(),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page3.total, page3.orders.len()), (10, 2));
    assert!(page3.orders.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert!(page3.orders.iter().all(|o| o.status == "pending"));
    assert_eq!(
        orders
            .list_user_orders(list(alice_id, &alice))
            .await
            .unwrap()
            .into_inner()
            .total,
        11
    );
    assert_status(
        orders
            .list_user_orders(with_token(
                pb::ListUserOrdersRequest {
                    user_id: alice_id,
                    page_size: Some(101),
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        Code::InvalidArgument,
        "page_size",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_buyers_for_ten_units_buy_exactly_ten() {
    let s = Stack::start("order-race");
    let a = s.product("Limited", 9_900, 10).await;
    let mut buyers = Vec::new();
    for i in 0..100 {
        buyers.push(s.customer(&format!("buyer{i}")).await.1);
    }
    let orders = s.orders().await;
    let mut tasks = Vec::new();
    for token in buyers {
        let mut o = orders.clone();
        tasks.push(tokio::spawn(async move {
            o.create_order(order_req(&[(a, 1)], &token, None)).await
        }));
    }
    let (mut sold, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => sold += 1,
            Err(st) if st.code() == Code::FailedPrecondition => refused += 1,
            Err(st) => panic!("only 'not enough stock' may refuse a buyer: {st:?}"),
        }
    }
    assert_eq!((sold, refused), (10, 90));
    assert_eq!(s.stock(a).await, 0);
    assert_eq!(s.held_by_orders(a), 10);
    let (balanced, report) = s.product_audit();
    assert!(balanced, "{report}");
}
