//! Hot reload: the gateway watches its configuration file and reloads it when it changes, or at
//! once on SIGHUP. The file is polled (its size, modification time and inode, twice a second),
//! which works the same for editors that write in place, tools that write a new file and rename
//! it, and mounted config maps that swap a symlink; a change is acted on once the file has stayed
//! the same for a moment (a write in progress is not read half-done). A file whose text is what
//! is loaded already is skipped; SIGHUP always reloads (to pick up a rotated token key or
//! certificate whose paths did not change).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::live::{Cause, Gateway};

/// How often the file's metadata is read.
pub const POLL: Duration = Duration::from_millis(500);
/// How long a changed file must stay unchanged before it is read.
pub const SETTLE: Duration = Duration::from_millis(200);

/// What the file looks like from outside; `None` while it cannot be read.
type Stamp = Option<(u64, i64, i64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
}

/// Watches the gateway's file and SIGHUP for as long as the runtime runs.
pub async fn watch(gateway: Arc<Gateway>) {
    let path = gateway.path().to_owned();
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; only file changes reload");
            None
        }
    };
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(file = %path.display(), "watching the configuration file for changes (and SIGHUP)");
    loop {
        let cause = tokio::select! {
            Some(()) = async { match &mut hangup { Some(s) => s.recv().await, None => None } } => Cause::Signal,
            _ = tick.tick() => {
                let mut now = stamp(&path);
                if now == seen {
                    continue;
                }
                loop {
                    tokio::time::sleep(SETTLE).await;
                    let again = stamp(&path);
                    if again == now {
                        break;
                    }
                    now = again;
                }
                seen = now;
                Cause::FileChanged
            }
        };
        let g = Arc::clone(&gateway);
        let runtime = tokio::runtime::Handle::current();
        // Reading the file, compiling .proto files (descriptors = "files") and reading keys is
        // blocking work; new upstreams start their Consul watches on this runtime.
        let result = tokio::task::spawn_blocking(move || {
            let _runtime = runtime.enter();
            g.reload(cause)
        })
        .await;
        match result {
            Ok(Ok(None)) => {
                tracing::debug!(file = %path.display(), "file touched, text unchanged; nothing to reload");
            }
            Ok(Ok(Some(done))) => {
                tracing::info!(
                    file = %path.display(),
                    cause = cause.as_str(),
                    routes = done.routes,
                    hash = format_args!("{:016x}", done.fingerprint),
                    "configuration reloaded"
                );
                for what in done.needs_restart {
                    tracing::warn!(file = %path.display(), "{what} changed in the file; that applies when the gateway restarts");
                }
            }
            Ok(Err(e)) => tracing::error!(
                file = %path.display(),
                cause = cause.as_str(),
                "configuration reload refused; still serving the previous one: {}",
                e.to_string().trim_end()
            ),
            Err(e) => tracing::error!(error = %e, "the reload task failed"),
        }
    }
}
