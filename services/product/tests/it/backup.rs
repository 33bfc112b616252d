//! `product-service backup`: a copy taken while reservations and commits pour in restores into
//! a fresh data folder, serves, balances (`product-service audit`) and holds every order
//! finished before the backup began; an existing file is replaced only with `--force`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use shop_proto::product::v1 as pb;
use shop_testkit::{Launch, Scratch, product_audit};

use crate::support::*;

/// Workers reserving (and every fourth order committing) until told to stop.
const WORKERS: i64 = 8;

type ProductServiceClient =
    shop_proto::product::v1::product_service_client::ProductServiceClient<tonic::transport::Channel>;

/// `product-service backup --to FILE [--force]` on the harness's data folder.
fn backup_command(h: &Harness, to: &Path, force: bool) -> Launch {
    let launch = Launch::new(BIN, "backup", h.scratch.path())
        .arg("backup")
        .arg("--data-dir")
        .arg(h.scratch.join("data").to_str().unwrap())
        .arg("--to")
        .arg(to.to_str().unwrap());
    if force { launch.arg("--force") } else { launch }
}

/// Runs a command to its end: whether it succeeded, and what it printed.
fn outcome(launch: &Launch) -> (bool, String) {
    let (status, out, err) = launch.run(None);
    (status.success(), format!("{out}{err}"))
}

/// An order a worker finished: reserved, and perhaps committed.
type Finished = (i64, bool);

/// Starts the workers; each pushes the orders it finished onto the list and counts them.
fn start_burst(
    h: &Harness,
    c: &ProductServiceClient,
    items: [(i64, i64); 2],
    stop: &Arc<AtomicBool>,
    done: &Arc<AtomicUsize>,
    finished: &Arc<Mutex<Vec<Finished>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let token = h.order_service();
    (0..WORKERS)
        .map(|w| {
            let (mut c, token) = (c.clone(), token.clone());
            let (stop, done, finished) = (Arc::clone(stop), Arc::clone(done), Arc::clone(finished));
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let order_id = (w + 1) * 1_000_000 + i;
                    let lines = [(items[0].0, 1 + i % 3), (items[1].0, items[1].1)];
                    c.reserve_stock(reserve_req(order_id, &lines, &token))
                        .await
                        .unwrap();
                    let commit = i % 4 == 0;
                    if commit {
                        let req = with_token(pb::CommitReservationRequest { order_id }, &token);
                        c.commit_reservation(req).await.unwrap();
                    }
                    finished.lock().unwrap().push((order_id, commit));
                    done.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_under_writes_restores_balanced_with_every_earlier_order() {
    // Megabytes of catalogue, so the copy takes many steps while the writes land.
    let h = Harness::start_with("backup-under-load", |launch, _| {
        let (status, _, err) = launch.clone().arg("seed").arg("--count").arg("20000").run(None);
        assert!(status.success(), "seed: {err}");
    });
    let mut c = h.client().await;
    let admin = h.admin();
    let a = create(&mut c, &admin, new_product("A", 100, 1_000_000, "")).await;
    let b = create(&mut c, &admin, new_product("B", 100, 1_000_000, "")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(Mutex::new(Vec::new()));
    let workers = start_burst(&h, &c, [(a.id, 1), (b.id, 2)], &stop, &done, &finished);
    while done.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let before: Vec<Finished> = finished.lock().unwrap().clone();
    let to = h.scratch.join("backups/product.db");
    let command = backup_command(&h, &to, false);
    let (copied, report) = tokio::task::spawn_blocking(move || outcome(&command))
        .await
        .unwrap();
    let during = done.load(Ordering::SeqCst) - before.len();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert!(copied, "backup: {report}");
    assert!(
        report.contains("backed up ") && report.contains(" pages"),
        "{report}"
    );
    assert!(
        during > 0,
        "no write finished while the backup ran: not under load"
    );

    // An existing file is replaced only with --force.
    let taken = std::fs::read(&to).unwrap();
    let (again, why) = outcome(&backup_command(&h, &to, false));
    assert!(
        !again && why.contains("already exists (--force replaces it)"),
        "{why}"
    );
    assert_eq!(std::fs::read(&to).unwrap(), taken, "left untouched");

    check_restored(&h, &to, &before).await;

    let (forced, why) = outcome(&backup_command(&h, &to, true));
    assert!(forced, "{why}");
    let (balanced, report) = h.audit();
    assert!(balanced, "the live database still balances:\n{report}");
}

/// Restores `backup` into a fresh data folder (the file alone, as docs/deployment.md says),
/// audits it, serves it, and finds every order finished before the backup began.
async fn check_restored(h: &Harness, backup: &Path, before: &[Finished]) {
    let restored = Scratch::new("backup-restored");
    let data = restored.join("data");
    std::fs::create_dir_all(data.join("keys")).unwrap();
    std::fs::copy(backup, data.join("product.db")).unwrap();
    let key = "keys/token-signing.pub.pem";
    std::fs::copy(h.scratch.join("data").join(key), data.join(key)).unwrap();

    let (balanced, report) = product_audit(Path::new(BIN), &restored);
    assert!(balanced, "the backup balances:\n{report}");
    assert!(report.contains("20002 products, 0 unbalanced"), "{report}");

    let process = Launch::new(BIN, "product-service", restored.path())
        .arg("--data-dir")
        .arg(data.to_str().unwrap())
        .arg("--consul")
        .arg("")
        .arg("--port")
        .arg("0")
        .start();
    let mut c = ProductServiceClient::connect(process.url()).await.unwrap();
    let token = h.order_service();
    for &(order_id, committed) in before {
        let outcome = if committed {
            let req = with_token(pb::CommitReservationRequest { order_id }, &token);
            c.commit_reservation(req).await.unwrap().into_inner().outcome
        } else {
            let req = with_token(pb::ReleaseStockRequest { order_id }, &token);
            c.release_stock(req).await.unwrap().into_inner().outcome
        };
        let want = if committed {
            "already_committed"
        } else {
            "released"
        };
        assert_eq!(outcome, want, "order {order_id} finished before the backup");
    }
    let (balanced, report) = product_audit(Path::new(BIN), &restored);
    assert!(balanced, "the restored service keeps it balanced:\n{report}");
}
