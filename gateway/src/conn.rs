//! One client connection's clock and its place under the connection cap: what hyper does not
//! bound on its own.
//!
//! - **Header timeout, from accept.** A connection must finish its first request head within
//!   `header_timeout` of being accepted: the TLS handshake, HTTP version detection and a
//!   client that sends nothing at all all count.
//! - **Idle timeout.** A connection with no request in flight is closed `idle_timeout` after
//!   its last request ended (HTTP/1.1 keep-alive and HTTP/2 alike; HTTP/2 gets a `GOAWAY`).
//!   A request head that trickles in slowly on a kept-alive connection is idle time too.
//! - **Room at the cap.** When every slot is taken, the connection idle the longest is closed
//!   to make room; a new connection waits only when none is idle.
//!
//! A connection's requests report to its [`Tracker`]; [`watch`] turns that into the moment the
//! connection must end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The timeouts every connection of the gateway lives by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// One connection's activity, shared by its task and its requests.
#[derive(Debug)]
pub struct Tracker {
    opened: Instant,
    /// Requests being answered now.
    in_flight: AtomicU32,
    /// Requests received so far.
    started: AtomicU64,
    /// When the last request ended, in milliseconds after `opened`.
    last_done_ms: AtomicU64,
    /// Told when the connection is chosen to make room.
    evict: Notify,
    /// Already chosen (so a second newcomer picks another).
    evicted: std::sync::atomic::AtomicBool,
}

/// Why a connection was ended by the gateway rather than by its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// No complete request head within `header_timeout` of accept.
    HeaderTimeout,
    /// Nothing in flight for `idle_timeout`.
    Idle,
    /// Closed to make room at the connection cap.
    Evicted,
}

impl Cut {
    pub fn as_str(self) -> &'static str {
        match self {
            Cut::HeaderTimeout => "header timeout",
            Cut::Idle => "idle timeout",
            Cut::Evicted => "closed to make room at the connection cap",
        }
    }

    /// Its label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Cut::HeaderTimeout => "header_timeout",
            Cut::Idle => "idle",
            Cut::Evicted => "evicted",
        }
    }
}

/// A request in flight on a connection; the connection is idle again when the last one drops.
#[derive(Debug)]
pub struct InFlight(Arc<Tracker>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let t = &self.0;
        let ms = u64::try_from(t.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        t.last_done_ms.store(ms, Ordering::Relaxed);
        t.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            started: AtomicU64::new(0),
            last_done_ms: AtomicU64::new(0),
            evict: Notify::new(),
            evicted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A request arrived (its head is complete).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Acquire);
        InFlight(Arc::clone(self))
    }

    /// Since when the connection has been idle; `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_done_ms.load(Ordering::Relaxed));
        Some(self.opened + last)
    }

    /// When the connection must end if nothing happens meanwhile, and why.
    fn deadline(&self, clock: Clock) -> Option<(Instant, Cut)> {
        let idle_since = self.idle_since()?;
        if self.started.load(Ordering::Relaxed) == 0 {
            Some((self.opened + clock.header_timeout, Cut::HeaderTimeout))
        } else {
            Some((idle_since + clock.idle_timeout, Cut::Idle))
        }
    }
}

/// Completes when the connection must end, saying why: its header or idle deadline passed, or
/// it was chosen to make room at the cap.
pub async fn watch(tracker: &Tracker, clock: Clock) -> Cut {
    loop {
        // Activity only moves a deadline later, except the switch from the header clock to the
        // idle clock when the first request ends, which can come sooner: so no sleep is longer
        // than one idle period. With a request in flight, look again after an idle period.
        let now = Instant::now();
        let wake = match tracker.deadline(clock) {
            Some((at, why)) if at <= now => return why,
            Some((at, _)) => at.min(now + clock.idle_timeout),
            None => now + clock.idle_timeout,
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            () = tracker.evict.notified() => return Cut::Evicted,
        }
    }
}

/// The connection slots of all listeners, and the open connections (to pick one to close when
/// they are all taken).
#[derive(Debug)]
pub struct Slots {
    free: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Arc<Tracker>>>,
    next: AtomicU64,
    /// Connections the gateway ended, by [`Cut`] (header timeout, idle, evicted).
    cuts: [AtomicU64; 3],
}

/// A connection's slot: released, and the connection forgotten, when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    pub tracker: Arc<Tracker>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&self.id);
    }
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            free: Arc::new(Semaphore::new(max)),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            cuts: Default::default(),
        })
    }

    /// A slot for a connection just accepted: a free one, or, when none is free, the one the
    /// longest-idle connection gives up (it is told to close). Waits only while every
    /// connection has a request in flight.
    pub async fn admit(self: &Arc<Self>) -> Option<Slot> {
        let permit = match Arc::clone(&self.free).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.evict_longest_idle();
                Arc::clone(&self.free).acquire_owned().await.ok()?
            }
        };
        let tracker = Arc::new(Tracker::new());
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(id, Arc::clone(&tracker));
        drop(open);
        Some(Slot {
            slots: Arc::clone(self),
            id,
            tracker,
            _permit: permit,
        })
    }

    /// Tells the connection idle the longest to close; false when none is idle.
    fn evict_longest_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = open
            .values()
            .filter(|t| !t.evicted.load(Ordering::Relaxed))
            .filter_map(|t| t.idle_since().map(|since| (since, t)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, t)) => {
                t.evicted.store(true, Ordering::Relaxed);
                t.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Counts a connection the gateway ended.
    pub fn count_cut(&self, cut: Cut) {
        self.cuts[cut as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections the gateway ended so far, by why.
    pub fn cuts(&self) -> [(Cut, u64); 3] {
        [Cut::HeaderTimeout, Cut::Idle, Cut::Evicted]
            .map(|c| (c, self.cuts[c as usize].load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOCK: Clock = Clock {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };

    #[test]
    fn a_silent_connection_is_on_the_header_clock_then_the_idle_one() {
        let t = Arc::new(Tracker::new());
        let (at, why) = t.deadline(CLOCK).unwrap();
        assert_eq!((at - t.opened, why), (CLOCK.header_timeout, Cut::HeaderTimeout));
        let req = t.begin();
        assert_eq!(t.deadline(CLOCK), None, "no deadline while a request runs");
        drop(req);
        let (at, why) = t.deadline(CLOCK).unwrap();
        assert_eq!(why, Cut::Idle);
        assert!(at >= t.opened + CLOCK.idle_timeout);
    }

    #[tokio::test]
    async fn the_watch_fires_at_the_deadline_and_not_while_busy() {
        let short = Clock {
            header_timeout: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(80),
        };
        let t = Arc::new(Tracker::new());
        assert_eq!(watch(&t, short).await, Cut::HeaderTimeout);
        assert!(t.opened.elapsed() >= short.header_timeout);
        let busy = t.begin();
        let waited = tokio::time::timeout(Duration::from_millis(300), watch(&t, short)).await;
        assert!(
            waited.is_err(),
            "a connection with a request in flight is never cut"
        );
        drop(busy);
        let idle_from = Instant::now();
        assert_eq!(watch(&t, short).await, Cut::Idle);
        assert!(idle_from.elapsed() >= Duration::from_millis(70));
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let slots = Slots::new(2);
        let old = slots.admit().await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let busy = slots.admit().await.unwrap();
        let _request = busy.tracker.begin();
        let evicted = {
            let t = Arc::clone(&old.tracker);
            tokio::spawn(async move { watch(&t, CLOCK).await })
        };
        tokio::task::yield_now().await;
        let admit = {
            let slots = Arc::clone(&slots);
            tokio::spawn(async move { slots.admit().await })
        };
        assert_eq!(
            evicted.await.unwrap(),
            Cut::Evicted,
            "the idle one, not the busy one"
        );
        drop(old);
        let newcomer = admit.await.unwrap();
        assert!(newcomer.is_some(), "its slot went to the newcomer");
        assert_eq!(slots.open(), 2, "the busy one and the newcomer");
    }
}
