//! Reports: summary statistics (HDR histograms), a timeline, JSON for machines, Markdown for
//! people, and an SVG chart of throughput, errors and latency over time with events marked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::engine::{ErrorKind, Record};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Summary of a set of records.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Requests sent.
    pub requests: u64,
    /// Requests answered with a status below 500.
    pub ok: u64,
    /// Requests that failed: transport errors and 5xx.
    pub failed: u64,
    /// Transport errors by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Responses by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Responses by answering region.
    pub regions: BTreeMap<String, u64>,
    /// Completed requests per second over the run.
    pub throughput_rps: f64,
    /// Latency from the due time.
    pub latency: Latency,
}

/// Summarises `records` over a run of `elapsed`.
pub fn summarize(records: &[Record], elapsed: Duration) -> Summary {
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
    let mut errors = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    let mut regions = BTreeMap::new();
    for r in records {
        let _ = hist.record((r.latency.as_micros() as u64).max(1));
        if let Some(e) = r.error {
            *errors.entry(e).or_insert(0) += 1;
        }
        if let Some(s) = r.status {
            *statuses.entry(s).or_insert(0) += 1;
        }
        if let Some(region) = &r.region {
            *regions.entry(region.to_string()).or_insert(0) += 1;
        }
    }
    let failed = records.iter().filter(|r| r.failed()).count() as u64;
    let ms = |q: f64| {
        if records.is_empty() {
            0.0
        } else {
            hist.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Summary {
        requests: records.len() as u64,
        ok: records.len() as u64 - failed,
        failed,
        errors,
        statuses,
        regions,
        throughput_rps: records.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Latency {
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: if records.is_empty() {
                0.0
            } else {
                hist.max() as f64 / 1000.0
            },
        },
    }
}

/// One slice of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Start of the slice, seconds since the start of the run.
    pub t_s: f64,
    /// Requests due in the slice, per second.
    pub rps: f64,
    /// Failed requests due in the slice.
    pub failed: u64,
    /// Median latency in the slice (ms).
    pub p50_ms: f64,
    /// 99th-percentile latency in the slice (ms).
    pub p99_ms: f64,
    /// Answers per region in the slice.
    pub regions: BTreeMap<String, u64>,
}

/// Groups records by due time into slices of `width`.
pub fn timeline(records: &[Record], width: Duration) -> Vec<Bucket> {
    let Some(last) = records.iter().map(|r| r.due).max() else {
        return Vec::new();
    };
    let n = (last.as_secs_f64() / width.as_secs_f64()) as usize + 1;
    let mut slices: Vec<Vec<&Record>> = vec![Vec::new(); n];
    for r in records {
        let i = ((r.due.as_secs_f64() / width.as_secs_f64()) as usize).min(n - 1);
        slices[i].push(r);
    }
    slices
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let mut lat: Vec<u128> = rs.iter().map(|r| r.latency.as_micros()).collect();
            lat.sort_unstable();
            let pct = |q: f64| {
                if lat.is_empty() {
                    0.0
                } else {
                    lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1000.0
                }
            };
            let mut regions = BTreeMap::new();
            for r in rs {
                if let Some(region) = &r.region {
                    *regions.entry(region.to_string()).or_insert(0) += 1;
                }
            }
            Bucket {
                t_s: i as f64 * width.as_secs_f64(),
                rps: rs.len() as f64 / width.as_secs_f64(),
                failed: rs.iter().filter(|r| r.failed()).count() as u64,
                p50_ms: pct(0.5),
                p99_ms: pct(0.99),
                regions,
            }
        })
        .collect()
}

/// A vertical marker on the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Marker {
    /// Seconds since the start of the run.
    pub t_s: f64,
    /// What happened.
    pub label: String,
}

/// Draws throughput per region, failures and latency over time, with markers, as SVG.
pub fn chart(
    path: &Path,
    title: &str,
    buckets: &[Bucket],
    markers: &[Marker],
) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(360);
    let t_max = buckets.last().map_or(1.0, |b| b.t_s + 0.1).max(1.0);
    let mut regions: Vec<String> = buckets
        .iter()
        .flat_map(|b| b.regions.keys().cloned())
        .collect();
    regions.sort();
    regions.dedup();
    let width = if buckets.len() > 1 {
        buckets[1].t_s - buckets[0].t_s
    } else {
        0.1
    };
    let rps_max = buckets.iter().map(|b| b.rps).fold(1.0, f64::max) * 1.15;

    let mut c = panel(
        &top,
        Panel {
            caption: (
                "requests per second, by answering region; failures in red",
                15,
            ),
            margin: 10,
            y_label_area: 60,
            x: (0.0..t_max, "seconds"),
            y: (0.0..rps_max, "req/s"),
        },
    )?;
    let palette = [BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, region) in regions.iter().enumerate() {
        let points = buckets
            .iter()
            .map(|b| (b.t_s, *b.regions.get(region).unwrap_or(&0) as f64 / width));
        line(&mut c, points, palette[i % palette.len()], region)?;
    }
    let failed = buckets.iter().map(|b| (b.t_s, b.failed as f64 / width));
    line(&mut c, failed, RED, "failed")?;
    draw_markers(&mut c, markers, rps_max)?;
    legend(&mut c)?;

    let lat_max = buckets.iter().map(|b| b.p99_ms).fold(1.0, f64::max) * 1.15;
    let mut l = panel(
        &bottom,
        Panel {
            caption: ("latency from the scheduled send time (ms)", 15),
            margin: 10,
            y_label_area: 60,
            x: (0.0..t_max, "seconds"),
            y: (0.0..lat_max, "ms"),
        },
    )?;
    line(
        &mut l,
        buckets.iter().map(|b| (b.t_s, b.p50_ms)),
        BLUE,
        "p50",
    )?;
    line(
        &mut l,
        buckets.iter().map(|b| (b.t_s, b.p99_ms)),
        RED,
        "p99",
    )?;
    draw_markers(&mut l, markers, lat_max)?;
    legend(&mut l)?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// A chart with both axes in `f64`.
pub(crate) type Chart<'a, DB> = plotters::prelude::ChartContext<
    'a,
    DB,
    plotters::prelude::Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
    >,
>;

/// The frame of one chart: caption (text, font size), margin, width of the y labels, and each
/// axis's range and description.
pub(crate) struct Panel<'a> {
    pub(crate) caption: (&'a str, u32),
    pub(crate) margin: u32,
    pub(crate) y_label_area: u32,
    pub(crate) x: (std::ops::Range<f64>, &'a str),
    pub(crate) y: (std::ops::Range<f64>, &'a str),
}

/// Draws the frame `p` (caption, axes, mesh) on `area`; the series go on the chart it returns.
pub(crate) fn panel<'a, DB: plotters::prelude::DrawingBackend>(
    area: &'a plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    p: Panel<'_>,
) -> Result<Chart<'a, DB>, String> {
    use plotters::prelude::*;
    let mut c = ChartBuilder::on(area)
        .margin(p.margin)
        .caption(p.caption.0, ("sans-serif", p.caption.1))
        .x_label_area_size(30)
        .y_label_area_size(p.y_label_area)
        .build_cartesian_2d(p.x.0, p.y.0)
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_desc(p.x.1)
        .y_desc(p.y.1)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(c)
}

/// A line through `points` in `color`, 2 px wide, named `label` in the legend.
pub(crate) fn line<DB: plotters::prelude::DrawingBackend>(
    c: &mut Chart<'_, DB>,
    points: impl IntoIterator<Item = (f64, f64)>,
    color: plotters::prelude::RGBColor,
    label: &str,
) -> Result<(), String> {
    use plotters::prelude::*;
    c.draw_series(LineSeries::new(points, color.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    Ok(())
}

/// The legend of the series drawn with a label.
pub(crate) fn legend<'a, DB: plotters::prelude::DrawingBackend + 'a>(
    c: &mut Chart<'a, DB>,
) -> Result<(), String> {
    use plotters::prelude::*;
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// Vertical lines at each marker's time across `0..y_max`, labelled (labels staggered over four
/// heights so that neighbours do not overlap).
pub(crate) fn draw_markers<DB: plotters::prelude::DrawingBackend>(
    c: &mut Chart<'_, DB>,
    markers: &[Marker],
    y_max: f64,
) -> Result<(), String> {
    use plotters::prelude::*;
    for (i, m) in markers.iter().enumerate() {
        let color = RGBColor(120, 120, 120);
        c.draw_series(std::iter::once(PathElement::new(
            vec![(m.t_s, 0.0), (m.t_s, y_max)],
            color.stroke_width(1),
        )))
        .map_err(|e| format!("{e:?}"))?;
        let y = y_max * (0.95 - 0.07 * (i % 4) as f64);
        c.draw_series(std::iter::once(Text::new(
            m.label.clone(),
            (m.t_s, y),
            ("sans-serif", 13).into_font().color(&BLACK),
        )))
        .map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

/// A short description of this machine for reports.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    / 1024
                    / 1024
            })
        })
        .unwrap_or(0);
    format!("{cpus} CPUs ({model}), {mem} GiB")
}

/// Formats a summary as a Markdown table row set.
pub fn summary_markdown(s: &Summary) -> String {
    let errors: Vec<String> = s
        .errors
        .iter()
        .map(|(k, v)| format!("{k:?}: {v}"))
        .collect();
    let statuses: Vec<String> = s
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let regions: Vec<String> = s.regions.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(
        "| requests | failed | errors | statuses | regions | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
        s.requests,
        s.failed,
        if errors.is_empty() { "-".into() } else { errors.join(", ") },
        statuses.join(", "),
        if regions.is_empty() { "-".into() } else { regions.join(", ") },
        s.throughput_rps,
        s.latency.p50_ms,
        s.latency.p90_ms,
        s.latency.p99_ms,
        s.latency.p999_ms,
        s.latency.max_ms
    )
}
