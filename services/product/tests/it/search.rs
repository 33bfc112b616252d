//! Full-text search over the seeded catalogue, in Chinese and English.

use shop_proto::product::v1 as pb;
use shop_testkit::Launch;
use tonic::Code;

use crate::support::*;

fn seeded(name: &str) -> Harness {
    Harness::start_with(name, |settings: &Launch| {
        for _ in 0..2 {
            let (status, out, err) = settings.clone().arg("seed").run(None);
            assert!(status.success(), "{out}{err}");
        }
    })
}

async fn names(
    c: &mut shop_proto::product::v1::product_service_client::ProductServiceClient<tonic::transport::Channel>,
    q: &str,
) -> (i64, Vec<String>) {
    let r = c
        .list_products(pb::ListProductsRequest {
            q: q.to_owned(),
            page_size: Some(100),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("q={q:?}: {s:?}"))
        .into_inner();
    (r.total, r.products.into_iter().map(|p| p.name).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn search_finds_substrings_in_chinese_and_english() {
    let h = seeded("search");
    let mut c = h.client().await;

    // Seeding twice did not duplicate.
    let all = c
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total, shop_catalogue_size());

    let iphone = "苹果手机 iPhone 15".to_owned();
    for q in [
        "手机",
        "苹果手机",
        "iphone",
        "IPHONE",
        "iPhone 15",
        "phone",
        "机",
        "苹",
    ] {
        let (total, found) = names(&mut c, q).await;
        assert!(found.contains(&iphone), "q={q:?} found {found:?}");
        assert_eq!(total as usize, found.len());
    }
    let (_, phones) = names(&mut c, "手机").await;
    assert!(phones.len() >= 3, "every phone: {phones:?}");
    // Descriptions count too: 机械键盘's description says USB-C, and so does the charger's name.
    let (_, usb) = names(&mut c, "usb-c").await;
    assert!(
        usb.iter().any(|n| n.contains("Charger")) && usb.iter().any(|n| n.contains("机械键盘")),
        "{usb:?}"
    );
    // Every term must match.
    let (_, both) = names(&mut c, "键盘 机械").await;
    assert!(both.iter().all(|n| n.contains("键盘")), "{both:?}");
    let (none, _) = names(&mut c, "xylophone").await;
    assert_eq!(none, 0);
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
    ] {
        let r = c
            .list_products(pb::ListProductsRequest {
                q: q.to_owned(),
                page_size: Some(100),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("q={q:?}: {s:?}"))
            .into_inner();
        assert!(
            r.total < size,
            "q={q:?} matched everything: a wildcard leaked through"
        );
        // Whatever matched contains every term literally.
        for p in &r.products {
            let text = format!("{} {}", p.name, p.description).to_lowercase();
            for term in q.split_whitespace() {
                assert!(
                    text.contains(&term.to_lowercase()),
                    "q={q:?} matched {:?} without {term:?}",
                    p.name
                );
            }
        }
    }
    // A literal percent sign matches the products that mention one, and only those.
    let (pct, found) = names(&mut c, "%").await;
    assert!(pct >= 2 && found.iter().any(|n| n.contains("85%")), "{found:?}");
    // The catalogue is intact after all that.
    let all = c
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total, size);
    assert_status(
        c.list_products(pb::ListProductsRequest {
            q: "q".repeat(101),
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
    let r = c
        .list_products(pb::ListProductsRequest {
            q: "手机".to_owned(),
            sort: "price_asc".to_owned(),
            max_price_cents: Some(650_000),
            category: "electronics".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let prices: Vec<i64> = r.products.iter().map(|p| p.price_cents).collect();
    assert!(
        !prices.is_empty() && prices.windows(2).all(|w| w[0] <= w[1]) && prices.iter().all(|p| *p <= 650_000),
        "{prices:?}"
    );
    assert_eq!(r.total as usize, prices.len());
    // Relevance ranks a name match first.
    let ranked = c
        .list_products(pb::ListProductsRequest {
            q: "iphone".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ranked.products[0].name, "苹果手机 iPhone 15");
}

fn shop_catalogue_size() -> i64 {
    product_service::seed::CATALOGUE.len() as i64
}
