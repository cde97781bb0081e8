//! The forest plot an equivalence claim is read from.
use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{PAR_COLOUR, SEQ_COLOUR, SIZE, draw_legend, plot_error, render};

/// One group in a forest plot: the mean Δ with its interval, and the median Δ.
pub struct ForestRow {
    pub label: String,
    pub mean: f64,
    pub interval: (f64, f64),
    pub median: f64,
}

/// The picture an equivalence claim is read from: per group (top to bottom) the mean Δ (dot) with
/// its 90 % interval (bar) and the median Δ (cross), against the shaded ±margin band.
pub fn forest(
    dir: &Path,
    name: &str,
    title: &str,
    x_desc: &str,
    rows: &[ForestRow],
    margin: f64,
) -> Result<()> {
    let extent = rows
        .iter()
        .flat_map(|r| [r.interval.0, r.interval.1, r.median])
        .filter(|x| x.is_finite())
        .fold(1.5 * margin, |acc, x| acc.max(x.abs()));
    let (xlo, xhi) = (-1.1 * extent, 1.1 * extent);
    let n = rows.len().max(1) as f64;
    let label_of = |y: &f64| {
        let i = (n - 1.0 - y).round();
        if (y - y.round()).abs() > 1e-6 || i < 0.0 || i >= n {
            return String::new();
        }
        rows.get(i as usize)
            .map_or(String::new(), |r| r.label.clone())
    };
    let height = (120 + 28 * rows.len() as u32).max(SIZE.1 / 2);
    let size = (SIZE.0 + 120, height);
    let band = RGBColor(44, 160, 44).mix(0.18);
    both_backends!(dir, name, size, |root| draw_forest(
        root,
        title,
        x_desc,
        rows,
        margin,
        (xlo, xhi),
        &label_of,
        band
    ))
}

#[allow(clippy::too_many_arguments)]
fn draw_forest<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    rows: &[ForestRow],
    margin: f64,
    (xlo, xhi): (f64, f64),
    label_of: &dyn Fn(&f64) -> String,
    band: RGBAColor,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let n = rows.len().max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(170)
        .build_cartesian_2d(xlo..xhi, -0.7..n - 0.3)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_labels(rows.len().max(1) * 4 + 1)
        .y_label_formatter(label_of)
        .disable_y_mesh()
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series([Rectangle::new(
            [(-margin, -0.7), (margin, n - 0.3)],
            band.filled(),
        )])
        .map_err(plot_error)?
        .label(format!("±{margin} margin"))
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], band.filled()));
    chart
        .draw_series(LineSeries::new(
            [(0.0, -0.7), (0.0, n - 0.3)],
            BLACK.mix(0.5),
        ))
        .map_err(plot_error)?;
    for (i, r) in rows.iter().enumerate() {
        let y = n - 1.0 - i as f64;
        let (lo, hi) = (r.interval.0.max(xlo), r.interval.1.min(xhi));
        chart
            .draw_series(LineSeries::new([(lo, y), (hi, y)], BLACK.stroke_width(2)))
            .map_err(plot_error)?;
        chart
            .draw_series([Circle::new((r.mean, y), 5, SEQ_COLOUR.filled())])
            .map_err(plot_error)?;
        chart
            .draw_series([Cross::new((r.median, y), 5, PAR_COLOUR.stroke_width(2))])
            .map_err(plot_error)?;
    }
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
        .map_err(plot_error)?
        .label("mean Δ, 90 % interval")
        .legend(|(x, y)| Circle::new((x + 7, y), 5, SEQ_COLOUR.filled()));
    chart
        .draw_series(std::iter::empty::<Cross<(f64, f64), i32>>())
        .map_err(plot_error)?
        .label("median Δ")
        .legend(|(x, y)| Cross::new((x + 7, y), 5, PAR_COLOUR.stroke_width(2)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}
