//! Announcing an instance: register with the local agent on start, make sure the agent still
//! knows us (a restarted dev agent forgets everything), and deregister on graceful shutdown.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::consul::{ConsulClient, Registration};
use crate::pace::{Quiet, Rng, backoff};

/// How often a refusal (an ACL token Consul does not accept) is logged again while it lasts.
pub const REPEAT_REFUSAL: Duration = Duration::from_secs(60);

/// How often the registrar asks the agent whether it still knows the instance. A restarted agent
/// has the instance back within this interval (plus a check interval to pass).
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// A running registration. Call [`Registrar::deregister`] on graceful shutdown; a crash leaves
/// the entry to fail its health check (so watchers drop it at once) and to be reaped by Consul
/// after the registration's `deregister_after`.
#[derive(Debug)]
pub struct Registrar {
    client: ConsulClient,
    id: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Registrar {
    /// Registers now (retrying in the background if the agent is unreachable) and keeps the
    /// registration alive every `recheck`.
    pub fn start(client: ConsulClient, registration: Registration, recheck: Duration) -> Registrar {
        let (stop_tx, stop_rx) = oneshot::channel();
        let id = registration.id.clone();
        let task = tokio::spawn(keep_registered(client.clone(), registration, recheck, stop_rx));
        Registrar {
            client,
            id,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops the keep-alive and removes the instance from the agent. Failures are logged: the
    /// health check and `deregister_after` are the safety net.
    pub async fn deregister(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        match self.client.deregister(&self.id).await {
            Ok(()) => tracing::info!(id = %self.id, "deregistered from Consul"),
            Err(e) => tracing::warn!(id = %self.id, error = %e, "could not deregister from Consul"),
        }
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn keep_registered(
    client: ConsulClient,
    registration: Registration,
    recheck: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let id = registration.id.clone();
    let mut rng = Rng::new();
    let mut failures = 0u32;
    let mut registered = false;
    let mut quiet = Quiet::new(REPEAT_REFUSAL);
    loop {
        let step = async {
            if registered {
                match client.is_registered(&id).await {
                    Ok(true) => return Ok(true),
                    Ok(false) => {
                        tracing::warn!(%id, "Consul forgot this instance (agent restarted?); registering again")
                    }
                    Err(e) => return Err(e),
                }
            }
            client.register(&registration).await.map(|()| false)
        };
        let pause = match step.await {
            Ok(already) => {
                if !already {
                    tracing::info!(%id, service = %registration.name, consul = %client.addr(), "registered with Consul");
                }
                registered = true;
                failures = 0;
                quiet.reset();
                recheck
            }
            Err(e) => {
                failures += 1;
                if e.is_refusal() && quiet.due(Instant::now()) {
                    tracing::error!(%id, error = %e, "Consul refused to register this instance; it stays out of discovery until the token or its policy is fixed");
                } else if failures == 1 {
                    tracing::warn!(%id, error = %e, "cannot register with Consul; retrying");
                } else {
                    tracing::debug!(%id, error = %e, "cannot register with Consul; retrying");
                }
                registered = false;
                backoff(failures, Duration::from_millis(500), recheck, rng.unit())
                    .max(Duration::from_millis(100))
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = &mut stop => return,
        }
    }
}
