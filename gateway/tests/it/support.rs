//! The whole shop for one test: a Consul agent, the user, product and order services, and a
//! gateway serving a copy of the default gateway.toml (pointed at this test's Consul, key and a
//! free port), called over HTTP like a client would.

use std::time::{Duration, Instant};

use serde_json::Value;
use shop_testkit::consul::ConsulAgent;
use shop_testkit::http::{Response, request};
use shop_testkit::{Launch, Process, Scratch, issue_service_token, sibling_binary};

pub const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_gateway");
pub const ADMIN_PASSWORD: &str = "root-password-1";
/// The payment webhook secret every test stack's order service and "provider" share.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789abcdef";

pub struct Stack {
    pub scratch: Scratch,
    pub agent: ConsulAgent,
    /// Held so that the process lives as long as the stack.
    pub _user: Process,
    pub product: Process,
    pub product_launch: Launch,
    pub order: Process,
    pub order_launch: Launch,
    pub gateway: Process,
}

/// An answer with its body read as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub raw: Response,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.raw.header(name)
    }

    /// The `id` member of the body.
    pub fn id(&self) -> i64 {
        self.json["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id in {:?}", self.raw))
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Answer {
        assert_eq!(self.status, status, "unexpected answer: {:?}", self.raw);
        self
    }

    /// Asserts an error answer: status, `code`, and a piece of `error`.
    #[track_caller]
    pub fn refused(&self, status: u16, code: &str, needle: &str) {
        assert_eq!(self.status, status, "{:?}", self.raw);
        assert_eq!(self.json["code"], code, "{:?}", self.raw);
        let message = self.json["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

pub fn service(scratch: &Scratch, agent: &ConsulAgent, name: &str) -> Launch {
    agent.service(sibling_binary(GATEWAY_BIN, name), name, scratch)
}

impl Stack {
    pub fn start(name: &str) -> Stack {
        Stack::start_with(name, &[])
    }

    /// A stack whose order service also gets these `--set key=value` settings. The gateway
    /// listens on a port chosen before the order service starts, so that the simulated payment
    /// provider can report to it.
    pub fn start_with(name: &str, order_settings: &[&str]) -> Stack {
        Stack::start_full(name, order_settings, None)
    }

    /// A stack whose gateway and services send their spans to the OTLP collector at `otlp`.
    pub fn start_traced(name: &str, otlp: &str) -> Stack {
        Stack::start_full(name, &[], Some(otlp))
    }

    fn start_full(name: &str, order_settings: &[&str], otlp: Option<&str>) -> Stack {
        let scratch = Scratch::new(name);
        let agent = ConsulAgent::start(scratch.path());
        let service = |name: &str| {
            let launch = service(&scratch, &agent, name);
            match otlp {
                Some(url) => launch.env("SHOP_TRACING_OTLP_TRACES", url),
                None => launch,
            }
        };
        let user = service("user-service")
            .env("SHOP_ADMIN_USER", "root")
            .env("SHOP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .start();
        issue_service_token(
            &sibling_binary(GATEWAY_BIN, "user-service"),
            &scratch,
            "order-service",
        );
        let product_launch = service("product-service");
        let product = product_launch.start();
        let port = shop_testkit::free_port();
        let mut order = service("order-service")
            .env("SHOP_PAYMENTS_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("SHOP_PAYMENTS_PROVIDER", "simulated")
            .arg("--set")
            .arg("upstream.timeout=1s")
            .arg("--set")
            .arg(format!(
                "payments.webhook_url=http://127.0.0.1:{port}/api/payments/webhook"
            ));
        for s in order_settings {
            order = order.arg("--set").arg(*s);
        }
        let order_launch = order;
        let order = order_launch.start();
        let mut text = relaxed(&default_config(&scratch, &agent)).replace(
            "address = \"127.0.0.1:0\"",
            &format!("address = \"127.0.0.1:{port}\""),
        );
        if let Some(url) = otlp {
            text = text.replacen("[gateway]\n", &format!("[gateway]\notlp_traces = \"{url}\"\n"), 1);
        }
        let gateway = start_gateway(&scratch, "gateway", &text);
        let stack = Stack {
            scratch,
            agent,
            _user: user,
            product,
            product_launch,
            order,
            order_launch,
            gateway,
        };
        stack.wait_ready(&stack.gateway);
        stack
    }

    /// The gateway.toml this stack's gateway serves: the default one, adapted to this stack,
    /// with login and sign-up limits raised (see [`relaxed`]).
    pub fn config(&self) -> String {
        relaxed(&default_config(&self.scratch, &self.agent))
    }

    /// Waits until `gateway`'s /health says every upstream has an instance.
    pub fn wait_ready(&self, gateway: &Process) {
        let started = Instant::now();
        loop {
            let h = call(gateway, "GET", "/health", None, None);
            if h.status == 200 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "gateway not ready: {:?}",
                h.raw
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `gateway` sees `n` instances of `upstream`.
    pub fn wait_instances(&self, gateway: &Process, upstream: &str, n: u64) {
        let started = Instant::now();
        loop {
            let h = call(gateway, "GET", "/health", None, None);
            if h.json["upstreams"][upstream]["instances"].as_u64() == Some(n) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the gateway does not see {n} {upstream}: {:?}",
                h.raw
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A call through the stack's gateway.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
        call(&self.gateway, method, path, token, body)
    }

    pub fn admin(&self) -> String {
        self.login("root", ADMIN_PASSWORD)
    }

    pub fn login(&self, name: &str, password: &str) -> String {
        let body = serde_json::json!({ "username": name, "password": password }).to_string();
        let a = self
            .call("POST", "/api/users/login", None, Some(&body))
            .expect(200);
        a.json["access_token"].as_str().unwrap().to_owned()
    }

    /// Registers a customer through the gateway; returns (id, token).
    pub fn customer(&self, name: &str) -> (i64, String) {
        let body = serde_json::json!({
            "username": name,
            "email": format!("{name}@example.com"),
            "password": "password-123",
        })
        .to_string();
        let id = self
            .call("POST", "/api/users", None, Some(&body))
            .expect(201)
            .id();
        (id, self.login(name, "password-123"))
    }

    /// Creates a product as the admin; returns its id.
    pub fn product(&self, admin: &str, name: &str, price_cents: i64, stock: i64) -> i64 {
        let body = serde_json::json!({
            "name": name,
            "price_cents": price_cents,
            "stock": stock,
            "category": "test",
        })
        .to_string();
        self.call("POST", "/api/products", Some(admin), Some(&body))
            .expect(201)
            .id()
    }

    pub fn stock(&self, id: i64) -> i64 {
        let a = self
            .call("GET", &format!("/api/products/{id}"), None, None)
            .expect(200);
        a.json["stock"].as_i64().unwrap()
    }
}

impl Stack {
    /// `product-service audit` on this stack's product database: true when stock + units held
    /// = stock set by admins for every product.
    pub fn audit_ok(&self) -> (bool, String) {
        shop_testkit::product_audit(&sibling_binary(GATEWAY_BIN, "product-service"), &self.scratch)
    }

    /// Places an order of `quantity` units of `product`; returns its id.
    pub fn order(&self, token: &str, product: i64, quantity: i64) -> i64 {
        let body = serde_json::json!({
            "items": [{"product_id": product, "quantity": quantity}],
            "shipping_address": "1 Test Street",
        })
        .to_string();
        self.call("POST", "/api/orders", Some(token), Some(&body))
            .expect(201)
            .id()
    }

    /// Polls `GET /api/orders/{id}` (as `token`) until `done` holds for it, for up to 15 s.
    #[track_caller]
    pub fn wait_order(&self, token: &str, id: i64, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let a = self.call("GET", &format!("/api/orders/{id}"), Some(token), None);
            if a.status == 200 && done(&a.json) {
                return a.json;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "order {id} never got there: {:?}",
                a.raw
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a payment provider's report to the webhook, signed with `secret` at unix time `t`
    /// (the body exactly as given).
    pub fn report(&self, body: &str, secret: &str, t: i64) -> Answer {
        let signature = sign(secret, t, body.as_bytes());
        send(
            &self.gateway,
            "POST",
            "/api/payments/webhook",
            &[
                ("Content-Type", "application/json"),
                ("Shop-Signature", &signature),
            ],
            Some(body.as_bytes()),
        )
    }
}

/// Now, in unix seconds.
pub fn unix_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

/// A provider's `Shop-Signature` for `body` at `t`: `t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

pub fn default_config(scratch: &Scratch, agent: &ConsulAgent) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway.toml")).unwrap();
    let key = scratch.join("data/keys/token-signing.pub.pem");
    let replaced = text
        .replace(
            "consul = \"http://127.0.0.1:8500\"",
            &format!("consul = \"{}\"", agent.url()),
        )
        .replace(
            "public_key = \".run/data/keys/token-signing.pub.pem\"",
            &format!("public_key = \"{}\"", key.display()),
        )
        .replace("address = \"127.0.0.1:8080\"", "address = \"127.0.0.1:0\"");
    assert_eq!(
        replaced.matches(&agent.url()).count(),
        1,
        "gateway.toml changed shape"
    );
    assert!(replaced.contains("127.0.0.1:0"), "gateway.toml changed shape");
    replaced
}

/// `text` with the body of its table `[TABLE]` (up to the next blank line) replaced by `body`.
pub fn set_table(text: &str, table: &str, body: &str) -> String {
    let head = format!("[{table}]\n");
    let start = text.find(&head).unwrap_or_else(|| panic!("no [{table}]")) + head.len();
    let end = start + text[start..].find("\n\n").unwrap();
    format!("{}{}{}", &text[..start], body.trim_end(), &text[end..])
}

/// `text` with its `[limit.NAME]` table's body replaced by `body`.
pub fn set_limit(text: &str, name: &str, body: &str) -> String {
    set_table(text, &format!("limit.{name}"), body)
}

/// The default file with the strict per-address login and sign-up limits raised: every test
/// logs in and registers from 127.0.0.1, and only the limit tests are about limits.
pub fn relaxed(text: &str) -> String {
    let text = set_limit(text, "login", "rate = 1000\nburst = 1000\nkey = \"ip\"");
    set_limit(&text, "signup", "rate = 1000\nburst = 1000\nkey = \"ip\"")
}

/// Writes `text` to `<name>.toml` in the scratch folder and starts a gateway on it.
pub fn start_gateway(scratch: &Scratch, name: &str, text: &str) -> Process {
    let path = scratch.join(&format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    Launch::new(GATEWAY_BIN, name, scratch.path())
        .arg("--config")
        .arg(path.to_str().unwrap())
        .start()
}

/// One HTTP call to `gateway`, with a bearer token and a JSON body when given.
pub fn call(gateway: &Process, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    send(gateway, method, path, &headers, body.map(str::as_bytes))
}

/// One HTTP call with any headers and body.
pub fn send(
    gateway: &Process,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Answer {
    let raw = request(&gateway.addr().to_string(), method, path, headers, body)
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}"));
    let json = serde_json::from_str(&raw.body).unwrap_or(Value::Null);
    Answer {
        status: raw.status,
        json,
        raw,
    }
}
