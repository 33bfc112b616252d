//! `gateway`: the shop's declarative API gateway (REST to gRPC, routed by `gateway.toml`).
//!
//! Not built yet: the router, transcoder, Consul watcher and policies arrive with the gateway
//! issues (see ARCHITECTURE.md). Until then this binary says so and exits with status 2, so
//! no script mistakes it for a working gateway.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "gateway: not implemented yet. Today the shop serves the user service over gRPC only \
         (see README.md); the REST gateway configured by gateway.toml comes next."
    );
    ExitCode::from(2)
}
