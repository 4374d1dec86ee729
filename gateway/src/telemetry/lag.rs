//! The proxy's own scheduling lag: how late a task on the proxy's runtime runs after it was due.
//! While it is high, the gateway itself is saturated, and an upstream "timeout" or a slow
//! answer says more about the gateway than about the upstream: such timeouts are not counted
//! against endpoints, and such answers are no evidence for latency ejection or degraded
//! regions.
//!
//! What is measured: every 10 ms a timer fires, how late it fired, plus how long a byte the
//! monitor then writes to its own socket pair takes to reach it: the wait of a task woken by
//! its socket, as a request's task is (the driver's next poll, then the run queue). The timer
//! alone is not enough. Tokio runs the task woken last first (its LIFO slot), and timers are
//! processed after I/O events, so a timer's task jumps the queue of tasks their sockets woke:
//! under 2000 busy connections it saw 2 to 4 ms of lag while answers waited 300 to 600 ms in
//! that queue (`loadtest overload --origin nginx --client wrk`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Above this lag, local timeouts do not count towards passive ejection, and slow answers are
/// no evidence for latency ejection or degraded regions.
pub(crate) const SATURATED: Duration = Duration::from_millis(50);

/// How often the monitor's timer is armed.
const TICK: Duration = Duration::from_millis(10);

/// The lag, measured on the runtime that first calls [`Lag::start_here`].
#[derive(Default)]
pub(crate) struct Lag {
    /// Recent lag in microseconds: the latest measurement, or the previous one decayed by
    /// 1/8 per tick if that is larger (a spike is remembered for a few hundred milliseconds).
    micros: AtomicU64,
    /// When the measurement under way was armed, in microseconds since [`base`] (0: not
    /// started). A measurement stuck in a long queue is itself the news: [`Lag::current`]
    /// reports how overdue it is already, not only the last one that finished.
    armed_us: AtomicU64,
    started: AtomicBool,
}

/// The clock origin of [`Lag::armed_us`].
fn base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Microseconds since [`base`], at least 1.
fn now_us() -> u64 {
    micros_at(Instant::now())
}

/// Microseconds from [`base`] to `at`, at least 1.
fn micros_at(at: Instant) -> u64 {
    (at.saturating_duration_since(base()).as_micros() as u64).max(1)
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
            // Without a socket pair (out of descriptors), only the timer's lateness is seen.
            let mut wire = tokio::net::UnixStream::pair().ok();
            let mut ticks = 0u64;
            loop {
                ticks += 1;
                let armed = Instant::now();
                lag.armed_us.store(now_us(), Ordering::Relaxed);
                tokio::time::sleep(TICK).await;
                let mut late = armed.elapsed().saturating_sub(TICK);
                if let Some((tx, rx)) = &mut wire {
                    late += socket_wait(tx, rx).await;
                }
                let late = late.as_micros() as u64;
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

    /// The recent lag: the last measurement (decayed), or how overdue the one under way is
    /// already, whichever is larger.
    pub fn current(&self) -> Duration {
        self.current_at(Instant::now())
    }

    /// [`Self::current`] as of `now`, a time the caller has read.
    fn current_at(&self, now: Instant) -> Duration {
        let measured = self.micros.load(Ordering::Relaxed);
        let armed = self.armed_us.load(Ordering::Relaxed);
        let overdue = match armed {
            0 => 0,
            armed => micros_at(now)
                .saturating_sub(armed)
                .saturating_sub(TICK.as_micros() as u64),
        };
        Duration::from_micros(measured.max(overdue))
    }

    /// Whether the gateway is too busy for its own timeouts to mean anything.
    pub fn saturated(&self) -> bool {
        self.current() > SATURATED
    }

    /// [`Self::saturated`] as of `now`, a time the caller has read.
    pub fn saturated_at(&self, now: Instant) -> bool {
        self.current_at(now) > SATURATED
    }
}

/// How long a byte written to `tx` takes to reach this task through `rx`: the wait of a task
/// woken by its socket (the driver's next poll, then the run queue). Leaves `rx` drained, so
/// the next read waits for the driver again.
async fn socket_wait(tx: &tokio::net::UnixStream, rx: &tokio::net::UnixStream) -> Duration {
    let sent = Instant::now();
    if tx.try_write(b"x").is_err() {
        return Duration::ZERO;
    }
    let mut buf = [0u8; 64];
    loop {
        if rx.readable().await.is_err() {
            return Duration::ZERO;
        }
        match rx.try_read(&mut buf) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Duration::ZERO,
        }
    }
    let waited = sent.elapsed();
    // Drained to WouldBlock, which clears the cached readiness.
    while matches!(rx.try_read(&mut buf), Ok(n) if n > 0) {}
    waited
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Works 250 µs, as a request's task might.
    fn work() {
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_micros(250) {
            std::hint::spin_loop();
        }
    }

    /// 400 socket pairs ping-pong one byte, each side working 250 µs per turn: about 400 tasks
    /// are always runnable, each woken by its socket's readiness, as a busy gateway's are, so a
    /// woken task waits about 100 ms in the run queue on one worker. The monitor must see that
    /// wait; without its yield, its timer ran from tokio's LIFO slot and saw about a tenth.
    #[test]
    fn the_lag_is_the_run_queue_a_task_woken_by_its_socket_waits_in() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let seen = runtime.block_on(async {
            let lag = Arc::new(Lag::default());
            lag.start_here(|| Box::new(|_| {}));
            let stop = Arc::new(AtomicBool::new(false));
            for _ in 0..400 {
                let (mut ping, mut pong) = tokio::net::UnixStream::pair().expect("socket pair");
                let stop_ping = stop.clone();
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    while !stop_ping.load(Ordering::Relaxed) {
                        if ping.write_all(b"x").await.is_err()
                            || ping.read_exact(&mut byte).await.is_err()
                        {
                            return;
                        }
                        work();
                    }
                });
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    while pong.read_exact(&mut byte).await.is_ok() {
                        work();
                        if pong.write_all(b"y").await.is_err() {
                            return;
                        }
                    }
                });
            }
            // Generous: a loaded machine only makes the queue longer.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut seen = Duration::ZERO;
            while Instant::now() < deadline && !lag.saturated() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                seen = seen.max(lag.current());
            }
            stop.store(true, Ordering::Relaxed);
            seen.max(lag.current())
        });
        runtime.shutdown_background();
        assert!(
            seen > SATURATED,
            "a ~100 ms run queue measured as {seen:?} of lag"
        );
    }
}
