// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Lightweight timer for systems with high rate of operations with timeout
//! associated with them
//!
//! Users don't need to interact with this module.
//!
//! The idea is to bucket timers into finite time slots so that operations that
//! start and end quickly don't have to create their own timers all the time
//!
//! Benchmark:
//! - create 7.809622ms total, 78ns avg per iteration
//! - drop: 1.348552ms total, 13ns avg per iteration
//!
//! tokio timer:
//! - create 34.317439ms total, 343ns avg per iteration
//! - drop: 10.694154ms total, 106ns avg per iteration

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;
use tokio::sync::Notify;

const RESOLUTION_MS: u64 = 10;
const RESOLUTION_DURATION: Duration = Duration::from_millis(RESOLUTION_MS);

// round to the NEXT timestamp based on the resolution
// PATCH (failover gateway): milliseconds as `u64` (584 million years from the manager's zero),
// not `u128`: every timer registration rounded with a 128-bit division (a `__umodti3` call)
// and every timer-tree lookup compared 128-bit keys.
#[inline]
fn round_to(raw: u64, resolution: u64) -> u64 {
    raw - 1 + resolution - (raw - 1) % resolution
}
// millisecond resolution as most
#[derive(PartialEq, PartialOrd, Eq, Ord, Clone, Copy, Debug)]
struct Time(u64);

impl From<u64> for Time {
    fn from(raw_ms: u64) -> Self {
        Time(round_to(raw_ms, RESOLUTION_MS))
    }
}

impl From<Duration> for Time {
    fn from(d: Duration) -> Self {
        Time(round_to(millis(d), RESOLUTION_MS))
    }
}

/// `d` in whole milliseconds, without `Duration::as_millis`'s `u128`.
#[inline]
fn millis(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(d.subsec_millis() as u64)
}

impl Time {
    pub fn not_after(&self, ts: u64) -> bool {
        self.0 <= ts
    }
}

/// the stub for waiting for a timer to be expired.
pub struct TimerStub(Arc<Notify>, Arc<AtomicBool>);

impl TimerStub {
    /// Wait for the timer to expire.
    pub async fn poll(self) {
        // PATCH (failover gateway, patch 51): the waiter is made before the flag is read. A
        // `Notified` receives every `notify_waiters` from its creation on, so a slot fired
        // between the read and the wait (the flag set, then the waiters woken) is not missed;
        // made after the read, it waited for a wake-up that had already gone.
        let notified = self.0.notified();
        if self.1.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}

struct Timer(Arc<Notify>, Arc<AtomicBool>);

impl Timer {
    pub fn new() -> Self {
        Timer(Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)))
    }

    pub fn fire(&self) {
        self.1.store(true, Ordering::SeqCst);
        self.0.notify_waiters();
    }

    pub fn subscribe(&self) -> TimerStub {
        TimerStub(self.0.clone(), self.1.clone())
    }
}

/// PATCH (failover gateway, patch 51): the timer slots a thread registered last, so that the
/// next timeout with the same deadline slot (most of them: a busy thread registers many per
/// 10 ms slot, with a few distinct durations) shares it without the thread's tree, its lock
/// and a B-tree lookup. A kept slot already fired is not shared: the tree path then makes a
/// new one, as it always did after a slot fired.
mod recent {
    use super::{Time, TimerStub};
    use std::cell::RefCell;
    use std::sync::atomic::Ordering;

    const KEPT: usize = 4;

    struct Kept {
        manager: u64,
        time: Time,
        stub: TimerStub,
    }

    thread_local! {
        static RECENT: RefCell<([Option<Kept>; KEPT], usize)> =
            const { RefCell::new(([const { None }; KEPT], 0)) };
    }

    /// A stub of the slot `time` of `manager` this thread registered last, if not yet fired.
    pub(super) fn find(manager: u64, time: Time) -> Option<TimerStub> {
        RECENT.with(|recent| {
            let recent = recent.borrow();
            recent.0.iter().flatten().find_map(|kept| {
                (kept.manager == manager
                    && kept.time == time
                    && !kept.stub.1.load(Ordering::SeqCst))
                .then(|| TimerStub(kept.stub.0.clone(), kept.stub.1.clone()))
            })
        })
    }

    /// Keeps the slot `time` of `manager`, replacing the oldest kept one.
    pub(super) fn keep(manager: u64, time: Time, stub: &TimerStub) {
        RECENT.with(|recent| {
            let (kept, next) = &mut *recent.borrow_mut();
            kept[*next] = Some(Kept {
                manager,
                time,
                stub: TimerStub(stub.0.clone(), stub.1.clone()),
            });
            *next = (*next + 1) % KEPT;
        })
    }
}

/// The object that holds all the timers registered to it.
pub struct TimerManager {
    // each thread insert into its local timer tree to avoid lock contention
    timers: ThreadLocal<RwLock<BTreeMap<Time, Timer>>>,
    zero: Instant, // the reference zero point of Timestamp
    // Start a new clock thread if this is -1 or staled. The clock thread should keep updating this
    clock_watchdog: AtomicI64,
    paused: AtomicBool,
    // PATCH (failover gateway, patch 51): which manager a slot kept by `recent` belongs to (an
    // address could be reused by a later manager).
    id: u64,
}

// Consider the clock thread is dead after it fails to update the thread in DELAYS_SEC
const DELAYS_SEC: i64 = 2; // TODO: make sure this value is larger than RESOLUTION_DURATION

impl Default for TimerManager {
    fn default() -> Self {
        TimerManager {
            timers: ThreadLocal::new(),
            zero: Instant::now(),
            clock_watchdog: AtomicI64::new(-DELAYS_SEC),
            paused: AtomicBool::new(false),
            id: {
                static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                IDS.fetch_add(1, Ordering::Relaxed)
            },
        }
    }
}

impl TimerManager {
    /// Create a new [TimerManager]
    pub fn new() -> Self {
        Self::default()
    }

    // This thread sleeps for a resolution time and then fires all the timers that are due to fire
    pub(crate) fn clock_thread(&self) {
        loop {
            std::thread::sleep(RESOLUTION_DURATION);
            let now = Instant::now() - self.zero;
            self.clock_watchdog
                .store(now.as_secs() as i64, Ordering::Relaxed);
            if self.is_paused_for_fork() {
                // just stop acquiring the locks, waiting for fork to happen
                continue;
            }
            let now = millis(now);
            // iterate through the timer tree for all threads
            for thread_timer in self.timers.iter() {
                let mut timers = thread_timer.write();
                // Fire all timers until now
                loop {
                    let key_to_remove = timers.iter().next().and_then(|(k, _)| {
                        if k.not_after(now) {
                            Some(*k)
                        } else {
                            None
                        }
                    });
                    if let Some(k) = key_to_remove {
                        let timer = timers.remove(&k);
                        // safe to unwrap, the key is from iter().next()
                        timer.unwrap().fire();
                    } else {
                        break;
                    }
                }
                // write lock drops here
            }
        }
    }

    // False if the clock is already started
    // If true, the caller must start the clock thread next
    #[cfg(test)]
    pub(crate) fn should_i_start_clock(&self) -> bool {
        self.should_i_start_clock_at(self.elapsed())
    }

    // PATCH (failover gateway, patch 39): the time since `zero`, read once by a registration
    // for both its clock-thread check and its slot (each read and subtraction of `Instant`s
    // costs about 60 instructions; two registrations per proxied request).
    pub(crate) fn elapsed(&self) -> Duration {
        Instant::now().duration_since(self.zero)
    }

    // `should_i_start_clock` at `elapsed` (since `zero`).
    pub(crate) fn should_i_start_clock_at(&self, elapsed: Duration) -> bool {
        let Err(prev) = self.is_clock_running_at(elapsed) else {
            return false;
        };
        let now = elapsed.as_secs() as i64;
        let res =
            self.clock_watchdog
                .compare_exchange(prev, now, Ordering::SeqCst, Ordering::SeqCst);
        res.is_ok()
    }

    // Ok(()) if clock is running (watch dog is within DELAYS_SEC of now)
    // Err(time) if watch do stopped at `time`
    #[cfg(test)]
    pub(crate) fn is_clock_running(&self) -> Result<(), i64> {
        self.is_clock_running_at(self.elapsed())
    }

    // `is_clock_running` at `elapsed` (since `zero`).
    fn is_clock_running_at(&self, elapsed: Duration) -> Result<(), i64> {
        let now = elapsed.as_secs() as i64;
        let prev = self.clock_watchdog.load(Ordering::SeqCst);
        if now < prev + DELAYS_SEC {
            Ok(())
        } else {
            Err(prev)
        }
    }

    /// Register a timer.
    ///
    /// When the timer expires, the [TimerStub] will be notified.
    pub fn register_timer(&self, duration: Duration) -> TimerStub {
        self.register_timer_at(self.elapsed(), duration)
    }

    // PATCH (failover gateway, patch 39): `register_timer` at `elapsed` (since `zero`).
    pub(crate) fn register_timer_at(&self, elapsed: Duration, duration: Duration) -> TimerStub {
        if self.is_paused_for_fork() {
            // Return a dummy TimerStub that will trigger right away.
            // This is fine assuming pause_for_fork() is called right before fork().
            // The only possible register_timer() is from another thread which will
            // be entirely lost after fork()
            // TODO: buffer these register calls instead (without a lock)
            let timer = Timer::new();
            timer.fire();
            return timer.subscribe();
        }
        let now: Time = (elapsed + duration).into();
        // PATCH (failover gateway, patch 51): the slots this thread registered last.
        let manager = self.id;
        if let Some(stub) = recent::find(manager, now) {
            return stub;
        }
        {
            let timers = self.timers.get_or(|| RwLock::new(BTreeMap::new())).read();
            if let Some(t) = timers.get(&now) {
                let stub = t.subscribe();
                recent::keep(manager, now, &stub);
                return stub;
            }
        } // drop read lock

        let timer = Timer::new();
        let mut timers = self.timers.get_or(|| RwLock::new(BTreeMap::new())).write();
        // Usually we check if another thread has insert the same node before we get the write lock,
        // but because only this thread will insert anything to its local timers tree, there
        // is no possible race that can happen. The only other thread is the clock thread who
        // only removes timer from the tree
        let stub = timer.subscribe();
        timers.insert(now, timer);
        recent::keep(manager, now, &stub);
        stub
    }

    fn is_paused_for_fork(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pause the timer for fork()
    ///
    /// Because RwLock across fork() is undefined behavior, this function makes sure that no one
    /// holds any locks.
    ///
    /// This function should be called right before fork().
    pub fn pause_for_fork(&self) {
        self.paused.store(true, Ordering::SeqCst);
        // wait for everything to get out of their locks
        std::thread::sleep(RESOLUTION_DURATION * 2);
    }

    /// Unpause the timer after fork()
    ///
    /// This function should be called right after fork().
    pub fn unpause(&self) {
        self.paused.store(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_round() {
        assert_eq!(round_to(30, 10), 30);
        assert_eq!(round_to(31, 10), 40);
        assert_eq!(round_to(29, 10), 30);
    }

    #[test]
    fn test_time() {
        let t: Time = 128.into(); // t will round to 130
        assert_eq!(t, Duration::from_millis(130).into());
        assert!(!t.not_after(128));
        assert!(!t.not_after(129));
        assert!(t.not_after(130));
        assert!(t.not_after(131));
    }

    #[tokio::test]
    async fn test_timer_manager() {
        let tm_a = Arc::new(TimerManager::new());
        let tm = tm_a.clone();
        std::thread::spawn(move || tm_a.clock_thread());

        let now = Instant::now();
        let t1 = tm.register_timer(Duration::from_secs(1));
        let t2 = tm.register_timer(Duration::from_secs(1));
        t1.poll().await;
        assert_eq!(now.elapsed().as_secs(), 1);
        let now = Instant::now();
        t2.poll().await;
        // t2 fired along t1 so no extra wait time
        assert_eq!(now.elapsed().as_secs(), 0);
    }

    // PATCH (failover gateway, patch 51).
    /// Registrations of one deadline slot on one thread share it through the kept slots; once
    /// it fired, the same deadline gets a new slot, which fires too; another manager's
    /// registration never shares this one's.
    #[tokio::test]
    async fn a_kept_slot_is_shared_until_it_fires() {
        let tm_a = Arc::new(TimerManager::new());
        let tm = tm_a.clone();
        std::thread::spawn(move || tm_a.clock_thread());

        let at = Duration::ZERO;
        let first = tm.register_timer_at(at, Duration::from_millis(20));
        let second = tm.register_timer_at(at, Duration::from_millis(20));
        assert!(Arc::ptr_eq(&first.0, &second.0), "one slot, shared");
        let kept = second.0.clone();
        first.poll().await;
        second.poll().await;

        let third = tm.register_timer_at(at, Duration::from_millis(20));
        assert!(!Arc::ptr_eq(&third.0, &kept), "a fired slot is not shared");
        tokio::time::timeout(Duration::from_secs(10), third.poll())
            .await
            .expect("the new slot fires");

        let other = TimerManager::new();
        let theirs = other.register_timer_at(at, Duration::from_secs(60));
        let ours = tm.register_timer_at(at, Duration::from_secs(60));
        assert!(!Arc::ptr_eq(&theirs.0, &ours.0), "managers do not share slots");
    }

    #[test]
    fn test_timer_manager_start_check() {
        let tm = Arc::new(TimerManager::new());
        assert!(tm.should_i_start_clock());
        assert!(!tm.should_i_start_clock());
        assert!(tm.is_clock_running().is_ok());
    }

    #[test]
    fn test_timer_manager_watchdog() {
        let tm = Arc::new(TimerManager::new());
        assert!(tm.should_i_start_clock());
        assert!(!tm.should_i_start_clock());

        // we don't actually start the clock thread, sleep for the watchdog to expire
        std::thread::sleep(Duration::from_secs(DELAYS_SEC as u64 + 1));
        assert!(tm.is_clock_running().is_err());
        assert!(tm.should_i_start_clock());
    }

    #[tokio::test]
    async fn test_timer_manager_pause() {
        let tm_a = Arc::new(TimerManager::new());
        let tm = tm_a.clone();
        std::thread::spawn(move || tm_a.clock_thread());

        let now = Instant::now();
        let t1 = tm.register_timer(Duration::from_secs(2));
        tm.pause_for_fork();
        // no actual fork happen, we just test that pause and unpause work

        // any timer in this critical section is timed out right away
        let t2 = tm.register_timer(Duration::from_secs(2));
        t2.poll().await;
        assert_eq!(now.elapsed().as_secs(), 0);

        std::thread::sleep(Duration::from_secs(1));
        tm.unpause();
        t1.poll().await;
        assert_eq!(now.elapsed().as_secs(), 2);
    }
}
