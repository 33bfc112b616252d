//! `bench --catalogue 100000,1000000`: the catalogue at shop size. For each size it seeds a
//! generated catalogue into a scratch folder (timed, with the database's size), starts a
//! product service and a gateway on it, and runs every list and search shape through the
//! gateway with 8 concurrent clients (wrk), printing p50/p99, req/s, failures and how many
//! products the shape matches.

use std::path::Path;

use crate::load::{self, HttpLoad};
use crate::procs::{self, Proc, Workdir};
use crate::shop;

/// The shapes measured: a name and the request path.
const SHAPES: &[(&str, &str)] = &[
    ("by id", "/api/products/{mid}"),
    ("first page", "/api/products?page_size=20"),
    ("q=phone", "/api/products?q=phone"),
    ("q=手机 (2 CJK)", "/api/products?q=%E6%89%8B%E6%9C%BA"),
    ("q=茶 (1 CJK)", "/api/products?q=%E8%8C%B6"),
    ("q=wireless ultra", "/api/products?q=wireless%20ultra"),
    (
        "q=iPhone 手机 (mixed)",
        "/api/products?q=iPhone%20%E6%89%8B%E6%9C%BA",
    ),
    ("q=pho (prefix)", "/api/products?q=pho"),
    ("q=zzqxv (no match)", "/api/products?q=zzqxv"),
    (
        "category=home&sort=price_asc&page=100",
        "/api/products?category=home&sort=price_asc&page=100",
    ),
    ("page=4000", "/api/products?page=4000"),
];

/// Pages of 100 followed before measuring a deep `page_token`.
const DEEP_PAGES: u64 = 400;

/// Follows `next_page_token` through `pages` pages of 100 from the first; the token after them.
fn deep_token(c: &Catalogue, pages: u64) -> Result<String, String> {
    let mut path = "/api/products?page_size=100".to_owned();
    let mut token = String::new();
    for _ in 0..pages {
        let (status, body) = shop::http(&c.gateway.addr, "GET", &path, None, None)?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}"))?;
        token = v["next_page_token"].as_str().unwrap_or_default().to_owned();
        if token.is_empty() {
            return Err(format!("the list ended before {pages} pages"));
        }
        path = format!("/api/products?page_size=100&page_token={token}");
    }
    Ok(token)
}

/// Clients at once, as the issue measures.
const CLIENTS: usize = 8;

struct Catalogue {
    // Dropped before the folder.
    gateway: Proc,
    product: Proc,
    _user: Proc,
    dir: Workdir,
}

pub fn run(bin: &Path, sizes: &[u64], seconds: u64) -> Result<(), String> {
    for &size in sizes {
        let (c, seeded) = start(bin, size)?;
        let bytes = db_bytes(&c.dir.0.join("data"));
        println!();
        println!(
            "{size} products: seeded in {:.1} s, database {:.0} MiB; {CLIENTS} clients, {seconds} s per shape",
            seeded.as_secs_f64(),
            bytes as f64 / 1_048_576.0
        );
        println!();
        println!("| shape | matches | req/s | p50 ms | p99 ms | failed |");
        println!("|---|---|---|---|---|---|");
        for (name, path) in SHAPES {
            let path = path.replace("{mid}", &(size / 2).to_string());
            shape(&c, name, &path, seconds)?;
        }
        let deep = deep_token(&c, DEEP_PAGES)?;
        shape(
            &c,
            &format!("page_token {} products deep", DEEP_PAGES * 100),
            &format!("/api/products?page_token={deep}"),
            seconds,
        )?;
        let rss = procs::rss_kib(c.product.pid()) / 1024;
        println!();
        println!("product service RSS after the run: {rss} MiB");
    }
    Ok(())
}

fn shape(c: &Catalogue, name: &str, path: &str, seconds: u64) -> Result<(), String> {
    let (status, body) = shop::http(&c.gateway.addr, "GET", path, None, None)?;
    let matches = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("total").map(ToString::to_string))
        .unwrap_or_else(|| {
            if status == 200 {
                "-".to_owned()
            } else {
                format!("HTTP {status}")
            }
        });
    let m = load::wrk(
        &c.dir.0,
        &HttpLoad {
            url: format!("http://{}{path}", c.gateway.addr),
            method: "GET",
            connections: CLIENTS,
            ..HttpLoad::default()
        },
        seconds,
    )?;
    let ms = |d: Option<std::time::Duration>| {
        d.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1000.0))
    };
    println!(
        "| {name} | {matches} | {:.0} | {} | {} | {} |",
        m.per_second(),
        ms(m.p50),
        ms(m.p99),
        m.failures
    );
    Ok(())
}

fn start(bin: &Path, size: u64) -> Result<(Catalogue, std::time::Duration), String> {
    let dir = Workdir::new()?;
    let d = dir.0.clone();
    let data = d.join("data").display().to_string();
    let started = std::time::Instant::now();
    procs::run(
        &bin.join("product-service"),
        &["seed", "--count", &size.to_string(), "--data-dir", &data],
    )?;
    let seeded = started.elapsed();
    let base = ["--port", "0", "--data-dir", data.as_str(), "--consul", ""];
    // The user service only makes the token key the gateway loads.
    let user = procs::start(&d, "user", &bin.join("user-service"), &base, &[])?;
    let product = procs::start(&d, "product", &bin.join("product-service"), &base, &[])?;
    let toml = d.join("gateway.toml");
    let text = shop::gateway_toml(&d, &user.addr, &product.addr, "127.0.0.1:9")?;
    std::fs::write(&toml, text).map_err(|e| e.to_string())?;
    let gateway = procs::start(
        &d,
        "gateway",
        &bin.join("gateway"),
        &["--config", &toml.display().to_string()],
        &[],
    )?;
    let c = Catalogue {
        gateway,
        product,
        _user: user,
        dir,
    };
    Ok((c, seeded))
}

/// The database's bytes on disk (the file and its WAL).
fn db_bytes(data: &Path) -> u64 {
    ["product.db", "product.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum()
}
