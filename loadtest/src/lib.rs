//! Load testing for the failover gateway.
//!
//! - [`region`]: a simulated regional app whose behaviour can be switched at run time; the
//!   gateway's demo and the integration tests reuse it for fault injection.
//! - [`engine`]: open-loop (constant rate, latency from the scheduled time) and closed-loop
//!   (maximum throughput) load.
//! - [`report`]: HDR summaries, timelines, JSON, Markdown and SVG charts.
//! - [`scenario`]: failover scenarios against a real gateway process.
//! - [`bench`]: the gateway against direct, nginx and HAProxy on the same upstream.

pub mod bench;
pub mod engine;
pub mod region;
pub mod report;
pub mod scenario;

/// Parses durations like `250ms`, `2s` or `1m` (command-line arguments).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms or 10s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: unit must be ms, s or m")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}
