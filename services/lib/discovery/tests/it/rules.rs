//! The blocking-query rules against a scripted stub: index handling, request shape, errors and
//! pacing.

use std::time::Duration;

use shop_discovery::ConsulClient;
use shop_discovery::consul::ConsulError;
use shop_discovery::watch::{self, WatchConfig};

use crate::stub::{Reply, Stub, ok};

fn config() -> WatchConfig {
    let mut c = WatchConfig::new("svc");
    c.wait = Duration::from_secs(2);
    c.every = Duration::from_millis(200);
    c.backoff_base = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(400);
    c
}

fn index_param(request: &str) -> Option<u64> {
    let line = request.lines().next().unwrap();
    let query = line.split_whitespace().nth(1).unwrap().split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("index="))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn request_shape_wait_has_a_unit_passing_and_the_token_in_a_header() {
    let stub = Stub::start(vec![ok(10, &["a"]), ok(11, &["a"])]).await;
    let client = ConsulClient::new(&stub.addr, Some("s3cret".into())).unwrap();
    let mut cfg = config();
    cfg.tag = Some("v1".into());
    let _rx = watch::consul(client, cfg);
    stub.wait_for(2).await;
    let seen = stub.seen();
    let first = seen[0].lines().next().unwrap();
    assert!(
        first.starts_with("GET /v1/health/service/svc?passing=1"),
        "{first}"
    );
    assert!(first.contains("&tag=v1"), "{first}");
    assert!(
        !first.contains("index="),
        "the first read does not block: {first}"
    );
    let second = seen[1].lines().next().unwrap();
    assert!(
        second.contains("index=10") && second.contains("wait=2s"),
        "{second}"
    );
    for r in &seen {
        assert!(r.to_ascii_lowercase().contains("x-consul-token: s3cret"), "{r}");
        assert!(
            !r.lines().next().unwrap().contains("token="),
            "no token in the URL: {r}"
        );
    }
}

#[tokio::test]
async fn an_index_going_backwards_is_reset_and_zero_becomes_one() {
    let stub = Stub::start(vec![ok(10, &["a"]), ok(5, &["a"]), ok(0, &["a"]), ok(12, &["a"])]).await;
    let _rx = watch::consul(ConsulClient::new(&stub.addr, None).unwrap(), config());
    stub.wait_for(5).await;
    let indexes: Vec<Option<u64>> = stub.seen().iter().map(|r| index_param(r)).collect();
    // read 1: none; answer 10 -> read 2 with 10; answer 5 (backwards) -> read 3 fresh (none);
    // answer 0 -> read 4 with 1 (never 0, which would never block); answer 12 -> read 5 with 12.
    assert_eq!(&indexes[..5], &[None, Some(10), None, Some(1), Some(12)]);
}

#[tokio::test]
async fn only_changes_are_published_and_an_answered_empty_set_is_one() {
    let stub = Stub::start(vec![
        ok(10, &["a"]),
        ok(10, &["a"]),
        ok(11, &["a"]),
        ok(12, &["a", "b"]),
        ok(13, &[]),
    ])
    .await;
    let mut rx = watch::consul(ConsulClient::new(&stub.addr, None).unwrap(), config());
    let mut epochs = Vec::new();
    while epochs.len() < 3 {
        rx.changed().await.unwrap();
        let set = rx.borrow_and_update().clone();
        epochs.push((set.epoch, set.endpoints.len()));
    }
    assert_eq!(
        epochs,
        vec![(1, 1), (2, 2), (3, 0)],
        "repeats of the same set are not published"
    );
}

#[tokio::test]
async fn errors_keep_the_last_set_back_off_and_recover() {
    let stub = Stub::start(vec![ok(10, &["a", "b"]), Reply::Status(500)]).await;
    let mut rx = watch::consul(ConsulClient::new(&stub.addr, None).unwrap(), config());
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().endpoints.len(), 2);
    // Consul fails: the set stays, marked stale.
    rx.changed().await.unwrap();
    let stale = rx.borrow_and_update().clone();
    assert!(!stale.fresh);
    assert_eq!((stale.epoch, stale.endpoints.len()), (1, 2));
    // Backoff keeps the failing loop slow: base 50 ms doubling to 400 ms, at most 1 try per
    // 200 ms from the bucket besides: well under 20 tries in 1.5 s (a busy loop makes hundreds).
    let before = stub.seen().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tries = stub.seen().len() - before;
    assert!((1..20).contains(&tries), "{tries} tries in 1.5 s");
    // After a failure the index is dropped: the next read is a fresh one.
    assert!(stub.seen().iter().skip(2).all(|r| index_param(r).is_none()));
    // Consul is back.
    stub.then(vec![ok(20, &["a", "b"])]);
    rx.changed().await.unwrap();
    let back = rx.borrow_and_update().clone();
    assert!(back.fresh);
    assert_eq!(back.epoch, 1, "same instances: no new epoch");
}

#[tokio::test]
async fn an_acl_refusal_keeps_the_last_set_and_is_reported_as_one() {
    let stub = Stub::start(vec![ok(10, &["a"]), Reply::Status(500), Reply::Status(403)]).await;
    let client = ConsulClient::new(&stub.addr, Some("s3cret".into())).unwrap();
    let mut rx = watch::consul(client, config());
    rx.changed().await.unwrap();
    assert!(rx.borrow_and_update().fresh);
    // Unreachable first, then refused: each is news, so receivers hear of both.
    rx.changed().await.unwrap();
    let failing = rx.borrow_and_update().clone();
    assert!(
        matches!(failing.error, Some(ConsulError::Status { status: 500, .. })),
        "{failing:?}"
    );
    rx.changed().await.unwrap();
    let refused = rx.borrow_and_update().clone();
    assert!(!refused.fresh && refused.epoch == 1 && refused.endpoints.len() == 1);
    match &refused.error {
        Some(e @ ConsulError::Denied { token_sent: true, .. }) => {
            assert!(e.is_refusal());
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Refused again and again: no news.
    stub.wait_for(stub.seen().len() + 2).await;
    assert!(!rx.has_changed().unwrap());
}

#[tokio::test]
async fn a_missing_index_header_is_an_error() {
    let stub = Stub::start(vec![
        ok(10, &["a"]),
        Reply::Ok {
            index: None,
            body: crate::stub::health_body(&["a", "b"]),
        },
        ok(11, &["a"]),
    ])
    .await;
    let rx = watch::consul(ConsulClient::new(&stub.addr, None).unwrap(), config());
    stub.wait_for(3).await;
    let seen = stub.seen();
    assert_eq!(
        index_param(&seen[2]),
        None,
        "after the bad answer the index was dropped"
    );
    assert_eq!(
        rx.borrow().endpoints.len(),
        1,
        "the headerless answer was not used"
    );
}

#[tokio::test]
async fn churn_is_paced_by_the_bucket() {
    // Every answer is instant and new: without pacing this would be a busy loop.
    let stub = Stub::start(vec![ok(1, &["a"])]).await;
    let _rx = watch::consul(ConsulClient::new(&stub.addr, None).unwrap(), config());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = stub.seen().len();
    // Burst of 2, then one per 200 ms: about 7 in a second.
    assert!((3..=9).contains(&n), "{n} requests in 1 s");
}
