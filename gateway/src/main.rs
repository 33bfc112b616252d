//! `gateway`: validates `gateway.toml` (`gateway check`); serving REST is not built yet.
//!
//! ```text
//! gateway check [--config PATH]    # every problem in the file, or a summary; exit 1 on problems
//! gateway [--config PATH]          # serve (not built yet: exits 2 and says so)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: gateway check [--config PATH]   validate the file (default ./gateway.toml) and exit
       gateway [--config PATH]         serve (not built yet)";

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
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "gateway: {} is valid, but serving REST is not built yet; the services answer gRPC directly \
         (see README.md). `gateway check` validates the file.",
        path.display()
    );
    ExitCode::from(2)
}
