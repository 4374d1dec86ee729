//! A share of requests over a sliding window: how many retries (or early retries) a route may
//! send, so a sick fleet is not stormed with them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Caps retries at a share of requests (with a small floor), over a sliding window of
/// `SECONDS` one-second slots, so that a sick fleet is not stormed with retries.
pub struct Budget<const SECONDS: usize> {
    permille: AtomicU64,
    epoch: tokio::time::Instant,
    /// Second index of the current window slot.
    slot: AtomicU64,
    requests: [AtomicU64; SECONDS],
    retries: [AtomicU64; SECONDS],
}

/// The retry budget: 2 seconds.
pub type RetryBudget = Budget<2>;

/// Retries always allowed per window, whatever the request count.
const RETRY_FLOOR: u64 = 10;

impl<const SECONDS: usize> Budget<SECONDS> {
    /// A budget allowing `permille`/1000 of requests to be retried.
    pub fn new(permille: u32) -> Self {
        Self {
            permille: AtomicU64::new(u64::from(permille)),
            epoch: tokio::time::Instant::now(),
            slot: AtomicU64::new(0),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            retries: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Changes the share (on reload); the counts stay.
    pub fn set_permille(&self, permille: u32) {
        self.permille.store(u64::from(permille), Ordering::Relaxed);
    }

    fn index(&self) -> usize {
        self.index_at(tokio::time::Instant::now())
    }

    fn index_at(&self, at: tokio::time::Instant) -> usize {
        let n = SECONDS as u64;
        let now = at.saturating_duration_since(self.epoch).as_secs();
        let slot = self.slot.load(Ordering::Relaxed);
        // A time read before the window moved on (a request's start, counted a moment later,
        // perhaps after another thread's) counts in the current slot: the window never moves
        // back, which would wipe the current second's counts when it moved forward again.
        if now < slot {
            return (slot % n) as usize;
        }
        if now != slot
            && self
                .slot
                .compare_exchange(slot, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // Each second passed since the last one starts its slot empty (all of them after a
            // silence of a whole window).
            for second in (slot + 1).max(now.saturating_sub(n - 1))..=now {
                let i = (second % n) as usize;
                self.requests[i].store(0, Ordering::Relaxed);
                self.retries[i].store(0, Ordering::Relaxed);
            }
        }
        (now % n) as usize
    }

    /// Counts a request now.
    #[cfg(test)]
    pub fn on_request(&self) {
        self.on_request_at(tokio::time::Instant::now());
    }

    /// Counts a request that arrived at `at` (a time the caller has already read: the clock is
    /// read once per request, not once per budget).
    pub fn on_request_at(&self, at: tokio::time::Instant) {
        let i = self.index_at(at);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, or says no.
    pub fn try_retry(&self) -> bool {
        let i = self.index();
        let requests: u64 = self
            .requests
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        let retries: u64 = self.retries.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let allowed = RETRY_FLOOR + requests * self.permille.load(Ordering::Relaxed) / 1000;
        if retries >= allowed {
            return false;
        }
        self.retries[i].fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Gives one retry taken in the window back (none taken: nothing happens): for a retry
    /// that proved it cost nothing a sick fleet would feel.
    pub fn refund(&self) {
        let i = self.index();
        for k in 0..SECONDS {
            let slot = &self.retries[(i + SECONDS - k) % SECONDS];
            if slot
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_request_read_before_the_window_moved_on_counts_in_the_new_second() {
        let b = RetryBudget::new(100);
        let before = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        for _ in 0..100 {
            b.on_request();
        }
        b.on_request_at(before);
        // The 101 requests all count: the floor of 10 plus a tenth of them.
        let granted = (0..50).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 10 + 10);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_allows_a_share_plus_a_floor() {
        let b = RetryBudget::new(200);
        for _ in 0..100 {
            b.on_request();
        }
        let granted = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 10 + 20);
        // Two seconds later the window has moved on.
        tokio::time::advance(Duration::from_secs(2)).await;
        let granted = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refund_gives_one_retry_back_and_never_more_than_were_taken() {
        let b = RetryBudget::new(0);
        assert_eq!((0..100).filter(|_| b.try_retry()).count(), 10);
        b.refund();
        b.refund();
        assert_eq!((0..100).filter(|_| b.try_retry()).count(), 2);
        // A retry taken a second ago comes back too.
        tokio::time::advance(Duration::from_secs(1)).await;
        b.refund();
        assert_eq!((0..100).filter(|_| b.try_retry()).count(), 1);
        // Nothing taken in the window: a refund gives nothing beyond the floor.
        tokio::time::advance(Duration::from_secs(2)).await;
        b.refund();
        assert_eq!((0..100).filter(|_| b.try_retry()).count(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_budget_window_remembers_each_second_until_it_slides_out() {
        let b: Budget<10> = Budget::new(100);
        for _ in 0..100 {
            b.on_request();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..100 {
            b.on_request();
        }
        // Both seconds count: 10 + 10% of 200.
        assert_eq!((0..100).filter(|_| b.try_retry()).count(), 30);
        // At 10 s the first second has slid out (its retries with it: none were taken then).
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!((0..100).filter(|_| b.try_retry()).count(), 0);
        // At 16 s nothing is left but the floor.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!((0..100).filter(|_| b.try_retry()).count(), 10);
    }
}
