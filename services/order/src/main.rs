//! `order-service`: starts the order service, or backs up its live database.
//!
//! ```text
//! order-service [--config FILE] [--host IP] [--port N] [--data-dir DIR] [--consul URL] [--log LEVEL]
//!               [--set key=value]... [--check]
//! order-service backup --to FILE [--force] [same settings flags]
//! ```

use std::process::ExitCode;

use order_service::{Config, SERVICE_NAME};
use shop_kit::config;

const USAGE: &str = "\
usage: order-service [SETTINGS] [--check]
       order-service backup --to FILE [--force] [SETTINGS]
                                          copy the database to FILE while the service runs
                                          (consistent; --force replaces an existing FILE)

Settings (each also readable from the TOML file and from SHOP_<SECTION>_<KEY>):
  --config FILE      TOML settings file (or SHOP_CONFIG)
  --host IP          server.host      (default 127.0.0.1)
  --port N           server.port      (default 5002; 0 picks a free port)
  --data-dir DIR     data.dir         (default .run/data; order.db and keys/ live here)
  --consul URL       consul.addr      (default http://127.0.0.1:8500; finds the user and product
                                       services there unless upstream.*_addrs are set)
  --log LEVEL        log.level        (default info)
  --set KEY=VALUE    any other key, e.g. --set upstream.product_addrs=127.0.0.1:5003
  --check            validate the settings and exit

The service token (auth.service_token, default <data.dir>/keys/order-service.token) comes from
`user-service issue-service-token --service order-service --out FILE`.";

fn main() -> ExitCode {
    let (config, flags, _logs): (Config, _, _) =
        match config::start(SERVICE_NAME, USAGE, |c: &Config| &c.common.log_level) {
            Ok(started) => started,
            Err(code) => return code,
        };
    let result = match flags.rest.first().map(String::as_str) {
        None | Some("serve") => serve(config, &flags.rest),
        Some("backup") => shop_kit::db::backup::command(&config.db_path(), &flags.rest[1..], USAGE),
        Some(other) => Err(format!("unknown argument {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{SERVICE_NAME}: {message}");
    ExitCode::FAILURE
}

fn serve(config: Config, rest: &[String]) -> Result<(), String> {
    if rest.len() > 1 {
        return Err(format!("unexpected arguments {:?}\n\n{USAGE}", &rest[1..]));
    }
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let listener = shop_kit::serve::bind(&config.common.host, config.common.port)
            .await
            .map_err(|e| e.to_string())?;
        order_service::run(config, listener, shop_kit::serve::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}
