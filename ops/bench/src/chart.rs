//! `chart.svg`: throughput and p50/p99 latency per workload, Roster vs ceiling vs baseline
//! (log scales), and the single jobs against their targets.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Results, WorkloadResult};

const ROSTER: RGBColor = RGBColor(31, 119, 180);
const CEILING: RGBColor = RGBColor(140, 140, 140);
const BASELINE: RGBColor = RGBColor(255, 127, 14);

fn color(system: &str) -> RGBColor {
    match system {
        "roster" => ROSTER,
        "ceiling" => CEILING,
        _ => BASELINE,
    }
}

/// Bounds of a log axis holding every value.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in values.filter(|v| *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.1, 10.0);
    }
    (
        10f64.powf(lo.log10().floor()),
        10f64.powf((hi * 1.5).log10().ceil()),
    )
}

/// Where the bar of system `k` of `n` sits within workload `i`'s slot.
fn bar_x(i: usize, k: usize, n: usize) -> (f64, f64) {
    let width = 0.8 / n as f64;
    let x0 = i as f64 - 0.4 + k as f64 * width;
    (x0 + 0.02, x0 + width - 0.02)
}

/// Draws the chart of `results` into `path`.
pub fn draw(results: &Results, path: &Path) -> anyhow::Result<()> {
    let workloads: Vec<&WorkloadResult> = results
        .workloads
        .iter()
        .filter(|w| w.roster.is_some())
        .collect();
    let n = workloads.len().max(1);
    let ids: Vec<String> = workloads.iter().map(|w| w.id.clone()).collect();
    let root = SVGBackend::new(path, (1400, 1420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(470);
    let (middle, bottom) = rest.split_vertically(470);
    let x_range = || -0.5f64..n as f64 - 0.5;
    let label_font = ("sans-serif", 15).into_font().color(&BLACK);
    let title = format!(
        "Roster vs ceiling (axum echo) vs baseline (axum + PostgreSQL), c={} — {} mode, {} × {} cores",
        results
            .config
            .get("concurrency")
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
        results.mode,
        results.machine.cpu_model,
        results.machine.cores
    );

    // Throughput (the axis goes a decade higher than the bars, to leave room for the legend).
    let (lo, hi) = log_bounds(
        workloads
            .iter()
            .flat_map(|w| w.systems())
            .map(|(_, s)| s.stats.throughput),
    );
    let hi = hi * 10.0;
    let mut chart = ChartBuilder::on(&top)
        .caption(&title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("throughput, requests/s (log)")
        .draw()?;
    for (i, id) in ids.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64, lo));
        root.draw(&Text::new(
            id.clone(),
            (px - 14, py + 8),
            label_font.clone(),
        ))?;
    }
    for system in ["roster", "ceiling", "baseline"] {
        let c = color(system);
        let bars: Vec<_> = workloads
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let present: Vec<_> = w.systems();
                let k = present.iter().position(|(s, _)| *s == system)?;
                let v = present[k].1.stats.throughput;
                let (x0, x1) = bar_x(i, k, present.len());
                (v > 0.0).then(|| Rectangle::new([(x0, lo), (x1, v)], c.filled()))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(system)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // Latency: p99 as a light bar, p50 as the solid bar inside it.
    let (lo, hi) = log_bounds(
        workloads
            .iter()
            .flat_map(|w| w.systems())
            .flat_map(|(_, s)| [s.stats.p50_ms, s.stats.p99_ms]),
    );
    let mut chart = ChartBuilder::on(&middle)
        .caption(
            "latency, ms (log): solid = p50, light = p99",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("ms (log)")
        .draw()?;
    for (i, id) in ids.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64, lo));
        root.draw(&Text::new(
            id.clone(),
            (px - 14, py + 8),
            label_font.clone(),
        ))?;
    }
    for system in ["roster", "ceiling", "baseline"] {
        let c = color(system);
        let mut bars = Vec::new();
        for (i, w) in workloads.iter().enumerate() {
            let present = w.systems();
            let Some(k) = present.iter().position(|(s, _)| *s == system) else {
                continue;
            };
            let st = &present[k].1.stats;
            let (x0, x1) = bar_x(i, k, present.len());
            if st.p99_ms > 0.0 {
                bars.push(Rectangle::new(
                    [(x0, lo), (x1, st.p99_ms)],
                    c.mix(0.35).filled(),
                ));
            }
            if st.p50_ms > 0.0 {
                bars.push(Rectangle::new([(x0, lo), (x1, st.p50_ms)], c.filled()));
            }
        }
        chart
            .draw_series(bars)?
            .label(system)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // The single jobs and the targets, as text.
    let style = ("sans-serif", 15).into_font().color(&BLACK);
    let mut y = 10;
    let mut line = |text: String| -> anyhow::Result<()> {
        bottom.draw(&Text::new(text, (20, y), style.clone()))?;
        y += 20;
        Ok(())
    };
    line("Single jobs (Roster):".into())?;
    for j in &results.jobs {
        let rate = if j.rate_per_sec > 0.0 {
            format!(", {:.0} {}/s", j.rate_per_sec, j.unit)
        } else {
            String::new()
        };
        let rss = j
            .rss_peak_mb
            .map(|m| format!(", peak RSS {m:.0} MB"))
            .unwrap_or_default();
        let status = if j.id == "RSS" {
            format!("{:.0} MB resident", j.rss_peak_mb.unwrap_or(0.0))
        } else if j.status == "ok" {
            format!("{:.2} s{rate}{rss}", j.secs)
        } else {
            format!("{}: {}", j.status, j.note.clone().unwrap_or_default())
        };
        line(format!("  {} {} — {status}", j.id, j.name))?;
    }
    line("Targets:".into())?;
    for t in &results.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not judged",
        };
        line(format!("  {} — {} — {verdict}", t.goal, t.measured))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bounds_cover_values() {
        let (lo, hi) = log_bounds([3.0, 250.0, 0.0].into_iter());
        assert_eq!(lo, 1.0);
        assert_eq!(hi, 1000.0);
        assert_eq!(log_bounds(std::iter::empty()), (0.1, 10.0));
    }

    #[test]
    fn bars_stay_in_their_slot() {
        let (a, _) = bar_x(2, 0, 3);
        let (_, b) = bar_x(2, 2, 3);
        assert!(a > 1.5 && b < 2.5);
    }
}
