//! Early retry: the deadline for a response's first byte, learnt from the route's own recent
//! times to first byte, and the budget that bounds how many requests are cut at it.
//!
//! A `GET`, `HEAD` or `OPTIONS` without a body whose first attempt has not answered by
//! `clamp(p99 × factor, min_delay, max_delay)` gets a second attempt at another endpoint,
//! another region first: raced against the first (hedging, `hedge.rs`, HTTP/1.1 upstreams) or,
//! without `hedge` or to HTTP/2, instead of it (the first is cut, its connection closed or
//! its stream reset, and the request retried). It is decided when the deadline passes (vendor
//! patch 19, `FirstByteDeadline`): if the budget has nothing left, the attempt simply goes on
//! waiting.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_config::EarlyRetry;
use metrics::Counter;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::FirstByteDeadline;

use crate::routing::budget::Budget;

/// Buckets of the time-to-first-byte histogram: four per power of two from 64 µs (bucket 0 is
/// everything below), so the last one starts past 17 minutes.
const BUCKETS: usize = 96;
/// Each of the histogram's two windows covers this long; the percentile reads both.
const WINDOW: Duration = Duration::from_secs(5);
/// Answers the percentile needs before it is trusted; until then the deadline is `max_delay`.
/// Ten: at 50 requests per second a route has them within 0.2 s (its p99 is then their
/// slowest, times `factor`).
const MIN_ANSWERS: u64 = 10;
/// How long a computed deadline is reused before it is computed again.
const REFRESH: Duration = Duration::from_millis(100);

/// A route's early-retry state: recent times to first byte, the deadline computed from them,
/// the budget and the counts. Kept across reloads with the route's failover state.
pub struct EarlyState {
    epoch: tokio::time::Instant,
    /// Index of the current window (time since `epoch` in `WINDOW`s).
    window: AtomicU64,
    counts: [[AtomicU32; BUCKETS]; 2],
    /// The last computed deadline in µs (0: none yet) and when, in ms since `epoch`.
    deadline_us: AtomicU64,
    computed_ms: AtomicU64,
    /// Early retries allowed as a share of requests over the last 10 s.
    pub budget: Budget<10>,
    sent: AtomicU64,
    refused: AtomicU64,
    won: AtomicU64,
    refunded: AtomicU64,
}

impl EarlyState {
    /// Empty: no answers seen, a budget of `permille`/1000 of requests.
    pub fn new(permille: u32) -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            window: AtomicU64::new(0),
            counts: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU32::new(0))),
            deadline_us: AtomicU64::new(0),
            computed_ms: AtomicU64::new(0),
            budget: Budget::new(permille),
            sent: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            won: AtomicU64::new(0),
            refunded: AtomicU64::new(0),
        }
    }

    /// Records one attempt's time to first byte.
    #[cfg(test)]
    pub fn record(&self, ttfb: Duration) {
        self.record_at(ttfb, tokio::time::Instant::now());
    }

    /// [`Self::record`] for an answer that arrived at `at`, a time the caller has read.
    pub fn record_at(&self, ttfb: Duration, at: tokio::time::Instant) {
        let w = self.window_at(at);
        self.counts[(w % 2) as usize][bucket(ttfb)].fetch_add(1, Ordering::Relaxed);
    }

    fn current_window(&self) -> u64 {
        self.window_at(tokio::time::Instant::now())
    }

    fn window_at(&self, at: tokio::time::Instant) -> u64 {
        let now =
            at.saturating_duration_since(self.epoch).as_millis() as u64 / WINDOW.as_millis() as u64;
        let seen = self.window.load(Ordering::Relaxed);
        // A time read just before the window moved on counts in the current one (as in
        // `Budget`): moving back would empty the current window when it moves forward again.
        if now < seen {
            return seen;
        }
        if now != seen
            && self
                .window
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // The new window starts empty; after a longer silence the old one is stale too.
            let stale = if now > seen + 1 { 0..2 } else { 0..1 };
            for k in stale {
                for c in &self.counts[((now + k) % 2) as usize] {
                    c.store(0, Ordering::Relaxed);
                }
            }
        }
        now
    }

    /// The recent 99th percentile time to first byte (a bucket's upper bound, so at most a
    /// fifth over), or `None` with fewer than `MIN_ANSWERS` answers.
    pub fn p99(&self) -> Option<Duration> {
        self.current_window();
        let counts: Vec<u64> = (0..BUCKETS)
            .map(|i| {
                self.counts
                    .iter()
                    .map(|w| u64::from(w[i].load(Ordering::Relaxed)))
                    .sum()
            })
            .collect();
        let total: u64 = counts.iter().sum();
        if total < MIN_ANSWERS {
            return None;
        }
        let rank = total - total / 100;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }

    /// The first-byte deadline now: `clamp(p99 × factor, min_delay, max_delay)`, or
    /// `max_delay` until there are enough answers. Computed at most every 100 ms.
    pub fn deadline(&self, settings: &EarlyRetry) -> Duration {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let cached = self.deadline_us.load(Ordering::Relaxed);
        let at = self.computed_ms.load(Ordering::Relaxed);
        if cached != 0 && now_ms.saturating_sub(at) < REFRESH.as_millis() as u64 {
            return Duration::from_micros(cached).clamp(settings.min_delay, settings.max_delay);
        }
        let deadline = match self.p99() {
            Some(p99) => (p99 * settings.factor_permille / 1000)
                .clamp(settings.min_delay, settings.max_delay),
            None => settings.max_delay,
        };
        self.deadline_us
            .store(deadline.as_micros().max(1) as u64, Ordering::Relaxed);
        self.computed_ms.store(now_ms, Ordering::Relaxed);
        deadline
    }

    /// Early retries (or hedges) sent, refused by the budget, and hedges that answered first,
    /// so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.won.load(Ordering::Relaxed),
        )
    }

    /// The second attempt of an early retry (or the hedge that won) answered within `within`
    /// (the deadline the first one missed): its early retry is given back to the budget. The
    /// budget is there so a sick fleet is not sent twice the load; a retry that answered at
    /// once went to a healthy endpoint, which is what early retry is for (a blackholed one
    /// meets every request until health sees it, and each costs only its deadline while the
    /// retries land). Where the whole fleet is slow, retries are slow too and the budget holds.
    pub fn settle(&self, ttfb: Duration, within: Duration) {
        if ttfb <= within {
            self.budget.refund();
            self.refunded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Early retries given back to the budget because their answer came within the deadline.
    pub fn refunded(&self) -> u64 {
        self.refunded.load(Ordering::Relaxed)
    }

    /// The deadline's question when it passes: cut the attempt (the budget allows one more
    /// early retry) or let it wait.
    fn cut(&self) -> bool {
        let allowed = self.budget.try_retry();
        if !allowed {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }
}

/// What a route with early retry arms each eligible first attempt with: its settings and the
/// budget's answer, built once per snapshot so an attempt only clones an `Arc`.
pub struct EarlyPlan {
    /// The route's settings.
    pub settings: EarlyRetry,
    /// The route's state (shared across reloads).
    pub state: Arc<EarlyState>,
    cut: Arc<dyn Fn() -> bool + Send + Sync>,
    sent: Counter,
    won: Counter,
}

impl EarlyPlan {
    /// The plan of `route` with `settings` over `state`.
    pub fn new(route: &str, settings: EarlyRetry, state: Arc<EarlyState>) -> Self {
        let [sent, refused, won] = crate::telemetry::metrics::early_retry_counters(route);
        let cut_state = state.clone();
        Self {
            settings,
            state,
            cut: Arc::new(move || {
                let cut = cut_state.cut();
                if !cut {
                    refused.increment(1);
                }
                cut
            }),
            sent,
            won,
        }
    }

    /// Counts a hedge whose answer came first.
    pub fn won(&self) {
        self.state.won.fetch_add(1, Ordering::Relaxed);
        self.won.increment(1);
    }

    /// Counts an early retry that was sent.
    pub fn sent(&self) {
        self.state.sent.fetch_add(1, Ordering::Relaxed);
        self.sent.increment(1);
    }

    /// The first-byte deadline to arm an attempt with now.
    pub fn first_byte(&self) -> FirstByteDeadline {
        FirstByteDeadline {
            after: self.state.deadline(&self.settings),
            cut: self.cut.clone(),
            hedge: None,
        }
    }
}

/// Whether a request may be retried early: `GET`, `HEAD` or `OPTIONS`, no body, no upgrade.
pub fn eligible(req: &RequestHeader, body_empty: bool, upgrade: bool) -> bool {
    use http::Method;
    body_empty && !upgrade && matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn bucket(d: Duration) -> usize {
    let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
    if us < 64 {
        return 0;
    }
    let octave = 63 - u64::from(us.leading_zeros()); // at least 6
    let quarter = (us >> (octave - 2)) & 3;
    (1 + (octave - 6) * 4 + quarter).min(BUCKETS as u64 - 1) as usize
}

fn upper_bound(i: usize) -> Duration {
    if i == 0 {
        return Duration::from_micros(64);
    }
    let octave = (i as u64 - 1) / 4 + 6;
    let quarter = (i as u64 - 1) % 4;
    Duration::from_micros((4 + quarter + 1) << (octave - 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EarlyRetry {
        EarlyRetry {
            factor_permille: 3000,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
            budget_permille: 100,
            hedge: true,
        }
    }

    #[test]
    fn buckets_bound_their_times_within_a_quarter_octave() {
        for us in [0u64, 63, 64, 65, 100, 1_000, 12_345, 999_999, 5_000_000] {
            let d = Duration::from_micros(us);
            let i = bucket(d);
            assert!(upper_bound(i) >= d, "{us} µs above bucket {i}'s bound");
            if us >= 64 {
                assert!(
                    upper_bound(i) <= d * 5 / 4 + Duration::from_micros(1),
                    "{us} µs"
                );
                assert!(
                    upper_bound(i - 1) <= d,
                    "{us} µs: previous bucket reaches it"
                );
            }
        }
        assert_eq!(bucket(Duration::from_secs(100_000)), BUCKETS - 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_timed_before_the_window_moved_on_keeps_the_current_counts() {
        let state = EarlyState::new(100);
        let before = tokio::time::Instant::now();
        tokio::time::advance(WINDOW + Duration::from_millis(1)).await;
        for _ in 0..MIN_ANSWERS {
            state.record(Duration::from_millis(10));
        }
        state.record_at(Duration::from_millis(10), before);
        assert!(
            state.p99().is_some(),
            "the current window's answers are kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_the_p99_times_the_factor_within_its_bounds() {
        let state = EarlyState::new(100);
        // Too few answers (nine): the longest deadline.
        for _ in 0..MIN_ANSWERS - 1 {
            state.record(Duration::from_millis(10));
        }
        assert_eq!(state.p99(), None);
        assert_eq!(state.deadline(&settings()), Duration::from_secs(1));
        // 99 fast answers and one slow one per hundred: p99 is the fast one's bucket.
        for i in 0..1000 - (MIN_ANSWERS - 1) {
            state.record(Duration::from_millis(if i % 100 == 0 { 400 } else { 10 }));
        }
        let p99 = state.p99().expect("enough answers");
        assert!(p99 >= Duration::from_millis(10) && p99 <= Duration::from_micros(12_500));
        // Still the cached value within 100 ms ...
        assert_eq!(state.deadline(&settings()), Duration::from_secs(1));
        tokio::time::advance(REFRESH).await;
        // ... then 3 × p99.
        assert_eq!(state.deadline(&settings()), p99 * 3);
        // Fast answers only: the floor.
        tokio::time::advance(WINDOW * 2).await;
        for _ in 0..100 {
            state.record(Duration::from_micros(500));
        }
        tokio::time::advance(REFRESH).await;
        assert_eq!(state.deadline(&settings()), Duration::from_millis(20));
        // Slow answers: the ceiling.
        tokio::time::advance(WINDOW * 2).await;
        for _ in 0..100 {
            state.record(Duration::from_secs(2));
        }
        tokio::time::advance(REFRESH).await;
        assert_eq!(state.deadline(&settings()), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_older_than_two_windows_are_forgotten() {
        let state = EarlyState::new(100);
        for _ in 0..100 {
            state.record(Duration::from_millis(300));
        }
        assert!(state.p99().expect("answers") >= Duration::from_millis(300));
        tokio::time::advance(WINDOW).await;
        assert!(state.p99().is_some(), "the previous window still counts");
        tokio::time::advance(WINDOW).await;
        assert_eq!(state.p99(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refuses_cuts_past_its_share_and_counts_them() {
        let state = EarlyState::new(100);
        for _ in 0..200 {
            state.budget.on_request();
        }
        // 10 always, plus 10% of 200.
        let cuts = (0..100).filter(|_| state.cut()).count();
        assert_eq!(cuts, 30);
        assert_eq!(state.counts(), (0, 70, 0));
    }

    #[test]
    fn only_bodiless_safe_methods_are_eligible() {
        let req = |m: &str| RequestHeader::build(m, b"/", None).expect("request");
        assert!(eligible(&req("GET"), true, false));
        assert!(eligible(&req("HEAD"), true, false));
        assert!(eligible(&req("OPTIONS"), true, false));
        assert!(!eligible(&req("GET"), false, false), "a GET with a body");
        assert!(!eligible(&req("GET"), true, true), "an upgrade");
        for m in ["POST", "PUT", "DELETE", "PATCH"] {
            assert!(!eligible(&req(m), true, false), "{m}");
        }
    }
}
