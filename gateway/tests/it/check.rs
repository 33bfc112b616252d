//! `gateway check`: the default gateway.toml is valid, and each kind of mistake is reported
//! with the file, the route or table, the key and what is wrong, all of them at once; the
//! example variants in examples/ are valid.

use shop_testkit::{Launch, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

pub fn default_file() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway.toml")).unwrap()
}

/// Runs `gateway check` on `text` written to `gateway.toml` in the scratch folder; returns (ok,
/// stdout + stderr).
pub fn check(scratch: &Scratch, text: &str) -> (bool, String) {
    let path = scratch.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let (status, out, err) = Launch::new(BIN, "check", scratch.path())
        .arg("check")
        .arg("--config")
        .arg(path.to_str().unwrap())
        .run(None);
    (status.success(), format!("{out}{err}"))
}

#[track_caller]
fn refused(scratch: &Scratch, text: &str, wants: &[&str]) {
    let (ok, out) = check(scratch, text);
    assert!(!ok, "should be refused:\n{out}");
    assert!(out.contains("gateway.toml"), "names the file:\n{out}");
    for want in wants {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
}

#[test]
fn the_default_file_serves_the_whole_rest_table() {
    let scratch = Scratch::new("check-default");
    let (ok, out) = check(&scratch, &default_file());
    assert!(ok, "{out}");
    assert!(out.contains("22 routes, 3 upstreams"), "{out}");
    let text = default_file();
    for (method, path) in [
        ("POST", "/api/users"),
        ("POST", "/api/users/login"),
        ("GET", "/api/users/{id}"),
        ("PUT", "/api/users/{id}"),
        ("DELETE", "/api/users/{id}"),
        ("POST", "/api/products"),
        ("GET", "/api/products"),
        ("GET", "/api/products/{id}"),
        ("PUT", "/api/products/{id}"),
        ("DELETE", "/api/products/{id}"),
        ("POST", "/api/orders"),
        ("GET", "/api/orders/{id}"),
        ("GET", "/api/orders/user/{user_id}"),
        ("PUT", "/api/orders/{id}/status"),
        ("DELETE", "/api/orders/{id}"),
    ] {
        let needle = format!("method = \"{method}\"\npath = \"{path}\"\n");
        assert!(
            text.contains(&needle),
            "the design page's {method} {path} is routed"
        );
    }
}

#[test]
fn a_typo_in_a_key() {
    let scratch = Scratch::new("check-typo");
    let text = default_file().replacen("method = \"GET\"", "methd = \"GET\"", 1);
    refused(&scratch, &text, &["unknown field `methd`", "line"]);
    let text = default_file().replacen("[upstream.users]\nservice", "[upstream.users]\nservise", 1);
    refused(&scratch, &text, &["unknown field `servise`"]);
}

#[test]
fn a_route_to_an_rpc_that_does_not_exist() {
    let scratch = Scratch::new("check-rpc");
    let text = default_file().replacen("UserService/Register", "UserService/Regster", 1);
    refused(
        &scratch,
        &text,
        &[
            "route \"register\": rpc: shop.user.v1.UserService has no method \"Regster\"",
            "Register, Login",
        ],
    );
    let text = default_file().replacen(
        "shop.user.v1.UserService/Login",
        "shop.users.v1.UserService/Login",
        1,
    );
    refused(
        &scratch,
        &text,
        &["route \"login\": rpc: no service \"shop.users.v1.UserService\""],
    );
}

#[test]
fn a_path_parameter_that_matches_no_field() {
    let scratch = Scratch::new("check-param");
    let text = default_file().replacen("path = \"/api/users/{id}\"", "path = \"/api/users/{uid}\"", 1);
    refused(
        &scratch,
        &text,
        &["route \"get-user\": path: {uid} matches no field of shop.user.v1.GetUserRequest (fields: id)"],
    );
}

#[test]
fn routes_that_collide_or_are_ambiguous() {
    let scratch = Scratch::new("check-collide");
    let text = default_file().replacen("path = \"/api/orders/{id}\"", "path = \"/api/orders/{order}\"", 1);
    // GET /api/orders/{order} now also needs a field "order", and collides with nothing...
    let twin = format!(
        "{}\n[[route]]\nname = \"get-order-again\"\nmethod = \"GET\"\npath = \"/api/orders/{{id}}\"\nupstream = \"orders\"\nrpc = \"shop.order.v1.OrderService/GetOrder\"\n",
        default_file()
    );
    refused(
        &scratch,
        &twin,
        &["route \"get-order\": path: collides with route \"get-order-again\""],
    );
    refused(&scratch, &text, &["{order} matches no field"]);
}

#[test]
fn an_undefined_policy_or_upstream() {
    let scratch = Scratch::new("check-policy");
    let text = default_file()
        .replacen("limit = \"login\"", "limit = \"logins\"", 1)
        .replacen("breaker = \"default\"", "breaker = \"strict\"", 1)
        .replacen("upstream = \"products\"", "upstream = \"catalog\"", 1);
    refused(
        &scratch,
        &text,
        &[
            "route \"login\": limit: no [limit.logins] is defined",
            "route \"register\": breaker: no [breaker.strict] is defined",
            "route \"create-product\": upstream: no [upstream.catalog] is defined",
            "3 problems",
        ],
    );
}

#[test]
fn bad_values_are_named() {
    let scratch = Scratch::new("check-values");
    let text = default_file()
        .replacen("timeout = \"3s\"", "timeout = \"3 seconds\"", 1)
        .replacen("status = 201", "status = 202", 1)
        .replacen("auth = \"public\"", "auth = \"anyone\"", 1)
        .replacen("address = \"127.0.0.1:8080\"", "address = \"localhost\"", 1)
        .replacen("key = \"ip\"", "key = \"mac\"", 1);
    refused(
        &scratch,
        &text,
        &[
            "upstream \"users\": timeout: expected a duration",
            "route \"register\": status: expected 200, 201 or 204, got 202",
            "route \"register\": auth: expected public, user or admin",
            "listener 1: address: expected ip:port",
            "limit \"login\": key: expected ip, user, route or global",
        ],
    );
}

#[test]
fn a_new_service_needs_only_its_proto_file() {
    let scratch = Scratch::new("check-new-rpc");
    std::fs::create_dir_all(scratch.join("protos/shop/review/v1")).unwrap();
    std::fs::write(
        scratch.join("protos/shop/review/v1/review.proto"),
        "syntax = \"proto3\";\npackage shop.review.v1;\nservice ReviewService {\n  rpc GetReview(GetReviewRequest) returns (Review);\n}\nmessage GetReviewRequest { int64 id = 1; }\nmessage Review { int64 id = 1; string text = 2; }\n",
    )
    .unwrap();
    let text = default_file().replacen(
        "source = \"builtin\"",
        "source = \"files\"\nfiles = [\"protos/shop/review/v1/review.proto\"]\nincludes = [\"protos\"]",
        1,
    );
    // The shop's own routes now fail (their RPCs are not in the files), the new one resolves.
    let with_review = format!(
        "{}\n[upstream.reviews]\naddresses = [\"127.0.0.1:5010\"]\n\n[[route]]\nname = \"get-review\"\nmethod = \"GET\"\npath = \"/api/reviews/{{id}}\"\nupstream = \"reviews\"\nrpc = \"shop.review.v1.ReviewService/GetReview\"\nauth = \"public\"\n",
        text
    );
    let (ok, out) = check(&scratch, &with_review);
    assert!(!ok);
    assert!(
        !out.contains("get-review"),
        "the new route resolves from the .proto file:\n{out}"
    );
    assert!(out.contains("no service \"shop.user.v1.UserService\""), "{out}");
}

#[test]
fn the_example_variants_are_valid_and_differ_as_they_say() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let scratch = Scratch::new("check-examples");
    for (file, must, must_not) in [
        ("examples/gateway-static.toml", "consul = \"\"", "\nservice = "),
        (
            "examples/gateway-strict.toml",
            "limit = \"browse\"",
            "per = \"1m\"",
        ),
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let (ok, out) = check(&scratch, &text);
        assert!(ok && out.contains(": ok: 22 routes"), "{file}: {out}");
        assert!(text.contains(must) && !text.contains(must_not), "{file}");
    }
}

#[test]
fn the_compose_file_is_the_default_file_with_its_three_addresses() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let body = |text: &str| text[text.find("[gateway]").unwrap()..].to_owned();
    let want = body(&default_file())
        .replace(
            "consul = \"http://127.0.0.1:8500\"",
            "consul = \"http://172.28.0.2:8500\"",
        )
        .replace(
            "public_key = \".run/data/keys/token-signing.pub.pem\"",
            "public_key = \"/var/lib/shop/keys/token-signing.pub.pem\"",
        )
        .replace("address = \"127.0.0.1:8080\"", "address = \"0.0.0.0:8080\"");
    let compose = std::fs::read_to_string(format!("{root}/examples/compose/gateway.toml")).unwrap();
    assert!(
        body(&compose) == want,
        "examples/compose/gateway.toml drifted from gateway.toml: regenerate it from the default \
         file with the three addresses changed"
    );
    let scratch = Scratch::new("check-compose");
    // Valid as a file too (the key path is the container's, so only the schema is checked).
    let (ok, out) = check(&scratch, &compose);
    assert!(ok, "{out}");
}

/// A `[[route]]` to append to the default file, at `/api/check-test/{path}` and named by the
/// path's first segment (a place of its own, so routes added to the file later do not collide
/// with it).
fn extra_route(path: &str, method: &str, rpc: &str, keys: &str) -> String {
    let name = path.split('/').next().unwrap_or(path);
    format!(
        "\n[[route]]\nname = \"{name}\"\nmethod = \"{method}\"\npath = \"/api/check-test/{path}\"\nupstream = \"orders\"\nrpc = \"shop.order.v1.OrderService/{rpc}\"\nauth = \"public\"\n{keys}\n"
    )
}

#[test]
fn a_raw_body_and_a_header_binding_pass_check() {
    let scratch = Scratch::new("check-webhook");
    let text = default_file()
        + &extra_route(
            "hook",
            "POST",
            "HandlePaymentWebhook",
            "raw_body = \"payload\"\nheaders = { \"Shop-Signature\" = \"signature\" }",
        )
        + &extra_route(
            "hook-text",
            "POST",
            "HandlePaymentWebhook",
            "raw_body = \"signature\"",
        )
        + &extra_route(
            "order-by-header",
            "GET",
            "GetOrder",
            "headers = { \"X-Order-Id\" = \"id\" }",
        );
    let (ok, out) = check(&scratch, &text);
    assert!(ok, "{out}");
}

const HOOK: &str = "HandlePaymentWebhook";

/// Routes whose bindings `check` refuses: (path under /api/check-test/, its first segment naming
/// the route; method; RPC; the binding keys; the problem reported).
const BAD_BINDINGS: [(&str, &str, &str, &str, &str); 12] = [
    (
        "raw-int",
        "POST",
        "GetOrder",
        r#"raw_body = "id""#,
        "raw_body: id is not a single bytes or string field",
    ),
    (
        "raw-and-json",
        "POST",
        HOOK,
        "body = \"*\"\nraw_body = \"payload\"",
        "raw_body: body and raw_body both bind the body; keep one",
    ),
    (
        "raw-get",
        "GET",
        HOOK,
        r#"raw_body = "payload""#,
        "raw_body: GET routes take no body",
    ),
    (
        "no-such-field",
        "POST",
        HOOK,
        r#"headers = { "Shop-Signature" = "sig" }"#,
        "headers: shop-signature: \"sig\" is no field of shop.order.v1.PaymentWebhookRequest \
      (fields: payload, signature)",
    ),
    (
        "bytes-header",
        "POST",
        HOOK,
        r#"headers = { "X-Payload" = "payload" }"#,
        "headers: x-payload binds to payload, which is not a single string, number, bool or \
      enum field",
    ),
    (
        "bad-name",
        "POST",
        HOOK,
        r#"headers = { "Shop Signature" = "signature" }"#,
        "headers: \"Shop Signature\" is not a valid HTTP header name",
    ),
    (
        "two-headers",
        "POST",
        HOOK,
        r#"headers = { "Shop-Signature" = "signature", "X-Signature" = "signature" }"#,
        "headers: signature is bound twice: by header shop-signature and by header x-signature",
    ),
    (
        "header-and-raw",
        "POST",
        HOOK,
        "raw_body = \"signature\"\nheaders = { \"Shop-Signature\" = \"signature\" }",
        "headers: signature is bound twice: by raw_body and by header shop-signature",
    ),
    (
        "header-and-path/{id}",
        "GET",
        "GetOrder",
        r#"headers = { "X-Order-Id" = "id" }"#,
        "headers: id is bound twice: by {id} in the path and by header x-order-id",
    ),
    (
        "token-header",
        "POST",
        HOOK,
        r#"headers = { "Authorization" = "signature" }"#,
        "headers: Authorization cannot be bound: the token reaches the service as metadata",
    ),
    (
        "host-header",
        "POST",
        HOOK,
        r#"headers = { "Host" = "signature" }"#,
        "headers: Host cannot be bound: it describes the connection, not the request",
    ),
    (
        "same-name",
        "POST",
        HOOK,
        r#"headers = { "shop-signature" = "signature", "SHOP-SIGNATURE" = "signature" }"#,
        "headers: shop-signature is named twice (header names are case-insensitive)",
    ),
];

#[test]
fn raw_body_and_header_bindings_that_do_not_fit() {
    let scratch = Scratch::new("check-bindings");
    let mut text = default_file();
    let mut wants = Vec::new();
    for (path, method, rpc, keys, problem) in BAD_BINDINGS {
        text += &extra_route(path, method, rpc, keys);
        let name = path.split('/').next().unwrap_or(path);
        wants.push(format!("route \"{name}\": {problem}"));
    }
    wants.push(format!("{} problems", BAD_BINDINGS.len()));
    let wants: Vec<&str> = wants.iter().map(String::as_str).collect();
    refused(&scratch, &text, &wants);
}

#[test]
fn drain_access_log_and_admin_keys_are_checked() {
    let scratch = Scratch::new("check-operations");
    let bad = format!(
        "{}\n[access_log]\nformat = \"xml\"\nfields = [\"route\", \"nope\", \"route\"]\nfile = \"missing-folder/access.log\"\n\n[admin]\naddress = \"127.0.0.1:8080\"\n",
        default_file().replacen("[gateway]\n", "[gateway]\ndrain = \"soon\"\n", 1)
    );
    refused(
        &scratch,
        &bad,
        &[
            "gateway: drain: expected a duration such as \"0s\", \"500ms\" or \"5s\", got \"soon\"",
            "access_log: format: expected \"text\" or \"json\", got \"xml\"",
            "access_log: fields: unknown field \"nope\" (known: route, method, path",
            "access_log: fields: \"route\" is listed twice",
            "access_log: file: no folder",
            "admin: address: 127.0.0.1:8080 is listener 1's address",
            "6 problems",
        ],
    );
    let any_interface = default_file().replace("127.0.0.1:8080", "0.0.0.0:8080")
        + "\n[admin]\naddress = \"127.0.0.1:8080\"\n";
    refused(
        &scratch,
        &any_interface,
        &["admin: address: 127.0.0.1:8080 is listener 1's address"],
    );
    let good = format!(
        "{}\n[access_log]\nformat = \"json\"\nfields = [\"status\", \"trace_id\"]\nfile = \"access.log\"\n\n[admin]\naddress = \"127.0.0.1:9901\"\n",
        default_file().replacen("[gateway]\n", "[gateway]\ndrain = \"0s\"\n", 1)
    );
    let (ok, out) = check(&scratch, &good);
    assert!(ok, "{out}");
    assert!(!scratch.join("access.log").exists(), "check creates no file");
}

#[test]
fn secrets_come_from_the_environment_and_a_missing_one_is_named_with_its_key() {
    let scratch = Scratch::new("check-env");
    let text = default_file().replace(
        "consul = \"http://127.0.0.1:8500\"",
        "consul = \"http://${SHOP_TEST_CONSUL_HOST:-127.0.0.1}:8500\"\nconsul_token = \"${SHOP_TEST_CONSUL_TOKEN}\"",
    );
    let path = scratch.join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    let run = |token: Option<&str>| {
        let mut l = Launch::new(BIN, "check", scratch.path())
            .arg("check")
            .arg("--config")
            .arg(path.to_str().unwrap());
        if let Some(t) = token {
            l = l.env("SHOP_TEST_CONSUL_TOKEN", t);
        }
        let (status, out, err) = l.run(None);
        (status.success(), format!("{out}{err}"))
    };
    let (ok, out) = run(None);
    assert!(!ok, "{out}");
    assert!(
        out.contains("gateway: consul_token:") && out.contains("SHOP_TEST_CONSUL_TOKEN"),
        "names the key and the variable:\n{out}"
    );
    let (ok, out) = run(Some("b7c1e6f0-0000-4000-8000-000000000001"));
    assert!(ok, "{out}");
    assert!(!out.contains("b7c1e6f0"), "the token is never printed:\n{out}");
    let (ok, out) = run(Some("has space"));
    assert!(!ok && out.contains("consul_token"), "{out}");
}
