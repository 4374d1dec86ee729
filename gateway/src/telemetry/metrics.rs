//! Prometheus metrics (names under `gateway_`, units in names, `_total` counters).
//!
//! The recorder is installed once per process; `/metrics` renders it. Request-path metrics use
//! handles registered when a routing snapshot is built, so a request only bumps atomics.
//!
//! The recorder keeps every histogram sample (each request's duration, each probe's) until it
//! folds them into their buckets, which rendering `/metrics` does and so does [`upkeep`], run
//! by the control service every [`UPKEEP_EVERY`]: without it, a gateway that nobody scrapes
//! grows by every sample it ever recorded (found by `loadtest soak`, which scrapes only at the
//! end: about 250 KiB a minute at 200 requests a second).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// Log lines keep the target this module had before the folders: operators filter on it.
const LOG_TARGET: &str = "gateway::telemetry";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often [`upkeep`] folds histogram samples into their buckets (what the exporter's own
/// `install_recorder` would do, every 5 s).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds the histogram samples `handle`'s recorder holds into their buckets every
/// [`UPKEEP_EVERY`] until `shutdown` changes, so that its memory does not depend on how often
/// `/metrics` is scraped.
pub async fn upkeep(handle: PrometheusHandle, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Installs the Prometheus recorder (once) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(target: LOG_TARGET, "a metrics recorder was already installed");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "gateway_requests_total",
        "Requests answered, by route, region and status class."
    );
    describe_histogram!(
        "gateway_request_duration_seconds",
        Unit::Seconds,
        "Time from request start to the end of the response, by route."
    );
    describe_counter!(
        "gateway_upstream_attempts_total",
        "Attempts sent to upstream endpoints, by route and region."
    );
    describe_counter!(
        "gateway_upstream_retries_total",
        "Attempts that were retries, by route."
    );
    describe_counter!("gateway_failovers_total", "Route switches between tiers, by route, from, to and kind (failover, failback, all-down, recovered).");
    describe_gauge!(
        "gateway_endpoint_up",
        "1 while an endpoint address is routable."
    );
    describe_gauge!(
        "gateway_endpoint_latency_seconds",
        Unit::Seconds,
        "Live time to first byte of an endpoint address (peak-EWMA, 10 s decay), as latency-aware choice sees it."
    );
    describe_counter!(
        "gateway_slow_answers_total",
        "Live answers far slower than the rest of their region's (latency outlier ejection), by region and outcome (counted, held: at the max_ejected cap, ejected)."
    );
    describe_gauge!(
        "gateway_endpoint_in_flight",
        "Attempts in flight to an endpoint address through this gateway."
    );
    describe_gauge!(
        "gateway_region_up",
        "1 while a region is up (healthy and not drained)."
    );
    describe_gauge!(
        "gateway_region_drained",
        "1 while an operator drain is in force."
    );
    describe_gauge!(
        "gateway_region_check_passing",
        "1 while a region check (gate such as the cluster API's /readyz) passes, by region and check."
    );
    describe_histogram!(
        "gateway_probe_duration_seconds",
        Unit::Seconds,
        "Duration of active probes, by region."
    );
    describe_counter!(
        "gateway_config_reloads_total",
        "Config reloads, by result (ok, error, unchanged)."
    );
    describe_gauge!(
        "gateway_config_info",
        "1 for the active config, labelled with its hash."
    );
    describe_gauge!(
        "gateway_config_last_reload_success",
        "1 if the last reload attempt succeeded."
    );
    describe_counter!(
        "gateway_responses_truncated_total",
        "Responses that failed after their header reached the client and were ended abnormally, by route, region, endpoint and cause (upstream, client, gateway)."
    );
    describe_counter!(
        "gateway_grpc_answers_total",
        "The gateway's own answers to gRPC requests (Trailers-Only), by route and grpc_status (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ...)."
    );
    describe_gauge!(
        "gateway_event_loop_lag_seconds",
        Unit::Seconds,
        "How late a 10 ms timer fires on the proxy's runtime (recent maximum, decaying); above 50 ms upstream timeouts are not counted against endpoints."
    );
    describe_gauge!(
        "gateway_admission_limit",
        "The process's adaptive in-flight limit (server.adaptive_limit)."
    );
    describe_counter!(
        "gateway_passive_failures_total",
        "Failed attempts counted against an endpoint by passive health, by region and kind (definite: refused, reset, 5xx; timeout)."
    );
    describe_counter!(
        "gateway_client_errors_total",
        "Requests refused or failed by what the client did, by reason (missing_host, uri_too_long, too_many_headers, header_too_large; aborted: the client left or sent a broken request mid-way; truncated: a response cut off because the client left)."
    );
    describe_counter!(
        "gateway_connections_refused_total",
        "Client connections closed unanswered because server.max_connections were already open."
    );
    describe_counter!(
        "gateway_timeouts_excused_total",
        "Upstream timeouts not counted against the endpoint because the gateway itself was saturated."
    );
    describe_counter!(
        "gateway_shed_total",
        "Requests answered 503 overloaded by admission control, by route and reason (process, adaptive, route, capacity)."
    );
    describe_counter!(
        "gateway_fail_open_total",
        "Requests that tried allowed regions' endpoints that looked down (on_all_down: fail_open): every allowed region looked down, or a retry had tried every endpoint of those that looked up; by route."
    );
    describe_counter!(
        "gateway_sticky_total",
        "Sticky-session outcomes by route: honoured, repinned, issued, invalid_<reason>."
    );
    describe_counter!(
        "gateway_access_log_dropped_total",
        "Access log lines dropped because the writer's queue was full or the write failed."
    );
    describe_counter!(
        "gateway_otlp_spans_exported_total",
        "Request spans the OTLP collector accepted."
    );
    describe_counter!(
        "gateway_otlp_spans_dropped_total",
        "Request spans not exported, by reason: queue_full (the exporter's queue was full), export_failed (the collector did not take the batch), export_off (export was turned off by a reload while they waited), exporter_down (the exporter thread could not start)."
    );
    describe_counter!(
        "gateway_early_retries_total",
        "First attempts whose first byte was later than the route's early-retry deadline, by route and outcome: sent (hedged, or cut and retried, on another endpoint), refused (the early-retry budget was spent; the attempt kept waiting) or won (a hedge answered first)."
    );
}

/// Counts spans dropped before export (`queue_full`, `export_failed`, `export_off`).
pub fn otlp_dropped(reason: &'static str, spans: u64) {
    metrics::counter!("gateway_otlp_spans_dropped_total", "reason" => reason).increment(spans);
}

/// Counts spans a collector took.
pub fn otlp_exported(spans: u64) {
    metrics::counter!("gateway_otlp_spans_exported_total").increment(spans);
}

/// Counts an access log line dropped (the writer's queue was full, or the write failed).
pub fn access_log_dropped() {
    metrics::counter!("gateway_access_log_dropped_total").increment(1);
}

/// `gateway_early_retries_total` of `route`: `[sent, refused, won]`.
pub fn early_retry_counters(route: &str) -> [Counter; 3] {
    ["sent", "refused", "won"].map(|outcome| {
        metrics::counter!("gateway_early_retries_total", "route" => route.to_string(), "outcome" => outcome)
    })
}

/// Status classes, in label order.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// A closed set of label values a route's handles are registered for: the typed enums the
/// request path counts (sticky outcomes, shed reasons) implement it, so that nothing on the
/// request path formats a label and this module depends on none of them.
pub trait LabelSet: Copy + 'static {
    /// Every value, in [`Self::index`] order.
    const ALL: &'static [Self];
    /// Position in [`Self::ALL`].
    fn index(self) -> usize;
    /// The label value.
    fn label(self) -> &'static str;
}

/// Handles for one route.
pub struct RouteMetrics {
    /// `gateway_sticky_total` by outcome (empty for routes without `sticky`).
    sticky: Vec<Counter>,
    /// `[region index + 1][class]`; region 0 means "no upstream".
    requests: Vec<[Counter; 6]>,
    duration: Histogram,
    attempts: Vec<Counter>,
    retries: Counter,
    /// `gateway_shed_total` by reason.
    shed: Vec<Counter>,
    fail_open: Counter,
}

impl RouteMetrics {
    /// Registers the handles of `route` over `regions` (names in snapshot order); the sticky
    /// outcomes `S` when the route has sticky sessions, and the shed reasons `D`.
    pub fn new<S: LabelSet, D: LabelSet>(route: &str, regions: &[String], sticky: bool) -> Self {
        let route = route.to_string();
        let names: Vec<String> = std::iter::once("none".to_string())
            .chain(regions.iter().cloned())
            .collect();
        let sticky = if sticky {
            S::ALL
                .iter()
                .map(|outcome| metrics::counter!("gateway_sticky_total", "route" => route.clone(), "outcome" => outcome.label()))
                .collect()
        } else {
            Vec::new()
        };
        Self {
            sticky,
            requests: names
                .iter()
                .map(|region| {
                    CLASSES.map(|class| {
                        metrics::counter!("gateway_requests_total", "route" => route.clone(), "region" => region.clone(), "class" => class)
                    })
                })
                .collect(),
            duration: metrics::histogram!("gateway_request_duration_seconds", "route" => route.clone()),
            attempts: regions
                .iter()
                .map(|region| metrics::counter!("gateway_upstream_attempts_total", "route" => route.clone(), "region" => region.clone()))
                .collect(),
            retries: metrics::counter!("gateway_upstream_retries_total", "route" => route.clone()),
            shed: D::ALL
                .iter()
                .map(|reason| metrics::counter!("gateway_shed_total", "route" => route.clone(), "reason" => reason.label()))
                .collect(),
            fail_open: metrics::counter!("gateway_fail_open_total", "route" => route),
        }
    }

    /// Counts a finished request answered with `status` (0: none) after reaching `region`.
    pub fn request(&self, region: Option<usize>, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        if let Some(row) = self.requests.get(region.map_or(0, |r| r + 1)) {
            row[class].increment(1);
        }
        self.duration.record(seconds);
    }

    /// Counts a request shed by admission control.
    pub fn shed(&self, reason: impl LabelSet) {
        if let Some(c) = self.shed.get(reason.index()) {
            c.increment(1);
        }
    }

    /// Counts a request that failed open (every allowed region looked down).
    pub fn failed_open(&self) {
        self.fail_open.increment(1);
    }

    /// Counts a sticky-session outcome.
    pub fn sticky(&self, outcome: impl LabelSet) {
        if let Some(c) = self.sticky.get(outcome.index()) {
            c.increment(1);
        }
    }

    /// Counts an upstream attempt to `region`; `retry` when it is not the first.
    pub fn attempt(&self, region: usize, retry: bool) {
        if let Some(c) = self.attempts.get(region) {
            c.increment(1);
        }
        if retry {
            self.retries.increment(1);
        }
    }
}

/// Records the duration of one active probe of `region` (`gateway_probe_duration_seconds`);
/// probes are not on the request path.
pub fn probe_finished(region: &gateway_config::RegionName, duration: std::time::Duration) {
    metrics::histogram!("gateway_probe_duration_seconds", "region" => region.to_string())
        .record(duration.as_secs_f64());
}

/// Sets `gateway_event_loop_lag_seconds` (off the request path: the lag monitor's tick).
pub fn event_loop_lag(lag: std::time::Duration) {
    metrics::gauge!("gateway_event_loop_lag_seconds").set(lag.as_secs_f64());
}

/// Sets `gateway_admission_limit` (the adaptive limit, after each adjustment).
pub fn admission_limit(limit: usize) {
    metrics::gauge!("gateway_admission_limit").set(limit as f64);
}

/// Counts a failed attempt that passive health counted against an endpoint of `region`
/// (rare: only failures the upstream caused).
pub fn passive_failure(region: &str, timeout: bool) {
    let kind = if timeout { "timeout" } else { "definite" };
    metrics::counter!("gateway_passive_failures_total", "region" => region.to_string(), "kind" => kind)
        .increment(1);
}

/// Counts a live answer that latency outlier ejection found slow, by what it did
/// (`counted`, `held`: the region was at its `max_ejected` cap, `ejected`); an answer excused
/// because the gateway itself lagged is not counted.
pub fn slow_answer(region: &str, slowness: gateway_health::Slowness) {
    let outcome = match slowness {
        gateway_health::Slowness::Fine | gateway_health::Slowness::Excused => return,
        gateway_health::Slowness::Counted => "counted",
        gateway_health::Slowness::HeldByCap => "held",
        gateway_health::Slowness::Ejected => "ejected",
    };
    metrics::counter!("gateway_slow_answers_total", "region" => region.to_string(), "outcome" => outcome)
        .increment(1);
}

/// Counts a request refused or failed by what its client did (`reason`: see
/// [`crate::proxy::headers::Violation::label`], or `aborted`, `truncated`).
pub fn client_event(reason: &'static str) {
    metrics::counter!("gateway_client_errors_total", "reason" => reason).increment(1);
}

/// Counts a client connection closed unanswered because `server.max_connections` were open.
pub fn connection_refused() {
    metrics::counter!("gateway_connections_refused_total").increment(1);
}

/// Counts an upstream timeout not held against the endpoint because the gateway itself was
/// saturated.
pub fn timeout_excused() {
    metrics::counter!("gateway_timeouts_excused_total").increment(1);
}

/// Counts a failover switch of `route` (`kind`: see [`crate::routing::failover::SwitchKind`]). Called by
/// the failover controller, once per switch, off the request path.
pub fn failover_switch(route: &str, from: &[String], to: &[String], kind: &'static str) {
    metrics::counter!(
        "gateway_failovers_total",
        "route" => route.to_string(),
        "from" => from.join("+"),
        "to" => to.join("+"),
        "kind" => kind
    )
    .increment(1);
}

/// Counts a response truncated after it started. Rare by nature, so the labels are formatted
/// here rather than registered per snapshot.
pub fn truncated(route: &str, region: &str, endpoint: &str, cause: &'static str) {
    metrics::counter!(
        "gateway_responses_truncated_total",
        "route" => route.to_string(),
        "region" => region.to_string(),
        "endpoint" => endpoint.to_string(),
        "cause" => cause
    )
    .increment(1);
}

/// Counts the gateway's own answer to a gRPC request, by route and gRPC status name.
pub fn grpc_answer(route: &str, grpc_status: &'static str) {
    metrics::counter!(
        "gateway_grpc_answers_total",
        "route" => route.to_string(),
        "grpc_status" => grpc_status
    )
    .increment(1);
}

/// Outcome of a reload attempt, for `gateway_config_reloads_total`.
#[derive(Debug, Clone, Copy)]
pub enum ReloadResult {
    /// Applied.
    Ok,
    /// Nothing changed.
    Unchanged,
    /// Refused; the running config stays.
    Error,
}

/// Counts a reload attempt and sets `gateway_config_last_reload_success`.
pub fn reload(result: ReloadResult) {
    let label = match result {
        ReloadResult::Ok => "ok",
        ReloadResult::Unchanged => "unchanged",
        ReloadResult::Error => "error",
    };
    metrics::counter!("gateway_config_reloads_total", "result" => label).increment(1);
    let success = !matches!(result, ReloadResult::Error);
    metrics::gauge!("gateway_config_last_reload_success").set(f64::from(u8::from(success)));
}

/// The config the process started with: active, and the last "reload" a success.
pub fn config_started(hash: &str) {
    config_active(None, hash);
    metrics::gauge!("gateway_config_last_reload_success").set(1.0);
}

/// Marks `hash` as the active config in `gateway_config_info` (and `old`, if any, as not).
pub fn config_active(old: Option<&str>, hash: &str) {
    if let Some(old) = old {
        metrics::gauge!("gateway_config_info", "hash" => old.to_string()).set(0.0);
    }
    metrics::gauge!("gateway_config_info", "hash" => hash.to_string()).set(1.0);
}

/// Sets the health gauges of `regions`: called when `/metrics` is rendered, so they are exact
/// at scrape time without a polling loop.
pub fn export_health<'a>(regions: impl Iterator<Item = &'a gateway_health::RegionHealth>) {
    for region in regions {
        let name = region.name.to_string();
        metrics::gauge!("gateway_region_up", "region" => name.clone())
            .set(f64::from(u8::from(region.is_up())));
        metrics::gauge!("gateway_region_drained", "region" => name.clone())
            .set(f64::from(u8::from(region.drain_remaining().is_some())));
        let members = region.members();
        for c in &members.checks {
            metrics::gauge!("gateway_region_check_passing", "region" => name.clone(), "check" => c.name.clone())
                .set(f64::from(u8::from(c.is_passing())));
        }
        let now = tokio::time::Instant::now();
        for e in &members.endpoints {
            let (id, address) = (e.key.id.to_string(), e.key.addr.to_string());
            metrics::gauge!("gateway_endpoint_up", "region" => name.clone(), "endpoint" => id.clone(), "address" => address.clone())
                .set(f64::from(u8::from(e.is_routable())));
            metrics::gauge!("gateway_endpoint_latency_seconds", "region" => name.clone(), "endpoint" => id.clone(), "address" => address.clone())
                .set(e.latency.estimate(now).map_or(f64::NAN, |d| d.as_secs_f64()));
            metrics::gauge!("gateway_endpoint_in_flight", "region" => name.clone(), "endpoint" => id, "address" => address)
                .set(f64::from(e.latency.in_flight()));
        }
    }
}

/// Asserts that every value of a label set sits at its own index, with its own label.
#[cfg(test)]
pub(crate) fn assert_label_set<L: LabelSet + std::fmt::Debug>() {
    for (i, value) in L::ALL.iter().enumerate() {
        assert_eq!(value.index(), i, "{value:?}");
    }
    let labels: std::collections::BTreeSet<_> = L::ALL.iter().map(|v| v.label()).collect();
    assert_eq!(labels.len(), L::ALL.len());
}
