//! Always-fresh sets of healthy instances: a Consul blocking-query loop per service, or a fixed
//! list from configuration. Both publish [`EndpointSet`] snapshots on a `tokio::sync::watch`
//! channel (latest value wins), which the balancer reads at pick time.
//!
//! The Consul loop follows the blocking-query rules (see `../shared/consul.md` in the design
//! notes): `wait` always has a unit; the client timeout exceeds `wait + wait/16`; the index is
//! reset to 0 when it goes backwards or after any error, and never sent as 0 after an answer;
//! a token bucket (burst 2) paces the loop; errors back off exponentially with full jitter; the
//! last known set is kept while Consul is unreachable, and an empty set is published only when
//! Consul answers one; only real changes are published, each with a new epoch. The loop ends
//! only when every receiver is gone.
//!
//! ACLs: Consul 1.8 answers a health read with the instances the token may see and says
//! nothing about the others, so an empty answer is believed only after
//! [`ConsulClient::check_visible`] finds that the token may read the service and its nodes.
//! A refused or hidden watch is an error like any other (last set kept, `fresh = false`), with
//! the reason in [`EndpointSet::error`] and an error line in the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::consul::{Consistency, ConsulClient, ConsulError, Endpoint};
use crate::pace::{Bucket, Rng, backoff};

/// A snapshot of one service's usable instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSet {
    /// The Consul service name (or the static upstream's name).
    pub service: String,
    /// Bumped on every change of `endpoints`; 0 until the first answer.
    pub epoch: u64,
    /// Sorted by id.
    pub endpoints: Vec<Endpoint>,
    /// False until the first answer, and while Consul is unreachable or refuses the watch (the
    /// endpoints are then the last known ones).
    pub fresh: bool,
    /// Why the set is not fresh: the watch's last error (`None` while it is fresh, and before
    /// the first attempt). [`ConsulError::Denied`] and [`ConsulError::Filtered`] are Consul's
    /// ACLs refusing the token or hiding the service from it: an empty set is then never
    /// published as if the service had no instances.
    pub error: Option<ConsulError>,
}

impl EndpointSet {
    fn unknown(service: &str) -> EndpointSet {
        EndpointSet {
            service: service.to_owned(),
            epoch: 0,
            endpoints: Vec::new(),
            fresh: false,
            error: None,
        }
    }
}

/// The receiving side: cheap to clone, always holds the latest snapshot.
pub type Endpoints = watch::Receiver<Arc<EndpointSet>>;

/// How a watch talks to Consul.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub service: String,
    pub tag: Option<String>,
    /// How long Consul may hold a blocking query. 55 s keeps clear of common 60 s idle timeouts
    /// in proxies between us and the agent.
    pub wait: Duration,
    pub consistency: Consistency,
    /// Quick queries allowed back to back before pacing starts.
    pub burst: u32,
    /// The steady pace after a burst: one query per `every`.
    pub every: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl WatchConfig {
    pub fn new(service: &str) -> WatchConfig {
        WatchConfig {
            service: service.to_owned(),
            tag: None,
            wait: Duration::from_secs(55),
            consistency: Consistency::Default,
            // Consul's own agent cache uses a burst of 2 at 1 per second.
            burst: 2,
            every: Duration::from_secs(1),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// A fixed set that never changes: for running without Consul.
pub fn fixed(service: &str, authorities: &[String]) -> Endpoints {
    let mut endpoints: Vec<Endpoint> = authorities
        .iter()
        .map(|a| {
            let (host, port) = a.rsplit_once(':').unwrap_or((a.as_str(), "0"));
            Endpoint {
                id: a.clone(),
                host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
                port: port.parse().unwrap_or(0),
                tags: Vec::new(),
                meta: Default::default(),
            }
        })
        .collect();
    endpoints.sort();
    // The sender is dropped at once: receivers keep the value, and the balancer only borrows.
    let (_, rx) = watch::channel(Arc::new(EndpointSet {
        service: service.to_owned(),
        epoch: 1,
        endpoints,
        fresh: true,
        error: None,
    }));
    rx
}

/// Starts watching `config.service` and returns the receiver. The loop runs on the current
/// tokio runtime until every receiver is dropped.
pub fn consul(client: ConsulClient, config: WatchConfig) -> Endpoints {
    let (tx, rx) = watch::channel(Arc::new(EndpointSet::unknown(&config.service)));
    tokio::spawn(run(client, config, tx));
    rx
}

/// How long to stay quiet about a continuing outage before logging it again.
const REPEAT_WARNING: Duration = Duration::from_secs(30);

async fn run(client: ConsulClient, config: WatchConfig, tx: watch::Sender<Arc<EndpointSet>>) {
    let service = config.service.clone();
    let mut index: u64 = 0;
    let mut failures: u32 = 0;
    let mut rng = Rng::new();
    let mut bucket = Bucket::new(config.burst, config.every, Instant::now());
    let mut outage: Option<(Instant, Instant)> = None; // (since, last warning)
    loop {
        if tx.is_closed() {
            tracing::debug!(%service, "no one watches any more; stopping");
            return;
        }
        if let Err(wait) = bucket.take(Instant::now()) {
            tokio::time::sleep(wait).await;
            continue;
        }
        let read = async {
            let (new_index, endpoints) = client
                .healthy(
                    &service,
                    config.tag.as_deref(),
                    index,
                    config.wait,
                    config.consistency,
                )
                .await?;
            // ACLs filter health answers without saying so: before an empty answer replaces what
            // is shown, make sure the token may see the service at all.
            if endpoints.is_empty() && !showing_empty(&tx) {
                client.check_visible(&service).await?;
            }
            Ok::<_, ConsulError>((new_index, endpoints))
        };
        let answer = tokio::select! {
            a = read => a,
            () = tx.closed() => return,
        };
        match answer {
            Ok((new_index, endpoints)) => {
                if let Some((since, _)) = outage.take() {
                    tracing::info!(%service, outage_ms = since.elapsed().as_millis() as u64, "Consul answers again");
                }
                failures = 0;
                index = next_index(index, new_index, &service);
                publish(&tx, endpoints);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                index = 0; // the next read is a fresh, non-blocking one
                log_failure(&service, &e, &mut outage);
                tx.send_if_modified(|set| {
                    // Tell receivers when the set turns stale or the kind of trouble changes
                    // (unreachable -> refused); a repeat of the same failure is no news.
                    let news = set.fresh
                        || set.error.as_ref().map(std::mem::discriminant) != Some(std::mem::discriminant(&e));
                    let s = Arc::make_mut(set);
                    s.fresh = false;
                    s.error = Some(e);
                    news
                });
                let pause = backoff(failures, config.backoff_base, config.backoff_max, rng.unit());
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = tx.closed() => return,
                }
            }
        }
    }
}

/// Logs a failed read: the first of an outage at once (an ACL refusal as an error, anything
/// else as a warning), a continuing one every [`REPEAT_WARNING`], the rest at debug.
fn log_failure(service: &str, e: &ConsulError, outage: &mut Option<(Instant, Instant)>) {
    let now = Instant::now();
    let refused = e.is_refusal();
    match outage {
        None if refused => {
            tracing::error!(%service, error = %e, "Consul refused the watch; keeping the last known instances");
            *outage = Some((now, now));
        }
        None => {
            tracing::warn!(%service, error = %e, "Consul watch failed; keeping the last known instances");
            *outage = Some((now, now));
        }
        Some((since, last)) if now.duration_since(*last) >= REPEAT_WARNING => {
            if refused {
                tracing::error!(%service, error = %e, failing_for_s = since.elapsed().as_secs(), "Consul still refuses the watch");
            } else {
                tracing::warn!(%service, error = %e, failing_for_s = since.elapsed().as_secs(), "Consul still failing");
            }
            *last = now;
        }
        Some(_) => tracing::debug!(%service, error = %e, "Consul watch failed again"),
    }
}

/// The index to send next, by the blocking-query rules: reset to 0 when it went backwards (the
/// agent restarted or a snapshot was restored), never 0 after an answer.
pub fn next_index(previous: u64, answered: u64, service: &str) -> u64 {
    if answered < previous {
        tracing::info!(
            service,
            previous,
            answered,
            "Consul index went backwards; re-reading"
        );
        0
    } else {
        answered.max(1)
    }
}

/// Whether receivers already hold an answered empty set (so another empty answer needs no
/// visibility check).
fn showing_empty(tx: &watch::Sender<Arc<EndpointSet>>) -> bool {
    let set = tx.borrow();
    set.fresh && set.epoch > 0 && set.endpoints.is_empty()
}

/// Publishes `endpoints` if they differ from the current set (or the set was not fresh).
fn publish(tx: &watch::Sender<Arc<EndpointSet>>, endpoints: Vec<Endpoint>) {
    tx.send_if_modified(|set| {
        if set.endpoints == endpoints {
            if set.fresh && set.epoch > 0 {
                return false;
            }
            let s = Arc::make_mut(set);
            s.fresh = true;
            s.error = None;
            if s.epoch == 0 {
                s.epoch = 1;
            }
            return true;
        }
        let s = Arc::make_mut(set);
        s.epoch += 1;
        tracing::info!(
            service = %s.service,
            epoch = s.epoch,
            instances = endpoints.len(),
            "healthy instances changed"
        );
        s.endpoints = endpoints;
        s.fresh = true;
        s.error = None;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 10, "s"), 10);
        assert_eq!(next_index(10, 12, "s"), 12);
        assert_eq!(next_index(10, 10, "s"), 10);
        assert_eq!(next_index(10, 5, "s"), 0, "backwards resets");
        assert_eq!(next_index(0, 0, "s"), 1, "never 0 after an answer");
    }

    fn ep(id: &str) -> Endpoint {
        Endpoint {
            id: id.to_owned(),
            host: "127.0.0.1".to_owned(),
            port: 1,
            tags: vec![],
            meta: Default::default(),
        }
    }

    #[test]
    fn only_real_changes_are_published() {
        let (tx, mut rx) = watch::channel(Arc::new(EndpointSet::unknown("s")));
        publish(&tx, vec![]);
        assert!(
            rx.has_changed().unwrap(),
            "the first answer is news even when empty"
        );
        let first = rx.borrow_and_update().clone();
        assert_eq!((first.epoch, first.fresh), (1, true));
        publish(&tx, vec![]);
        assert!(!rx.has_changed().unwrap(), "same answer, no publish");
        publish(&tx, vec![ep("a")]);
        assert_eq!(rx.borrow_and_update().epoch, 2);
        publish(&tx, vec![ep("a")]);
        assert!(!rx.has_changed().unwrap());
        publish(&tx, vec![]);
        let now = rx.borrow_and_update().clone();
        assert_eq!(
            (now.epoch, now.endpoints.len()),
            (3, 0),
            "an answered empty set is published"
        );
    }

    #[test]
    fn fixed_sets_parse_authorities() {
        let rx = fixed("s", &["127.0.0.1:5003".to_owned(), "[::1]:5004".to_owned()]);
        let set = rx.borrow().clone();
        assert!(set.fresh);
        let got: Vec<String> = set.endpoints.iter().map(Endpoint::authority).collect();
        assert_eq!(got, vec!["127.0.0.1:5003", "[::1]:5004"]);
    }
}
