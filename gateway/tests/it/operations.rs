//! What operators run the gateway with, through real gateways over the real services: `/ready`
//! (every upstream a route calls has an instance) and the drain window after SIGTERM; the access
//! log in JSON to a file and in text with chosen fields; the read-only admin listener
//! (`/config`, `/upstreams`, `/metrics`), which the public listener does not serve.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shop_testkit::http::request;

use crate::support::*;

/// Replaces the gateway's file the way deploy tools do: a new file renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Calls `probe` every 50 ms until it returns something, for up to `within`.
#[track_caller]
fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The file's text with `line` added at the top of its `[gateway]` table.
fn with_gateway_key(text: &str, line: &str) -> String {
    assert!(text.contains("[gateway]\n"));
    text.replacen("[gateway]\n", &format!("[gateway]\n{line}\n"), 1)
}

#[test]
fn ready_waits_for_every_upstream_a_route_calls() {
    let s = Stack::start("ops-ready");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    let r = call(&s.gateway, "GET", "/ready", None, None).expect(200);
    assert_eq!(r.json, json!({ "status": "ready" }));

    // A route to an upstream no instance serves: not ready, and the answer names it; every
    // other route is served as usual.
    let ghost = "
[upstream.ghost]
service = \"ghost-service\"

[[route]]
name = \"ghost\"
method = \"GET\"
path = \"/api/ghost/{id}\"
upstream = \"ghost\"
rpc = \"shop.product.v1.ProductService/GetProduct\"
auth = \"public\"
";
    let g = start_gateway(&s.scratch, "gateway-ghost", &format!("{}{ghost}", s.config()));
    let r = wait_for("only ghost missing", Duration::from_secs(20), || {
        let r = call(&g, "GET", "/ready", None, None);
        (r.json["upstreams_without_instances"] == json!(["ghost"])).then_some(r)
    });
    assert_eq!(r.status, 503, "{:?}", r.raw);
    assert_eq!(r.json["status"], "unready");
    call(&g, "GET", &format!("/api/products/{lamp}"), None, None).expect(200);
    call(&g, "GET", "/api/ghost/1", None, None).refused(503, "UNAVAILABLE", "no healthy instance of ghost");

    // The route gone, its upstream kept: nothing calls it, so ready; `/health`, which counts
    // every upstream, still says degraded.
    let unused = format!("{}\n[upstream.ghost]\nservice = \"ghost-service\"\n", s.config());
    replace_file(&s.scratch.join("gateway-ghost.toml"), &unused);
    wait_for("ready after the reload", Duration::from_secs(10), || {
        (call(&g, "GET", "/ready", None, None).status == 200).then_some(())
    });
    let h = call(&g, "GET", "/health", None, None);
    assert_eq!(
        (h.status, h.json["status"].as_str()),
        (503, Some("degraded")),
        "{:?}",
        h.raw
    );
}

#[test]
fn after_sigterm_ready_says_503_for_the_drain_window_while_routes_still_answer() {
    let s = Stack::start("ops-drain");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    let text = with_gateway_key(&s.config(), "drain = \"3s\"");
    let mut g = start_gateway(&s.scratch, "gateway-drain", &text);
    s.wait_ready(&g);
    call(&g, "GET", "/ready", None, None).expect(200);

    g.signal("TERM");
    let signalled = Instant::now();
    let r = wait_for("/ready says draining", Duration::from_secs(2), || {
        let r = call(&g, "GET", "/ready", None, None);
        (r.status == 503).then_some(r)
    });
    assert_eq!(r.json, json!({ "status": "draining" }));
    // Everything else is served as before, on new connections.
    call(&g, "GET", &format!("/api/products/{lamp}"), None, None).expect(200);
    call(&g, "GET", "/health", None, None).expect(200);
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "the checks above ran inside the window"
    );

    // Then it stops (a second SIGTERM changes nothing) once the window is over.
    let status = g.terminate();
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(10),
        "stopped {took:?} after SIGTERM"
    );
    assert!(request(&g.addr().to_string(), "GET", "/ready", &[], None).is_none());
    assert!(g.logs().contains("/ready answers 503 from now"), "{}", g.logs());
}

/// Every JSON line of the access log file at `path` once `done` holds for its text.
fn access_lines(path: &Path, done: impl Fn(&str) -> bool) -> Vec<Value> {
    let text = wait_for("access lines in the file", Duration::from_secs(5), || {
        std::fs::read_to_string(path).ok().filter(|t| done(t))
    });
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn access_lines_in_json_go_to_the_file_and_text_lines_carry_the_chosen_fields() {
    let s = Stack::start("ops-access");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    std::fs::create_dir(s.scratch.join("logs")).unwrap();
    let all = r#"["route", "method", "path", "status", "latency", "upstream", "retried", "bytes", "peer", "request_id", "trace_id"]"#;
    let text = format!(
        "{}\n[access_log]\nformat = \"json\"\nfields = {all}\nfile = \"logs/access.jsonl\"\n",
        s.config()
    );
    let g = start_gateway(&s.scratch, "gateway-json", &text);
    s.wait_ready(&g);
    let hit = send(
        &g,
        "GET",
        &format!("/api/products/{lamp}"),
        &[("x-request-id", "json-1")],
        None,
    )
    .expect(200);
    send(&g, "GET", "/nope", &[("x-request-id", "json-2")], None).expect(404);

    let lines = access_lines(&s.scratch.join("logs/access.jsonl"), |t| t.contains("json-2"));
    let find = |id: &str| lines.iter().find(|l| l["request_id"] == id).unwrap().clone();
    let line = find("json-1");
    assert_eq!(line["route"], "get-product");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], format!("/api/products/{lamp}"));
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    let port = format!(":{}", s.product.addr().port());
    assert!(line["upstream"].as_str().unwrap().ends_with(&port), "{line}");
    assert_eq!(line["retried"], false);
    assert_eq!(line["bytes"], hit.raw.body.len());
    assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{line}");
    let traceparent = hit.header("traceparent").unwrap_or_default().to_owned();
    assert_eq!(
        line["trace_id"].as_str().map(|t| traceparent.contains(t)),
        Some(true),
        "the trace id returned: {traceparent}"
    );
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 12, "time and every field: {keys:?}");
    let miss = find("json-2");
    assert_eq!(
        (miss["route"].as_str(), miss["status"].as_u64()),
        (Some("-"), Some(404))
    );
    assert_eq!(miss["upstream"], Value::Null);
    assert!(
        !g.logs().contains(" access: "),
        "lines go to the file, not stderr"
    );

    // Text, to stderr, with only the fields listed, in their order.
    let text = format!(
        "{}\n[access_log]\nfields = [\"status\", \"bytes\", \"trace_id\", \"request_id\"]\n",
        s.config()
    );
    let g = start_gateway(&s.scratch, "gateway-text", &text);
    s.wait_ready(&g);
    let hit = send(
        &g,
        "GET",
        &format!("/api/products/{lamp}"),
        &[("x-request-id", "text-1")],
        None,
    )
    .expect(200);
    let trace_id = hit
        .header("traceparent")
        .and_then(|t| t.split('-').nth(1))
        .unwrap_or_default()
        .to_owned();
    let want = format!(
        " INFO access: status=200 bytes={} trace_id={trace_id} request_id=text-1\n",
        hit.raw.body.len()
    );
    wait_for("the text line", Duration::from_secs(5), || {
        g.logs().contains(&want).then_some(())
    });
}

/// `GET path` on the admin listener at `addr`, as JSON.
fn admin_get(addr: &str, path: &str) -> (u16, Value, String) {
    let r = request(addr, "GET", path, &[], None).unwrap_or_else(|| panic!("no answer to {path}"));
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
        r.body,
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The admin `/upstreams` after two failed calls to `dead`: its breaker is open, saying why
/// and what failed; Consul-watched upstreams list their instances.
fn upstreams_show_the_open_breaker_and_why(addr: &str, dead: &str) {
    let (status, up, body) = admin_get(addr, "/upstreams");
    assert_eq!(status, 200, "{body}");
    let instance = &up["products"]["instances"][0];
    assert_eq!(instance["address"], dead);
    let breaker = &instance["breakers"]["default"];
    assert_eq!(breaker["state"], "open", "{body}");
    assert_eq!(breaker["trips"], 1);
    assert_eq!(breaker["last_trip"]["reason"], "consecutive_failures");
    let failure = breaker["last_trip"]["failure"].as_str().unwrap();
    assert!(
        failure.contains(dead) && failure.contains("not sent"),
        "{failure}"
    );
    assert!(breaker["probe_in_ms"].as_u64().unwrap() > 50_000, "{body}");
    assert_eq!(up["users"]["instances"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(up["users"]["discovery"], json!({ "consul": "user-service" }));
}

/// The public listener beside an admin one: no admin endpoint, and a `/health` without paths
/// or addresses (the admin listener's has them).
fn public_listener_serves_no_admin_endpoint(g: &shop_testkit::Process, addr: &str, path: &Path) {
    for path in ["/config", "/upstreams", "/metrics"] {
        call(g, "GET", path, None, None).refused(404, "NOT_FOUND", "no route");
    }
    let h = call(g, "GET", "/health", None, None).expect(200);
    assert_eq!(h.json["status"], "ok");
    assert_eq!(
        (h.json["routes"].as_u64(), h.json["upstreams"].as_u64()),
        (Some(22), Some(3))
    );
    assert!(
        !h.raw.body.contains("127.0.0.1") && !h.raw.body.contains(".toml"),
        "{}",
        h.raw.body
    );
    let (_, full, _) = admin_get(addr, "/health");
    assert_eq!(full["config"], path.display().to_string());
}

#[test]
fn the_admin_view_answers_on_its_own_address_and_never_on_the_public_one() {
    let s = Stack::start("ops-admin");
    // Products pinned to an address nothing listens on, with a breaker that opens after two
    // failures: the admin view shows why it opened.
    let dead = format!("127.0.0.1:{}", shop_testkit::free_port());
    let text = set_table(
        &s.config(),
        "upstream.products",
        &format!("addresses = [\"{dead}\"]\ntimeout = \"1s\""),
    );
    let text = set_table(
        &text,
        "breaker.default",
        "consecutive_failures = 2\nfailure_ratio = 0.9\nmin_calls = 100\nwindow = \"10s\"\nopen_for = \"60s\"",
    );
    let addr = format!("127.0.0.1:{}", shop_testkit::free_port());
    let text = format!("{text}\n[admin]\naddress = \"{addr}\"\n");
    let g = start_gateway(&s.scratch, "gateway-admin", &text);
    s.wait_ready(&g);
    for _ in 0..2 {
        call(&g, "GET", "/api/products/1", None, None).expect(503);
    }

    upstreams_show_the_open_breaker_and_why(&addr, &dead);

    let (status, config, body) = admin_get(&addr, "/config");
    assert_eq!(status, 200, "{body}");
    let path = s.scratch.join("gateway-admin.toml");
    let sha256 = sha256_hex(text.as_bytes());
    assert_eq!(config["file"]["sha256"], sha256.as_str());
    assert_eq!(config["file"]["path"], path.display().to_string());
    assert!(config["file"]["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(config["routes"].as_array().unwrap().len(), 22);
    assert_eq!(config["routes"][0]["rpc"], "shop.user.v1.UserService/Register");
    assert_eq!(config["upstreams"]["products"]["addresses"], json!([dead]));
    assert_eq!(config["breakers"]["default"]["open_for"], "60s");
    assert_eq!(config["gateway"]["drain"], "5s");
    assert_eq!(config["admin"]["address"], addr.as_str());
    assert_eq!(config["access_log"]["format"], "text");
    assert_eq!(config["reloads"]["last_refused"], Value::Null);

    let (status, _, metrics) = admin_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("gateway_breaker_trips_total{policy=\"default\""),
        "{metrics}"
    );
    assert_eq!(admin_get(&addr, "/nope").0, 404);
    let post = request(&addr, "POST", "/config", &[], Some(b"{}")).unwrap();
    assert_eq!(post.status, 405);

    public_listener_serves_no_admin_endpoint(&g, &addr, &path);

    // A refused reload shows in /config, with check's words, while the old file serves on.
    replace_file(
        &path,
        &text.replacen("limit = \"default\"", "limit = \"tigth\"", 1),
    );
    let config = wait_for("the refused reload", Duration::from_secs(10), || {
        let (_, c, _) = admin_get(&addr, "/config");
        (c["reloads"]["refused"] == 1).then_some(c)
    });
    let refused = &config["reloads"]["last_refused"];
    assert_eq!(refused["cause"], "file changed");
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("no [limit.tigth] is defined"), "{error}");
    assert_eq!(
        config["file"]["sha256"],
        sha256.as_str(),
        "the old file still serves"
    );
}
