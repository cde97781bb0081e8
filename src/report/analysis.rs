//! What the report computes from the runs: the paper's Table 2 per Q bin, paired comparisons of
//! the layouts, diverged counts and the plain-words conclusion.
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};

use super::stats::{self, Wilcoxon};
use crate::model::Layout;
pub use crate::model::{Q_BINS, Q_EDGES, q_bin};
use crate::sweep::store::{RunRow, RunStatus};
use crate::train::settings::RunConfig;

/// Table 2 of the paper: mean (training loss, validation loss) per Q bin.
pub struct PaperRow {
    pub dataset: &'static str,
    pub layout: Layout,
    pub bins: [(f64, f64); 4],
}

pub const PAPER_TABLE_2: [PaperRow; 4] = [
    PaperRow {
        dataset: "mnist",
        layout: Layout::Sequential,
        bins: [
            (0.00013, 0.05201),
            (0.01702, 0.12449),
            (0.03620, 0.11743),
            (0.11246, 0.13550),
        ],
    },
    PaperRow {
        dataset: "mnist",
        layout: Layout::Parallel,
        bins: [
            (0.00009, 0.07551),
            (0.02679, 0.11468),
            (0.05238, 0.11467),
            (0.13310, 0.14900),
        ],
    },
    PaperRow {
        dataset: "cifar10",
        layout: Layout::Sequential,
        bins: [
            (0.25326, 2.03107),
            (0.72510, 1.31691),
            (1.07333, 1.34721),
            (1.58608, 1.65354),
        ],
    },
    PaperRow {
        dataset: "cifar10",
        layout: Layout::Parallel,
        bins: [
            (0.52658, 1.32386),
            (0.88701, 1.24884),
            (1.17085, 1.34227),
            (1.63449, 1.68879),
        ],
    },
];

pub fn paper_value(dataset: &str, layout: Layout, bin: usize) -> Option<(f64, f64)> {
    PAPER_TABLE_2
        .iter()
        .find(|r| r.dataset == dataset && r.layout == layout)
        .map(|r| r.bins[bin])
}

/// A run's configuration without its seed and layout. The seeds of one configuration are not
/// independent evidence, so the report's intervals resample configurations and its tests take
/// one value per configuration. A 64-bit hash of the configuration's JSON: equal configurations
/// have equal keys, and two of a million configurations share one by chance with probability
/// under 10⁻⁷; a number, so that grouping 100,000s of runs compares numbers, not documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Configuration(u64);

#[cfg(test)]
impl Configuration {
    /// Configuration number `n`, for tests.
    pub fn numbered(n: u64) -> Configuration {
        Configuration(n)
    }
}

/// The [`Configuration`] of run `r`; a [`Pair`] holds its own, computed once.
pub fn configuration_key(r: &RunRow) -> Configuration {
    /// Hashes what serde_json writes, without building the document.
    struct Hashing(DefaultHasher);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (c, _) = within_configuration(&r.config);
    let mut hashing = Hashing(DefaultHasher::new());
    // Writing into a hasher cannot fail, and a RunConfig always serialises.
    let _ = serde_json::to_writer(&mut hashing, &c);
    Configuration(hashing.0.finish())
}

/// The settings in which the runs of one configuration differ (the seed and the layout): `config`
/// with them set to their defaults, and their names and values in `config`.
pub fn within_configuration(config: &RunConfig) -> (RunConfig, [(&'static str, String); 2]) {
    let varied = [
        ("seed", config.seed.to_string()),
        ("layout", config.layout.to_string()),
    ];
    let fixed = RunConfig {
        seed: 0,
        layout: Layout::Sequential,
        ..config.clone()
    };
    (fixed, varied)
}

/// Values, each with the configuration (a [`configuration_key`]) it came from.
pub type ByConfiguration = [(Configuration, f64)];

fn split(xs: &ByConfiguration) -> (Vec<f64>, Vec<Configuration>) {
    xs.iter().map(|&(k, x)| (x, k)).unzip()
}

/// A mean with its 95% bootstrap interval (resampling configurations).
#[derive(Debug, Clone, Copy)]
pub struct Estimate {
    pub mean: f64,
    pub ci: Option<(f64, f64)>,
}

impl Estimate {
    pub fn of(xs: &ByConfiguration) -> Option<Estimate> {
        let (values, clusters) = split(xs);
        Estimate::each(&[&values], &clusters)[0]
    }

    /// The estimate of each of `columns`, values of the configurations `clusters` (one bootstrap
    /// for all: [`stats::cluster_bootstrap_means_ci`]).
    pub fn each(columns: &[&[f64]], clusters: &[Configuration]) -> Vec<Option<Estimate>> {
        if clusters.is_empty() {
            return vec![None; columns.len()];
        }
        let cis = stats::cluster_bootstrap_means_ci(columns, clusters);
        columns
            .iter()
            .enumerate()
            .map(|(i, xs)| {
                Some(Estimate {
                    mean: stats::mean(xs),
                    ci: cis.as_ref().map(|cis| cis[i]),
                })
            })
            .collect()
    }
}

/// A median with its 95 % bootstrap interval (resampling configurations), over n values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MedianEstimate {
    pub median: f64,
    pub ci: Option<(f64, f64)>,
    pub n: usize,
}

impl MedianEstimate {
    pub fn of(xs: &ByConfiguration) -> Option<MedianEstimate> {
        let (values, clusters) = split(xs);
        (!xs.is_empty()).then(|| MedianEstimate {
            median: stats::median(&values),
            ci: stats::cluster_bootstrap_ci(&values, &clusters, stats::median),
            n: xs.len(),
        })
    }

    /// `1.23 [1.10, 1.40]` with `digits` decimals (no interval for one value); `–` for none.
    pub fn text(e: Option<MedianEstimate>, digits: usize) -> String {
        match e {
            Some(MedianEstimate {
                median,
                ci: Some((lo, hi)),
                ..
            }) => format!("{median:.digits$} [{lo:.digits$}, {hi:.digits$}]"),
            Some(e) => format!("{:.digits$}", e.median),
            None => "–".into(),
        }
    }
}

/// One cell of Table 2: the finished runs of one cohort ([`Cohorts`]), layout and Q bin.
#[derive(Debug, Clone)]
pub struct Table2Cell {
    pub cohort: String,
    /// The cohort's dataset (the paper's values are per dataset).
    pub dataset: String,
    pub layout: Layout,
    pub bin: usize,
    pub n: usize,
    pub diverged: usize,
    pub train_loss: Option<Estimate>,
    pub val_loss: Option<Estimate>,
}

/// Done, with the final metrics a comparison needs: the runs the report compares. (A run
/// [`RunStatus::finished`] may have failed; one [`RunStatus::ended`] may have diverged.)
pub fn has_results(r: &RunRow) -> bool {
    r.status == RunStatus::Done
        && r.final_train_loss.is_some()
        && r.final_val_loss.is_some()
        && r.q.is_some()
}

/// What the report compares the layouts within: each dataset — or, where the runs were trained
/// with more than one optimizer, each dataset and optimizer (`mnist · lbfgs`). An optimizer is
/// its own training recipe (its rate, batch size, how far its runs get), and pooling recipes would
/// let one that trains badly sway a dataset's verdict and its Table 2 means; the *Optimizers*
/// section sets the optimizers against each other instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cohorts {
    by_optimizer: bool,
}

impl Cohorts {
    pub fn of(runs: &[RunRow]) -> Cohorts {
        let first = runs.first().map(|r| r.config.optimizer);
        Cohorts {
            by_optimizer: runs.iter().any(|r| Some(r.config.optimizer) != first),
        }
    }

    /// Whether the cohorts are datasets and optimizers, not datasets alone.
    pub fn by_optimizer(self) -> bool {
        self.by_optimizer
    }

    /// The cohort of a run's configuration: `mnist`, or `mnist · adam` by optimizer.
    pub fn label(self, c: &RunConfig) -> String {
        if self.by_optimizer {
            let optimizer = clap::ValueEnum::to_possible_value(&c.optimizer)
                .map_or_else(|| format!("{:?}", c.optimizer), |v| v.get_name().to_owned());
            format!("{} · {optimizer}", c.dataset)
        } else {
            c.dataset.clone()
        }
    }

    /// The cohorts of `runs`, sorted.
    pub fn names(self, runs: &[RunRow]) -> Vec<String> {
        let mut names: Vec<String> = runs.iter().map(|r| self.label(&r.config)).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The cohorts ([`Cohorts`]) of `runs`, sorted.
pub fn cohorts(runs: &[RunRow]) -> Vec<String> {
    Cohorts::of(runs).names(runs)
}

pub fn table2(runs: &[RunRow]) -> Vec<Table2Cell> {
    /// A cell's finished runs (configuration, training and validation loss), and diverged ones.
    #[derive(Default)]
    struct Runs {
        done: Vec<(Configuration, f64, f64)>,
        diverged: usize,
    }
    const LAYOUTS: [Layout; 2] = [Layout::Sequential, Layout::Parallel];
    let of = Cohorts::of(runs);
    let cohorts = of.names(runs);
    let mut dataset_of = vec![String::new(); cohorts.len()];
    let at = |d: usize, l: usize, bin: usize| (d * LAYOUTS.len() + l) * Q_BINS.len() + bin;
    let mut cells: Vec<Runs> = (0..at(cohorts.len(), 0, 0))
        .map(|_| Runs::default())
        .collect();
    for r in runs {
        let Ok(d) = cohorts.binary_search(&of.label(&r.config)) else {
            continue;
        };
        dataset_of[d].clone_from(&r.config.dataset);
        let (Some(l), Some(q)) = (LAYOUTS.iter().position(|&l| l == r.config.layout), r.q) else {
            continue;
        };
        let cell = &mut cells[at(d, l, q_bin(q))];
        if r.status == RunStatus::Diverged {
            cell.diverged += 1;
        } else if let (true, Some(train), Some(val)) =
            (has_results(r), r.final_train_loss, r.final_val_loss)
        {
            cell.done.push((configuration_key(r), train, val));
        }
    }
    let names = cohorts.iter().zip(&dataset_of).flat_map(|d| {
        LAYOUTS
            .iter()
            .flat_map(move |&l| (0..Q_BINS.len()).map(move |bin| (d, l, bin)))
    });
    let cells: Vec<_> = names.zip(cells).collect();
    stats::map_on_every_core(&cells, |(((cohort, dataset), layout, bin), runs)| {
        let clusters: Vec<Configuration> = runs.done.iter().map(|r| r.0).collect();
        let train: Vec<f64> = runs.done.iter().map(|r| r.1).collect();
        let val: Vec<f64> = runs.done.iter().map(|r| r.2).collect();
        let estimates = Estimate::each(&[&train, &val], &clusters);
        Table2Cell {
            cohort: (*cohort).clone(),
            dataset: (*dataset).clone(),
            layout: *layout,
            bin: *bin,
            n: runs.done.len(),
            diverged: runs.diverged,
            train_loss: estimates[0],
            val_loss: estimates[1],
        }
    })
}

/// The sequential and parallel runs of one configuration.
#[derive(Debug, Clone)]
pub struct Pair<'a> {
    pub seq: &'a RunRow,
    pub par: &'a RunRow,
    /// Of both runs ([`configuration_key`]).
    pub configuration: Configuration,
    /// What the pair is compared within ([`Cohorts`]).
    pub cohort: String,
}

impl Pair<'_> {
    pub fn cohort(&self) -> &str {
        &self.cohort
    }
    pub fn q(&self) -> f64 {
        self.seq.q.unwrap_or(f64::NAN)
    }
    pub fn both_have_results(&self) -> bool {
        has_results(self.seq) && has_results(self.par)
    }
    /// Whether both layouts are one network: the same number of stages (only at L = 1).
    pub fn same_network(&self) -> bool {
        let stages = |r: &RunRow| r.config.layout.stages(r.config.layers);
        stages(self.seq) == stages(self.par)
    }
}

/// The ended sequential/parallel pairs that compare two different networks. With one unit
/// (L = 1) both layouts are the same network, `x + F₁(x)`, trained identically, so Δ = 0 by
/// construction: such pairs say nothing about the layouts and are left out (counted by
/// [`compared_pairs`]).
pub fn pairs(runs: &[RunRow]) -> Vec<Pair<'_>> {
    compared_pairs(runs).0
}

/// [`pairs`], and how many ended pairs it leaves out because both layouts are the same network.
pub fn compared_pairs(runs: &[RunRow]) -> (Vec<Pair<'_>>, usize) {
    let (same, different): (Vec<Pair>, Vec<Pair>) =
        ended_pairs(runs).into_iter().partition(Pair::same_network);
    (different, same.len())
}

/// Pairs whose sequential and parallel runs have both ended (done or diverged), in run order.
/// Staged runs of the same family (pair id) are not part of a pair.
fn ended_pairs<'a>(runs: &'a [RunRow]) -> Vec<Pair<'a>> {
    let mut by_pair: BTreeMap<&str, (Option<&RunRow>, Option<&RunRow>)> = BTreeMap::new();
    for r in runs {
        let slot = by_pair.entry(&r.pair_id).or_default();
        match r.config.layout {
            Layout::Sequential => slot.0 = Some(r),
            Layout::Parallel => slot.1 = Some(r),
            Layout::Staged(_) => {}
        }
    }
    let cohorts = Cohorts::of(runs);
    let mut pairs: Vec<Pair> = by_pair
        .into_values()
        .filter_map(|(s, p)| Some((s?, p?)))
        .filter(|(s, p)| ended(s) && ended(p))
        .map(|(seq, par)| Pair {
            seq,
            par,
            configuration: configuration_key(seq),
            cohort: cohorts.label(&seq.config),
        })
        .collect();
    pairs.sort_by(|a, b| {
        (a.cohort(), a.seq.config.layers, a.seq.id.as_str()).cmp(&(
            b.cohort(),
            b.seq.config.layers,
            b.seq.id.as_str(),
        ))
    });
    pairs
}

fn ended(r: &RunRow) -> bool {
    r.status.ended()
}

/// A per-pair quantity compared between the layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    ValLoss,
    TrainLoss,
    ValAcc,
    WallTime,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::ValLoss,
        Metric::TrainLoss,
        Metric::ValAcc,
        Metric::WallTime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::ValLoss => "val loss",
            Metric::TrainLoss => "train loss",
            Metric::ValAcc => "val accuracy",
            Metric::WallTime => "wall time (s)",
        }
    }

    pub fn value(self, r: &RunRow) -> Option<f64> {
        match self {
            Metric::ValLoss => r.final_val_loss,
            Metric::TrainLoss => r.final_train_loss,
            Metric::ValAcc => r.final_val_acc,
            Metric::WallTime => r.total_seconds,
        }
    }

    /// Whether a smaller value is better (losses, time) or a larger one (accuracy).
    pub fn lower_is_better(self) -> bool {
        self != Metric::ValAcc
    }
}

/// Δ = parallel − sequential of one metric over a group of pairs.
#[derive(Debug, Clone)]
pub struct PairedStat {
    pub group: String,
    pub metric: Metric,
    /// Pairs.
    pub n: usize,
    /// Configurations the pairs belong to (one per pair with one seed each).
    pub configurations: usize,
    pub median: f64,
    pub mean: f64,
    /// 95% bootstrap interval of the median, resampling configurations.
    pub ci_median: Option<(f64, f64)>,
    /// Fraction of pairs in which the parallel layout is better.
    pub win_rate: f64,
    /// On the configurations' mean Δ.
    pub wilcoxon: Option<Wilcoxon>,
}

/// Per finished pair, its configuration and Δ = parallel − sequential of `metric`.
pub fn deltas(pairs: &[&Pair], metric: Metric) -> Vec<(Configuration, f64)> {
    pairs
        .iter()
        .filter(|p| p.both_have_results())
        .filter_map(|p| {
            let d = metric.value(p.par)? - metric.value(p.seq)?;
            Some((p.configuration, d))
        })
        .collect()
}

/// The mean of each configuration's values, configurations in order of first appearance.
pub fn configuration_means(xs: &ByConfiguration) -> Vec<f64> {
    let (values, clusters) = split(xs);
    stats::grouped(&values, &clusters)
        .iter()
        .map(|g| stats::mean(g))
        .collect()
}

pub fn paired_stat(group: &str, pairs: &[&Pair], metric: Metric) -> Option<PairedStat> {
    let keyed = deltas(pairs, metric);
    if keyed.is_empty() {
        return None;
    }
    let (d, clusters) = split(&keyed);
    let wins = d
        .iter()
        .filter(|&&x| {
            if metric.lower_is_better() {
                x < 0.0
            } else {
                x > 0.0
            }
        })
        .count();
    let per_configuration = configuration_means(&keyed);
    Some(PairedStat {
        group: group.to_owned(),
        metric,
        n: d.len(),
        configurations: per_configuration.len(),
        median: stats::median(&d),
        mean: stats::mean(&d),
        ci_median: stats::cluster_bootstrap_ci(&d, &clusters, stats::median),
        win_rate: wins as f64 / d.len() as f64,
        wilcoxon: stats::wilcoxon(&per_configuration),
    })
}

/// The groups the report compares in: per cohort ([`Cohorts`]: a dataset, or a dataset and
/// optimizer), per cohort and Q bin, and per cohort and number of layers (named e.g. `mnist`,
/// `mnist · Q [1,3)`, `mnist · L=4`).
pub fn groups<'a, 'p>(pairs: &'a [Pair<'p>]) -> Vec<(String, Vec<&'a Pair<'p>>)> {
    let mut groups = Vec::new();
    for (cohort, of_cohort) in by_cohort(pairs) {
        groups.push((cohort.clone(), of_cohort.clone()));
        for (bin, label) in Q_BINS.iter().enumerate() {
            let g: Vec<&Pair> = of_cohort
                .iter()
                .copied()
                .filter(|p| q_bin(p.q()) == bin)
                .collect();
            groups.push((format!("{cohort} · Q {label}"), g));
        }
        let mut layers: Vec<usize> = of_cohort.iter().map(|p| p.seq.config.layers).collect();
        layers.sort();
        layers.dedup();
        for l in layers {
            let g: Vec<&Pair> = of_cohort
                .iter()
                .copied()
                .filter(|p| p.seq.config.layers == l)
                .collect();
            groups.push((format!("{cohort} · L={l}"), g));
        }
    }
    groups
}

/// The pairs of each cohort ([`Cohorts`]), cohorts sorted.
pub fn by_cohort<'a, 'p>(pairs: &'a [Pair<'p>]) -> Vec<(String, Vec<&'a Pair<'p>>)> {
    let mut names: Vec<&str> = pairs.iter().map(|p| p.cohort()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|cohort| {
            let of: Vec<&Pair> = pairs.iter().filter(|p| p.cohort() == cohort).collect();
            (cohort.to_owned(), of)
        })
        .collect()
}

/// Paired statistics of every metric in every group.
pub fn paired_comparisons(pairs: &[Pair]) -> Vec<PairedStat> {
    groups(pairs)
        .iter()
        .flat_map(|(name, g)| {
            Metric::ALL
                .iter()
                .filter_map(move |&m| paired_stat(name, g, m))
        })
        .collect()
}

/// Pairs with a diverged run, per cohort: (cohort, sequential only, parallel only, both, pairs).
pub fn diverged_counts(pairs: &[Pair]) -> Vec<(String, usize, usize, usize, usize)> {
    let mut out: Vec<(String, usize, usize, usize, usize)> = Vec::new();
    for p in pairs {
        if out.last().is_none_or(|row| row.0 != p.cohort()) {
            out.push((p.cohort().to_owned(), 0, 0, 0, 0));
        }
        let row = out.last_mut().expect("pushed above");
        let (s, q) = (
            p.seq.status == RunStatus::Diverged,
            p.par.status == RunStatus::Diverged,
        );
        match (s, q) {
            (true, false) => row.1 += 1,
            (false, true) => row.2 += 1,
            (true, true) => row.3 += 1,
            _ => {}
        }
        row.4 += 1;
    }
    out
}

pub fn fmt_signed(x: f64) -> String {
    if x.abs() >= 0.01 || x == 0.0 {
        format!("{x:+.3}")
    } else {
        format!("{x:+.2e}")
    }
}

pub fn fmt_interval(ci: Option<(f64, f64)>) -> String {
    ci.map_or("[n/a]".into(), |(lo, hi)| {
        format!("[{}, {}]", fmt_signed(lo), fmt_signed(hi))
    })
}

pub fn fmt_p(p: f64) -> String {
    if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}
