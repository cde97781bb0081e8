//! The report's question, asked as the paper's claim is phrased — as an equivalence claim: per
//! group of pairs, is the parallel layout better, worse, or equivalent to the sequential one
//! within a stated margin, or can these pairs not tell? Paired t-based TOST at α = 0.05 beside the
//! t-test for a difference, and the seed-to-seed spread of the same configurations for scale.
use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{Context, Result, bail};

use super::analysis::{self, Configuration, Pair, fmt_p};
use super::stats::{self, ALPHA, PairedT};
use crate::model::Layout;
use crate::sweep::store::RunRow;

/// The equivalence margins: how large a difference between the layouts still counts as none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Margins {
    /// Of the validation loss, relative to the sequential run's (0.02 = ±2 %).
    pub val_loss: f64,
    /// Of the validation accuracy, in percentage points.
    pub val_acc_points: f64,
}

impl Default for Margins {
    fn default() -> Margins {
        Margins {
            val_loss: 0.02,
            val_acc_points: 0.5,
        }
    }
}

impl FromStr for Margins {
    type Err = anyhow::Error;

    /// `loss=2%`, `acc=0.5`, or both separated by a comma; a key left out keeps its default.
    fn from_str(text: &str) -> Result<Margins> {
        let mut margins = Margins::default();
        for part in text.split(',').map(str::trim) {
            let (key, value) = part.split_once('=').with_context(|| {
                format!("margin '{part}': expected key=value, e.g. loss=2% or acc=0.5")
            })?;
            let number = |v: &str| -> Result<f64> {
                let x: f64 = v
                    .trim()
                    .parse()
                    .with_context(|| format!("margin '{part}': '{v}' is not a number"))?;
                if !(x.is_finite() && x > 0.0) {
                    bail!("margin '{part}': must be a positive number");
                }
                Ok(x)
            };
            match key.trim() {
                "loss" => {
                    let Some(percent) = value.trim().strip_suffix('%') else {
                        bail!("margin '{part}': give the loss margin in percent, e.g. loss=2%");
                    };
                    margins.val_loss = number(percent)? / 100.0;
                }
                "acc" => margins.val_acc_points = number(value.trim_end_matches("pt"))?,
                other => bail!("margin '{part}': unknown key '{other}' (use loss or acc)"),
            }
        }
        Ok(margins)
    }
}

/// A per-pair difference the verdicts are drawn on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// (parallel − sequential) / sequential validation loss.
    RelValLoss,
    /// parallel − sequential validation accuracy, in points.
    ValAccPoints,
}

impl Quantity {
    pub const ALL: [Quantity; 2] = [Quantity::RelValLoss, Quantity::ValAccPoints];

    pub fn name(self) -> &'static str {
        match self {
            Quantity::RelValLoss => "val loss (relative)",
            Quantity::ValAccPoints => "val accuracy (points)",
        }
    }

    pub fn margin(self, m: &Margins) -> f64 {
        match self {
            Quantity::RelValLoss => m.val_loss,
            Quantity::ValAccPoints => m.val_acc_points,
        }
    }

    /// The difference of two runs: `b` against the reference `a`.
    fn between(self, a: &RunRow, b: &RunRow) -> Option<f64> {
        match self {
            Quantity::RelValLoss => {
                let (a, b) = (a.final_val_loss?, b.final_val_loss?);
                (a > 0.0).then(|| (b - a) / a)
            }
            Quantity::ValAccPoints => Some(100.0 * (b.final_val_acc? - a.final_val_acc?)),
        }
    }

    fn lower_is_better(self) -> bool {
        self == Quantity::RelValLoss
    }

    /// How forest plots draw it: the factor to the plotted unit and the axis label.
    pub fn plot_axis(self) -> (f64, &'static str) {
        match self {
            Quantity::RelValLoss => (100.0, "Δ validation loss, % of sequential"),
            Quantity::ValAccPoints => (1.0, "Δ validation accuracy, points"),
        }
    }

    /// A value in this quantity's unit: `+1.23 %` or `+0.40 pt`.
    pub fn format(self, x: f64) -> String {
        match self {
            Quantity::RelValLoss => format!("{:+.2} %", 100.0 * x),
            Quantity::ValAccPoints => format!("{x:+.2} pt"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    ParallelBetter,
    SequentialBetter,
    /// The 90 % interval lies inside ±margin (TOST p < α).
    Equivalent,
    Inconclusive,
}

impl Verdict {
    /// The verdict in words, as every table and sentence of the report says it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::ParallelBetter => "parallel better",
            Verdict::SequentialBetter => "sequential better",
            Verdict::Equivalent => "equivalent",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// [`Verdict::name`], an equivalence with its margin (`margin`: the margin as formatted, a
    /// leading sign dropped): "equivalent within ±2.0 %".
    pub fn with_margin(self, margin: &str) -> String {
        match self {
            Verdict::Equivalent => format!("equivalent within ±{}", margin.trim_start_matches('+')),
            other => other.name().into(),
        }
    }

    pub fn text(self, q: Quantity, margins: &Margins) -> String {
        self.with_margin(&q.format(q.margin(margins)))
    }
}

/// Seed-to-seed spread of the same configurations: median |difference| between two seeds of one
/// configuration in one layout, and how many such seed pairs there are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeedSpread {
    pub sequential: Option<(f64, usize)>,
    pub parallel: Option<(f64, usize)>,
}

/// One group's equivalence analysis of one quantity.
#[derive(Debug, Clone)]
pub struct EquivalenceRow {
    pub group: String,
    pub quantity: Quantity,
    pub margin: f64,
    /// The unit of the tests: configurations, each one Δ (the mean over its seeds' pairs), so
    /// that seeds of one configuration do not count as independent evidence.
    pub n: usize,
    /// The pairs behind them (one per configuration and seed).
    pub pairs: usize,
    /// Median of the configurations' Δ.
    pub median: f64,
    /// Median |Δ(layout)| of the pairs, to set beside the seed spread.
    pub median_abs: f64,
    pub t: Option<PairedT>,
    pub tost_p: Option<f64>,
    pub verdict: Verdict,
    /// Configurations in all (with as many seeds) that the observed mean and spread would need to
    /// settle the question.
    pub n_needed: Option<usize>,
    pub seeds: SeedSpread,
}

/// The verdict from the paired t statistics: equivalence first (TOST), then a difference
/// (two-sided t-test), else inconclusive.
pub fn verdict(t: Option<&PairedT>, margin: f64, lower_is_better: bool) -> (Verdict, Option<f64>) {
    let Some(t) = t else {
        return (Verdict::Inconclusive, None);
    };
    let tost = stats::tost_p(t, margin);
    let v = if tost < ALPHA {
        Verdict::Equivalent
    } else if t.p_difference < ALPHA {
        if (t.mean < 0.0) == lower_is_better {
            Verdict::ParallelBetter
        } else {
            Verdict::SequentialBetter
        }
    } else {
        Verdict::Inconclusive
    };
    (v, Some(tost))
}

/// The finished runs of `pairs` in one layout, by configuration, each configuration's in order
/// of seed.
fn families<'a>(pairs: &[&Pair<'a>], layout: Layout) -> Vec<Vec<&'a RunRow>> {
    let mut families: HashMap<Configuration, Vec<&RunRow>> = HashMap::new();
    for p in pairs.iter().filter(|p| p.both_have_results()) {
        let r = if layout == Layout::Sequential {
            p.seq
        } else {
            p.par
        };
        families.entry(p.configuration).or_default().push(r);
    }
    let mut families: Vec<Vec<&RunRow>> = families.into_values().collect();
    for runs in &mut families {
        runs.sort_by_key(|r| r.config.seed);
    }
    families
}

/// Median |Δ| between any two seeds of one configuration and layout, over `families` (the run of
/// the higher seed against the lower one's, as Δ(layout) is parallel against sequential).
fn seed_spread(families: &[Vec<&RunRow>], q: Quantity) -> Option<(f64, usize)> {
    let mut diffs = Vec::new();
    for runs in families {
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                diffs.extend(q.between(a, b).map(f64::abs));
            }
        }
    }
    (!diffs.is_empty()).then(|| (stats::median(&diffs), diffs.len()))
}

/// The equivalence rows of every group and quantity that has finished pairs. The tests run on
/// configurations: a configuration's Δ is the mean of its seeds' pairs (with one seed per
/// configuration, the pairs themselves). Groups are tested on every core.
pub fn equivalence(pairs: &[Pair], margins: &Margins) -> Vec<EquivalenceRow> {
    let groups = analysis::groups(pairs);
    stats::map_on_every_core(&groups, |(group, members)| {
        group_rows(group, members, margins)
    })
    .into_iter()
    .flatten()
    .collect()
}

pub fn group_rows(group: &str, members: &[&Pair], margins: &Margins) -> Vec<EquivalenceRow> {
    let sequential = families(members, Layout::Sequential);
    let parallel = families(members, Layout::Parallel);
    let mut rows = Vec::new();
    for q in Quantity::ALL {
        let keyed: Vec<(Configuration, f64)> = members
            .iter()
            .filter(|p| p.both_have_results())
            .filter_map(|p| Some((p.configuration, q.between(p.seq, p.par)?)))
            .collect();
        if keyed.is_empty() {
            continue;
        }
        let d = analysis::configuration_means(&keyed);
        let abs: Vec<f64> = keyed.iter().map(|(_, x)| x.abs()).collect();
        let margin = q.margin(margins);
        let t = stats::paired_t(&d);
        let (verdict, tost_p) = verdict(t.as_ref(), margin, q.lower_is_better());
        rows.push(EquivalenceRow {
            group: group.to_owned(),
            quantity: q,
            margin,
            n: d.len(),
            pairs: abs.len(),
            median: stats::median(&d),
            median_abs: stats::median(&abs),
            n_needed: t.as_ref().and_then(|t| stats::pairs_needed(t, margin)),
            t,
            tost_p,
            verdict,
            seeds: SeedSpread {
                sequential: seed_spread(&sequential, q),
                parallel: seed_spread(&parallel, q),
            },
        });
    }
    rows
}

impl EquivalenceRow {
    /// The row's line in a forest plot, in the plotted unit: none without a spread to draw.
    pub fn forest_row(&self, label: String) -> Option<super::plots::ForestRow> {
        let t = self.t?;
        let (scale, _) = self.quantity.plot_axis();
        Some(super::plots::ForestRow {
            label,
            mean: scale * t.mean,
            interval: (scale * t.ci90.0, scale * t.ci90.1),
            median: scale * self.median,
        })
    }

    /// What n counts: "pairs" when every configuration has one seed, else "configurations".
    pub fn unit(&self) -> &'static str {
        if self.n == self.pairs {
            "pairs"
        } else {
            "configurations"
        }
    }

    /// n, and the pairs behind it where they differ: "12 pairs", "24 configurations (72 pairs)".
    pub fn count(&self) -> String {
        if self.n == self.pairs {
            format!("{} pairs", self.n)
        } else {
            format!("{} configurations ({} pairs)", self.n, self.pairs)
        }
    }
}

/// The sentence on one row: the verdict and the numbers it rests on.
pub fn sentence(row: &EquivalenceRow, margins: &Margins) -> String {
    let q = row.quantity;
    let mut text = format!(
        "{}: **{}**",
        q.name(),
        row.verdict.text(q, margins).to_uppercase()
    );
    match &row.t {
        Some(t) => {
            text += &format!(
                " — mean Δ {} (90 % CI {} to {}; median {}), n = {}, margin ±{}, TOST p = {}, \
                 t-test for a difference p = {}",
                q.format(t.mean),
                q.format(t.ci90.0),
                q.format(t.ci90.1),
                q.format(row.median),
                row.count(),
                q.format(row.margin).trim_start_matches('+'),
                row.tost_p.map_or("–".into(), fmt_p),
                fmt_p(t.p_difference)
            );
            if row.verdict == Verdict::Inconclusive {
                let unit = row.unit();
                text += &match row.n_needed {
                    Some(need) if need > row.n => format!(
                        "; at the observed mean and spread about {need} {unit} ({} more) would settle it",
                        need - row.n
                    ),
                    _ => format!(
                        "; at the observed mean and spread no feasible number of {unit} would settle it"
                    ),
                };
            }
        }
        None => {
            text += &format!(
                " — {} without spread: too few to test (median Δ {})",
                row.count(),
                q.format(row.median)
            )
        }
    }
    if let (Some((seq, _)), Some((par, _))) = (row.seeds.sequential, row.seeds.parallel) {
        text += &format!(
            ". Median |Δ layout| {} against seed-to-seed |Δ| {} (sequential) and {} (parallel)",
            q.format(row.median_abs).trim_start_matches('+'),
            q.format(seq).trim_start_matches('+'),
            q.format(par).trim_start_matches('+'),
        );
    }
    text + "."
}
