//! Client-side balancing over a watched set of instances: one reused HTTP/2 connection (a tonic
//! `Channel`) per instance, round robin or power-of-two-choices by calls in flight, and one retry
//! (on another instance when there is one) when the first attempt was certainly not sent (see
//! [`crate::call`]), so a retry cannot run a call twice.
//!
//! The balancer reads the latest [`EndpointSet`](crate::watch::EndpointSet) at pick time and
//! reconciles its instances when the epoch moved: instances that stay keep their connection, new
//! ones connect lazily, and gone ones are dropped from the pick list while calls already on them
//! finish on their own clone of the channel. Discovery feeds the balancer; neither edits the
//! other.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::call::CallError;
use crate::pace::Rng;
use crate::watch::Endpoints;

/// How long a new connection may take. Instances are on the same network; a slow connect means
/// a dead host, and the call's deadline should go to another instance rather than wait.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Each instance in turn.
    #[default]
    RoundRobin,
    /// Two instances at random, the one with fewer calls in flight: steers away from slow
    /// instances without the herding of "least loaded".
    PowerOfTwo,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "round_robin" => Some(Policy::RoundRobin),
            "p2c" | "power_of_two" => Some(Policy::PowerOfTwo),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error("no healthy instance of {0}")]
    NoInstances(String),
    /// Instances exist, but the caller's filter (a circuit breaker) refused every one.
    #[error("every instance of {0} is refused by its circuit breaker")]
    AllExcluded(String),
    #[error("{service}: {authority} is not a usable address")]
    BadAddress { service: String, authority: String },
}

/// One instance and its connection: a tonic [`Channel`] by default, or whatever the balancer's
/// connector makes (the gateway's own HTTP/2 connections).
#[derive(Debug)]
pub struct Instance<C = Channel> {
    pub id: String,
    pub authority: String,
    conn: C,
    in_flight: AtomicUsize,
}

impl<C> Instance<C> {
    /// The connection to this instance.
    pub fn conn(&self) -> &C {
        &self.conn
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A picked instance; counts as a call in flight until dropped.
#[derive(Debug)]
pub struct Picked<C = Channel> {
    instance: Arc<Instance<C>>,
}

impl Picked<Channel> {
    pub fn channel(&self) -> Channel {
        self.instance.conn.clone()
    }
}

impl<C> Picked<C> {
    /// The connection to the picked instance.
    pub fn conn(&self) -> &C {
        &self.instance.conn
    }
    pub fn id(&self) -> &str {
        &self.instance.id
    }
    pub fn authority(&self) -> &str {
        &self.instance.authority
    }
}

impl<C> Drop for Picked<C> {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct State<C> {
    epoch: u64,
    instances: Vec<Arc<Instance<C>>>,
}

/// Spreads calls to one service over its healthy instances, one connection `C` each (a tonic
/// [`Channel`] unless made [`Balancer::with_connector`]).
#[derive(Debug)]
pub struct Balancer<C = Channel> {
    service: String,
    policy: Policy,
    endpoints: Endpoints,
    /// Makes the connection to a new instance (lazily: nothing is dialled yet).
    connect: fn(&str) -> Option<C>,
    state: Mutex<State<C>>,
    next: AtomicUsize,
    rng: Mutex<Rng>,
}

impl Balancer<Channel> {
    pub fn new(service: &str, policy: Policy, endpoints: Endpoints) -> Balancer<Channel> {
        Balancer::with_connector(service, policy, endpoints, connect_lazy)
    }
}

impl<C> Balancer<C> {
    /// A balancer whose instances' connections `connect` makes from `host:port`.
    pub fn with_connector(
        service: &str,
        policy: Policy,
        endpoints: Endpoints,
        connect: fn(&str) -> Option<C>,
    ) -> Balancer<C> {
        Balancer {
            service: service.to_owned(),
            policy,
            endpoints,
            connect,
            state: Mutex::new(State {
                epoch: 0,
                instances: Vec::new(),
            }),
            next: AtomicUsize::new(0),
            rng: Mutex::new(Rng::new()),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Waits until discovery has at least one instance, or `within` has passed; true when
    /// there is one. For callers that want a new upstream to have heard from discovery before
    /// they use it (the gateway's reload).
    pub async fn first_instances(&self, within: std::time::Duration) -> bool {
        let mut rx = self.endpoints.clone();
        tokio::time::timeout(within, rx.wait_for(|set| !set.endpoints.is_empty()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The instances as the balancer sees them now (after syncing with discovery).
    pub fn instances(&self) -> Vec<Arc<Instance<C>>> {
        self.synced().instances.clone()
    }

    fn synced(&self) -> std::sync::MutexGuard<'_, State<C>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let set = self.endpoints.borrow().clone();
        if set.epoch != state.epoch {
            let mut next = Vec::with_capacity(set.endpoints.len());
            for ep in &set.endpoints {
                let authority = ep.authority();
                if let Some(kept) = state
                    .instances
                    .iter()
                    .find(|i| i.id == ep.id && i.authority == authority)
                {
                    next.push(Arc::clone(kept));
                    continue;
                }
                match (self.connect)(&authority) {
                    Some(conn) => next.push(Arc::new(Instance {
                        id: ep.id.clone(),
                        authority,
                        conn,
                        in_flight: AtomicUsize::new(0),
                    })),
                    None => {
                        tracing::warn!(service = %self.service, %authority, "skipping an instance with an unusable address")
                    }
                }
            }
            tracing::debug!(service = %self.service, epoch = set.epoch, instances = next.len(), "balancer updated");
            state.instances = next;
            state.epoch = set.epoch;
        }
        state
    }

    /// Picks an instance, avoiding `avoid` (by id) when another one exists.
    pub fn pick(&self, avoid: Option<&str>) -> Result<Picked<C>, BalanceError> {
        self.pick_where(avoid, |_| true)
    }

    /// Like [`Balancer::pick`], among the instances `allow` accepts (a caller's circuit
    /// breakers, for instance). [`BalanceError::AllExcluded`] when instances exist but `allow`
    /// refuses them all.
    pub fn pick_where(
        &self,
        avoid: Option<&str>,
        allow: impl Fn(&Instance<C>) -> bool,
    ) -> Result<Picked<C>, BalanceError> {
        let state = self.synced();
        if state.instances.is_empty() {
            return Err(BalanceError::NoInstances(self.service.clone()));
        }
        let allowed: Vec<&Arc<Instance<C>>> = state.instances.iter().filter(|i| allow(i)).collect();
        if allowed.is_empty() {
            return Err(BalanceError::AllExcluded(self.service.clone()));
        }
        let candidates: Vec<&Arc<Instance<C>>> = allowed
            .iter()
            .copied()
            .filter(|i| avoid != Some(i.id.as_str()) || allowed.len() == 1)
            .collect();
        let chosen = match self.policy {
            Policy::RoundRobin => candidates[self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()],
            Policy::PowerOfTwo => {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                let a = candidates[rng.below(candidates.len())];
                let b = candidates[rng.below(candidates.len())];
                if b.in_flight() < a.in_flight() { b } else { a }
            }
        };
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Picked {
            instance: Arc::clone(chosen),
        })
    }
}

impl Balancer<Channel> {
    /// Runs one call with a deadline. `call` gets a channel and the time left (to send as the
    /// request's `grpc-timeout`). When the first attempt was certainly not sent (see
    /// [`CallError`]), it runs once more within the same deadline, on another instance when
    /// there is one.
    pub async fn call<T, F, Fut>(&self, deadline: Duration, mut call: F) -> Result<T, CallError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let started = Instant::now();
        let first = self.pick(None)?;
        let error = match self.attempt(&first, deadline, &mut call).await {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        let left = deadline.saturating_sub(started.elapsed());
        if error.maybe_sent() || left.is_zero() {
            return Err(error);
        }
        // Another instance when there is one. With one, the same: nothing was sent, and the
        // channel reconnects for the retry, so an instance that restarted is not refused for the
        // connection it had before.
        let Ok(second) = self.pick(Some(first.id())) else {
            return Err(error);
        };
        tracing::warn!(
            service = %self.service,
            failed = %first.authority(),
            retry_on = %second.authority(),
            error = %error,
            "call not sent; retrying once"
        );
        drop(first);
        self.attempt(&second, left, &mut call).await
    }

    async fn attempt<T, F, Fut>(
        &self,
        picked: &Picked<Channel>,
        left: Duration,
        call: &mut F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        match tokio::time::timeout(left, call(picked.channel(), left)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(status)) => Err(CallError::classify(status, picked.authority(), left)),
            Err(_) => Err(CallError::Deadline {
                instance: picked.authority().to_owned(),
                after: left,
            }),
        }
    }
}

fn connect_lazy(authority: &str) -> Option<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}")).ok()?;
    Some(
        endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_lazy(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::Endpoint;
    use crate::watch::EndpointSet;
    use tokio::sync::watch;

    fn set(epoch: u64, ids: &[(&str, u16)]) -> Arc<EndpointSet> {
        Arc::new(EndpointSet {
            service: "svc".into(),
            epoch,
            fresh: true,
            error: None,
            endpoints: ids
                .iter()
                .map(|(id, port)| Endpoint {
                    id: (*id).into(),
                    host: "127.0.0.1".into(),
                    port: *port,
                    tags: vec![],
                    meta: Default::default(),
                })
                .collect(),
        })
    }

    #[tokio::test]
    async fn round_robin_spreads_and_follows_the_set() {
        let (tx, rx) = watch::channel(set(1, &[("a", 1), ("b", 2), ("c", 3)]));
        let b = Balancer::new("svc", Policy::RoundRobin, rx);
        let picks: Vec<String> = (0..6).map(|_| b.pick(None).unwrap().id().to_owned()).collect();
        assert_eq!(picks, vec!["a", "b", "c", "a", "b", "c"]);

        let held = b.pick(None).unwrap();
        let before = b.instances();
        tx.send(set(2, &[("a", 1), ("c", 3), ("d", 4)])).unwrap();
        let after = b.instances();
        assert_eq!(
            after.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            vec!["a", "c", "d"]
        );
        assert!(
            Arc::ptr_eq(&before[0], &after[0]),
            "a kept instance keeps its connection"
        );
        drop(held); // a pick made before the change is still usable and releases cleanly

        tx.send(set(3, &[])).unwrap();
        assert_eq!(b.pick(None).unwrap_err(), BalanceError::NoInstances("svc".into()));
    }

    #[tokio::test]
    async fn power_of_two_prefers_the_less_busy_and_avoid_is_honoured() {
        let (_tx, rx) = watch::channel(set(1, &[("busy", 1), ("idle", 2)]));
        let b = Balancer::new("svc", Policy::PowerOfTwo, rx);
        let _load: Vec<Picked> = (0..50).map(|_| b.pick(Some("idle")).unwrap()).collect();
        let busy = b.instances().into_iter().find(|i| i.id == "busy").unwrap();
        assert_eq!(busy.in_flight(), 50);
        let idle_picks = (0..200).filter(|_| b.pick(None).unwrap().id() == "idle").count();
        // Two random draws hit "busy" twice a quarter of the time; otherwise "idle" wins.
        assert!(idle_picks > 120, "{idle_picks}");
        assert_eq!(b.pick(Some("busy")).unwrap().id(), "idle");
    }

    #[tokio::test]
    async fn a_filter_narrows_the_choice_and_says_when_it_refused_everything() {
        let (_tx, rx) = watch::channel(set(1, &[("a", 1), ("b", 2)]));
        let b = Balancer::new("svc", Policy::RoundRobin, rx);
        for _ in 0..4 {
            assert_eq!(b.pick_where(None, |i| i.id != "a").unwrap().id(), "b");
        }
        assert_eq!(
            b.pick_where(None, |_| false).unwrap_err(),
            BalanceError::AllExcluded("svc".into())
        );
        let (_tx, rx) = watch::channel(set(1, &[]));
        let empty = Balancer::new("svc", Policy::RoundRobin, rx);
        assert_eq!(
            empty.pick_where(None, |_| false).unwrap_err(),
            BalanceError::NoInstances("svc".into())
        );
    }

    /// Runs one call whose first attempt meets a refused connection (port 1 on loopback) and
    /// whose second succeeds; returns the answer and the number of attempts.
    async fn refused_then_answered(instances: &[(&str, u16)]) -> (Result<&'static str, CallError>, usize) {
        let (_tx, rx) = watch::channel(set(1, instances));
        let b = Balancer::new("svc", Policy::RoundRobin, rx);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let result = b
            .call(Duration::from_secs(5), |channel, _left| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        probe(channel).await
                    } else {
                        Ok("answered")
                    }
                }
            })
            .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_call_that_was_not_sent_is_retried_once_elsewhere() {
        let (result, attempts) = refused_then_answered(&[("dead", 1), ("alive", 2)]).await;
        assert_eq!(result.unwrap(), "answered");
        assert_eq!(attempts, 2);
    }

    #[tokio::test]
    async fn a_lone_instance_gets_the_retry_of_a_call_it_never_received() {
        // The first attempt meets the connection of an instance that has since restarted.
        let (result, attempts) = refused_then_answered(&[("restarted", 1)]).await;
        assert_eq!(result.unwrap(), "answered");
        assert_eq!(attempts, 2);
    }

    #[tokio::test]
    async fn a_real_refused_connection_is_classified_as_not_sent() {
        let (_tx, rx) = watch::channel(set(1, &[("dead", 1)]));
        let b = Balancer::new("svc", Policy::RoundRobin, rx);
        let e = b
            .call(Duration::from_secs(5), |channel, _| probe(channel))
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::NotSent { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn an_answer_is_never_retried() {
        let (_tx, rx) = watch::channel(set(1, &[("a", 1), ("b", 2)]));
        let b = Balancer::new("svc", Policy::RoundRobin, rx);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let e = b
            .call(Duration::from_secs(5), |_, _| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(tonic::Status::unavailable("busy")) }
            })
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Answered(_)), "{e:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "it may have run: not again");
    }

    /// A real generated-client call on the channel (to a port that refuses), so the error is
    /// exactly what tonic produces.
    async fn probe(channel: Channel) -> Result<&'static str, tonic::Status> {
        let mut client = shop_proto::user::v1::user_service_client::UserServiceClient::new(channel);
        client
            .get_user(shop_proto::user::v1::GetUserRequest { id: 1 })
            .await?;
        Err(tonic::Status::internal("unexpectedly connected"))
    }
}
