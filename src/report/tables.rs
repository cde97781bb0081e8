//! The report's tables as CSV files under `tables/`.
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::analysis::{self, Q_BINS};
use super::equivalence::EquivalenceRow;
use super::speed::TimeToTarget;
use super::staged::StageCell;
use super::truncation::TruncationRow;
use crate::model::Layout;

/// Writes table2.csv, paired.csv, diverged.csv and equivalence.csv into `<out>/tables`.
pub fn write_csvs(
    out: &Path,
    cells: &[analysis::Table2Cell],
    paired: &[analysis::PairedStat],
    diverged: &[(String, usize, usize, usize, usize)],
    verdicts: &[EquivalenceRow],
) -> Result<()> {
    let dir = out.join("tables");
    write_rows(&dir.join("table2.csv"), cells.iter().map(Table2Csv::of))?;
    write_rows(&dir.join("paired.csv"), paired.iter().map(PairedCsv::of))?;
    write_rows(
        &dir.join("diverged.csv"),
        diverged.iter().map(|(dataset, s, p, b, n)| DivergedCsv {
            dataset,
            ended_pairs: *n,
            sequential_only: *s,
            parallel_only: *p,
            both: *b,
        }),
    )?;
    write_rows(
        &dir.join("equivalence.csv"),
        verdicts.iter().map(EquivalenceCsv::of),
    )
}

/// Writes time_to_target.csv into `<out>/tables`: one row per pair.
pub fn write_time_to_target(out: &Path, rows: &[TimeToTarget]) -> Result<()> {
    #[derive(Serialize)]
    struct Row<'a> {
        dataset: &'a str,
        pair_id: &'a str,
        q_bin: &'static str,
        target_val_loss: f64,
        sequential_epochs: Option<usize>,
        sequential_seconds: Option<f64>,
        parallel_epochs: Option<usize>,
        parallel_seconds: Option<f64>,
    }
    let path = out.join("tables").join("time_to_target.csv");
    write_rows(
        &path,
        rows.iter().map(|r| Row {
            dataset: &r.dataset,
            pair_id: &r.pair_id,
            q_bin: Q_BINS[r.bin],
            target_val_loss: r.target,
            sequential_epochs: r.seq.map(|x| x.epochs),
            sequential_seconds: r.seq.map(|x| x.seconds),
            parallel_epochs: r.par.map(|x| x.epochs),
            parallel_seconds: r.par.map(|x| x.seconds),
        }),
    )
}

/// Writes truncation.csv into `<out>/tables`: one row per dataset, layout, L and batch norm.
pub fn write_truncation(out: &Path, rows: &[TruncationRow]) -> Result<()> {
    #[derive(Serialize)]
    struct Row<'a> {
        dataset: &'a str,
        trained_as: Layout,
        evaluated_as: Layout,
        layers: usize,
        batchnorm: bool,
        runs: usize,
        mean_val_loss: f64,
        mean_rearranged_val_loss: f64,
        loss_ratio_median: Option<f64>,
        loss_ratio_ci_low: Option<f64>,
        loss_ratio_ci_high: Option<f64>,
        mean_val_acc: f64,
        mean_rearranged_val_acc: f64,
    }
    let path = out.join("tables").join("truncation.csv");
    write_rows(
        &path,
        rows.iter().map(|r| Row {
            dataset: &r.dataset,
            trained_as: r.layout,
            evaluated_as: crate::train::truncation_of(r.layout),
            layers: r.layers,
            batchnorm: r.batchnorm,
            runs: r.n,
            mean_val_loss: r.mean_val_loss,
            mean_rearranged_val_loss: r.mean_truncated_val_loss,
            loss_ratio_median: r.loss_ratio.map(|e| e.median),
            loss_ratio_ci_low: r.loss_ratio.and_then(|e| e.ci).map(|c| c.0),
            loss_ratio_ci_high: r.loss_ratio.and_then(|e| e.ci).map(|c| c.1),
            mean_val_acc: r.mean_val_acc,
            mean_rearranged_val_acc: r.mean_truncated_val_acc,
        }),
    )
}

/// Writes stages.csv into `<out>/tables`: one row per dataset, L and number of stages D.
pub fn write_stages(out: &Path, cells: &[StageCell]) -> Result<()> {
    #[derive(Serialize)]
    struct Row<'a> {
        dataset: &'a str,
        layers: usize,
        stages: usize,
        arrangement: String,
        families: usize,
        val_loss_mean: Option<f64>,
        val_loss_ci_low: Option<f64>,
        val_loss_ci_high: Option<f64>,
        val_loss_median: f64,
        vs_sequential_median: Option<f64>,
        vs_sequential_ci_low: Option<f64>,
        vs_sequential_ci_high: Option<f64>,
    }
    let path = out.join("tables").join("stages.csv");
    write_rows(
        &path,
        cells.iter().map(|c| Row {
            dataset: &c.dataset,
            layers: c.layers,
            stages: c.stages,
            arrangement: super::staged::arrangement(c.stages, c.layers),
            families: c.n,
            val_loss_mean: c.val_loss.map(|e| e.mean),
            val_loss_ci_low: c.val_loss.and_then(|e| e.ci).map(|c| c.0),
            val_loss_ci_high: c.val_loss.and_then(|e| e.ci).map(|c| c.1),
            val_loss_median: c.median,
            vs_sequential_median: c.vs_sequential.map(|e| e.median),
            vs_sequential_ci_low: c.vs_sequential.and_then(|e| e.ci).map(|c| c.0),
            vs_sequential_ci_high: c.vs_sequential.and_then(|e| e.ci).map(|c| c.1),
        }),
    )
}

/// One CSV file of serde rows; the header is derived from the field names.
pub(super) fn write_rows<T: Serialize>(path: &Path, rows: impl Iterator<Item = T>) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    for row in rows {
        w.serialize(row)?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

#[derive(Serialize)]
struct Table2Csv<'a> {
    dataset: &'a str,
    layout: Layout,
    q_bin: &'static str,
    n: usize,
    diverged: usize,
    train_loss_mean: Option<f64>,
    train_loss_ci_low: Option<f64>,
    train_loss_ci_high: Option<f64>,
    val_loss_mean: Option<f64>,
    val_loss_ci_low: Option<f64>,
    val_loss_ci_high: Option<f64>,
    paper_train_loss: Option<f64>,
    paper_val_loss: Option<f64>,
}

impl<'a> Table2Csv<'a> {
    fn of(c: &'a analysis::Table2Cell) -> Table2Csv<'a> {
        let paper = analysis::paper_value(&c.dataset, c.layout, c.bin);
        let ci = |e: Option<analysis::Estimate>| e.and_then(|e| e.ci);
        Table2Csv {
            dataset: &c.cohort,
            layout: c.layout,
            q_bin: Q_BINS[c.bin],
            n: c.n,
            diverged: c.diverged,
            train_loss_mean: c.train_loss.map(|e| e.mean),
            train_loss_ci_low: ci(c.train_loss).map(|c| c.0),
            train_loss_ci_high: ci(c.train_loss).map(|c| c.1),
            val_loss_mean: c.val_loss.map(|e| e.mean),
            val_loss_ci_low: ci(c.val_loss).map(|c| c.0),
            val_loss_ci_high: ci(c.val_loss).map(|c| c.1),
            paper_train_loss: paper.map(|p| p.0),
            paper_val_loss: paper.map(|p| p.1),
        }
    }
}

#[derive(Serialize)]
struct PairedCsv<'a> {
    group: &'a str,
    metric: &'static str,
    n: usize,
    configurations: usize,
    median_delta: f64,
    median_ci_low: Option<f64>,
    median_ci_high: Option<f64>,
    mean_delta: f64,
    parallel_win_rate: f64,
    wilcoxon_statistic: Option<f64>,
    wilcoxon_p: Option<f64>,
}

impl<'a> PairedCsv<'a> {
    fn of(s: &'a analysis::PairedStat) -> PairedCsv<'a> {
        PairedCsv {
            group: &s.group,
            metric: s.metric.name(),
            n: s.n,
            configurations: s.configurations,
            median_delta: s.median,
            median_ci_low: s.ci_median.map(|c| c.0),
            median_ci_high: s.ci_median.map(|c| c.1),
            mean_delta: s.mean,
            parallel_win_rate: s.win_rate,
            wilcoxon_statistic: s.wilcoxon.map(|w| w.statistic),
            wilcoxon_p: s.wilcoxon.map(|w| w.p_value),
        }
    }
}

#[derive(Serialize)]
struct DivergedCsv<'a> {
    dataset: &'a str,
    ended_pairs: usize,
    sequential_only: usize,
    parallel_only: usize,
    both: usize,
}

/// One row of `equivalence.csv`; the header is derived from the field names.
#[derive(Serialize)]
struct EquivalenceCsv<'a> {
    group: &'a str,
    quantity: &'a str,
    margin: f64,
    n: usize,
    pairs: usize,
    mean_delta: Option<f64>,
    sd_delta: Option<f64>,
    ci90_low: Option<f64>,
    ci90_high: Option<f64>,
    median_delta: f64,
    tost_p: Option<f64>,
    ttest_p: Option<f64>,
    verdict: String,
    n_needed: Option<usize>,
    median_abs_delta_layout: f64,
    median_abs_delta_seed_sequential: Option<f64>,
    seed_pairs_sequential: Option<usize>,
    median_abs_delta_seed_parallel: Option<f64>,
    seed_pairs_parallel: Option<usize>,
}

impl<'a> EquivalenceCsv<'a> {
    fn of(r: &'a EquivalenceRow) -> EquivalenceCsv<'a> {
        EquivalenceCsv {
            group: &r.group,
            quantity: r.quantity.name(),
            margin: r.margin,
            n: r.n,
            pairs: r.pairs,
            mean_delta: r.t.map(|t| t.mean),
            sd_delta: r.t.map(|t| t.sd),
            ci90_low: r.t.map(|t| t.ci90.0),
            ci90_high: r.t.map(|t| t.ci90.1),
            median_delta: r.median,
            tost_p: r.tost_p,
            ttest_p: r.t.map(|t| t.p_difference),
            verdict: format!("{:?}", r.verdict),
            n_needed: r.n_needed,
            median_abs_delta_layout: r.median_abs,
            median_abs_delta_seed_sequential: r.seeds.sequential.map(|s| s.0),
            seed_pairs_sequential: r.seeds.sequential.map(|s| s.1),
            median_abs_delta_seed_parallel: r.seeds.parallel.map(|s| s.0),
            seed_pairs_parallel: r.seeds.parallel.map(|s| s.1),
        }
    }
}
