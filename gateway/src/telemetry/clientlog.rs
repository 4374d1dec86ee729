//! Client-caused events (aborts, resets, timeouts, malformed requests) are normal on the
//! internet and an attacker controls how many there are: they are counted in metrics by reason
//! and summed up in at most one `info` line per [`WINDOW`], never logged one by one as errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// Log lines keep the target this module had before the folders: operators filter on it.
const LOG_TARGET: &str = "gateway::clientlog";

/// At most one summary line per this long.
const WINDOW: Duration = Duration::from_secs(10);

static SINCE_SUMMARY: AtomicU64 = AtomicU64::new(0);
/// Milliseconds since [`epoch`] of the last summary line.
static LAST_SUMMARY_MS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Counts one client-caused event (`reason` is the metric label) and, once per [`WINDOW`],
/// logs how many there were since the last line. `detail` goes to the debug log.
pub(crate) fn record(reason: &'static str, detail: &dyn std::fmt::Display) {
    crate::telemetry::metrics::client_event(reason);
    tracing::debug!(target: LOG_TARGET, reason, %detail, "client-caused failure");
    SINCE_SUMMARY.fetch_add(1, Ordering::Relaxed);
    let now = epoch().elapsed().as_millis() as u64;
    let last = LAST_SUMMARY_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) < WINDOW.as_millis() as u64 && last != 0 {
        return;
    }
    if LAST_SUMMARY_MS
        .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        let n = SINCE_SUMMARY.swap(0, Ordering::Relaxed);
        tracing::info!(target: LOG_TARGET,
            events = n,
            "client-caused failures (aborts, resets, malformed requests) since the last summary; by reason in gateway_client_errors_total"
        );
    }
}
