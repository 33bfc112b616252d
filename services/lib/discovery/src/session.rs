//! One holder at a time across instances: a Consul session lock on a KV key. The calls
//! (session create, renew, destroy; KV acquire, release, blocking read) and [`lead`], the loop
//! that tries to hold the lock for as long as the instance runs and publishes whether it does.
//!
//! The session is tied to the instance's own health check and to its node (`serfHealth`): when
//! the instance dies (`kill -9`) its check fails within one check interval, Consul invalidates
//! the session and releases the lock, and another instance's blocking read wakes and takes it
//! (after the session's lock delay). A TTL, renewed by the holder, covers a check that keeps
//! passing on a wedged process. Holding the lock is advisory: whoever does the work must still
//! make every step safe to run twice (a lost lock is noticed only at the next read).

use std::time::{Duration, Instant};

use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::consul::{AGENT_CALL_TIMEOUT, ConsulClient, ConsulError, blocking_timeout, segment};
use crate::pace::{Quiet, Rng, backoff};
use crate::register::REPEAT_REFUSAL;

/// What a lock is and how its sessions are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    /// The KV key, e.g. `shop/order-service/recovery`.
    pub key: String,
    /// Names the session in Consul (and the value stored in the key): who holds it.
    pub holder: String,
    /// Health checks the session depends on: `serfHealth` and the instance's own
    /// `service:<id>`.
    pub checks: Vec<String>,
    /// Consul invalidates a session not renewed for this long (it may wait up to twice that).
    pub ttl: Duration,
    /// After a holder's session is invalidated, nobody may take the lock for this long.
    pub lock_delay: Duration,
}

impl LockConfig {
    /// A lock on `key` for the registered instance `service_id`, with a 15 s TTL and a 1 s lock
    /// delay (every step under the lock is safe to run twice, so the delay only spaces
    /// handovers).
    pub fn for_instance(key: &str, service_id: &str) -> LockConfig {
        LockConfig {
            key: key.to_owned(),
            holder: service_id.to_owned(),
            checks: vec!["serfHealth".to_owned(), format!("service:{service_id}")],
            ttl: Duration::from_secs(15),
            lock_delay: Duration::from_secs(1),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionBody<'a> {
    name: &'a str,
    checks: &'a [String],
    #[serde(rename = "TTL")]
    ttl: String,
    lock_delay: String,
    behavior: &'static str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvEntry {
    #[serde(default)]
    session: Option<String>,
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

impl ConsulClient {
    /// Creates a session that releases its locks when it ends; the checks must exist and pass.
    pub async fn create_session(&self, config: &LockConfig) -> Result<String, ConsulError> {
        let body = SessionBody {
            name: &config.holder,
            checks: &config.checks,
            ttl: seconds(config.ttl.max(Duration::from_secs(10))),
            lock_delay: format!("{}ms", config.lock_delay.as_millis()),
            behavior: "release",
        };
        let json = serde_json::to_vec(&body).map_err(|e| decode("session create", &e))?;
        let answer = self
            .send(Method::PUT, "/v1/session/create", Some(json), AGENT_CALL_TIMEOUT)
            .await?;
        let created: Created =
            serde_json::from_slice(&answer.body).map_err(|e| decode("session create", &e))?;
        Ok(created.id)
    }

    /// Renews a session's TTL; false when Consul no longer knows it (invalidated).
    pub async fn renew_session(&self, session: &str) -> Result<bool, ConsulError> {
        let path = format!("/v1/session/renew/{}", segment(session));
        match self.send(Method::PUT, &path, None, AGENT_CALL_TIMEOUT).await {
            Ok(_) => Ok(true),
            Err(ConsulError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ends a session; its locks are released.
    pub async fn destroy_session(&self, session: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/session/destroy/{}", segment(session));
        self.send(Method::PUT, &path, None, AGENT_CALL_TIMEOUT)
            .await
            .map(|_| ())
    }

    /// Tries to take the lock on `key` for `session`; true when it is now held by it.
    pub async fn acquire(&self, key: &str, session: &str, value: &str) -> Result<bool, ConsulError> {
        let path = format!("/v1/kv/{}?acquire={}", key_path(key), segment(session));
        let answer = self
            .send(
                Method::PUT,
                &path,
                Some(value.as_bytes().to_vec()),
                AGENT_CALL_TIMEOUT,
            )
            .await?;
        Ok(answer.body.as_ref().trim_ascii() == b"true")
    }

    /// Gives the lock on `key` back, if `session` holds it.
    pub async fn release(&self, key: &str, session: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/kv/{}?release={}", key_path(key), segment(session));
        self.send(Method::PUT, &path, None, AGENT_CALL_TIMEOUT)
            .await
            .map(|_| ())
    }

    /// A blocking read of who holds `key`: answers when its index moves past `index`, or after
    /// about `wait`. Returns the new index and the holding session (`None`: free, or no key).
    pub async fn lock_holder(
        &self,
        key: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(u64, Option<String>), ConsulError> {
        let mut path = format!("/v1/kv/{}", key_path(key));
        if index > 0 {
            path.push_str(&format!("?index={index}&wait={}", seconds(wait)));
        }
        let answer = self
            .exchange(Method::GET, &path, None, blocking_timeout(wait))
            .await?;
        let what = || format!("GET /v1/kv/{key}");
        // The status first: a refusal (403) is one whatever headers came with it.
        if !matches!(answer.status.as_u16(), 200 | 404) {
            return Err(self.failed(&answer, what()));
        }
        let new_index = answer.index.ok_or_else(|| ConsulError::Decode {
            what: what(),
            problem: "no X-Consul-Index header".to_owned(),
        })?;
        if answer.status.as_u16() == 404 {
            return Ok((new_index, None));
        }
        let entries: Vec<KvEntry> = serde_json::from_slice(&answer.body).map_err(|e| decode(&what(), &e))?;
        let holder = entries
            .into_iter()
            .next()
            .and_then(|e| e.session)
            .filter(|s| !s.is_empty());
        Ok((new_index, holder))
    }
}

/// A KV key as a URL path: each segment encoded, slashes kept.
fn key_path(key: &str) -> String {
    key.split('/').map(segment).collect::<Vec<_>>().join("/")
}

fn decode(what: &str, e: &dyn std::fmt::Display) -> ConsulError {
    ConsulError::Decode {
        what: what.to_owned(),
        problem: e.to_string(),
    }
}

/// A running attempt to hold a lock: `held` says whether this instance holds it now.
#[derive(Debug)]
pub struct Leadership {
    pub held: watch::Receiver<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Holds no lock and never will: for an instance that runs alone (no Consul), `held` is
    /// always true.
    pub fn alone() -> Leadership {
        let (tx, held) = watch::channel(true);
        let task = tokio::spawn(async move {
            // Keep the sender alive, so `held` never reports a closed channel.
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        Leadership {
            held,
            stop: None,
            task,
        }
    }

    /// Stops trying, gives the lock back and ends the session (so another instance takes over
    /// at once instead of after a failed check).
    pub async fn stop(mut self) {
        match self.stop.take() {
            Some(stop) => {
                let _ = stop.send(());
            }
            None => self.task.abort(),
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts trying to hold `config.key` for as long as the instance runs.
pub fn lead(client: ConsulClient, config: LockConfig) -> Leadership {
    let (tx, held) = watch::channel(false);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(hold_loop(client, config, tx, stopped));
    Leadership {
        held,
        stop: Some(stop),
        task,
    }
}

async fn hold_loop(
    client: ConsulClient,
    config: LockConfig,
    held: watch::Sender<bool>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut rng = Rng::new();
    let mut failures = 0u32;
    let mut session: Option<String> = None;
    let mut quiet = Quiet::new(REPEAT_REFUSAL);
    loop {
        let step = tokio::select! {
            step = one_round(&client, &config, &mut session, &held) => step,
            _ = &mut stopped => break,
        };
        let pause = match step {
            Ok(()) => {
                failures = 0;
                quiet.reset();
                Duration::ZERO
            }
            Err(e) => {
                failures += 1;
                held.send_replace(false);
                if e.is_refusal() && quiet.due(Instant::now()) {
                    tracing::error!(key = %config.key, error = %e, "Consul refused the lock's session or key; this instance cannot hold it until the token or its policy is fixed");
                } else if failures == 1 {
                    tracing::warn!(key = %config.key, error = %e, "cannot take part in the lock; retrying");
                } else {
                    tracing::debug!(key = %config.key, error = %e, "cannot take part in the lock; retrying");
                }
                backoff(
                    failures,
                    Duration::from_millis(250),
                    Duration::from_secs(5),
                    rng.unit(),
                )
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = &mut stopped => break,
        }
    }
    if held.send_replace(false) {
        tracing::info!(key = %config.key, "lock given up");
    }
    if let Some(id) = session {
        let _ = client.release(&config.key, &id).await;
        let _ = client.destroy_session(&id).await;
    }
}

/// Makes sure there is a session, then either holds the lock (watching that it stays ours) or
/// waits for it to be free and takes it. Returns when something changed; errors end the round.
async fn one_round(
    client: &ConsulClient,
    config: &LockConfig,
    session: &mut Option<String>,
    held: &watch::Sender<bool>,
) -> Result<(), ConsulError> {
    let id = match session {
        Some(id) => id.clone(),
        None => {
            let id = client.create_session(config).await?;
            tracing::debug!(key = %config.key, session = %id, "session created");
            session.insert(id).clone()
        }
    };
    // Blocking reads no longer than a third of the TTL: the session is renewed between them.
    let wait = (config.ttl / 3).max(Duration::from_secs(1));
    let mut index = 0;
    loop {
        if !client.renew_session(&id).await? {
            *session = None;
            if held.send_replace(false) {
                tracing::warn!(key = %config.key, "lock lost: the session was invalidated");
            }
            return Ok(());
        }
        let (next, holder) = client.lock_holder(&config.key, index, wait).await?;
        // An index going backwards (agent restarted) starts over with a fresh read.
        index = if next < index { 0 } else { next };
        match holder {
            Some(h) if h == id => {
                if !held.send_replace(true) {
                    tracing::info!(key = %config.key, "lock held");
                }
            }
            Some(_) => {
                if held.send_replace(false) {
                    tracing::warn!(key = %config.key, "lock lost to another instance");
                }
            }
            None => {
                if client.acquire(&config.key, &id, &config.holder).await? {
                    held.send_replace(true);
                    tracing::info!(key = %config.key, "lock held");
                } else {
                    if held.send_replace(false) {
                        tracing::warn!(key = %config.key, "lock lost");
                    }
                    // Free but refused: the last holder's lock delay runs. Try again after it
                    // with a fresh read rather than waiting for the key to change.
                    tokio::time::sleep(config.lock_delay.max(Duration::from_millis(100))).await;
                    index = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_slashes_and_lose_nothing_else() {
        assert_eq!(
            key_path("shop/order-service/recovery"),
            "shop/order-service/recovery"
        );
        assert_eq!(key_path("a b/c?d"), "a%20b/c%3Fd");
        let c = LockConfig::for_instance("k", "order-service-127.0.0.1-5002");
        assert_eq!(c.checks, ["serfHealth", "service:order-service-127.0.0.1-5002"]);
    }

    #[tokio::test]
    async fn alone_means_always_held() {
        let l = Leadership::alone();
        assert!(*l.held.borrow());
        l.stop().await;
    }
}
