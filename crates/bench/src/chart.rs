//! One SVG: throughput of every measured phase over time (left), latency percentiles of
//! every phase (right). Both on log scales: the figures span three orders of magnitude.

use std::path::Path;

use plotters::prelude::*;

use crate::progress::thousands;
use crate::report::{Results, ms};

const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

pub fn draw(results: &Results, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1280, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(660);

    let series: Vec<_> = results
        .throughput
        .iter()
        .filter(|s| s.points.iter().any(|p| p.1 > 0.0))
        .collect();
    let (y_min, y_max) = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(&left)
        .caption("Throughput while measured", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..100.0, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("% of each measured window (the loader: its whole drain)")
        .y_desc("events per second")
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // Phases differ in length (a loader drains for minutes): each spans the width.
        let span = s.points.last().map_or(1.0, |p| p.0).max(1e-6);
        chart
            .draw_series(LineSeries::new(
                s.points
                    .iter()
                    .filter(|p| p.1 > 0.0)
                    .map(|p| (100.0 * p.0 / span, p.1)),
                color.stroke_width(2),
            ))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;

    let (l_min, l_max) = bounds(results.latency.iter().flat_map(|(_, p)| [p.p50, p.p999]));
    // Headroom above the lines for the legend.
    let l_max = l_max * 30.0;
    let mut chart = ChartBuilder::on(&right)
        .caption("Latency percentiles", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.2f64..3.2, (l_min..l_max).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.05 && (0.0..4.0).contains(&i) {
                PERCENTILES[i as usize].to_owned()
            } else {
                String::new()
            }
        })
        .y_desc("milliseconds")
        .y_label_formatter(&|v| ms(*v))
        .disable_x_mesh()
        .draw()?;
    for (i, (name, p)) in results.latency.iter().enumerate() {
        let color = Palette99::pick(i + series.len()).to_rgba();
        let points: Vec<(f64, f64)> = [p.p50, p.p90, p.p99, p.p999]
            .into_iter()
            .enumerate()
            .map(|(x, y)| (x as f64, y.max(l_min)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A log axis range around the positive values, one step of slack on each side.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return (0.1, 10.0);
    }
    (lo / 2.0, hi * 2.0)
}
