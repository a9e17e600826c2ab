//! SVG charts of a run (plotters' SVG backend; text is left to the SVG viewer's fonts).

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

/// One line of a chart: its label and its points.
pub type Series = (String, Vec<(f64, f64)>);

const SIZE: (u32, u32) = (960, 560);

/// Requests per second by concurrency, one line per system. The x axis places the
/// concurrencies `levels` evenly, labelled with their values.
pub fn requests_by_concurrency(
    path: &Path,
    levels: &[usize],
    series: &[Series],
) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let top = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|&(_, y)| y))
        .fold(1.0, f64::max);
    let last = levels.len().saturating_sub(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("requests/s by concurrency", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(-0.2..last + 0.2, 0.0..top * 1.1)?;
    chart
        .configure_mesh()
        .x_labels(levels.len())
        .x_label_formatter(&|x| {
            let index = x.round();
            if (x - index).abs() < 1e-6 && index >= 0.0 {
                levels
                    .get(index as usize)
                    .map_or_else(String::new, |c| c.to_string())
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("concurrent keep-alive connections")
        .y_desc("requests/s")
        .draw()?;
    for (index, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let at = |c: f64| levels.iter().position(|&l| l as f64 == c).unwrap_or(0) as f64;
        let placed: Vec<(f64, f64)> = points.iter().map(|&(c, y)| (at(c), y)).collect();
        chart
            .draw_series(LineSeries::new(placed.clone(), color.stroke_width(2)))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            placed
                .iter()
                .map(|&point| Circle::new(point, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Latency over time (ms on a log scale against seconds since the purge started), one line per
/// purge variant.
pub fn latency_over_time(
    path: &Path,
    caption: &str,
    series: &[Series],
) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let points = || series.iter().flat_map(|(_, points)| points.iter());
    let (left, right) = points().fold((0.0f64, 1.0f64), |(l, r), &(x, _)| (l.min(x), r.max(x)));
    let (low, high) = points().fold((f64::MAX, 0.0f64), |(l, h), &(_, y)| (l.min(y), h.max(y)));
    let low = (low.max(0.01) * 0.8).min(0.5);
    let high = (high * 1.5).max(low * 10.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(left..right, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since the purge started")
        .y_desc("latency, ms (log scale)")
        .draw()?;
    for (index, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
