//! `gateway`: serves the REST API that `gateway.toml` describes, or validates the file.
//!
//! ```text
//! gateway [--config PATH]          # serve (default ./gateway.toml); SIGTERM/SIGINT drain and stop;
//!                                  # edits to the file and SIGHUP reload it
//! gateway check [--config PATH]    # every problem in the file, or a summary; exit 1 on problems
//! gateway openapi [--config PATH]  # the routes as an OpenAPI 3.1 document (JSON) on stdout
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
       gateway openapi [--config PATH] print the routes as an OpenAPI 3.1 document (JSON)

Logs go to stderr; RUST_LOG sets the filter (default: info).";

/// What the command line asks for.
enum Command {
    Serve,
    Check,
    OpenApi,
}

/// The command and the file, or the exit code when the arguments end the program (help, an
/// error).
fn parse_args() -> Result<(Command, PathBuf), ExitCode> {
    let mut args = std::env::args().skip(1);
    let mut command = Command::Serve;
    let mut path = PathBuf::from("gateway.toml");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "check" | "--check" => command = Command::Check,
            "openapi" => command = Command::OpenApi,
            "--config" => match args.next() {
                Some(p) => path = PathBuf::from(p),
                None => {
                    eprintln!("gateway: --config needs a path\n\n{USAGE}");
                    return Err(ExitCode::FAILURE);
                }
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return Err(ExitCode::SUCCESS);
            }
            other => {
                eprintln!("gateway: unknown argument {other:?}\n\n{USAGE}");
                return Err(ExitCode::FAILURE);
            }
        }
    }
    Ok((command, path))
}

/// `gateway check`'s summary of a valid file.
fn print_check(path: &std::path::Path, config: &shop_gateway::config::Config) {
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
}

fn main() -> ExitCode {
    let (command, path) = match parse_args() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let config = match shop_gateway::config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::OpenApi => {
            println!("{}", shop_gateway::openapi::pretty(&config));
            return ExitCode::SUCCESS;
        }
        Command::Check => {
            print_check(&path, &config);
            return ExitCode::SUCCESS;
        }
        Command::Serve => {}
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
        if let Some(collector) = &config.otlp_traces {
            shop_base::spans::init(collector.clone(), "gateway");
        }
        let gateway = match Gateway::new(config) {
            Ok(g) => Arc::new(g),
            Err(e) => {
                eprintln!("gateway: {e}");
                return ExitCode::FAILURE;
            }
        };
        let bound = match shop_gateway::server::bind(gateway.current().config()).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("gateway: {e}");
                return ExitCode::FAILURE;
            }
        };
        let watcher = tokio::spawn(shop_gateway::reload::watch(Arc::clone(&gateway)));
        let feed = tokio::spawn(shop_gateway::revocations::follow(Arc::clone(&gateway)));
        let served = shop_gateway::server::serve(gateway, bound, shop_base::stop::signal()).await;
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
