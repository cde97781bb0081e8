//! The report's figures, each written as SVG and PNG with plotters.
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use super::analysis::{Metric, Pair, Q_EDGES};
use crate::model::Layout;
use crate::sweep::store::EpochRow;
use crate::sweep::store::identity::short_hash;

const SIZE: (u32, u32) = (720, 540);
const DATASET_COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
const SEQ_COLOUR: RGBColor = RGBColor(31, 119, 180);
const PAR_COLOUR: RGBColor = RGBColor(255, 127, 14);

/// Registers the bundled DejaVu Sans for plotters' text (PNG needs a font; no system font is
/// assumed).
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            plotters::style::register_font("sans-serif", style, dejavu::sans::regular())
                .unwrap_or_else(|_| panic!("bundled DejaVu Sans is a valid font"));
        }
    });
}

/// The file name (without extension) of figure `kind` for `dataset` (or cohort, `mnist · adam`):
/// a name that is not a safe file name (`npz:some/path.npz`) has its other characters replaced
/// (a cohort's ` · ` by one `_`) and a hash of the whole name appended, so that no two datasets
/// share a figure.
pub fn figure_name(kind: &str, dataset: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if dataset.chars().all(safe) && !dataset.starts_with('.') {
        return format!("{kind}_{dataset}");
    }
    let stem: String = dataset
        .replace(" · ", "_")
        .chars()
        .map(|c| if safe(c) { c } else { '_' })
        .collect();
    format!(
        "{kind}_{}_{}",
        stem.trim_start_matches('.'),
        short_hash(dataset)
    )
}

type Drawer<'a> = dyn Fn(&DrawingArea<SVGBackend, Shift>) -> Result<()> + 'a;
type BitmapDrawer<'a> = dyn Fn(&DrawingArea<BitMapBackend, Shift>) -> Result<()> + 'a;

/// Renders one figure twice: `<dir>/<name>.svg` and `<dir>/<name>.png`.
fn render(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    svg: &Drawer,
    png: &BitmapDrawer,
) -> Result<()> {
    register_font();
    let svg_path = dir.join(format!("{name}.svg"));
    {
        let root = SVGBackend::new(&svg_path, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        svg(&root)?;
        root.present().map_err(plot_error)?;
    }
    let png_path = dir.join(format!("{name}.png"));
    let root = BitMapBackend::new(&png_path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    png(&root)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// The legend box every figure uses, at `position`.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(plot_error)
}

/// The coordinates of a [`log_log_chart`].
type LogLog = Cartesian2d<LogCoord<f64>, LogCoord<f64>>;

/// A log-log chart as the report draws them: caption, margins, axis descriptions and three-digit
/// tick labels; `x` and `y` are each a range and its description.
fn log_log_chart<'a, DB: DrawingBackend + 'a>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    x: (std::ops::Range<f64>, &str),
    y: (std::ops::Range<f64>, &str),
) -> Result<ChartContext<'a, DB, LogLog>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x.0.log_scale(), y.0.log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_label_formatter(&log_label)
        .y_label_formatter(&log_label)
        .x_desc(x.1)
        .y_desc(y.1)
        .draw()
        .map_err(plot_error)?;
    Ok(chart)
}

/// Calls `$body` with the drawing area for both backends (plotters' backends are distinct types).
macro_rules! both_backends {
    ($dir:expr, $name:expr, |$root:ident| $body:expr) => {
        both_backends!($dir, $name, SIZE, |$root| $body)
    };
    ($dir:expr, $name:expr, $size:expr, |$root:ident| $body:expr) => {
        render(
            $dir,
            $name,
            $size,
            &|$root: &DrawingArea<SVGBackend, Shift>| $body,
            &|$root: &DrawingArea<BitMapBackend, Shift>| $body,
        )
    };
}

mod budget;
mod forest;
mod stages;

pub use budget::budget_curve;
pub use forest::{ForestRow, forest};
pub use stages::val_loss_vs_stages;

/// A log axis's tick label: three significant digits, trailing zeros dropped (0.6, not
/// 0.6000000000000001).
fn log_label(v: &f64) -> String {
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{v:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (0.1, 1.0)
    } else {
        (lo / 1.5, hi * 1.5)
    }
}

/// One point per pair: sequential (x) vs parallel (y), log–log, with the y = x line.
pub fn layout_scatter(
    dir: &Path,
    name: &str,
    pairs: &[Pair],
    metric: Metric,
    cohorts: &[String],
) -> Result<()> {
    let points = pair_points(pairs, cohorts, |r| metric.value(r));
    scatter_pairs(
        dir,
        name,
        &format!(
            "final {}: parallel vs sequential, one point per pair",
            metric.name()
        ),
        &format!("sequential (deep) {}", metric.name()),
        &format!("parallel (shallow) {}", metric.name()),
        &points,
        cohorts,
    )
}

/// Mean seconds per training epoch, sequential vs parallel, one point per pair.
pub fn epoch_seconds(dir: &Path, name: &str, pairs: &[Pair], cohorts: &[String]) -> Result<()> {
    let points = pair_points(pairs, cohorts, |r| {
        Some(r.train_seconds? / r.epochs_recorded.max(1) as f64)
    });
    scatter_pairs(
        dir,
        name,
        "seconds per training epoch, one point per pair",
        "sequential s/epoch",
        "parallel s/epoch",
        &points,
        cohorts,
    )
}

/// Seconds to target per pair (both layouts reached it), parallel against sequential.
pub fn time_to_target(
    dir: &Path,
    name: &str,
    rows: &[super::speed::TimeToTarget],
    cohorts: &[String],
) -> Result<()> {
    let points: Vec<(usize, f64, f64)> = rows
        .iter()
        .filter_map(|r| {
            let d = cohorts.iter().position(|d| *d == r.dataset)?;
            Some((d, r.seq?.seconds, r.par?.seconds))
        })
        .filter(|(_, s, p)| *s > 0.0 && *p > 0.0)
        .collect();
    scatter_pairs(
        dir,
        name,
        "training seconds to the target loss, one point per pair",
        "sequential seconds",
        "parallel seconds",
        &points,
        cohorts,
    )
}

/// (dataset index, sequential value, parallel value) of every finished pair.
fn pair_points(
    pairs: &[Pair],
    cohorts: &[String],
    value: impl Fn(&crate::sweep::store::RunRow) -> Option<f64>,
) -> Vec<(usize, f64, f64)> {
    pairs
        .iter()
        .filter(|p| p.both_have_results())
        .filter_map(|p| {
            Some((
                cohorts.iter().position(|d| d == p.cohort())?,
                value(p.seq)?,
                value(p.par)?,
            ))
        })
        .filter(|(_, s, q)| *s > 0.0 && *q > 0.0)
        .collect()
}

fn scatter_pairs(
    dir: &Path,
    name: &str,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[(usize, f64, f64)],
    cohorts: &[String],
) -> Result<()> {
    let (lo, hi) = log_range(points.iter().flat_map(|(_, s, q)| [*s, *q]));
    both_backends!(dir, name, |root| {
        let mut chart = log_log_chart(root, title, (lo..hi, x_desc), (lo..hi, y_desc))?;
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.5)))
            .map_err(plot_error)?
            .label("y = x")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLACK.mix(0.5)));
        for (i, dataset) in cohorts.iter().enumerate() {
            let colour = DATASET_COLOURS[i % DATASET_COLOURS.len()];
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|(d, _, _)| *d == i)
                        .map(|(_, s, q)| Circle::new((*s, *q), 3, colour.mix(0.7).filled())),
                )
                .map_err(plot_error)?
                .label(dataset.as_str())
                .legend(move |(x, y)| Circle::new((x + 7, y), 4, colour.filled()));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

/// Final validation loss against Q for both layouts of one dataset, with the paper's bin edges.
pub fn loss_vs_q(dir: &Path, name: &str, pairs: &[Pair], dataset: &str) -> Result<()> {
    let runs: Vec<(Layout, f64, f64)> = pairs
        .iter()
        .filter(|p| p.cohort() == dataset)
        .flat_map(|p| [p.seq, p.par])
        .filter_map(|r| Some((r.config.layout, r.q?, r.final_val_loss?)))
        .filter(|(_, q, l)| *q > 0.0 && *l > 0.0)
        .collect();
    let (qlo, qhi) = log_range(runs.iter().map(|r| r.1).chain(Q_EDGES));
    let (llo, lhi) = log_range(runs.iter().map(|r| r.2));
    let title = format!("{dataset}: final validation loss vs Q");
    both_backends!(dir, name, |root| {
        let mut chart = log_log_chart(
            root,
            &title,
            (qlo..qhi, "Q = training examples × outputs / parameters"),
            (llo..lhi, "final validation loss"),
        )?;
        for edge in Q_EDGES {
            chart
                .draw_series(LineSeries::new([(edge, llo), (edge, lhi)], BLACK.mix(0.3)))
                .map_err(plot_error)?;
        }
        for (layout, colour) in [
            (Layout::Sequential, SEQ_COLOUR),
            (Layout::Parallel, PAR_COLOUR),
        ] {
            chart
                .draw_series(
                    runs.iter()
                        .filter(|r| r.0 == layout)
                        .map(|r| Circle::new((r.1, r.2), 3, colour.mix(0.7).filled())),
                )
                .map_err(plot_error)?
                .label(layout.to_string())
                .legend(move |(x, y)| Circle::new((x + 7, y), 4, colour.filled()));
        }
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        Ok(())
    })
}

/// (epoch, validation loss) points of one run.
type Curve = Vec<(f64, f64)>;

/// Validation loss per epoch of a few pairs: sequential solid, parallel dashed-looking (lighter).
pub fn learning_curves(
    dir: &Path,
    name: &str,
    chosen: &[(String, &Pair)],
    epochs: &[EpochRow],
) -> Result<()> {
    let curve = |run_id: &str| -> Curve {
        epochs
            .iter()
            .filter(|e| e.run_id == run_id && e.metrics.val_loss.is_finite())
            .map(|e| (e.metrics.epoch as f64, e.metrics.val_loss))
            .collect()
    };
    let curves: Vec<(String, Curve, Curve)> = chosen
        .iter()
        .map(|(label, p)| (label.clone(), curve(&p.seq.id), curve(&p.par.id)))
        .collect();
    let max_epoch = curves
        .iter()
        .flat_map(|(_, s, q)| s.iter().chain(q).map(|p| p.0))
        .fold(1.0f64, f64::max);
    let (llo, lhi) = log_range(
        curves
            .iter()
            .flat_map(|(_, s, q)| s.iter().chain(q).map(|p| p.1)),
    );
    both_backends!(dir, name, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "validation loss per epoch (solid: sequential, light: parallel)",
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5..max_epoch + 0.5, (llo..lhi).log_scale())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .y_label_formatter(&log_label)
            .x_desc("epoch")
            .y_desc("validation loss")
            .draw()
            .map_err(plot_error)?;
        for (i, (label, seq, par)) in curves.iter().enumerate() {
            let colour = DATASET_COLOURS[i % DATASET_COLOURS.len()];
            chart
                .draw_series(LineSeries::new(seq.clone(), colour.stroke_width(2)))
                .map_err(plot_error)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 15, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(LineSeries::new(
                    par.clone(),
                    colour.mix(0.45).stroke_width(2),
                ))
                .map_err(plot_error)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_labels_have_three_significant_digits_at_most() {
        for (v, text) in [
            (0.6000000000000001, "0.6"),
            (0.30000000000000004, "0.3"),
            (2.0, "2"),
            (1.0, "1"),
            (0.05, "0.05"),
            (0.1234, "0.123"),
            (12.5, "12.5"),
            (1000.0, "1000"),
        ] {
            assert_eq!(super::log_label(&v), text);
        }
    }
}
