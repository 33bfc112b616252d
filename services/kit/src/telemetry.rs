//! Logs: `tracing` events to stderr, filtered by a directive string such as
//! `info` or `info,user_service=debug` (the `log.level` setting or `RUST_LOG`).

use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`. Returns an error
/// naming the directive that does not parse; calling it twice is harmless (the first wins).
pub fn init(level: &str) -> Result<(), String> {
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    let filter = Targets::from_str(&directive).map_err(|e| format!("log level {directive:?}: {e}"))?;
    let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
    Ok(())
}
