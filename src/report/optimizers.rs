//! Optimizers side by side: where a sweep trains the same network on the same data and seed with
//! more than one optimizer — each with its own recipe (learning rate, batch size, its own
//! settings) — each layout's final validation loss and accuracy (with a stopping rule, those of
//! the restored best epoch) under one optimizer against the other, paired by configuration and
//! seed, tested as the verdicts are (one value per configuration, the mean of its seeds), and the
//! training time each took.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use super::render::Block;
use super::stats;
use crate::sweep::store::{RunRow, RunStatus};

/// The settings of an optimizer's recipe, which differ between the runs compared.
const RECIPE: [&str; 14] = [
    "optimizer",
    "lr",
    "batch_size",
    "weight_decay",
    "momentum",
    "nesterov",
    "lbfgs_iterations",
    "lbfgs_history",
    "line_search",
    "schedule",
    "warmup",
    "lr_step",
    "lr_factor",
    "lr_patience",
];

/// One dataset and layout, optimizer `other` against `base`.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub dataset: String,
    pub layout: String,
    pub base: String,
    pub other: String,
    /// Configurations (each the mean of its seeds) and the matched runs behind them.
    pub configurations: usize,
    pub matched: usize,
    /// Mean over configurations of (other − base) / base of the validation loss, and its test
    /// (none with fewer than two configurations or no spread).
    pub loss_mean: f64,
    pub loss: Option<stats::PairedT>,
    /// The same of other − base of the validation accuracy, in points.
    pub accuracy_mean: f64,
    pub accuracy: Option<stats::PairedT>,
    /// Median training seconds of a run under each.
    pub seconds: (f64, f64),
}

/// A finished run as compared: what matches it across optimizers — every setting but the recipe
/// (so the layout and the seed too), as text — that without the seed (its configuration), and its
/// optimizer.
struct Keyed<'a> {
    run: &'a RunRow,
    matched_by: String,
    configuration: String,
    optimizer: String,
}

impl<'a> Keyed<'a> {
    fn of(run: &'a RunRow) -> Keyed<'a> {
        let texts = crate::train::settings::value_texts(&run.config);
        let mut matched_by = String::new();
        let mut configuration = String::new();
        for (name, value) in &texts {
            if !RECIPE.contains(&name.as_str()) {
                matched_by += &format!("{name}={value};");
                if name != "seed" {
                    configuration += &format!("{name}={value};");
                }
            }
        }
        Keyed {
            run,
            matched_by,
            configuration,
            optimizer: texts["optimizer"].clone(),
        }
    }
}

/// One configuration's matched runs under two optimizers: per seed, the relative difference of
/// the validation loss, the difference of the accuracy in points, and the training seconds.
#[derive(Default)]
struct Differences {
    loss: Vec<f64>,
    accuracy: Vec<f64>,
    base_seconds: Vec<f64>,
    other_seconds: Vec<f64>,
}

impl Differences {
    /// Adds a match; both runs are done with validation metrics.
    fn add(&mut self, base: &RunRow, other: &RunRow) {
        let loss = |r: &RunRow| r.final_val_loss.unwrap_or(f64::NAN);
        let acc = |r: &RunRow| r.final_val_acc.unwrap_or(f64::NAN);
        self.loss.push((loss(other) - loss(base)) / loss(base));
        self.accuracy.push(100.0 * (acc(other) - acc(base)));
        self.base_seconds.extend(base.train_seconds);
        self.other_seconds.extend(other.train_seconds);
    }
}

/// Every comparison the runs allow, by dataset, layout and optimizer pair (alphabetical, the
/// first the base).
pub fn comparisons(runs: &[RunRow]) -> Vec<Comparison> {
    let finished = runs.iter().filter(|r| {
        r.status == RunStatus::Done && r.final_val_loss.is_some() && r.final_val_acc.is_some()
    });
    // Per match (configuration, layout, seed): its runs by optimizer.
    let mut matches: BTreeMap<String, BTreeMap<String, Keyed>> = BTreeMap::new();
    for run in finished.map(Keyed::of) {
        matches
            .entry(run.matched_by.clone())
            .or_default()
            .insert(run.optimizer.clone(), run);
    }
    // Per dataset, layout and optimizer pair: per configuration, its seeds' differences.
    let mut grouped: BTreeMap<(String, String, String, String), BTreeMap<String, Differences>> =
        BTreeMap::new();
    for by_optimizer in matches.values().filter(|m| m.len() >= 2) {
        let optimizers: Vec<&Keyed> = by_optimizer.values().collect();
        for (i, b) in optimizers.iter().enumerate() {
            for o in &optimizers[i + 1..] {
                let group = (
                    b.run.config.dataset.clone(),
                    b.run.config.layout.to_string(),
                    b.optimizer.clone(),
                    o.optimizer.clone(),
                );
                grouped
                    .entry(group)
                    .or_default()
                    .entry(b.configuration.clone())
                    .or_default()
                    .add(b.run, o.run);
            }
        }
    }
    grouped
        .into_iter()
        .map(|((dataset, layout, base, other), configurations)| {
            let means = |pick: fn(&Differences) -> &Vec<f64>| -> Vec<f64> {
                configurations
                    .values()
                    .map(|d| stats::mean(pick(d)))
                    .collect()
            };
            let seconds = |pick: fn(&Differences) -> &Vec<f64>| -> f64 {
                let all: Vec<f64> = configurations.values().flat_map(pick).copied().collect();
                stats::median(&all)
            };
            Comparison {
                dataset,
                layout,
                base,
                other,
                configurations: configurations.len(),
                matched: configurations.values().map(|d| d.loss.len()).sum(),
                loss_mean: stats::mean(&means(|d| &d.loss)),
                loss: stats::paired_t(&means(|d| &d.loss)),
                accuracy_mean: stats::mean(&means(|d| &d.accuracy)),
                accuracy: stats::paired_t(&means(|d| &d.accuracy)),
                seconds: (seconds(|d| &d.base_seconds), seconds(|d| &d.other_seconds)),
            }
        })
        .collect()
}

/// The report's section: a paragraph and a table; nothing when no run is matched.
pub fn blocks(comparisons: &[Comparison]) -> Vec<Block> {
    if comparisons.is_empty() {
        return Vec::new();
    }
    let interval = |mean: f64, t: &Option<stats::PairedT>, scale: f64, unit: &str| {
        t.as_ref()
            .map_or(format!("{:+.1}{unit} (no interval)", scale * mean), |t| {
                format!(
                    "{:+.1}{unit} [{:+.1}, {:+.1}]",
                    scale * t.mean,
                    scale * t.ci90.0,
                    scale * t.ci90.1
                )
            })
    };
    let rows = comparisons
        .iter()
        .map(|c| {
            vec![
                c.dataset.clone(),
                c.layout.clone(),
                format!("{} − {}", c.other, c.base),
                format!("{} ({})", c.configurations, c.matched),
                interval(c.loss_mean, &c.loss, 100.0, " %"),
                interval(c.accuracy_mean, &c.accuracy, 1.0, " pt"),
                format!("{:.1} / {:.1}", c.seconds.0, c.seconds.1),
            ]
        })
        .collect();
    vec![
        Block::Heading("Optimizers".into()),
        Block::Paragraph(
            "Where the sweep trained the same network on the same data and seed with more than \
             one optimizer, each with its own recipe (learning rate, batch size, its own \
             settings): per layout, the validation loss (relative) and accuracy (points) of one \
             optimizer minus the other's — with a stopping rule, at each run's restored best \
             epoch — as the mean over configurations (each the mean of its seeds) with its 90 % \
             t-interval, n configurations (matched runs), and the median training seconds of a \
             run under each (base / other). Whether the layouts' gap Δ depends on the \
             optimizer is in *Which settings drive Δ* (`optimizer`)."
                .into(),
        ),
        Block::Table(
            [
                "dataset",
                "layout",
                "optimizers",
                "n (runs)",
                "Δ val loss [90% CI]",
                "Δ val acc [90% CI]",
                "s per run",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        ),
    ]
}

/// `tables/optimizers.csv`.
pub fn write_table(out: &Path, comparisons: &[Comparison]) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        dataset: &'a str,
        layout: &'a str,
        base: &'a str,
        other: &'a str,
        configurations: usize,
        matched_runs: usize,
        rel_val_loss_mean: f64,
        rel_val_loss_ci90_low: Option<f64>,
        rel_val_loss_ci90_high: Option<f64>,
        val_acc_points_mean: f64,
        val_acc_points_ci90_low: Option<f64>,
        val_acc_points_ci90_high: Option<f64>,
        base_median_seconds: f64,
        other_median_seconds: f64,
    }
    let rows = comparisons.iter().map(|c| Row {
        dataset: &c.dataset,
        layout: &c.layout,
        base: &c.base,
        other: &c.other,
        configurations: c.configurations,
        matched_runs: c.matched,
        rel_val_loss_mean: c.loss_mean,
        rel_val_loss_ci90_low: c.loss.as_ref().map(|t| t.ci90.0),
        rel_val_loss_ci90_high: c.loss.as_ref().map(|t| t.ci90.1),
        val_acc_points_mean: c.accuracy_mean,
        val_acc_points_ci90_low: c.accuracy.as_ref().map(|t| t.ci90.0),
        val_acc_points_ci90_high: c.accuracy.as_ref().map(|t| t.ci90.1),
        base_median_seconds: c.seconds.0,
        other_median_seconds: c.seconds.1,
    });
    super::tables::write_rows(&out.join("tables").join("optimizers.csv"), rows)
}
