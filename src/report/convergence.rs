//! Verdicts on converged nets: how the verdict moves with the training budget (the *budget
//! curve*: the mean Δ and its 90 % interval after every epoch, on the test set and on the
//! held-out split), the verdicts at each run's best held-out epoch, how runs stopped (and how
//! many hit their epoch cap still improving), and epochs and seconds to convergence per layout.
use std::collections::HashMap;

use super::analysis::{self, ByConfiguration, Configuration, Pair, fmt_signed};
use super::equivalence::{self, Margins, Verdict};
use super::stats;
use crate::model::Layout;
use crate::sweep::store::{EpochRow, RunRow};
use crate::train::EpochMetrics;
use crate::train::stopping::{Convergence, StopReason};

/// A share of runs that hit the cap still improving above which the report warns that its
/// verdicts are not about converged nets.
pub const STILL_IMPROVING_WARNING: f64 = 0.10;

/// The split a loss was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The official test set (the store's `val_*` columns).
    Test,
    /// The held-out part of the training set.
    Holdout,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Test => "test",
            Split::Holdout => "held-out",
        }
    }

    fn loss(self, m: &EpochMetrics) -> Option<f64> {
        match self {
            Split::Test => Some(m.val_loss),
            Split::Holdout => m.holdout_loss,
        }
        .filter(|x| x.is_finite())
    }
}

/// The verdict on one quantity over the configurations of one group: mean Δ with its 90 %
/// interval, tested against the margin as the report's verdicts are.
#[derive(Debug, Clone)]
pub struct Test {
    /// Configurations (one Δ each, the mean over its seeds).
    pub n: usize,
    pub pairs: usize,
    pub mean: f64,
    pub ci90: (f64, f64),
    pub verdict: Verdict,
}

impl Test {
    /// The test of Δs keyed by configuration; `None` with fewer than two configurations or no
    /// spread.
    fn of(keyed: &ByConfiguration, margin: f64, lower_is_better: bool) -> Option<Test> {
        let d = analysis::configuration_means(keyed);
        let t = stats::paired_t(&d)?;
        let (verdict, _) = equivalence::verdict(Some(&t), margin, lower_is_better);
        Some(Test {
            n: d.len(),
            pairs: keyed.len(),
            mean: t.mean,
            ci90: t.ci90,
            verdict,
        })
    }
}

/// One point of a budget curve: the relative Δ of the loss after `epoch` epochs.
#[derive(Debug, Clone)]
pub struct BudgetPoint {
    pub dataset: String,
    pub split: Split,
    pub epoch: usize,
    pub test: Test,
}

/// Each run's epochs, by run id, in epoch order.
pub fn epochs_by_run(epochs: &[EpochRow]) -> HashMap<&str, Vec<&EpochMetrics>> {
    let mut by_run: HashMap<&str, Vec<&EpochMetrics>> = HashMap::new();
    for e in epochs {
        by_run
            .entry(e.run_id.as_str())
            .or_default()
            .push(&e.metrics);
    }
    for list in by_run.values_mut() {
        list.sort_by_key(|m| m.epoch);
    }
    by_run
}

/// The budget curves: per dataset and split, the verdict on the relative Δ of the loss after
/// every epoch, over the pairs whose runs both trained that epoch (with a stopping rule, fewer
/// and fewer: the curve then describes the pairs still training), as long as at least two
/// configurations have it.
pub fn budget_curve(
    pairs: &[Pair],
    epochs: &HashMap<&str, Vec<&EpochMetrics>>,
    margin: f64,
) -> Vec<BudgetPoint> {
    let fixed: Vec<Pair> = pairs
        .iter()
        .filter(|p| p.both_have_results())
        .cloned()
        .collect();
    let mut points = Vec::new();
    for (dataset, members) in analysis::by_cohort(&fixed).into_iter() {
        let last = members
            .iter()
            .filter_map(|p| epochs.get(p.seq.id.as_str())?.last().map(|m| m.epoch))
            .max()
            .unwrap_or(0);
        for split in [Split::Test, Split::Holdout] {
            for epoch in 1..=last {
                let at = |r: &RunRow| {
                    let m = epochs
                        .get(r.id.as_str())?
                        .iter()
                        .find(|m| m.epoch == epoch)?;
                    split.loss(m)
                };
                let keyed: Vec<(Configuration, f64)> = members
                    .iter()
                    .filter_map(|p| {
                        let (s, q) = (at(p.seq)?, at(p.par)?);
                        Some((p.configuration, (q - s) / s))
                    })
                    .collect();
                if let Some(test) = Test::of(&keyed, margin, true) {
                    points.push(BudgetPoint {
                        dataset: dataset.clone(),
                        split,
                        epoch,
                        test,
                    });
                }
            }
        }
    }
    points
}

/// What is compared at each run's best held-out epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtBest {
    TestLoss,
    HoldoutLoss,
    TestAccuracy,
}

impl AtBest {
    pub const ALL: [AtBest; 3] = [AtBest::TestLoss, AtBest::HoldoutLoss, AtBest::TestAccuracy];

    pub fn name(self) -> &'static str {
        match self {
            AtBest::TestLoss => "test loss (relative)",
            AtBest::HoldoutLoss => "held-out loss (relative)",
            AtBest::TestAccuracy => "test accuracy (points)",
        }
    }

    /// Δ = parallel − sequential: relative for losses, in points for accuracy.
    fn delta(self, seq: &Convergence, par: &Convergence) -> f64 {
        match self {
            AtBest::TestLoss => (par.best_val_loss - seq.best_val_loss) / seq.best_val_loss,
            AtBest::HoldoutLoss => {
                (par.best_holdout_loss - seq.best_holdout_loss) / seq.best_holdout_loss
            }
            AtBest::TestAccuracy => 100.0 * (par.best_val_acc - seq.best_val_acc),
        }
    }

    pub fn margin(self, m: &Margins) -> f64 {
        match self {
            AtBest::TestAccuracy => m.val_acc_points,
            _ => m.val_loss,
        }
    }

    pub fn format(self, x: f64) -> String {
        match self {
            AtBest::TestAccuracy => format!("{} pt", fmt_signed(x)),
            _ => format!("{} %", fmt_signed(100.0 * x)),
        }
    }
}

/// The verdict of one dataset on one quantity at the runs' best held-out epochs.
#[derive(Debug, Clone)]
pub struct BestRow {
    pub dataset: String,
    pub quantity: AtBest,
    pub margin: f64,
    pub test: Test,
}

/// Per dataset, the verdicts at each run's best held-out epoch, over the pairs whose runs both
/// recorded one.
pub fn at_best_epoch(pairs: &[Pair], margins: &Margins) -> Vec<BestRow> {
    let mut rows = Vec::new();
    for (dataset, members) in analysis::by_cohort(pairs).into_iter() {
        for quantity in AtBest::ALL {
            let keyed: Vec<(Configuration, f64)> = members
                .iter()
                .filter(|p| p.both_have_results())
                .filter_map(|p| {
                    let (s, q) = (p.seq.convergence.as_ref()?, p.par.convergence.as_ref()?);
                    Some((p.configuration, quantity.delta(s, q)))
                })
                .collect();
            let margin = quantity.margin(margins);
            let lower_is_better = quantity != AtBest::TestAccuracy;
            if let Some(test) = Test::of(&keyed, margin, lower_is_better) {
                rows.push(BestRow {
                    dataset: dataset.clone(),
                    quantity,
                    margin,
                    test,
                });
            }
        }
    }
    rows
}

/// How the runs of one dataset and layout converged.
#[derive(Debug, Clone)]
pub struct StopRow {
    pub dataset: String,
    pub layout: Layout,
    /// Runs with a convergence record (ended, not diverged, with a held-out split).
    pub runs: usize,
    pub plateau: usize,
    pub target: usize,
    pub cap: usize,
    pub still_improving: usize,
    pub median_best_epoch: f64,
    pub median_epochs: f64,
    pub median_seconds_to_best: f64,
}

impl StopRow {
    pub fn still_improving_share(&self) -> f64 {
        self.still_improving as f64 / self.runs.max(1) as f64
    }
}

/// Runs of one dataset and layout with their convergence records.
type StopGroup<'a> = ((String, Layout), Vec<(&'a RunRow, &'a Convergence)>);

/// Per cohort ([`analysis::Cohorts`]) and layout, how the runs with a held-out split stopped.
pub fn stops(runs: &[RunRow]) -> Vec<StopRow> {
    let cohorts = analysis::Cohorts::of(runs);
    let mut groups: Vec<StopGroup> = Vec::new();
    for r in runs.iter().filter(|r| analysis::has_results(r)) {
        let Some(c) = &r.convergence else { continue };
        let key = (cohorts.label(&r.config), r.config.layout);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push((r, c)),
            None => groups.push((key, vec![(r, c)])),
        }
    }
    groups.sort_by(|a, b| (&a.0.0, a.0.1.to_string()).cmp(&(&b.0.0, b.0.1.to_string())));
    groups
        .into_iter()
        .map(|((dataset, layout), list)| {
            let count = |reason| list.iter().filter(|(_, c)| c.stop_reason == reason).count();
            let median_of = |f: &dyn Fn(&(&RunRow, &Convergence)) -> f64| {
                stats::median(&list.iter().map(f).collect::<Vec<_>>())
            };
            StopRow {
                dataset,
                layout,
                runs: list.len(),
                plateau: count(StopReason::Plateau),
                target: count(StopReason::Target),
                cap: count(StopReason::Cap),
                still_improving: list.iter().filter(|(_, c)| c.still_improving).count(),
                median_best_epoch: median_of(&|(_, c)| c.best_epoch as f64),
                median_epochs: median_of(&|(r, _)| r.epochs_recorded as f64),
                median_seconds_to_best: median_of(&|(_, c)| c.seconds_to_best),
            }
        })
        .collect()
}

/// A dataset's paired ratio parallel ÷ sequential: median, its 95 % interval, n pairs.
#[derive(Debug, Clone)]
pub struct Ratio {
    pub dataset: String,
    pub median: f64,
    pub ci: Option<(f64, f64)>,
    pub n: usize,
}

/// Per dataset, the paired ratio parallel ÷ sequential of the training seconds to the best
/// held-out epoch: median with its 95 % interval (resampling configurations), and n pairs.
pub fn seconds_to_best_ratio(pairs: &[Pair]) -> Vec<Ratio> {
    analysis::by_cohort(pairs)
        .into_iter()
        .filter_map(|(dataset, members)| {
            let (ratios, keys): (Vec<f64>, Vec<Configuration>) = members
                .iter()
                .filter(|p| p.both_have_results())
                .filter_map(|p| {
                    let (s, q) = (p.seq.convergence.as_ref()?, p.par.convergence.as_ref()?);
                    let ratio = q.seconds_to_best / s.seconds_to_best;
                    ratio.is_finite().then_some((ratio, p.configuration))
                })
                .unzip();
            (!ratios.is_empty()).then(|| Ratio {
                ci: stats::cluster_bootstrap_ci(&ratios, &keys, stats::median),
                median: stats::median(&ratios),
                n: ratios.len(),
                dataset,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_losses_skip_missing_and_non_finite_values() {
        let mut m = EpochMetrics {
            epoch: 1,
            train_loss: 1.0,
            val_loss: 0.5,
            val_acc: 0.9,
            holdout_loss: None,
            holdout_acc: None,
            seconds: 1.0,
            images_per_second: 1.0,
        };
        assert_eq!(Split::Test.loss(&m), Some(0.5));
        assert_eq!(Split::Holdout.loss(&m), None);
        m.holdout_loss = Some(f64::NAN);
        assert_eq!(Split::Holdout.loss(&m), None);
    }
}
