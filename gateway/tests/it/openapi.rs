//! The API description: `gateway openapi` on the default gateway.toml lists every route with its
//! method, operationId, success status and auth, and a real validator (`openapi-spec-validator`
//! from PyPI, installed into .tools/ by `gateway/scripts/get-openapi-validator`) accepts it; a
//! running gateway serves the same document at `/openapi.json` and regenerates it on reload.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shop_gateway::config;
use shop_testkit::tokens::TokenMint;
use shop_testkit::{Launch, Scratch};

use crate::check::default_file;
use crate::support::{call, start_gateway};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const INSTALLER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/get-openapi-validator");
const HINT: &str = "run `gateway/scripts/get-openapi-validator` (it installs openapi-spec-validator \
     from PyPI into .tools/openapi-venv/; needs python3 with venv, Debian: apt-get install \
     python3-venv), or point SHOP_OPENAPI_VALIDATOR at an openapi-spec-validator executable";

/// The validator: `SHOP_OPENAPI_VALIDATOR` (as `just test` sets it), else the one the install
/// script finds or installs. Panics with the hint when there is none: the test fails, never skips.
fn validator() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOP_OPENAPI_VALIDATOR").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SHOP_OPENAPI_VALIDATOR={} is not a file; {HINT}",
            path.display()
        );
        return path;
    }
    let out = Command::new("bash")
        .arg(INSTALLER)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {INSTALLER}: {e}; {HINT}"));
    assert!(
        out.status.success(),
        "openapi-spec-validator is missing and could not be installed:\n{}\n{HINT}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs the validator on `file`: (accepted, what it said).
fn validate(file: &Path) -> (bool, String) {
    let bin = validator();
    let out = Command::new(&bin)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {HINT}", bin.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `gateway openapi --config <file>` on `text`: the document it prints.
fn generate(scratch: &Scratch, text: &str) -> Value {
    let path = scratch.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let (status, out, err) = Launch::new(BIN, "openapi", scratch.path())
        .arg("openapi")
        .arg("--config")
        .arg(path.to_str().unwrap())
        .run(None);
    assert!(status.success(), "gateway openapi failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// Asserts that every route of `file` is an operation of `doc`, with its method, name, status
/// and security, and that `doc` has no other operation.
#[track_caller]
fn every_route_is_in(doc: &Value, file: &Path) {
    let config = config::load(file).unwrap();
    assert_eq!(config.routes.len(), 22, "the default file's routes");
    let mut operations = 0;
    for (_, item) in doc["paths"].as_object().unwrap() {
        operations += item.as_object().unwrap().len();
    }
    assert_eq!(operations, config.routes.len(), "one operation per route");
    for r in &config.routes {
        let op = &doc["paths"][r.template.as_str()][r.method.to_ascii_lowercase()];
        let at = format!("{} {} ({})", r.method, r.template, r.name);
        assert_eq!(op["operationId"], r.name.as_str(), "{at}: {op}");
        let success = &op["responses"][r.status.to_string()];
        assert!(success.is_object(), "{at}: no {} response", r.status);
        if r.status == 204 {
            assert!(success.get("content").is_none(), "{at}: 204 has content");
        } else {
            let schema = &success["content"]["application/json"]["schema"]["$ref"];
            let want = format!("#/components/schemas/{}", r.rpc.output().full_name());
            assert_eq!(schema, &json!(want), "{at}");
        }
        let security = match r.access {
            config::Access::Public => json!([]),
            config::Access::User | config::Access::Admin => json!([{ "bearer": [] }]),
        };
        assert_eq!(op["security"], security, "{at}");
        assert_eq!(
            op["responses"]["400"]["$ref"], "#/components/responses/BadRequest",
            "{at}"
        );
    }
    assert_eq!(
        doc["components"]["responses"]["BadRequest"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Error"
    );
}

#[test]
fn the_document_lists_every_route_and_a_real_validator_accepts_it() {
    let scratch = Scratch::new("openapi");
    let doc = generate(&scratch, &default_file());
    every_route_is_in(&doc, &scratch.join("gateway.toml"));
    assert_eq!(doc["openapi"], "3.1.0");
    let user = &doc["components"]["schemas"]["shop.user.v1.User"];
    assert_eq!(user["properties"]["id"]["format"], "int64");
    assert!(user["properties"].get("password").is_none(), "{user}");

    let file = scratch.join("openapi.json");
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let (ok, said) = validate(&file);
    assert!(ok, "openapi-spec-validator refused the document:\n{said}");

    // The validator is not a rubber stamp: a path parameter that is not required is refused.
    let mut broken = doc.clone();
    broken["paths"]["/api/products/{id}"]["get"]["parameters"][0]["required"] = json!(false);
    let file = scratch.join("broken.json");
    std::fs::write(&file, broken.to_string()).unwrap();
    let (ok, said) = validate(&file);
    assert!(!ok, "a broken document passed:\n{said}");
}

/// The default file with static upstreams (no Consul), a throwaway public key and a free port.
fn standalone(scratch: &Scratch) -> String {
    TokenMint::create(&scratch.join("keys"));
    let key = scratch.join("keys/token-signing.pub.pem");
    let mut text = default_file()
        .replace("consul = \"http://127.0.0.1:8500\"", "consul = \"\"")
        .replace(
            "public_key = \".run/data/keys/token-signing.pub.pem\"",
            &format!("public_key = \"{}\"", key.display()),
        )
        .replace("address = \"127.0.0.1:8080\"", "address = \"127.0.0.1:0\"");
    for service in ["user-service", "product-service", "order-service"] {
        let from = format!("service = \"{service}\"");
        assert!(text.contains(&from), "gateway.toml changed shape");
        text = text.replace(&from, "addresses = [\"127.0.0.1:9\"]");
    }
    text
}

#[test]
fn a_running_gateway_serves_the_document_and_regenerates_it_on_reload() {
    let scratch = Scratch::new("openapi-served");
    let text = standalone(&scratch);
    let printed = generate(&scratch, &text);
    let gateway = start_gateway(&scratch, "gateway", &text);

    let served = call(&gateway, "GET", "/openapi.json", None, None);
    assert_eq!(served.status, 200, "{:?}", served.raw);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(served.json, printed, "served and printed documents differ");
    let post = call(&gateway, "POST", "/openapi.json", None, Some("{}"));
    assert_eq!(post.status, 405, "{:?}", post.raw);

    // A renamed route: the next configuration serves its own document.
    let renamed = text.replace("name = \"get-product\"", "name = \"fetch-product\"");
    assert_ne!(renamed, text);
    let path = scratch.join("gateway.toml");
    let tmp = scratch.join("gateway.toml.new");
    std::fs::write(&tmp, &renamed).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let started = Instant::now();
    loop {
        let a = call(&gateway, "GET", "/openapi.json", None, None);
        if a.json["paths"]["/api/products/{id}"]["get"]["operationId"] == "fetch-product" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the document did not follow the file:\n{}",
            gateway.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
