//! The stack a benchmark runs against: a plain hyper server and nginx in front of it (the
//! references), the three services and the gateway from release binaries on free ports with
//! fresh data (static upstreams: no Consul in the measurement; limits raised, since all load
//! comes from one address), plus the accounts, tokens and stock the rows need.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Drive;
use crate::load::{GrpcLoad, HttpLoad};
use crate::procs::{self, Proc, Workdir, start};

const ADMIN_PASSWORD: &str = "bench-admin-password";
const CUSTOMERS: usize = 16;

pub struct Shop {
    /// RSS of the gateway, user, product and order processes just after they started.
    pub idle_rss_mib: [u64; 4],
    /// Dropped last (after the processes): fields drop in order.
    pub plain: Proc,
    pub nginx: Proc,
    pub user: Proc,
    pub product: Proc,
    pub order: Proc,
    pub gateway: Proc,
    tokens: Vec<(i64, String)>,
    order_id: i64,
    pub dir: Workdir,
}

/// A free port on loopback (bound and released).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// One HTTP/1.1 call (`Connection: close`): the status and the body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not HTTP: {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn json_number(body: &str, key: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get(key)?.as_i64()
}

fn json_text(body: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(v.get(key)?.as_str()?.to_owned())
}

fn expect(what: &str, got: (u16, String), status: u16) -> Result<String, String> {
    if got.0 == status {
        Ok(got.1)
    } else {
        Err(format!("{what}: {} {}", got.0, got.1))
    }
}

/// Waits until something accepts connections on `addr`.
fn listening(addr: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// nginx with one worker proxying to `upstream` over kept-alive connections, its access log
/// buffered (as a production nginx would log).
fn nginx(dir: &Path, upstream: &str) -> Result<Proc, String> {
    let port = free_port()?;
    let tmp = dir.join("nginx-tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    // Workers may run as another user: let them write their temporary files.
    let _ = std::process::Command::new("chmod").arg("777").arg(&tmp).status();
    let d = dir.display();
    let t = tmp.display();
    let conf = format!(
        "worker_processes 1;\nerror_log {d}/nginx-error.log;\npid {d}/nginx.pid;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log {d}/nginx-access.log combined buffer=64k flush=1s;\n\
         client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fastcgi;\n\
         uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;\n\
         upstream plain {{ server {upstream}; keepalive 64; }}\n\
         server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://plain; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = std::process::Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .arg("-g")
        .arg("daemon off;")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("nginx.err")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start nginx ({e}); install it: apt-get install nginx-light"))?;
    let addr = format!("127.0.0.1:{port}");
    let proc = Proc {
        child,
        addr: addr.clone(),
    };
    listening(&addr)?;
    Ok(proc)
}

/// The default gateway.toml, adapted: static upstreams at these addresses, no Consul, a free
/// port, the stack's key, and every limit raised out of the way.
pub fn gateway_toml(dir: &Path, user: &str, product: &str, order: &str) -> Result<String, String> {
    let text = std::fs::read_to_string("gateway.toml").map_err(|e| format!("gateway.toml: {e}"))?;
    let key = dir.join("data/keys/token-signing.pub.pem");
    let lines: Vec<String> = text
        .lines()
        .map(|l| match l {
            _ if l.starts_with("consul = ") => "consul = \"\"".to_owned(),
            _ if l.starts_with("rate = ") => "rate = 100000000".to_owned(),
            _ if l.starts_with("burst = ") => "burst = 100000000".to_owned(),
            _ if l.starts_with("per = ") => "per = \"1s\"".to_owned(),
            "service = \"user-service\"" => format!("addresses = [\"{user}\"]"),
            "service = \"product-service\"" => format!("addresses = [\"{product}\"]"),
            "service = \"order-service\"" => format!("addresses = [\"{order}\"]"),
            "address = \"127.0.0.1:8080\"" => "address = \"127.0.0.1:0\"".to_owned(),
            _ if l.starts_with("public_key = ") => format!("public_key = \"{}\"", key.display()),
            other => other.to_owned(),
        })
        .collect();
    Ok(lines.join("\n") + "\n")
}

impl Shop {
    pub fn start(bin: &Path) -> Result<Shop, String> {
        let dir = Workdir::new()?;
        let d = dir.0.clone();
        let data = d.join("data").display().to_string();
        let plain = start(&d, "fixed-body", &bin.join("fixed-body"), &["127.0.0.1:0"], &[])?;
        let nginx = nginx(&d, &plain.addr)?;
        let base = ["--port", "0", "--data-dir", data.as_str(), "--consul", ""];
        let user = start(
            &d,
            "user",
            &bin.join("user-service"),
            &base,
            &[
                ("SHOP_ADMIN_USER", "admin"),
                ("SHOP_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ],
        )?;
        procs::run(&bin.join("product-service"), &["seed", "--data-dir", &data])?;
        let product = start(&d, "product", &bin.join("product-service"), &base, &[])?;
        let token = format!("{data}/keys/order-service.token");
        procs::run(
            &bin.join("user-service"),
            &[
                "issue-service-token",
                "--service",
                "order-service",
                "--data-dir",
                &data,
                "--out",
                &token,
            ],
        )?;
        let (users, products) = (
            format!("upstream.user_addrs={}", user.addr),
            format!("upstream.product_addrs={}", product.addr),
        );
        let mut order_args = base.to_vec();
        // The order rows place thousands of orders per customer and never pay: no unpaid cap.
        order_args.extend([
            "--set",
            &users,
            "--set",
            &products,
            "--set",
            "orders.max_unpaid=0",
        ]);
        let order = start(&d, "order", &bin.join("order-service"), &order_args, &[])?;
        let toml = d.join("gateway.toml");
        std::fs::write(&toml, gateway_toml(&d, &user.addr, &product.addr, &order.addr)?)
            .map_err(|e| e.to_string())?;
        let gateway = start(
            &d,
            "gateway",
            &bin.join("gateway"),
            &["--config", &toml.display().to_string()],
            &[],
        )?;
        // Before any request: what each process holds when it has only started.
        let idle_rss_mib = [&gateway, &user, &product, &order].map(|p| procs::rss_kib(p.pid()) / 1024);
        let mut shop = Shop {
            idle_rss_mib,
            plain,
            nginx,
            user,
            product,
            order,
            gateway,
            tokens: Vec::new(),
            order_id: 0,
            dir,
        };
        shop.prepare()?;
        Ok(shop)
    }

    /// Customers with tokens, plenty of stock for product 1, and one order to read.
    fn prepare(&mut self) -> Result<(), String> {
        let g = self.gateway.addr.clone();
        let login = |name: &str, password: &str| -> Result<String, String> {
            let body = serde_json::json!({"username": name, "password": password}).to_string();
            let answer = expect(
                "login",
                http(&g, "POST", "/api/users/login", None, Some(&body))?,
                200,
            )?;
            json_text(&answer, "access_token").ok_or_else(|| format!("no token in {answer}"))
        };
        let admin = login("admin", ADMIN_PASSWORD)?;
        let stock = serde_json::json!({"stock": 1_000_000_000}).to_string();
        expect(
            "stock",
            http(&g, "PUT", "/api/products/1", Some(&admin), Some(&stock))?,
            200,
        )?;
        for i in 0..CUSTOMERS {
            let name = format!("bench{i}");
            let body = serde_json::json!({"username": name, "email": format!("{name}@bench.example"), "password": "bench-password"}).to_string();
            let created = expect(
                "register",
                http(&g, "POST", "/api/users", None, Some(&body))?,
                201,
            )?;
            let id = json_number(&created, "id").ok_or("no id")?;
            self.tokens.push((id, login(&name, "bench-password")?));
        }
        let (_, first) = &self.tokens[0];
        let answer = expect(
            "order",
            http(&g, "POST", "/api/orders", Some(first), Some(ORDER_BODY))?,
            201,
        )?;
        self.order_id = json_number(&answer, "id").ok_or("no order id")?;
        Ok(())
    }

    fn url(addr: &str, path: &str) -> String {
        format!("http://{addr}{path}")
    }

    /// The rows: name, how to drive it, and the processes whose CPU counts.
    pub fn rows(&self) -> Vec<Planned> {
        let (user_id, token) = &self.tokens[0];
        let get = |addr: &str, path: &str, tokens: Vec<String>| {
            Drive::Http(HttpLoad {
                url: Self::url(addr, path),
                method: "GET",
                tokens,
                connections: 64,
                ..HttpLoad::default()
            })
        };
        let grpc = |addr: &str, method: &str, message: Vec<u8>, token: Option<&str>| {
            Drive::Grpc(GrpcLoad {
                url: Self::url(addr, method),
                message,
                headers: token
                    .map(|t| vec![("authorization".to_owned(), format!("Bearer {t}"))])
                    .unwrap_or_default(),
            })
        };
        let nginx = std::iter::once(self.nginx.pid())
            .chain(procs::children(self.nginx.pid()))
            .collect();
        let (gw, product, user, order) = (
            self.gateway.pid(),
            self.product.pid(),
            self.user.pid(),
            self.order.pid(),
        );
        let rows: Vec<(String, Drive, Watched)> = vec![
            (
                "plain hyper, fixed body".to_owned(),
                get(&self.plain.addr, "/", vec![]),
                vec![("fixed-body", vec![self.plain.pid()])],
            ),
            (
                "nginx proxy_pass -> plain hyper".to_owned(),
                get(&self.nginx.addr, "/", vec![]),
                vec![("nginx", nginx), ("fixed-body", vec![self.plain.pid()])],
            ),
            (
                "gateway GET /api/products/1 (anonymous)".to_owned(),
                get(&self.gateway.addr, "/api/products/1", vec![]),
                vec![("gateway", vec![gw]), ("product", vec![product])],
            ),
            (
                "gateway GET /api/users/{id} (token)".to_owned(),
                get(
                    &self.gateway.addr,
                    &format!("/api/users/{user_id}"),
                    vec![token.clone()],
                ),
                vec![("gateway", vec![gw]), ("user", vec![user])],
            ),
            (
                "gateway GET /api/orders/{id} (token)".to_owned(),
                get(
                    &self.gateway.addr,
                    &format!("/api/orders/{}", self.order_id),
                    vec![token.clone()],
                ),
                vec![("gateway", vec![gw]), ("order", vec![order])],
            ),
            (
                "grpc GetProduct (h2load)".to_owned(),
                grpc(
                    &self.product.addr,
                    "/shop.product.v1.ProductService/GetProduct",
                    varint_field(1, 1),
                    None,
                ),
                vec![("product", vec![product])],
            ),
            (
                "grpc GetUser (h2load)".to_owned(),
                grpc(
                    &self.user.addr,
                    "/shop.user.v1.UserService/GetUser",
                    varint_field(1, *user_id),
                    Some(token),
                ),
                vec![("user", vec![user])],
            ),
            (
                "grpc GetOrder (h2load)".to_owned(),
                grpc(
                    &self.order.addr,
                    "/shop.order.v1.OrderService/GetOrder",
                    varint_field(1, self.order_id),
                    Some(token),
                ),
                vec![("order", vec![order])],
            ),
            (
                "gateway POST /api/orders (32 conns, 16 users)".to_owned(),
                Drive::Http(HttpLoad {
                    url: Self::url(&self.gateway.addr, "/api/orders"),
                    method: "POST",
                    headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
                    body: Some(ORDER_BODY.to_owned()),
                    tokens: self.tokens.iter().map(|(_, t)| t.clone()).collect(),
                    connections: 32,
                }),
                vec![
                    ("gateway", vec![gw]),
                    ("order", vec![order]),
                    ("product", vec![product]),
                    ("user", vec![user]),
                ],
            ),
        ];
        rows.into_iter()
            .map(|(name, drive, watched)| Planned { name, drive, watched })
            .collect()
    }
}

/// Processes whose CPU a row counts: a name and its pids.
pub type Watched = Vec<(&'static str, Vec<u32>)>;

/// A row to measure.
pub struct Planned {
    pub name: String,
    pub drive: Drive,
    pub watched: Watched,
}

const ORDER_BODY: &str = r#"{"items":[{"product_id":1,"quantity":1}],"shipping_address":"1 Bench Street"}"#;

/// A protobuf message with one varint field: the `{ id }` requests.
fn varint_field(field: u32, value: i64) -> Vec<u8> {
    let mut out = vec![u8::try_from(field << 3).unwrap_or(8)];
    let mut v = u64::from_ne_bytes(value.to_ne_bytes());
    loop {
        let byte = u8::try_from(v & 0x7f).unwrap_or(0);
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}
