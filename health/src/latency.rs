//! Live latency of one endpoint: a peak-EWMA of time to first byte and the attempts in flight,
//! as linkerd2-proxy and Finagle keep them, so that choosing between two endpoints can prefer
//! the one that answers sooner before any probe notices a slow one.
//!
//! The estimate follows a slower sample at once (the peak) and decays towards faster ones, and
//! towards zero while no sample comes, with the time constant [`DECAY`]: an endpoint that was
//! slow a while ago is tried again after a few seconds without traffic. Everything is atomics:
//! the request path reads and writes it without locks. Two samples recorded at the same moment
//! may lose one of them; an estimate is a guide, not a ledger.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How fast the estimate forgets: a sample's weight halves every `DECAY × ln 2` (about 7 s).
pub const DECAY: Duration = Duration::from_secs(10);

/// The estimate of two endpoints that have no sample yet, compared with each other.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Estimates never go below this, so attempts in flight still weigh on an idle endpoint whose
/// estimate has decayed.
const FLOOR_NANOS: f64 = 10_000.0;

/// Time to first byte (peak-EWMA) and attempts in flight of one endpoint.
#[derive(Debug)]
pub struct Latency {
    /// Start of this tracker's clock.
    base: Instant,
    /// The estimate in nanoseconds, as `f64` bits; `u64::MAX` before the first sample.
    estimate: AtomicU64,
    /// When the estimate was last updated, in nanoseconds since `base`.
    stamp: AtomicU64,
    /// Attempts sent and not yet answered or failed.
    in_flight: AtomicU32,
    /// Samples recorded.
    samples: AtomicU64,
    /// A plain moving average of the samples (weight [`MEAN_WEIGHT`] each, no decay with
    /// time), as `f64` bits; `u64::MAX` before the first sample. Latency outlier ejection
    /// compares against it: unlike the estimate it does not fade while an endpoint is idle,
    /// so an endpoint that latency-aware choice leaves alone still stands for what it answered.
    mean: AtomicU64,
    /// Consecutive samples far above the region's (see [`crate::hub::EndpointHealth::observe`]).
    pub(crate) slow_streak: AtomicU32,
    /// The region's `passive.latency.min_latency` in nanoseconds (`u64::MAX`: latency ejection
    /// off), copied here when the region's members are published, so that the common fast
    /// answer is let go without touching the region (its reference count and members are
    /// shared by every worker thread).
    pub(crate) slow_floor: AtomicU64,
}

/// Weight of each new sample in [`Latency::mean`].
const MEAN_WEIGHT: f64 = 0.2;

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// A tracker with no sample yet.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            estimate: AtomicU64::new(u64::MAX),
            stamp: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            samples: AtomicU64::new(0),
            mean: AtomicU64::new(u64::MAX),
            slow_streak: AtomicU32::new(0),
            slow_floor: AtomicU64::new(u64::MAX),
        }
    }

    fn nanos_since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The estimate as of `now`, in nanoseconds, decayed since its last update; `None` before
    /// the first sample.
    fn measured_nanos(&self, now: Instant) -> Option<f64> {
        let bits = self.estimate.load(Ordering::Relaxed);
        if bits == u64::MAX {
            return None;
        }
        let stamp = self.stamp.load(Ordering::Relaxed);
        let elapsed = self.nanos_since_base(now).saturating_sub(stamp) as f64;
        let decayed = f64::from_bits(bits) * (-elapsed / DECAY.as_nanos() as f64).exp();
        Some(decayed.max(FLOOR_NANOS))
    }

    /// Records that an attempt took `rtt` to its first byte (or to its failure), seen at `now`:
    /// into the estimate latency-aware choice reads and into the mean outlier ejection and
    /// degraded regions compare.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = self.observe_estimate(rtt, now);
        let mean = match self.mean.load(Ordering::Relaxed) {
            u64::MAX => rtt,
            bits => f64::from_bits(bits) * (1.0 - MEAN_WEIGHT) + rtt * MEAN_WEIGHT,
        };
        self.mean.store(mean.to_bits(), Ordering::Relaxed);
        self.samples.fetch_add(1, Ordering::Relaxed);
    }

    /// Records `rtt` into the estimate only (latency-aware choice), not into the mean or the
    /// sample count: for a time that is no evidence about the endpoint (the gateway's own
    /// delay is in it). Returns the sample in nanoseconds, floored.
    pub fn observe_estimate(&self, rtt: Duration, now: Instant) -> f64 {
        let rtt = (rtt.as_nanos() as f64).max(FLOOR_NANOS);
        let bits = self.estimate.load(Ordering::Relaxed);
        let next = if bits == u64::MAX {
            rtt
        } else {
            let current = f64::from_bits(bits);
            if rtt > current {
                rtt
            } else {
                let stamp = self.stamp.load(Ordering::Relaxed);
                let elapsed = self.nanos_since_base(now).saturating_sub(stamp) as f64;
                let decay = (-elapsed / DECAY.as_nanos() as f64).exp();
                current * decay + rtt * (1.0 - decay)
            }
        };
        self.stamp
            .store(self.nanos_since_base(now), Ordering::Relaxed);
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        rtt
    }

    /// The moving average of the samples, without decay; `None` before the first sample.
    pub fn mean(&self) -> Option<Duration> {
        match self.mean.load(Ordering::Relaxed) {
            u64::MAX => None,
            bits => Some(Duration::from_nanos(f64::from_bits(bits) as u64)),
        }
    }

    /// The time-to-first-byte estimate as of `now`; `None` before the first sample.
    pub fn estimate(&self, now: Instant) -> Option<Duration> {
        self.measured_nanos(now)
            .map(|n| Duration::from_nanos(n as u64))
    }

    /// Which of `a` and `b` one more attempt costs less at: the lower estimate times attempts
    /// in flight plus that one; `a` on a tie. An endpoint with no sample yet takes the other's
    /// estimate (or [`DEFAULT_RTT`] when neither has one), so that it is tried soon, as the
    /// round robin would, yet never flooded: its attempts in flight still weigh on it.
    pub fn better<'a>(a: &'a Latency, b: &'a Latency, now: Instant) -> &'a Latency {
        let default = DEFAULT_RTT.as_nanos() as f64;
        let (ea, eb) = match (a.measured_nanos(now), b.measured_nanos(now)) {
            (Some(x), Some(y)) => (x, y),
            (Some(x), None) => (x, x),
            (None, Some(y)) => (y, y),
            (None, None) => (default, default),
        };
        let load = |e: f64, l: &Latency| e * f64::from(l.in_flight() + 1);
        if load(eb, b) < load(ea, a) {
            b
        } else {
            a
        }
    }

    /// Attempts in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Samples recorded so far.
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }

    /// Counts an attempt in flight until [`Self::finish`].
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends an attempt counted by [`Self::start`].
    pub fn finish(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn the_estimate_jumps_to_a_slower_sample_and_decays_towards_faster_ones() {
        let l = Latency::new();
        let now = Instant::now();
        assert_eq!(l.estimate(now), None, "no sample yet");
        l.observe(ms(10), now);
        assert_eq!(
            l.estimate(now),
            Some(ms(10)),
            "the first sample is the estimate"
        );
        l.observe(ms(500), now);
        assert_eq!(l.estimate(now), Some(ms(500)), "a slower sample at once");

        // Fast samples pull it down gradually: after one decay constant of fast answers it is
        // far below the peak but not at the fast value yet.
        let mut t = now;
        for _ in 0..100 {
            t += DECAY / 100;
            l.observe(ms(10), t);
        }
        let e = l.estimate(t).expect("samples");
        assert!(e < ms(250) && e > ms(10), "{e:?}");
        for _ in 0..1000 {
            t += DECAY / 100;
            l.observe(ms(10), t);
        }
        let e = l.estimate(t).expect("samples");
        assert!(e < ms(11), "{e:?}");
        assert_eq!(l.samples(), 1102);
        let mean = l.mean().expect("samples");
        assert!(
            mean > ms(9) && mean < ms(11),
            "the mean follows the last samples: {mean:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_traffic_a_slow_estimate_fades_so_the_endpoint_is_tried_again() {
        let l = Latency::new();
        let now = Instant::now();
        l.observe(ms(2000), now);
        assert_eq!(l.estimate(now), Some(ms(2000)));
        let later = now + DECAY * 5;
        let e = l.estimate(later).expect("samples");
        assert!(e < ms(20), "{e:?}");
        assert!(e >= Duration::from_nanos(FLOOR_NANOS as u64));
        // The mean does not fade: it is what the endpoint answered.
        assert_eq!(l.mean(), Some(ms(2000)));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_in_flight_weigh_and_a_new_endpoint_is_tried_but_not_flooded() {
        let now = Instant::now();
        let (fast, slow, new) = (Latency::new(), Latency::new(), Latency::new());
        fast.observe(ms(10), now);
        slow.observe(ms(100), now);
        assert!(std::ptr::eq(Latency::better(&slow, &fast, now), &fast));
        assert!(std::ptr::eq(Latency::better(&fast, &slow, now), &fast));
        // Nine attempts in flight make the fast one cost as much as the slow one: a tie keeps
        // the first; a tenth tips it.
        for _ in 0..9 {
            fast.start();
        }
        assert!(std::ptr::eq(Latency::better(&slow, &fast, now), &slow));
        fast.start();
        assert!(std::ptr::eq(Latency::better(&fast, &slow, now), &slow));
        for _ in 0..11 {
            fast.finish(); // never below zero
        }
        assert_eq!(fast.in_flight(), 0);

        // No sample yet: as good as the other, so the first of the two (round robin) wins...
        assert!(std::ptr::eq(Latency::better(&new, &fast, now), &new));
        assert!(std::ptr::eq(Latency::better(&fast, &new, now), &fast));
        // ...until an attempt to it is in flight and unanswered.
        new.start();
        assert!(std::ptr::eq(Latency::better(&new, &fast, now), &fast));
        assert_eq!(new.estimate(now), None);
    }
}
