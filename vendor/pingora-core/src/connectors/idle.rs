// PATCH (failover gateway): idle upstream connections kept without a task per connection.
//
// Pingora's `ConnectionPool` spawned a task for every released connection, to watch it while
// idle (allocating a `Mutex`, a `Notify`, a oneshot channel and an LRU node, and waking the
// task on reuse); on an HTTP/1 proxy that is once per request. Here an idle connection is a
// plain entry: taking it checks its idle timeout and that it is still open (a non-blocking
// one-byte read, as before), and one sweep per connector and second closes the connections
// that expired or that the server closed or wrote to meanwhile, so they do not linger.

use super::test_reusable_stream;
use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweep closes expired and closed idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Idle connections by reuse key, at most `capacity` in all; the least recently released one
/// is closed to make room.
pub(crate) struct IdlePool {
    capacity: usize,
    state: Mutex<State>,
    sweeping: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Per key, the most recently released last. A key's list is kept while empty (until the
    /// next sweep), so that a connection taken and released again, as on every request of a
    /// kept-alive exchange, allocates nothing.
    by_key: HashMap<u64, Vec<Idle>, BuildHasherDefault<KeyHasher>>,
    /// `(key, serial)` in release order, oldest first. Entries taken for reuse stay here until
    /// they reach the front or the queue is rebuilt.
    order: VecDeque<(u64, u64)>,
    count: usize,
    serial: u64,
}

/// A reuse key is a peer's hash already (`Peer::reuse_hash`): it is its own hash, not hashed
/// again with SipHash on every take and release (~120 instructions each).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; any other input is folded in, not ignored.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

struct Idle {
    stream: Stream,
    serial: u64,
    since: Instant,
    expires: Option<Instant>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }
}

/// A connection closed to make room, and how long it was idle.
pub(crate) type Evicted = (Stream, Duration);

impl IdlePool {
    pub(crate) fn new(capacity: usize) -> Self {
        IdlePool {
            capacity,
            state: Mutex::new(State::default()),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Keeps `stream` for reuse under `key`, for `idle_timeout` at most. Returns the connection
    /// closed to make room, if any (dropped by the caller, outside the lock).
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
        unexpected: &Arc<AtomicU64>,
    ) -> Option<Evicted> {
        if self.capacity == 0 {
            return None;
        }
        if !self.sweeping.load(Ordering::Relaxed) && !self.sweeping.swap(true, Ordering::AcqRel) {
            let pool = Arc::downgrade(self);
            let unexpected = unexpected.clone();
            pingora_runtime::current_handle().spawn(sweep(pool, unexpected));
        }
        let now = Instant::now();
        let mut state = self.state.lock();
        let evicted = if state.count >= self.capacity {
            state.evict_oldest(now)
        } else {
            None
        };
        state.serial += 1;
        let serial = state.serial;
        state.by_key.entry(key).or_default().push(Idle {
            stream,
            serial,
            since: now,
            expires: idle_timeout.map(|t| now + t),
        });
        state.order.push_back((key, serial));
        state.count += 1;
        if state.order.len() > 2 * self.capacity + 16 {
            state.rebuild_order();
        }
        evicted
    }

    /// The most recently released connection under `key` that has not expired; the expired
    /// ones found on the way are closed (after the lock is released).
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let found = {
            let mut state = self.state.lock();
            let mut found = None;
            if let Some(list) = state.by_key.get_mut(&key) {
                while let Some(idle) = list.pop() {
                    if idle.expired(now) {
                        expired.push(idle);
                    } else {
                        found = Some(idle.stream);
                        break;
                    }
                }
            }
            state.count -= expired.len() + usize::from(found.is_some());
            found
        };
        drop(expired);
        found
    }

    /// Closes the connections that expired, or that the server closed or wrote to.
    fn sweep(&self, unexpected: &AtomicU64) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut state = self.state.lock();
            let before = state.count;
            state.by_key.retain(|_, list| {
                let mut i = 0;
                while i < list.len() {
                    if list[i].expired(now) || !test_reusable_stream(&mut list[i].stream, unexpected)
                    {
                        closed.push(list.remove(i));
                    } else {
                        i += 1;
                    }
                }
                !list.is_empty()
            });
            state.count = before - closed.len();
            if !closed.is_empty() {
                state.rebuild_order();
            }
        }
        drop(closed);
    }
}

impl State {
    fn evict_oldest(&mut self, now: Instant) -> Option<Evicted> {
        while let Some((key, serial)) = self.order.pop_front() {
            let Some(list) = self.by_key.get_mut(&key) else {
                continue;
            };
            let Some(at) = list.iter().position(|i| i.serial == serial) else {
                continue;
            };
            let idle = list.remove(at);
            if list.is_empty() {
                self.by_key.remove(&key);
            }
            self.count -= 1;
            return Some((idle.stream, now.saturating_duration_since(idle.since)));
        }
        None
    }

    fn rebuild_order(&mut self) {
        let mut order: Vec<(u64, u64)> = self
            .by_key
            .iter()
            .flat_map(|(key, list)| list.iter().map(move |i| (i.serial, *key)))
            .collect();
        order.sort_unstable();
        self.order = order.into_iter().map(|(serial, key)| (key, serial)).collect();
    }
}

async fn sweep(pool: Weak<IdlePool>, unexpected: Arc<AtomicU64>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.sweep(&unexpected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::l4::stream::Stream as L4;
    use std::hash::BuildHasher;

    /// A loopback connection (both ends, so the kept end stays open and silent).
    async fn connection() -> (Stream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (Box::new(L4::from(client.unwrap())), server.unwrap().0)
    }

    #[tokio::test]
    async fn a_key_gets_its_own_connections_back_and_its_empty_list_is_kept() {
        let pool = Arc::new(IdlePool::new(8));
        let unexpected = Arc::new(AtomicU64::new(0));
        let (a, _a_end) = connection().await;
        let (b, _b_end) = connection().await;
        let (a_id, b_id) = (a.id(), b.id());
        assert!(pool.put(1, a, None, &unexpected).is_none());
        assert!(pool.put(u64::MAX, b, None, &unexpected).is_none());
        assert_eq!(pool.take(1).map(|s| s.id()), Some(a_id));
        assert!(pool.take(1).is_none(), "a key's connection is taken once");
        assert_eq!(pool.take(u64::MAX).map(|s| s.id()), Some(b_id));
        {
            let state = pool.state.lock();
            assert_eq!(state.count, 0);
            assert!(state
                .by_key
                .get(&1)
                .is_some_and(|l| l.is_empty() && l.capacity() > 0));
        }
        // The sweep forgets empty lists.
        pool.sweep(&unexpected);
        assert!(pool.state.lock().by_key.is_empty());
    }

    #[test]
    fn a_reuse_key_is_its_own_hash() {
        let build = BuildHasherDefault::<KeyHasher>::default();
        for key in [0, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(build.hash_one(key), key);
        }
        assert_ne!(build.hash_one([1u8, 2]), build.hash_one([2u8, 1]));
    }
}
