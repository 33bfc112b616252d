//! Search and paging against the real service and a real SQLite file: Chinese by any
//! substring (one, two, three and more characters), English by word prefix, mixed queries,
//! ranking, page tokens under inserts, deleted products, capped totals, query text that is
//! never syntax, and a database from before the search index.

use shop_proto::product::v1 as pb;
use shop_proto::product::v1::product_service_client::ProductServiceClient;
use shop_testkit::Launch;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::*;

fn seeded(name: &str) -> Harness {
    Harness::start_with(name, |settings: &Launch, _| {
        for _ in 0..2 {
            let (status, out, err) = settings.clone().arg("seed").run(None);
            assert!(status.success(), "{out}{err}");
        }
    })
}

async fn search(
    c: &mut ProductServiceClient<Channel>,
    req: pb::ListProductsRequest,
) -> pb::ListProductsResponse {
    let shown = format!("{req:?}");
    c.list_products(req)
        .await
        .unwrap_or_else(|s| panic!("{shown}: {s:?}"))
        .into_inner()
}

async fn names(c: &mut ProductServiceClient<Channel>, q: &str) -> (i64, Vec<String>) {
    let r = search(
        c,
        pb::ListProductsRequest {
            q: q.to_owned(),
            page_size: Some(100),
            ..Default::default()
        },
    )
    .await;
    (r.total, r.products.into_iter().map(|p| p.name).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn chinese_by_any_substring_english_by_word_prefix() {
    let h = seeded("search");
    let mut c = h.client().await;
    let all = search(&mut c, pb::ListProductsRequest::default()).await;
    assert_eq!(
        all.total,
        shop_catalogue_size(),
        "seeding twice did not duplicate"
    );

    let iphone = "苹果手机 iPhone 15".to_owned();
    for q in [
        "苹", // one character
        "机",
        "手机",     // two
        "果手机",   // three, across the pieces
        "苹果手机", // four
        "iphone",   // a word, any case
        "IPHONE",
        "iph",         // a prefix
        "iPhone 15",   // two words
        "iPhone 手机", // mixed scripts
        "手机iphone",  // mixed, unspaced
    ] {
        let (total, found) = names(&mut c, q).await;
        assert!(found.contains(&iphone), "q={q:?} found {found:?}");
        assert_eq!(total as usize, found.len(), "q={q:?}");
    }
    let (_, phones) = names(&mut c, "手机").await;
    assert!(phones.len() >= 3, "every phone: {phones:?}");
    // Descriptions count too: 机械键盘's description says USB-C, and so does the charger's name.
    let (_, usb) = names(&mut c, "usb-c").await;
    assert!(
        usb.iter().any(|n| n.contains("Charger")) && usb.iter().any(|n| n.contains("机械键盘")),
        "{usb:?}"
    );
    // Every term must match; a substring that is not in the text finds nothing.
    let (_, both) = names(&mut c, "键盘 机械").await;
    assert!(
        !both.is_empty() && both.iter().all(|n| n.contains("键盘")),
        "{both:?}"
    );
    for q in ["xylophone", "果苹", "手机 xylophone"] {
        assert_eq!(names(&mut c, q).await.0, 0, "q={q:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn search_text_is_plain_text() {
    let h = seeded("search-meta");
    let mut c = h.client().await;
    let size = shop_catalogue_size();
    for q in [
        "'",
        "\"",
        "*",
        "%",
        ")",
        "(",
        "_",
        "\\",
        "' OR 1=1 --",
        "\"iphone",
        "iphone*",
        "a%b",
        "NEAR(x y)",
        "x OR y",
        "手机\"",
        "); DROP TABLE products; --",
        "100%",
        "name_terms:iphone",
        "{name_terms}: x",
        "^iphone",
    ] {
        let r = search(
            &mut c,
            pb::ListProductsRequest {
                q: q.to_owned(),
                page_size: Some(100),
                ..Default::default()
            },
        )
        .await;
        assert!(
            r.total < size,
            "q={q:?} matched everything: syntax leaked through"
        );
        // Whatever matched contains every letter-and-digit run of the query.
        for p in &r.products {
            let text = format!("{} {}", p.name, p.description).to_lowercase();
            for word in q
                .to_lowercase()
                .split(|ch: char| !ch.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                assert!(
                    text.contains(word),
                    "q={q:?} matched {:?} without {word:?}",
                    p.name
                );
            }
        }
    }
    // Punctuation alone has nothing to look for: no products, no error.
    for q in ["%", "*", "\"\"", "()"] {
        assert_eq!(names(&mut c, q).await.0, 0, "q={q:?}");
    }
    let all = search(&mut c, pb::ListProductsRequest::default()).await;
    assert_eq!(all.total, size, "the catalogue is intact");
    assert_status(
        c.list_products(pb::ListProductsRequest {
            q: "q".repeat(101),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "q",
    );
    assert_status(
        c.list_products(pb::ListProductsRequest {
            q: "a b c d e f g h i".to_owned(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "q",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn search_combines_with_filters_and_sorts() {
    let h = seeded("search-filters");
    let mut c = h.client().await;
    let r = search(
        &mut c,
        pb::ListProductsRequest {
            q: "手机".to_owned(),
            sort: "price_asc".to_owned(),
            max_price_cents: Some(650_000),
            category: "electronics".to_owned(),
            ..Default::default()
        },
    )
    .await;
    let prices: Vec<i64> = r.products.iter().map(|p| p.price_cents).collect();
    assert!(
        !prices.is_empty() && prices.windows(2).all(|w| w[0] <= w[1]) && prices.iter().all(|p| *p <= 650_000),
        "{prices:?}"
    );
    assert_eq!(r.total as usize, prices.len());
}

fn described(name: &str, description: &str) -> pb::CreateProductRequest {
    pb::CreateProductRequest {
        description: description.to_owned(),
        ..new_product(name, 1_000, 5, "home")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relevance_puts_name_matches_first_then_newest() {
    let h = Harness::start("search-rank");
    let mut c = h.client().await;
    let admin = h.admin();
    let old_name = create(&mut c, &admin, described("Reading lamp", "Warm light.")).await;
    let description_only = create(&mut c, &admin, described("Desk", "Comes with a lamp.")).await;
    let new_name = create(&mut c, &admin, described("Lamp shade", "Linen.")).await;
    let half = create(&mut c, &admin, described("Lamp post", "Cast iron, for a garden.")).await;
    let r = search(
        &mut c,
        pb::ListProductsRequest {
            q: "lamp".to_owned(),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<i64> = r.products.iter().map(|p| p.id).collect();
    assert_eq!(ids, [half.id, new_name.id, old_name.id, description_only.id]);
    // Both words in the name beat one in the name and one in the description.
    let r = search(
        &mut c,
        pb::ListProductsRequest {
            q: "lamp garden".to_owned(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.products.iter().map(|p| p.id).collect::<Vec<_>>(), [half.id]);
    // sort= still decides when given.
    let r = search(
        &mut c,
        pb::ListProductsRequest {
            q: "lamp".to_owned(),
            sort: "newest".to_owned(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.products[0].id, half.id);
    assert_eq!(r.products[3].id, old_name.id);
}

/// Every page of a list, following next_page_token, with products created after the first.
async fn walk(
    c: &mut ProductServiceClient<Channel>,
    admin: &str,
    first: pb::ListProductsRequest,
    added_after_first: &[pb::CreateProductRequest],
) -> Vec<i64> {
    let mut seen = Vec::new();
    let mut req = first.clone();
    let mut pages = 0;
    loop {
        let r = search(c, req.clone()).await;
        seen.extend(r.products.iter().map(|p| p.id));
        pages += 1;
        if pages == 1 {
            for p in added_after_first {
                create(c, admin, p.clone()).await;
            }
        }
        if r.next_page_token.is_empty() {
            return seen;
        }
        req = pb::ListProductsRequest {
            page: None,
            page_token: r.next_page_token,
            ..first.clone()
        };
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn page_tokens_continue_exactly_while_products_are_added() {
    let h = Harness::start("search-pages");
    let mut c = h.client().await;
    let admin = h.admin();
    let mut made = Vec::new();
    for i in 0..23 {
        // Prices repeat, so ties are decided by id.
        let p = create(
            &mut c,
            &admin,
            new_product(&format!("Kettle {i}"), 1_000 + (i % 4) * 100, 1, "home"),
        )
        .await;
        made.push(p);
    }
    let later: Vec<pb::CreateProductRequest> = (0..6)
        .map(|i| new_product(&format!("Kettle late {i}"), 1_100, 1, "home"))
        .collect();
    for (q, sort) in [
        ("kettle", ""),
        ("", "newest"),
        ("", "price_asc"),
        ("kettle", "price_desc"),
    ] {
        let first = pb::ListProductsRequest {
            q: q.to_owned(),
            sort: sort.to_owned(),
            page_size: Some(5),
            category: "home".to_owned(),
            ..Default::default()
        };
        let before: Vec<i64> = search(
            &mut c,
            pb::ListProductsRequest {
                page_size: Some(100),
                ..first.clone()
            },
        )
        .await
        .products
        .iter()
        .map(|p| p.id)
        .collect();
        let walked = walk(&mut c, &admin, first, &later).await;
        // Newer products sort before the first page (newest, relevance) or among the rest
        // (prices); either way nothing that was there is skipped or seen twice.
        let mut unique = walked.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            walked.len(),
            "q={q:?} sort={sort:?}: a product came twice: {walked:?}"
        );
        for id in &before {
            assert!(
                walked.contains(id),
                "q={q:?} sort={sort:?}: {id} was skipped: {walked:?}"
            );
        }
    }
    // A token only continues its own list.
    let r = search(
        &mut c,
        pb::ListProductsRequest {
            q: "kettle".to_owned(),
            page_size: Some(5),
            ..Default::default()
        },
    )
    .await;
    for other in [
        pb::ListProductsRequest {
            q: "lamp".to_owned(),
            page_token: r.next_page_token.clone(),
            ..Default::default()
        },
        pb::ListProductsRequest {
            q: "kettle".to_owned(),
            sort: "price_asc".to_owned(),
            page_token: r.next_page_token.clone(),
            ..Default::default()
        },
        pb::ListProductsRequest {
            q: "kettle".to_owned(),
            page: Some(2),
            page_token: r.next_page_token.clone(),
            ..Default::default()
        },
        pb::ListProductsRequest {
            page_token: "1.n.0.x.1.0".to_owned(),
            ..Default::default()
        },
    ] {
        let e = c.list_products(other).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_and_renamed_products_are_found_by_what_they_are_now() {
    let mut h = Harness::start("search-deleted");
    let mut c = h.client().await;
    let admin = h.admin();
    let gone = create(&mut c, &admin, described("蓝牙音箱 Boombox", "Loud.")).await;
    let renamed = create(&mut c, &admin, described("Teapot", "Porcelain.")).await;
    assert_eq!(names(&mut c, "音箱").await.0, 1);
    c.delete_product(with_token(pb::DeleteProductRequest { id: gone.id }, &admin))
        .await
        .unwrap();
    c.update_product(with_token(
        pb::UpdateProductRequest {
            id: renamed.id,
            name: Some("茶壶".to_owned()),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    h.restart();
    let mut c = h.client().await;
    for q in ["音箱", "boombox", "teapot"] {
        assert_eq!(names(&mut c, q).await.0, 0, "q={q:?}");
    }
    assert_eq!(names(&mut c, "茶壶").await.1, ["茶壶"]);
    assert_eq!(
        names(&mut c, "porcelain").await.1,
        ["茶壶"],
        "the description still counts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn totals_are_exact_up_to_a_cap_and_pages_go_only_so_deep() {
    let h = Harness::start_with("search-totals", |settings: &Launch, _| {
        let (status, out, err) = settings.clone().arg("seed").arg("--count").arg("1200").run(None);
        assert!(status.success(), "{out}{err}");
    });
    let mut c = h.client().await;
    let all = search(&mut c, pb::ListProductsRequest::default()).await;
    assert_eq!((all.total, all.total_is_lower_bound), (1_000, true));
    let many = search(
        &mut c,
        pb::ListProductsRequest {
            q: "手机".to_owned(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (many.total, many.total_is_lower_bound),
        (100, true),
        "a search counts to 100"
    );
    let few = search(
        &mut c,
        pb::ListProductsRequest {
            q: "iphone 手机".to_owned(),
            page_size: Some(100),
            ..Default::default()
        },
    )
    .await;
    assert!(
        !few.total_is_lower_bound && few.total > 0 && few.total < 100,
        "{}",
        few.total
    );
    assert_eq!(few.total as usize, few.products.len());
    assert_status(
        c.list_products(pb::ListProductsRequest {
            page: Some(1_001),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "page",
    );
    let (ok, report) = h.audit();
    assert!(ok, "generated products keep the stock ledger: {report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_from_before_the_search_index_is_indexed_on_start() {
    let h = Harness::start_with("search-upgrade", |_, data| {
        std::fs::create_dir_all(data).unwrap();
        let path = data.join("product.db");
        let mut conn = shop_kit::db::open_connection(&path).unwrap();
        shop_kit::db::migrate(&mut conn, &path, &product_service::store::MIGRATIONS[..2]).unwrap();
        for (i, name) in ["旧的茶壶", "Old kettle", "Old lamp"].iter().enumerate() {
            conn.execute(
                "INSERT INTO products (name, description, price_cents, stock, category, created_at, updated_at, deleted_at)
                 VALUES (?1, 'from before', 100, 1, 'home', 1, 1, ?2)",
                rusqlite::params![name, (i == 2).then_some(5)],
            )
            .unwrap();
        }
    });
    let mut c = h.client().await;
    assert_eq!(names(&mut c, "茶壶").await.1, ["旧的茶壶"]);
    assert_eq!(names(&mut c, "kettle").await.1, ["Old kettle"]);
    assert_eq!(
        names(&mut c, "lamp").await.0,
        0,
        "deleted before the upgrade: still not found"
    );
    assert!(h.process.logs().contains("search index filled"));
}

fn shop_catalogue_size() -> i64 {
    product_service::seed::CATALOGUE.len() as i64
}
