//! Hot reload while clients keep calling: a route added, a limit changed (its buckets kept), a
//! route removed, an invalid file refused with `check`'s words while the old file keeps serving,
//! and SIGHUP; not one of the clients' requests fails because of it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// A route the default file does not have, on its own path (so that without it the path is a
/// plain 404), with its own tight limit and its own upstream (a new Consul watch, started by
/// the reload).
const BATCH_ROUTE: &str = "
[upstream.catalogue]
service = \"product-service\"

[[route]]
name = \"batch\"
method = \"GET\"
path = \"/api/catalogue/batch\"
upstream = \"catalogue\"
rpc = \"shop.product.v1.ProductService/BatchGetProducts\"
auth = \"public\"
limit = \"tight\"
";

/// Replaces the gateway's file the way editors and deploy tools do: a new file renamed over it.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until `/metrics` counts `n` reloads with `result`.
fn wait_reloads(gateway: &shop_testkit::Process, result: &str, n: u64) {
    let line = format!("gateway_config_reloads_total{{result=\"{result}\"}} {n}");
    let started = Instant::now();
    loop {
        let m = call(gateway, "GET", "/metrics", None, None);
        if m.raw.body.contains(&line) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {line:?} in:\n{}\n--- gateway log ---\n{}",
            m.raw.body,
            gateway.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn edits_to_the_file_apply_while_clients_keep_calling() {
    let s = Stack::start("reload");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    let (user_id, token) = s.customer("rita");

    // This test's own gateway, on a file it rewrites. The default limit is raised: the clients
    // below call as fast as they can from one address.
    let base = set_limit(
        &s.config(),
        "default",
        "rate = 100000\nburst = 100000\nkey = \"ip\"",
    );
    let tight = "\n[limit.tight]\nrate = 3\nper = \"1m\"\nburst = 2\nkey = \"ip\"\n";
    let text0 = format!("{base}{tight}");
    let g = start_gateway(&s.scratch, "reloading", &text0);
    s.wait_ready(&g);
    let path = s.scratch.join("reloading.toml");

    // Clients: one browsing anonymously, one signed in, each as fast as it can, counting answers
    // that are not 200 (or no answer at all).
    let running = Arc::new(AtomicBool::new(true));
    let served = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for (path, auth) in [
        (format!("/api/products/{lamp}"), None),
        (
            format!("/api/orders/user/{user_id}"),
            Some(format!("Bearer {token}")),
        ),
    ] {
        let addr = g.addr().to_string();
        let (running, served, failures) = (running.clone(), served.clone(), failures.clone());
        clients.push(std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
                match shop_testkit::http::request(&addr, "GET", &path, &headers, None) {
                    Some(r) if r.status == 200 => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.lock().unwrap().push(format!("{path}: {other:?}")),
                }
            }
        }));
    }
    let batch = format!("/api/catalogue/batch?ids={lamp}");

    // 1. Add a route: 404 before, served after.
    call(&g, "GET", &batch, None, None).refused(404, "NOT_FOUND", "no route");
    let text1 = format!("{text0}{BATCH_ROUTE}");
    replace_file(&path, &text1);
    wait_reloads(&g, "ok", 1);
    let a = call(&g, "GET", &batch, None, None).expect(200);
    assert_eq!(a.json["products"][0]["id"], lamp);
    assert_eq!(a.header("ratelimit-limit"), Some("2"));
    call(&g, "GET", &batch, None, None).expect(200);
    let spent = call(&g, "GET", &batch, None, None);
    spent.refused(429, "RESOURCE_EXHAUSTED", "tight");

    // 2. Change the limit: the new numbers apply at once, and the bucket this address emptied
    // is kept (a fresh bucket of 10 would let the next call through).
    let text2 = text1.replace(
        "rate = 3\nper = \"1m\"\nburst = 2",
        "rate = 3\nper = \"1m\"\nburst = 10",
    );
    assert_ne!(text1, text2);
    replace_file(&path, &text2);
    wait_reloads(&g, "ok", 2);
    let after = call(&g, "GET", &batch, None, None);
    after.refused(429, "RESOURCE_EXHAUSTED", "tight");
    assert_eq!(after.header("ratelimit-limit"), Some("10"), "{:?}", after.raw);

    // 3. Remove the route: a plain 404 again.
    replace_file(&path, &text0);
    wait_reloads(&g, "ok", 3);
    call(&g, "GET", &batch, None, None).refused(404, "NOT_FOUND", "no route");

    // 4. An invalid file: refused with the words `gateway check` uses, and the file before it
    // keeps serving.
    let text4 = format!(
        "{text0}{}",
        BATCH_ROUTE
            .replace("BatchGetProducts", "BatchGetProduct")
            .replace("limit = \"tight\"", "limit = \"tigth\"")
    );
    replace_file(&path, &text4);
    wait_reloads(&g, "refused", 1);
    let (ok, check_err) = crate::check::check(&s.scratch, &text4);
    assert!(!ok);
    let problems: Vec<&str> = check_err
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(problems.len(), 2, "{check_err}");
    let logs = g.logs();
    let refusal = logs
        .lines()
        .find(|l| l.contains("configuration reload refused; still serving the previous one"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{logs}"));
    assert!(refusal.contains("ERROR"), "{refusal}");
    for p in &problems {
        assert!(logs.contains(p), "{p:?} not in the gateway's log:\n{logs}");
    }
    call(&g, "GET", &batch, None, None).refused(404, "NOT_FOUND", "no route");
    call(&g, "GET", &format!("/api/products/{lamp}"), None, None).expect(200);

    // 5. The good file back (its text is what is loaded: nothing to do), then SIGHUP: reloaded
    // although nothing changed.
    replace_file(&path, &text0);
    std::thread::sleep(Duration::from_millis(1200));
    wait_reloads(&g, "ok", 3);
    g.signal("HUP");
    wait_reloads(&g, "ok", 4);
    assert!(g.logs().contains("cause=\"SIGHUP\""), "{}", g.logs());

    running.store(false, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let served = served.load(Ordering::Relaxed);
    eprintln!(
        "clients: {served} requests served during the reloads, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed during reloads: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(served > 100, "the clients hardly ran: {served}");

    // What /metrics says the loaded file is.
    let m = call(&g, "GET", "/metrics", None, None).raw.body;
    let hash = format!("{:016x}", shop_gateway::metrics::fingerprint(text0.as_bytes()));
    assert!(m.contains(&format!("hash=\"{hash}\"")), "{m}");
    assert!(m.contains("gateway_config_reloads_total{result=\"refused\"} 1"));
}
