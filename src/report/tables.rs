//! The report's tables as CSV files under `tables/`.
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::analysis::{self, Q_BINS};
use super::equivalence::EquivalenceRow;

pub fn write_csvs(
    out: &Path,
    cells: &[analysis::Table2Cell],
    paired: &[analysis::PairedStat],
    diverged: &[(String, usize, usize, usize, usize)],
    verdicts: &[EquivalenceRow],
) -> Result<()> {
    let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    let mut w = csv::Writer::from_path(out.join("tables/table2.csv"))?;
    w.write_record([
        "dataset",
        "layout",
        "q_bin",
        "n",
        "diverged",
        "train_loss_mean",
        "train_loss_ci_low",
        "train_loss_ci_high",
        "val_loss_mean",
        "val_loss_ci_low",
        "val_loss_ci_high",
        "paper_train_loss",
        "paper_val_loss",
    ])?;
    for c in cells {
        let paper = analysis::paper_value(&c.dataset, c.layout, c.bin);
        let est = |e: Option<analysis::Estimate>| {
            [
                opt(e.map(|e| e.mean)),
                opt(e.and_then(|e| e.ci).map(|c| c.0)),
                opt(e.and_then(|e| e.ci).map(|c| c.1)),
            ]
        };
        let [tm, tl, th] = est(c.train_loss);
        let [vm, vl, vh] = est(c.val_loss);
        w.write_record([
            c.dataset.clone(),
            c.layout.to_string(),
            Q_BINS[c.bin].into(),
            c.n.to_string(),
            c.diverged.to_string(),
            tm,
            tl,
            th,
            vm,
            vl,
            vh,
            opt(paper.map(|p| p.0)),
            opt(paper.map(|p| p.1)),
        ])?;
    }
    w.flush()?;
    let mut w = csv::Writer::from_path(out.join("tables/paired.csv"))?;
    w.write_record([
        "group",
        "metric",
        "n",
        "median_delta",
        "median_ci_low",
        "median_ci_high",
        "mean_delta",
        "parallel_win_rate",
        "wilcoxon_statistic",
        "wilcoxon_p",
    ])?;
    for s in paired {
        w.write_record([
            s.group.clone(),
            s.metric.name().into(),
            s.n.to_string(),
            s.median.to_string(),
            opt(s.ci_median.map(|c| c.0)),
            opt(s.ci_median.map(|c| c.1)),
            s.mean.to_string(),
            s.win_rate.to_string(),
            opt(s.wilcoxon.map(|w| w.statistic)),
            opt(s.wilcoxon.map(|w| w.p_value)),
        ])?;
    }
    w.flush()?;
    let mut w = csv::Writer::from_path(out.join("tables/diverged.csv"))?;
    w.write_record([
        "dataset",
        "ended_pairs",
        "sequential_only",
        "parallel_only",
        "both",
    ])?;
    for (d, s, p, b, n) in diverged {
        w.write_record([
            d.clone(),
            n.to_string(),
            s.to_string(),
            p.to_string(),
            b.to_string(),
        ])?;
    }
    w.flush()?;
    write_equivalence(&out.join("tables/equivalence.csv"), verdicts)
}

/// One row of `equivalence.csv`; the header is derived from the field names.
#[derive(Serialize)]
struct EquivalenceCsv<'a> {
    group: &'a str,
    quantity: &'a str,
    margin: f64,
    n: usize,
    mean_delta: Option<f64>,
    sd_delta: Option<f64>,
    ci90_low: Option<f64>,
    ci90_high: Option<f64>,
    median_delta: f64,
    tost_p: Option<f64>,
    ttest_p: Option<f64>,
    verdict: String,
    pairs_needed: Option<usize>,
    median_abs_delta_layout: f64,
    median_abs_delta_seed_sequential: Option<f64>,
    seed_pairs_sequential: Option<usize>,
    median_abs_delta_seed_parallel: Option<f64>,
    seed_pairs_parallel: Option<usize>,
}

fn write_equivalence(path: &Path, rows: &[EquivalenceRow]) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    for r in rows {
        w.serialize(EquivalenceCsv {
            group: &r.group,
            quantity: r.quantity.name(),
            margin: r.margin,
            n: r.n,
            mean_delta: r.t.map(|t| t.mean),
            sd_delta: r.t.map(|t| t.sd),
            ci90_low: r.t.map(|t| t.ci90.0),
            ci90_high: r.t.map(|t| t.ci90.1),
            median_delta: r.median,
            tost_p: r.tost_p,
            ttest_p: r.t.map(|t| t.p_difference),
            verdict: format!("{:?}", r.verdict),
            pairs_needed: r.pairs_needed,
            median_abs_delta_layout: r.median_abs,
            median_abs_delta_seed_sequential: r.seeds.sequential.map(|s| s.0),
            seed_pairs_sequential: r.seeds.sequential.map(|s| s.1),
            median_abs_delta_seed_parallel: r.seeds.parallel.map(|s| s.0),
            seed_pairs_parallel: r.seeds.parallel.map(|s| s.1),
        })?;
    }
    w.flush()?;
    Ok(())
}
