//! The report's section on converged nets, its warning above the verdicts, its tables
//! (`budget.csv`, `best_epoch.csv`, `convergence.csv`) and the budget-curve figures, from the
//! analyses of [`super::convergence`].
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::analysis::Pair;
use super::convergence::{
    self, AtBest, BestRow, BudgetPoint, Ratio, STILL_IMPROVING_WARNING, StopRow, Test,
};
use super::equivalence::Margins;
use super::plots;
use super::render::Block;
use super::tables::write_rows;
use crate::sweep::store::{EpochRow, RunRow};

/// Everything the section shows.
pub struct Section<'a> {
    pub budget: Vec<BudgetPoint>,
    pub best: Vec<BestRow>,
    pub stops: Vec<StopRow>,
    pub seconds_ratio: Vec<Ratio>,
    pairs: &'a [Pair<'a>],
}

impl<'a> Section<'a> {
    pub fn of(
        runs: &[RunRow],
        pairs: &'a [Pair<'a>],
        epochs: &[EpochRow],
        margins: &Margins,
    ) -> Section<'a> {
        let by_run = convergence::epochs_by_run(epochs);
        Section {
            budget: convergence::budget_curve(pairs, &by_run, margins.val_loss),
            best: convergence::at_best_epoch(pairs, margins),
            stops: convergence::stops(runs),
            seconds_ratio: convergence::seconds_to_best_ratio(pairs),
            pairs,
        }
    }

    /// Nothing to show: no run had a held-out split.
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty() && self.budget.is_empty()
    }

    /// The warning to put above the verdicts when many runs hit their cap still improving.
    pub fn warning(&self) -> Option<Block> {
        let (runs, improving) = self
            .stops
            .iter()
            .fold((0, 0), |(r, i), s| (r + s.runs, i + s.still_improving));
        let share = improving as f64 / runs.max(1) as f64;
        (share > STILL_IMPROVING_WARNING).then(|| {
            Block::Paragraph(format!(
                "**Warning: {improving} of {runs} runs ({:.0} %) hit their epoch cap while their \
                 held-out loss was still improving.** Their final metrics are not those of \
                 converged nets, so the verdicts below are about a training budget, not about \
                 what each layout can reach: raise `epochs` (see *Converged nets*).",
                100.0 * share
            ))
        })
    }

    /// The section: text, tables and the budget-curve figures (drawn into `<out>/plots`).
    pub fn blocks(&self, out: &Path, cohorts: &[String], margins: &Margins) -> Result<Vec<Block>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        if self.stops.is_empty() {
            let mut blocks = vec![Block::Heading(
                "The verdict against the training budget".into(),
            )];
            blocks.extend(self.budget_blocks(out, cohorts, margins)?);
            return Ok(blocks);
        }
        let mut blocks = vec![
            Block::Heading("Converged nets".into()),
            Block::Paragraph(
                "These runs hold out part of their training set. The held-out split alone decides \
                 when a run stops and which epoch counts as its best; the official test set — \
                 which the columns and verdicts called *validation* elsewhere in this report \
                 measure — is only reported. With a stopping rule (`stop = plateau | target`) \
                 a run keeps the weights of its best held-out epoch, so its final metrics, and \
                 the verdicts above, are those of that epoch."
                    .into(),
            ),
        ];
        blocks.extend(self.stop_blocks());
        blocks.extend(self.best_blocks(margins));
        blocks.extend(self.budget_blocks(out, cohorts, margins)?);
        Ok(blocks)
    }

    fn stop_blocks(&self) -> Vec<Block> {
        if self.stops.is_empty() {
            return Vec::new();
        }
        let headers = [
            "dataset",
            "layout",
            "runs",
            "plateau",
            "target",
            "cap",
            "still improving at cap",
            "median best epoch",
            "median epochs trained",
            "median s to best",
        ];
        let rows = self
            .stops
            .iter()
            .map(|s| {
                vec![
                    s.dataset.clone(),
                    s.layout.to_string(),
                    s.runs.to_string(),
                    s.plateau.to_string(),
                    s.target.to_string(),
                    s.cap.to_string(),
                    format!(
                        "{} ({:.0} %)",
                        s.still_improving,
                        100.0 * s.still_improving_share()
                    ),
                    format!("{:.1}", s.median_best_epoch),
                    format!("{:.1}", s.median_epochs),
                    format!("{:.1}", s.median_seconds_to_best),
                ]
            })
            .collect();
        let mut blocks = vec![
            Block::Paragraph(
                "How the runs stopped (ended runs with a held-out split; diverged runs are counted \
                 in the sweep summary). *Still improving*: stopped by the cap although the \
                 held-out loss had improved by a relative `min_delta` within the last `patience` \
                 epochs. *s to best*: training seconds up to the end of the best epoch — the \
                 paper's \"may accelerate training\", measured at convergence."
                    .into(),
            ),
            Block::Table(headers.map(String::from).to_vec(), rows),
        ];
        if !self.seconds_ratio.is_empty() {
            let lines: Vec<String> = self
                .seconds_ratio
                .iter()
                .map(|r| {
                    let ci =
                        r.ci.map_or("–".into(), |(lo, hi)| format!("[{lo:.2}, {hi:.2}]"));
                    format!("{} {:.2} {ci} (n = {} pairs)", r.dataset, r.median, r.n)
                })
                .collect();
            blocks.push(Block::Paragraph(format!(
                "Training seconds to the best held-out epoch, parallel ÷ sequential (median of \
                 the pairs, 95 % interval resampling configurations): {}.",
                lines.join("; ")
            )));
        }
        blocks
    }

    fn best_blocks(&self, margins: &Margins) -> Vec<Block> {
        if self.best.is_empty() {
            return Vec::new();
        }
        let rows = self
            .best
            .iter()
            .map(|r| {
                vec![
                    r.dataset.clone(),
                    r.quantity.name().into(),
                    r.test.n.to_string(),
                    r.test.pairs.to_string(),
                    r.quantity.format(r.test.mean),
                    interval(r.quantity, r.test.ci90),
                    r.test.verdict.with_margin(&r.quantity.format(r.margin)),
                ]
            })
            .collect();
        let headers = [
            "dataset",
            "Δ at each run's best held-out epoch",
            "configurations",
            "pairs",
            "mean Δ",
            "90 % interval",
            "verdict",
        ];
        vec![
            Block::Paragraph(format!(
                "Verdicts at each run's best held-out epoch (chosen without the test set), tested \
                 as the verdicts above: one Δ per configuration, TOST against ±{} of the loss and \
                 ±{} accuracy points.",
                AtBest::TestLoss
                    .format(margins.val_loss)
                    .trim_start_matches('+'),
                AtBest::TestAccuracy
                    .format(margins.val_acc_points)
                    .trim_start_matches('+'),
            )),
            Block::Table(headers.map(String::from).to_vec(), rows),
        ]
    }

    fn budget_blocks(
        &self,
        out: &Path,
        cohorts: &[String],
        margins: &Margins,
    ) -> Result<Vec<Block>> {
        if self.budget.is_empty() {
            return Ok(Vec::new());
        }
        let mut blocks = vec![Block::Paragraph(format!(
            "**The verdict as a function of the training budget**: after every epoch, the mean \
             relative Δ of the loss with its 90 % interval, on the test set (and the held-out \
             split, where runs have one), against the ±{} margin, over the pairs whose runs both \
             trained that epoch — with a stopping rule, fewer and fewer as runs stop (see the \
             number of configurations), so late epochs describe the pairs still training. \
             Selected epochs below; every epoch in `tables/budget.csv`.",
            AtBest::TestLoss
                .format(margins.val_loss)
                .trim_start_matches('+')
        ))];
        let last = self.budget.iter().map(|p| p.epoch).max().unwrap_or(1);
        let shown: Vec<usize> = [1, 2, 4, 8, 16, 32, 64, 128]
            .into_iter()
            .filter(|&e| e < last)
            .chain([last])
            .collect();
        let rows = self
            .budget
            .iter()
            .filter(|p| shown.contains(&p.epoch))
            .map(|p| {
                vec![
                    p.dataset.clone(),
                    p.split.name().into(),
                    p.epoch.to_string(),
                    p.test.n.to_string(),
                    AtBest::TestLoss.format(p.test.mean),
                    interval(AtBest::TestLoss, p.test.ci90),
                    p.test
                        .verdict
                        .with_margin(&AtBest::TestLoss.format(margins.val_loss)),
                ]
            })
            .collect();
        let headers = [
            "dataset",
            "loss on",
            "epoch",
            "configurations",
            "mean Δ",
            "90 % interval",
            "verdict",
        ];
        blocks.push(Block::Table(headers.map(String::from).to_vec(), rows));
        let dir = out.join("plots");
        for d in cohorts {
            let curve: Vec<&BudgetPoint> = self.budget.iter().filter(|p| &p.dataset == d).collect();
            if curve.is_empty() {
                continue;
            }
            let name = plots::figure_name("budget", d);
            plots::budget_curve(&dir, &name, d, &curve, margins.val_loss)?;
            blocks.push(Block::Figure(
                name,
                format!(
                    "{d}: mean Δ of the loss (parallel − sequential, relative) after each epoch, \
                     with its 90 % interval, on the test set and the held-out split; the band is \
                     the equivalence margin."
                ),
            ));
        }
        Ok(blocks)
    }

    /// Writes budget.csv, best_epoch.csv and convergence.csv into `<out>/tables` (when the
    /// section has rows for them).
    pub fn write_tables(&self, out: &Path) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let dir = out.join("tables");
        write_rows(
            &dir.join("budget.csv"),
            self.budget
                .iter()
                .map(|p| TestCsv::of(&p.dataset, p.split.name(), p.epoch, &p.test)),
        )?;
        write_rows(
            &dir.join("best_epoch.csv"),
            self.best
                .iter()
                .map(|r| TestCsv::of(&r.dataset, r.quantity.name(), 0, &r.test)),
        )?;
        write_rows(
            &dir.join("convergence.csv"),
            self.pairs
                .iter()
                .flat_map(|p| [p.seq, p.par])
                .filter_map(StopCsv::of),
        )
    }
}

fn interval(q: AtBest, (lo, hi): (f64, f64)) -> String {
    format!("[{}, {}]", q.format(lo), q.format(hi))
}

/// One tested quantity as a CSV row (`epoch` 0 where it does not apply).
#[derive(Serialize)]
struct TestCsv<'a> {
    dataset: &'a str,
    quantity: &'a str,
    epoch: usize,
    configurations: usize,
    pairs: usize,
    mean: f64,
    ci90_low: f64,
    ci90_high: f64,
    verdict: &'static str,
}

impl<'a> TestCsv<'a> {
    fn of(dataset: &'a str, quantity: &'a str, epoch: usize, t: &Test) -> TestCsv<'a> {
        TestCsv {
            dataset,
            quantity,
            epoch,
            configurations: t.n,
            pairs: t.pairs,
            mean: t.mean,
            ci90_low: t.ci90.0,
            ci90_high: t.ci90.1,
            verdict: t.verdict.name(),
        }
    }
}

/// One run's convergence record as a CSV row.
#[derive(Serialize)]
struct StopCsv<'a> {
    run_id: &'a str,
    pair_id: &'a str,
    dataset: &'a str,
    layout: String,
    seed: u64,
    stop_reason: &'static str,
    epochs_trained: i64,
    best_epoch: usize,
    best_holdout_loss: f64,
    best_test_loss: f64,
    best_test_acc: f64,
    still_improving: bool,
    seconds_to_best: f64,
}

impl<'a> StopCsv<'a> {
    fn of(r: &'a RunRow) -> Option<StopCsv<'a>> {
        let c = r.convergence.as_ref()?;
        Some(StopCsv {
            run_id: &r.id,
            pair_id: &r.pair_id,
            dataset: &r.config.dataset,
            layout: r.config.layout.to_string(),
            seed: r.config.seed,
            stop_reason: c.stop_reason.as_str(),
            epochs_trained: r.epochs_recorded,
            best_epoch: c.best_epoch,
            best_holdout_loss: c.best_holdout_loss,
            best_test_loss: c.best_val_loss,
            best_test_acc: c.best_val_acc,
            still_improving: c.still_improving,
            seconds_to_best: c.seconds_to_best,
        })
    }
}
