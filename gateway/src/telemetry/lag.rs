//! The proxy's own scheduling lag: how late a timer on the proxy's runtime fires. While it is
//! high, the gateway itself is saturated, and an upstream "timeout" says more about the gateway
//! than about the upstream: such timeouts are not counted against endpoints.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Above this lag, local timeouts do not count towards passive ejection.
pub(crate) const SATURATED: Duration = Duration::from_millis(50);

/// How often the monitor's timer is armed.
const TICK: Duration = Duration::from_millis(10);

/// The lag, measured on the runtime that first calls [`Lag::start_here`].
#[derive(Default)]
pub(crate) struct Lag {
    /// Recent lag in microseconds: the latest measurement, or the previous one decayed by
    /// 1/8 per tick if that is larger (a spike is remembered for a few hundred milliseconds).
    micros: AtomicU64,
    started: AtomicBool,
}

impl Lag {
    /// Starts the monitor on the current tokio runtime, once (the proxy calls it from its
    /// first request, so it measures the proxy's own workers).
    /// Every 100 ms the monitor calls `every_100ms` with the recent lag (the proxy adapts its
    /// in-flight limit there).
    pub fn start_here<F>(self: &Arc<Self>, every_100ms: F)
    where
        F: FnOnce() -> Box<dyn Fn(Duration) + Send + Sync>,
    {
        // A read on the request path; the write happens once.
        if self.started.load(Ordering::Relaxed) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let (lag, every_100ms) = (self.clone(), every_100ms());
        tokio::spawn(async move {
            let mut ticks = 0u64;
            loop {
                ticks += 1;
                let armed = Instant::now();
                tokio::time::sleep(TICK).await;
                let late = armed.elapsed().saturating_sub(TICK).as_micros() as u64;
                let decayed = lag.micros.load(Ordering::Relaxed) * 7 / 8;
                let now = late.max(decayed);
                lag.micros.store(now, Ordering::Relaxed);
                let now = Duration::from_micros(now);
                crate::telemetry::metrics::event_loop_lag(now);
                if ticks % 10 == 0 {
                    every_100ms(now);
                }
            }
        });
    }

    /// The recent lag.
    pub fn current(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// Whether the gateway is too busy for its own timeouts to mean anything.
    pub fn saturated(&self) -> bool {
        self.current() > SATURATED
    }
}
