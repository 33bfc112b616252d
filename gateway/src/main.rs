//! `gateway`: serves the REST API that `gateway.toml` describes, or validates the file.
//!
//! ```text
//! gateway [--config PATH]          # serve (default ./gateway.toml); SIGTERM/SIGINT drain and stop;
//!                                  # edits to the file and SIGHUP reload it
//! gateway check [--config PATH]    # every problem in the file, or a summary; exit 1 on problems
//! ```
//!
//! Logs go to stderr; `RUST_LOG` sets the filter (default `info`; the access log's target is
//! `access`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use shop_gateway::live::Gateway;

const USAGE: &str = "\
usage: gateway [--config PATH]         serve the routes in PATH (default ./gateway.toml);
                                       edits to PATH and SIGHUP reload it while serving
       gateway check [--config PATH]   validate the file and exit (1 when it has problems)

Logs go to stderr; RUST_LOG sets the filter (default: info).";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut check = false;
    let mut path = PathBuf::from("gateway.toml");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "check" | "--check" => check = true,
            "--config" => match args.next() {
                Some(p) => path = PathBuf::from(p),
                None => {
                    eprintln!("gateway: --config needs a path\n\n{USAGE}");
                    return ExitCode::FAILURE;
                }
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("gateway: unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::FAILURE;
            }
        }
    }
    let config = match shop_gateway::config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if check {
        println!(
            "{}: ok: {} routes, {} upstreams, {} limit and {} breaker policies, {} listeners",
            path.display(),
            config.routes.len(),
            config.upstreams.len(),
            config.limits.len(),
            config.breakers.len(),
            config.listeners.len()
        );
        for l in &config.listeners {
            if let Some(tls) = &l.tls {
                println!("  {}: TLS with {}", l.address, tls.cert.display());
            }
        }
        return ExitCode::SUCCESS;
    }

    // Held to the end of main: pending log lines are written out when it drops.
    let _logs = match shop_base::logs::init("info", true) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let gateway = match Gateway::new(config) {
            Ok(g) => Arc::new(g),
            Err(e) => {
                eprintln!("gateway: {e}");
                return ExitCode::FAILURE;
            }
        };
        let watcher = tokio::spawn(shop_gateway::reload::watch(Arc::clone(&gateway)));
        let feed = tokio::spawn(shop_gateway::revocations::follow(Arc::clone(&gateway)));
        let served = shop_gateway::server::serve(gateway, shop_base::stop::signal()).await;
        watcher.abort();
        feed.abort();
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gateway: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
