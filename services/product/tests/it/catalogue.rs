//! Admin-only writes, field rules, soft delete, paging and sorting.

use shop_proto::product::v1 as pb;
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn only_admins_change_the_catalogue() {
    let h = Harness::start("admin-only");
    let mut c = h.client().await;
    let (admin, customer) = (h.admin(), h.customer());
    let product = create(&mut c, &admin, new_product("Kettle", 2_999, 5, "home")).await;

    assert_status(
        c.create_product(new_product("Nope", 1, 1, "")).await,
        Code::Unauthenticated,
        "no access token",
    );
    assert_status(
        c.create_product(with_token(new_product("Nope", 1, 1, ""), &customer))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    let rename = pb::UpdateProductRequest {
        id: product.id,
        name: Some("Hacked".to_owned()),
        ..Default::default()
    };
    assert_status(
        c.update_product(rename.clone()).await,
        Code::Unauthenticated,
        "no access token",
    );
    assert_status(
        c.update_product(with_token(rename, &customer)).await,
        Code::PermissionDenied,
        "admin",
    );
    let delete = pb::DeleteProductRequest { id: product.id };
    assert_status(
        c.delete_product(delete).await,
        Code::Unauthenticated,
        "no access token",
    );
    assert_status(
        c.delete_product(with_token(delete, &customer)).await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        c.create_product(with_token(new_product("x", 1, 1, ""), "garbage"))
            .await,
        Code::Unauthenticated,
        "not valid",
    );

    // Nothing changed, and reading needs no token.
    let now = c
        .get_product(pb::GetProductRequest { id: product.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now, product);
    let all = c
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_fields_are_named_and_change_nothing() {
    let h = Harness::start("product-fields");
    let mut c = h.client().await;
    let admin = h.admin();
    let cases = [
        (new_product("", 100, 1, ""), "name"),
        (new_product(&"n".repeat(201), 100, 1, ""), "name"),
        (new_product("ok", 0, 1, ""), "price_cents"),
        (new_product("ok", -100, 1, ""), "price_cents"),
        (new_product("ok", 100, -1, ""), "stock"),
        (new_product("ok", 100, 1, &"c".repeat(51)), "category"),
    ];
    for (req, field) in cases {
        let shown = format!("{req:?}");
        let s = c.create_product(with_token(req, &admin)).await.expect_err(&shown);
        assert_eq!(s.code(), Code::InvalidArgument, "{shown}");
        assert!(
            s.message().starts_with(field),
            "{:?} should name {field}",
            s.message()
        );
    }
    let p = create(&mut c, &admin, new_product("Lamp", 2_599, 3, "home")).await;
    let update = |req: pb::UpdateProductRequest| with_token(req, &admin);
    for (req, field) in [
        (
            pb::UpdateProductRequest {
                id: p.id,
                ..Default::default()
            },
            "nothing to change",
        ),
        (
            pb::UpdateProductRequest {
                id: p.id,
                price_cents: Some(0),
                ..Default::default()
            },
            "price_cents",
        ),
        (
            pb::UpdateProductRequest {
                id: p.id,
                stock: Some(-3),
                ..Default::default()
            },
            "stock",
        ),
        (
            pb::UpdateProductRequest {
                id: p.id,
                name: Some(" ".to_owned()),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::UpdateProductRequest {
                id: 0,
                stock: Some(1),
                ..Default::default()
            },
            "id",
        ),
    ] {
        assert_status(c.update_product(update(req)).await, Code::InvalidArgument, field);
    }
    let list = c
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 1);
    assert_eq!(list.products[0], p, "refused updates changed nothing");

    let changed = c
        .update_product(update(pb::UpdateProductRequest {
            id: p.id,
            price_cents: Some(1_999),
            stock: Some(10),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (changed.price_cents, changed.stock, changed.name.as_str()),
        (1_999, 10, "Lamp")
    );
    assert_status(
        c.update_product(update(pb::UpdateProductRequest {
            id: 999,
            stock: Some(1),
            ..Default::default()
        }))
        .await,
        Code::NotFound,
        "product 999",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_products_disappear_but_orders_can_still_release_them() {
    let h = Harness::start("soft-delete");
    let mut c = h.client().await;
    let admin = h.admin();
    let keep = create(&mut c, &admin, new_product("Keep", 100, 5, "a")).await;
    let gone = create(&mut c, &admin, new_product("Gone", 100, 5, "a")).await;
    c.reserve_stock(reserve_req(1, &[(gone.id, 2)], &h.order_service()))
        .await
        .unwrap();

    c.delete_product(with_token(pb::DeleteProductRequest { id: gone.id }, &admin))
        .await
        .unwrap();
    assert_status(
        c.get_product(pb::GetProductRequest { id: gone.id }).await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        c.delete_product(with_token(pb::DeleteProductRequest { id: gone.id }, &admin))
            .await,
        Code::NotFound,
        "not found",
    );
    let list = c
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 1);
    assert_eq!(list.products[0].id, keep.id);
    let batch = c
        .batch_get_products(pb::BatchGetProductsRequest {
            ids: vec![gone.id, keep.id, 404],
        })
        .await
        .unwrap()
        .into_inner()
        .products;
    assert_eq!(
        batch.iter().map(|p| (p.id, p.available)).collect::<Vec<_>>(),
        vec![(gone.id, false), (keep.id, true), (404, false)]
    );
    assert_eq!(
        (batch[1].name.as_str(), batch[1].price_cents, batch[1].stock),
        ("Keep", 100, 5)
    );

    // A new order cannot reserve it; the old one gives its units back.
    assert_status(
        c.reserve_stock(reserve_req(2, &[(gone.id, 1)], &h.order_service()))
            .await,
        Code::NotFound,
        &format!("product {}", gone.id),
    );
    let released = c
        .release_stock(with_token(
            pb::ReleaseStockRequest { order_id: 1 },
            &h.order_service(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.outcome, "released");
    let (balanced, report) = h.audit();
    assert!(balanced, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_sorts_and_filters() {
    let h = Harness::start("paging");
    let mut c = h.client().await;
    let admin = h.admin();
    let mut created = Vec::new();
    for i in 0..25i64 {
        let category = if i % 2 == 0 { "even" } else { "odd" };
        // Prices out of creation order, so each sort gives a different order.
        created.push(
            create(
                &mut c,
                &admin,
                new_product(&format!("Item {i}"), 100 + (i * 7) % 25 * 10, 1, category),
            )
            .await,
        );
    }
    let list = |page: Option<i32>, page_size: Option<i32>| pb::ListProductsRequest {
        page,
        page_size,
        ..Default::default()
    };
    let page = |r: pb::ListProductsResponse| (r.products.len(), r.total, r.page, r.page_size);

    let first = c.list_products(list(None, None)).await.unwrap().into_inner();
    assert_eq!(page(first.clone()), (10, 25, 1, 10));
    let newest: Vec<i64> = first.products.iter().map(|p| p.id).collect();
    let expected: Vec<i64> = created.iter().rev().take(10).map(|p| p.id).collect();
    assert_eq!(newest, expected, "newest first by default");
    assert_eq!(
        page(
            c.list_products(list(Some(3), Some(10)))
                .await
                .unwrap()
                .into_inner()
        ),
        (5, 25, 3, 10)
    );
    assert_eq!(
        page(
            c.list_products(list(Some(4), Some(10)))
                .await
                .unwrap()
                .into_inner()
        ),
        (0, 25, 4, 10)
    );
    assert_eq!(
        page(
            c.list_products(list(Some(1), Some(100)))
                .await
                .unwrap()
                .into_inner()
        ),
        (25, 25, 1, 100)
    );
    assert_eq!(
        page(
            c.list_products(list(Some(25), Some(1)))
                .await
                .unwrap()
                .into_inner()
        ),
        (1, 25, 25, 1)
    );
    assert_status(
        c.list_products(list(Some(1), Some(101))).await,
        Code::InvalidArgument,
        "page_size",
    );
    assert_status(
        c.list_products(list(Some(1), Some(0))).await,
        Code::InvalidArgument,
        "page_size",
    );
    assert_status(
        c.list_products(list(Some(0), None)).await,
        Code::InvalidArgument,
        "page",
    );
    assert_status(
        c.list_products(list(Some(-2), None)).await,
        Code::InvalidArgument,
        "page",
    );

    let sorted = |sort: &str| pb::ListProductsRequest {
        sort: sort.to_owned(),
        page_size: Some(100),
        ..Default::default()
    };
    let asc: Vec<i64> = c
        .list_products(sorted("price_asc"))
        .await
        .unwrap()
        .into_inner()
        .products
        .iter()
        .map(|p| p.price_cents)
        .collect();
    assert!(asc.windows(2).all(|w| w[0] <= w[1]), "{asc:?}");
    let desc: Vec<i64> = c
        .list_products(sorted("price_desc"))
        .await
        .unwrap()
        .into_inner()
        .products
        .iter()
        .map(|p| p.price_cents)
        .collect();
    assert!(desc.windows(2).all(|w| w[0] >= w[1]), "{desc:?}");
    assert_status(
        c.list_products(sorted("cheapest")).await,
        Code::InvalidArgument,
        "sort",
    );
    assert_status(
        c.list_products(sorted("relevance")).await,
        Code::InvalidArgument,
        "sort",
    );

    let filtered = c
        .list_products(pb::ListProductsRequest {
            category: "ODD".to_owned(),
            min_price_cents: Some(150),
            max_price_cents: Some(250),
            page_size: Some(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let want = created
        .iter()
        .filter(|p| p.category == "odd" && (150..=250).contains(&p.price_cents))
        .count();
    assert!(want > 0);
    assert_eq!(filtered.total as usize, want);
    assert!(
        filtered
            .products
            .iter()
            .all(|p| p.category == "odd" && (150..=250).contains(&p.price_cents))
    );
    assert_status(
        c.list_products(pb::ListProductsRequest {
            min_price_cents: Some(300),
            max_price_cents: Some(200),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "min_price_cents",
    );
}
