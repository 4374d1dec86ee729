//! The performance goals, each checked against what one run measured side by side: a pure
//! function of the report, so a goal is "not measured" (never guessed) when its group did not
//! run or a target is missing.

use serde::Serialize;

use super::{BenchReport, Rounds, TargetResult};

/// One goal and how this run did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Goal {
    /// What is measured.
    pub metric: &'static str,
    /// The goal, as the issue states it.
    pub goal: &'static str,
    /// The group that measures it (`--only`).
    pub group: &'static str,
    /// The measured value (a ratio, or a share of a core), when measured.
    pub measured: Option<f64>,
    /// How `measured` reads (`× nginx`, `%`).
    pub unit: &'static str,
    /// Whether it is met; `None` when not measured.
    pub met: Option<bool>,
}

/// Checks every goal against `report`.
pub(super) fn evaluate(report: &BenchReport) -> Vec<Goal> {
    let h1 = report.h1.as_deref();
    let h1_ratio = |of: &str, to: &str| median_ratio(h1, of, to, |r| &r.h1_rps);
    let p99 = |name: &str| {
        h1?.iter()
            .find(|r| r.name == name)?
            .fixed_rate
            .as_ref()
            .map(|s| s.latency.p99_ms)
    };
    let idle_ratio = report.idle.as_ref().and_then(|idle| {
        let rss = |name: &str| {
            idle.iter()
                .find(|r| r.name == name)
                .map(|r| r.rss_with_clients_mib)
        };
        Some(rss("gateway")? / rss("nginx")?.max(f64::MIN_POSITIVE))
    });
    let routes = median_ratio(
        report.routes.as_deref(),
        "gateway-10000-routes",
        "gateway-10-routes",
        |r| &r.h1_rps,
    );
    let goal = |metric, goal, group, measured: Option<f64>, unit, met: fn(f64) -> bool| Goal {
        metric,
        goal,
        group,
        measured,
        unit,
        met: measured.map(met),
    };
    vec![
        goal(
            "HTTP/1.1 keep-alive max req/s, one worker each, same header work",
            "≥ 1.0× nginx",
            "h1",
            h1_ratio("gateway", "nginx"),
            "× nginx",
            |r| r >= 1.0,
        ),
        goal(
            "HTTP/1.1 keep-alive max req/s, one worker each, same header work",
            "≥ 1.0× HAProxy",
            "h1",
            h1_ratio("gateway", "haproxy"),
            "× HAProxy",
            |r| r >= 1.0,
        ),
        goal(
            "same, all features on (1000 routes, sticky, probes)",
            "≥ 0.9× nginx",
            "features",
            median_ratio(report.features.as_deref(), "gateway-all", "nginx", |r| {
                &r.h1_rps
            }),
            "× nginx",
            |r| r >= 0.9,
        ),
        goal(
            "p99 at a fixed rate of half nginx's max",
            "≤ nginx's p99",
            "h1",
            p99("gateway")
                .zip(p99("nginx"))
                .map(|(g, n)| g / n.max(1e-9)),
            "× nginx's p99",
            |r| r <= 1.0,
        ),
        goal(
            "TLS h2, many streams per connection",
            "≥ nginx",
            "tls",
            median_ratio(report.tls.as_deref(), "gateway", "nginx", |r| &r.tls_h2_rps),
            "× nginx",
            |r| r >= 1.0,
        ),
        goal(
            "CPU per request (HTTP/1.1)",
            "≤ 1.2× nginx",
            "h1",
            median_ratio(h1, "gateway", "nginx", |r| &r.cpu_us_per_req),
            "× nginx",
            |r| r <= 1.2,
        ),
        goal(
            "RSS with 10 000 idle keep-alive clients",
            "≤ 2× nginx",
            "idle",
            idle_ratio,
            "× nginx",
            |r| r <= 2.0,
        ),
        goal(
            "10 000 routes vs 10 routes (HTTP/1.1 max req/s)",
            "within 5 %",
            "routes",
            routes,
            "× 10 routes",
            |r| (r - 1.0).abs() <= 0.05,
        ),
        goal(
            "probing 1000 endpoints at 1 s",
            "< 5 % of one core",
            "probes",
            report.probes.as_ref().map(|p| p.percent_of_core),
            "% of one core",
            |p| p < 5.0,
        ),
    ]
}

/// The median of `of`'s `column` over the median of `to`'s, both in `results`.
fn median_ratio(
    results: Option<&[TargetResult]>,
    of: &str,
    to: &str,
    column: fn(&TargetResult) -> &Rounds,
) -> Option<f64> {
    let median = |name: &str| column(results?.iter().find(|r| r.name == name)?).median();
    let reference = median(to)?;
    (reference > 0.0).then(|| median(of).map(|v| v / reference))?
}

/// The goals table.
pub(super) fn markdown(goals: &[Goal]) -> String {
    let mut md = String::from(
        "## goals\n\n| metric | goal | measured | met | group |\n|---|---|---|---|---|\n",
    );
    for g in goals {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            g.metric,
            g.goal,
            g.measured
                .map_or("not measured".into(), |v| format!("{v:.2} {}", g.unit)),
            match g.met {
                Some(true) => "met",
                Some(false) => "**not met**",
                None => "-",
            },
            g.group,
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::super::ProbeResult;
    use super::*;

    fn row(name: &str, h1: &[f64]) -> TargetResult {
        TargetResult {
            name: name.into(),
            h1_rps: Rounds(h1.to_vec()),
            ..TargetResult::default()
        }
    }

    #[test]
    fn goals_are_judged_on_medians_and_unmeasured_ones_say_so() {
        let report = BenchReport {
            h1: Some(vec![
                row("gateway", &[90.0, 100.0, 110.0]),
                row("nginx", &[100.0]),
                row("haproxy", &[200.0]),
            ]),
            routes: Some(vec![
                row("gateway-10-routes", &[100.0]),
                row("gateway-10000-routes", &[96.0]),
            ]),
            probes: Some(ProbeResult {
                endpoints: 1000,
                interval_s: 1.0,
                window_s: 20.0,
                cpu_s: 1.2,
                percent_of_core: 6.0,
                healthy_endpoints: Some(1000),
            }),
            ..BenchReport::default()
        };
        let goals = evaluate(&report);
        let by = |goal: &str| goals.iter().find(|g| g.goal == goal).expect(goal);
        assert_eq!(by("≥ 1.0× nginx").measured, Some(1.0));
        assert_eq!(by("≥ 1.0× nginx").met, Some(true));
        assert_eq!(by("≥ 1.0× HAProxy").met, Some(false));
        assert_eq!(by("within 5 %").met, Some(true));
        assert_eq!(by("< 5 % of one core").met, Some(false));
        assert_eq!(by("≥ 0.9× nginx").met, None);
        assert_eq!(by("≤ 2× nginx").measured, None);
        let md = markdown(&goals);
        assert_eq!(md.matches("not measured").count(), 5, "{md}");
        assert!(md.contains("| 1.00 × nginx | met |"));
    }
}
