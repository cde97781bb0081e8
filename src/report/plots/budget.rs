//! The budget curve: the verdict's mean Δ after every epoch, against the margin band.
use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{PAR_COLOUR, SEQ_COLOUR, SIZE, draw_legend, plot_error, render};
use crate::report::convergence::{BudgetPoint, Split};

/// Mean relative Δ of the loss (in %) after each epoch with its 90 % interval, one line per split
/// (test, held-out), over the shaded ±`margin` band.
pub fn budget_curve(
    dir: &Path,
    name: &str,
    dataset: &str,
    points: &[&BudgetPoint],
    margin: f64,
) -> Result<()> {
    let last = points.iter().map(|p| p.epoch).max().unwrap_or(1) as f64;
    let pct = |x: f64| 100.0 * x;
    let m = pct(margin);
    let (lo, hi) = points.iter().fold((-m, m), |(lo, hi), p| {
        (lo.min(pct(p.test.ci90.0)), hi.max(pct(p.test.ci90.1)))
    });
    let pad = 0.05 * (hi - lo).max(1e-9);
    let title = format!("{dataset}: Δ loss (parallel − sequential) vs epochs trained");
    both_backends!(dir, name, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5..last + 0.5, lo - pad..hi + pad)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("epochs trained")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("mean Δ loss, % of sequential (90 % interval)")
            .draw()
            .map_err(plot_error)?;
        let band = RGBColor(160, 160, 160).mix(0.3);
        chart
            .draw_series([Rectangle::new([(0.5, -m), (last + 0.5, m)], band.filled())])
            .map_err(plot_error)?
            .label(format!("±{m}% margin"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], band.filled()));
        for (split, colour, shift) in [
            (Split::Test, SEQ_COLOUR, -0.1),
            (Split::Holdout, PAR_COLOUR, 0.1),
        ] {
            let of: Vec<&&BudgetPoint> = points.iter().filter(|p| p.split == split).collect();
            if of.is_empty() {
                continue;
            }
            for p in &of {
                let x = p.epoch as f64 + shift;
                chart
                    .draw_series(LineSeries::new(
                        [(x, pct(p.test.ci90.0)), (x, pct(p.test.ci90.1))],
                        colour.mix(0.5).stroke_width(2),
                    ))
                    .map_err(plot_error)?;
            }
            chart
                .draw_series(LineSeries::new(
                    of.iter()
                        .map(|p| (p.epoch as f64 + shift, pct(p.test.mean))),
                    colour.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(format!("{} loss", split.name()))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 15, y)], colour.stroke_width(2))
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}
