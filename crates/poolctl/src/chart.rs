//! `--chart FILE.svg`: throughput and p95 latency against concurrency, one line per
//! pool size, drawn with plotters' SVG backend.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::bench::RunResult;
use crate::error::Error;

/// One panel's points per pool size: (x, y).
type Series = BTreeMap<(String, u32), Vec<(f64, f64)>>;

/// Draws the two panels side by side into `path`.
pub(crate) fn draw(path: &Path, runs: &[RunResult]) -> Result<(), Error> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::Failed(format!("cannot write the chart {}: {e}", path.display()))
    };
    if runs.is_empty() {
        return Err(Error::Usage("no runs to chart".into()));
    }
    let min_c = runs.iter().map(|r| r.concurrency).min().unwrap_or(1);
    let max_c = runs.iter().map(|r| r.concurrency).max().unwrap_or(1);
    // Concurrency plans such as 100,1000,10000 read best on a log axis.
    let log = max_c >= min_c.saturating_mul(10);
    let x = |c: u32| {
        if log {
            f64::from(c).log10()
        } else {
            f64::from(c)
        }
    };
    let mut throughput = Series::new();
    let mut p95 = Series::new();
    for r in runs {
        let key = (
            if r.client == "poolkit" {
                String::new()
            } else {
                format!("{} ", r.client)
            },
            r.pool_size,
        );
        throughput
            .entry(key.clone())
            .or_default()
            .push((x(r.concurrency), r.throughput_rps));
        p95.entry(key)
            .or_default()
            .push((x(r.concurrency), r.latency.p95 * 1e3));
    }
    let (x0, x1) = (x(min_c), x(max_c));
    let pad = if (x1 - x0).abs() < f64::EPSILON {
        if log { 0.5 } else { f64::from(min_c).max(1.0) }
    } else {
        (x1 - x0) * 0.05
    };
    let x_range = (x0 - pad).max(0.0)..x1 + pad;

    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(550);
    for (area, title, y_desc, series) in [
        (&left, "Throughput", "requests / s", &throughput),
        (&right, "P95 latency", "ms", &p95),
    ] {
        let y_max = series
            .values()
            .flatten()
            .map(|p| p.1)
            .fold(0.0_f64, f64::max)
            .max(1.0)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range.clone(), 0.0..y_max)
            .map_err(|e| fail(&e))?;
        let label = move |v: &f64| {
            if log {
                format!("{:.0}", 10f64.powf(*v))
            } else {
                format!("{v:.0}")
            }
        };
        chart
            .configure_mesh()
            .x_desc(if log {
                "concurrent users (log)"
            } else {
                "concurrent users"
            })
            .y_desc(y_desc)
            .x_label_formatter(&label)
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, ((client, size), points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| fail(&e))?
                .label(format!("{client}pool {size}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(|e| fail(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
