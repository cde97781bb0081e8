//! The depth–width continuum: validation loss against the number of stages.
use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{DATASET_COLOURS, SIZE, log_log_chart, log_range, plot_error, render};
use crate::report::staged::Family;
use crate::report::stats;

/// Final validation loss against the number of stages D for one dataset: one thin line per
/// family, and per L the median over its families, bold.
pub fn val_loss_vs_stages(
    dir: &Path,
    name: &str,
    families: &[Family],
    dataset: &str,
) -> Result<()> {
    let of: Vec<&Family> = families.iter().filter(|f| f.dataset == dataset).collect();
    let points = || of.iter().flat_map(|f| f.by_stages.iter());
    let dmax = points().map(|p| p.0).max().unwrap_or(1).max(2) as f64;
    let (llo, lhi) = log_range(points().map(|p| p.1));
    let mut depths: Vec<usize> = of.iter().map(|f| f.layers).collect();
    depths.sort();
    depths.dedup();
    let title = format!("{dataset}: final validation loss vs number of stages D");
    both_backends!(dir, name, |root| {
        let mut chart = log_log_chart(
            root,
            &title,
            (1.0..dmax * 1.1, "stages D (1 = parallel, L = sequential)"),
            (llo..lhi, "final validation loss"),
        )?;
        for (i, &l) in depths.iter().enumerate() {
            let colour = DATASET_COLOURS[i % DATASET_COLOURS.len()];
            let lines = of.iter().filter(|f| f.layers == l);
            for f in lines.clone() {
                let line = f.by_stages.iter().map(|&(d, v)| (d as f64, v));
                chart
                    .draw_series(LineSeries::new(line, colour.mix(0.25)))
                    .map_err(plot_error)?;
            }
            let mut ds: Vec<usize> = lines
                .clone()
                .flat_map(|f| f.by_stages.iter().map(|p| p.0))
                .collect();
            ds.sort();
            ds.dedup();
            let medians = ds.iter().map(|&d| {
                let vs: Vec<f64> = lines
                    .clone()
                    .flat_map(|f| f.by_stages.iter().filter(|p| p.0 == d).map(|p| p.1))
                    .collect();
                (d as f64, stats::median(&vs))
            });
            chart
                .draw_series(LineSeries::new(medians, colour.stroke_width(3)))
                .map_err(plot_error)?
                .label(format!("L = {l}: median"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 15, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        Ok(())
    })
}
