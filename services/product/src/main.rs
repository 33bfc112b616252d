//! `product-service`: starts the product service, seeds the demo catalogue, audits stock, or
//! backs up the live database.
//!
//! ```text
//! product-service [--config FILE] [--host IP] [--port N] [--data-dir DIR] [--consul URL] [--log LEVEL]
//!                 [--set key=value]... [--check]
//! product-service seed  [--count N] [same settings flags]
//! product-service audit [same settings flags]
//! product-service backup --to FILE [--force] [same settings flags]
//! ```

use std::process::ExitCode;

use product_service::{Config, SERVICE_NAME, seed, store};
use shop_kit::config::{self, Flags};

const USAGE: &str = "\
usage: product-service [SETTINGS] [--check]
       product-service seed  [SETTINGS]   add the demo catalogue (skips names already there)
       product-service seed --count N [SETTINGS]
                                          add N generated products (benchmarks; the same N
                                          makes the same catalogue)
       product-service audit [SETTINGS]   check stock + reserved = set by admins, per product
       product-service backup --to FILE [--force] [SETTINGS]
                                          copy the database to FILE while the service runs
                                          (consistent; --force replaces an existing FILE)

Settings (each also readable from the TOML file and from SHOP_<SECTION>_<KEY>):
  --config FILE      TOML settings file (or SHOP_CONFIG)
  --host IP          server.host      (default 127.0.0.1)
  --port N           server.port      (default 5003; 0 picks a free port)
  --data-dir DIR     data.dir         (default .run/data; product.db and keys/ live here)
  --consul URL       consul.addr      (default http://127.0.0.1:8500; empty disables)
  --log LEVEL        log.level        (default info)
  --set KEY=VALUE    any other key, e.g. --set auth.public_key=/etc/shop/token.pub.pem
  --check            validate the settings and exit";

fn main() -> ExitCode {
    let (config, flags, _logs): (Config, _, _) =
        match config::start(SERVICE_NAME, USAGE, |c: &Config| &c.common.log_level) {
            Ok(started) => started,
            Err(code) => return code,
        };
    let result = match flags.rest.first().map(String::as_str) {
        None | Some("serve") => serve(config, &flags),
        Some("seed") => run_seed(&config, &flags.rest[1..]),
        Some("audit") => audit(&config),
        Some("backup") => shop_kit::db::backup::command(&config.db_path(), &flags.rest[1..], USAGE)
            .map(|()| ExitCode::SUCCESS),
        Some(other) => Err(format!("unknown argument {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{SERVICE_NAME}: {message}");
    ExitCode::FAILURE
}

fn serve(config: Config, flags: &Flags) -> Result<ExitCode, String> {
    if flags.rest.len() > 1 {
        return Err(format!("unexpected arguments {:?}\n\n{USAGE}", &flags.rest[1..]));
    }
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let listener = shop_kit::serve::bind(&config.common.host, config.common.port)
            .await
            .map_err(|e| e.to_string())?;
        product_service::run(config, listener, shop_kit::serve::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn open(config: &Config) -> Result<rusqlite::Connection, String> {
    let path = config.db_path();
    let mut conn = shop_kit::db::open_connection(&path).map_err(|e| e.to_string())?;
    shop_kit::db::migrate(&mut conn, &path, store::MIGRATIONS).map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Most products `seed --count` makes: a benchmark catalogue, not a way to fill a disk.
const GENERATED_MAX: u64 = 10_000_000;

/// `seed --count N`: N generated products instead of the demo catalogue.
fn seed_count(rest: &[String]) -> Result<Option<u64>, String> {
    let value = match rest {
        [] => return Ok(None),
        [flag, value] if flag == "--count" => value.as_str(),
        [flag] if flag.starts_with("--count=") => &flag["--count=".len()..],
        other => return Err(format!("seed: unexpected arguments {other:?}\n\n{USAGE}")),
    };
    match value.parse::<u64>() {
        Ok(n) if (1..=GENERATED_MAX).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "seed: --count must be a whole number from 1 to {GENERATED_MAX}, got {value:?}"
        )),
    }
}

fn run_generated(config: &Config, count: u64) -> Result<ExitCode, String> {
    let mut conn = open(config)?;
    let started = std::time::Instant::now();
    let now = shop_kit::clock::now_millis();
    let step = (count / 10).max(seed::GENERATED_REPORT);
    seed::generated(&mut conn, count, now, |done| {
        if done % step == 0 || done == count {
            eprintln!(
                "{done} of {count} products written ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    })
    .map_err(|e| e.to_string())?;
    println!(
        "seeded {count} generated products into {} in {:.1} s",
        config.db_path().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_seed(config: &Config, rest: &[String]) -> Result<ExitCode, String> {
    if let Some(count) = seed_count(rest)? {
        return run_generated(config, count);
    }
    let mut conn = open(config)?;
    let now = shop_kit::clock::now_millis();
    let done = shop_kit::db::in_transaction(&mut conn, |c| seed::seed(c, now)).map_err(|e| e.to_string())?;
    println!(
        "seeded {} products into {} ({} already there)",
        done.created,
        config.db_path().display(),
        done.skipped
    );
    Ok(ExitCode::SUCCESS)
}

fn audit(config: &Config) -> Result<ExitCode, String> {
    let conn = open(config)?;
    let rows = store::audit(&conn).map_err(|e| e.to_string())?;
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10}  name",
        "id", "stock", "reserved", "set", "ledger"
    );
    let mut unbalanced = 0;
    for r in &rows {
        let mark = if r.balanced() { "" } else { "  <- UNBALANCED" };
        if !r.balanced() {
            unbalanced += 1;
        }
        println!(
            "{:>6} {:>10} {:>10} {:>10} {:>10}  {}{mark}",
            r.product_id, r.stock, r.reserved, r.set_by_admins, r.ledger, r.name
        );
    }
    println!("{} products, {unbalanced} unbalanced", rows.len());
    Ok(if unbalanced == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
