//! What every shop service shares, so that knowing one service means knowing all three (logs,
//! request ids and the stop signal come from `shop-base`, which the gateway shares too).
//!
//! - [`config`]: typed settings layered from defaults, a TOML file, `SHOP_*` environment
//!   variables and command-line flags, with errors that name the source, the key and the problem;
//! - [`db`]: SQLite files opened the same way everywhere (WAL, foreign keys, busy timeout,
//!   versioned migrations) and a small connection pool that keeps blocking calls off the async
//!   workers;
//! - [`serve`]: the lifecycle of a gRPC server (bind, ready line, health, reflection, request
//!   logs with the request id, graceful shutdown on SIGINT/SIGTERM);
//! - [`clock`]: wall-clock time as the services store and send it;
//! - [`lines`]: order lines (product, units) checked once into a type, with the order and
//!   product services' limits side by side.

pub mod clock;
pub mod config;
pub mod db;
pub mod lines;
pub mod serve;
