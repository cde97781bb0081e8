//! Time to target: the paper's "may accelerate training", measured. Per pair, the target is the
//! better of the two layouts' final validation losses plus 5 %; each layout's time to target is
//! the epochs, and the training seconds summed over them, until its validation loss first reached
//! it — on the device the runs were trained on.
use std::collections::HashMap;

use super::analysis::{Configuration, MedianEstimate, Pair, q_bin};
use super::render::Block;
use super::stats::median;
use crate::sweep::store::{EpochRow, RunRow};
use crate::train::EpochMetrics;

/// The target's slack over the better final validation loss.
pub const SLACK: f64 = 0.05;

/// Epochs and training seconds to first reach the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reached {
    pub epochs: usize,
    pub seconds: f64,
}

/// One pair's time to target.
#[derive(Debug, Clone)]
pub struct TimeToTarget {
    pub dataset: String,
    pub pair_id: String,
    /// The pair's configuration.
    pub configuration: Configuration,
    pub bin: usize,
    pub target: f64,
    /// `None`: never reached in the epochs trained.
    pub seq: Option<Reached>,
    pub par: Option<Reached>,
}

/// The first epoch of `epochs` (in order) whose validation loss is at most `target`, with the
/// training seconds up to and including it.
pub fn reach(epochs: &[&EpochMetrics], target: f64) -> Option<Reached> {
    let mut seconds = 0.0;
    for m in epochs {
        seconds += m.seconds;
        if m.val_loss <= target {
            return Some(Reached {
                epochs: m.epoch,
                seconds,
            });
        }
    }
    None
}

/// Time to target of every pair whose two runs both finished.
pub fn time_to_target(pairs: &[Pair], epochs: &[EpochRow]) -> Vec<TimeToTarget> {
    let mut by_run: HashMap<&str, Vec<&EpochMetrics>> = HashMap::new();
    for e in epochs {
        by_run.entry(&e.run_id).or_default().push(&e.metrics);
    }
    for list in by_run.values_mut() {
        list.sort_by_key(|m| m.epoch);
    }
    let curve = |r: &RunRow| by_run.get(r.id.as_str()).cloned().unwrap_or_default();
    pairs
        .iter()
        .filter(|p| p.both_have_results())
        .filter_map(|p| {
            let best = p.seq.final_val_loss?.min(p.par.final_val_loss?);
            let target = best * (1.0 + SLACK);
            Some(TimeToTarget {
                dataset: p.cohort().to_owned(),
                pair_id: p.seq.pair_id.clone(),
                configuration: p.configuration,
                bin: q_bin(p.q()),
                target,
                seq: reach(&curve(p.seq), target),
                par: reach(&curve(p.par), target),
            })
        })
        .collect()
}

/// A summary of the time to target of one group of pairs.
#[derive(Debug, Clone)]
pub struct SpeedSummary {
    pub group: String,
    pub n: usize,
    /// Pairs in which a layout never reached the target: sequential, parallel.
    pub unreached: (usize, usize),
    /// Medians over the pairs in which both reached it (`None` when there are none).
    pub median_epochs: Option<(f64, f64)>,
    pub median_seconds: Option<(f64, f64)>,
    /// Median over those pairs of parallel seconds / sequential seconds (< 1: parallel faster),
    /// with its 95 % bootstrap interval.
    pub seconds_ratio: Option<MedianEstimate>,
    /// Pairs in which both reached the target.
    pub both: usize,
}

/// The summary of `rows` under the name `group`; `None` without rows.
pub fn summarise(group: &str, rows: &[&TimeToTarget]) -> Option<SpeedSummary> {
    if rows.is_empty() {
        return None;
    }
    let reached: Vec<(Configuration, Reached, Reached)> = rows
        .iter()
        .filter_map(|r| Some((r.configuration, r.seq?, r.par?)))
        .collect();
    let both: Vec<(Reached, Reached)> = reached.iter().map(|&(_, s, p)| (s, p)).collect();
    let column = |f: &dyn Fn(&(Reached, Reached)) -> f64| both.iter().map(f).collect::<Vec<_>>();
    let ratios: Vec<(Configuration, f64)> = reached
        .iter()
        .map(|&(c, s, p)| (c, p.seconds / s.seconds))
        .collect();
    let medians =
        |seq: Vec<f64>, par: Vec<f64>| (!both.is_empty()).then(|| (median(&seq), median(&par)));
    Some(SpeedSummary {
        group: group.to_owned(),
        n: rows.len(),
        unreached: (
            rows.iter().filter(|r| r.seq.is_none()).count(),
            rows.iter().filter(|r| r.par.is_none()).count(),
        ),
        median_epochs: medians(
            column(&|b| b.0.epochs as f64),
            column(&|b| b.1.epochs as f64),
        ),
        median_seconds: medians(column(&|b| b.0.seconds), column(&|b| b.1.seconds)),
        seconds_ratio: MedianEstimate::of(&ratios),
        both: both.len(),
    })
}

/// Summaries per dataset (all Q bins) and per dataset and Q bin.
pub fn summaries(rows: &[TimeToTarget], cohorts: &[String]) -> Vec<SpeedSummary> {
    let mut out = vec![];
    for d in cohorts {
        let of: Vec<&TimeToTarget> = rows.iter().filter(|r| &r.dataset == d).collect();
        out.extend(summarise(d, &of));
        for (bin, label) in super::analysis::Q_BINS.iter().enumerate() {
            let in_bin: Vec<&TimeToTarget> = of.iter().copied().filter(|r| r.bin == bin).collect();
            out.extend(summarise(&format!("{d} Q {label}"), &in_bin));
        }
    }
    out
}

/// The report's section: per dataset and Q bin, how many pairs, how often a layout never reached
/// the target, and the medians of epochs, seconds and the seconds ratio.
pub fn blocks(summaries: &[SpeedSummary]) -> Vec<Block> {
    let headers = [
        "group",
        "pairs",
        "never reached seq / par",
        "median epochs seq / par",
        "median seconds seq / par",
        "seconds par ÷ seq: median [95% CI] (pairs)",
    ]
    .map(String::from)
    .to_vec();
    let rows = summaries
        .iter()
        .map(|s| {
            vec![
                s.group.clone(),
                s.n.to_string(),
                format!("{} / {}", s.unreached.0, s.unreached.1),
                s.median_epochs
                    .map_or("–".into(), |(a, b)| format!("{a:.1} / {b:.1}")),
                s.median_seconds
                    .map_or("–".into(), |(a, b)| format!("{a:.2} / {b:.2}")),
                format!("{} ({})", MedianEstimate::text(s.seconds_ratio, 2), s.both),
            ]
        })
        .collect();
    vec![
        Block::Heading("Time to target".into()),
        Block::Paragraph(format!(
            "The paper's \"may accelerate training\", measured: per pair, the target is the \
             better of the two final validation losses plus {:.0} %; each layout's time to target \
             is the number of epochs, and the training seconds summed over them, until its \
             validation loss first reached it (validated once per epoch, on the device the runs \
             used). Medians over the pairs in which both layouts reached it; a ratio below 1 means \
             the parallel layout got there faster. Per pair: tables/time_to_target.csv.",
            100.0 * SLACK
        )),
        Block::Table(headers, rows),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, val_loss: f64, seconds: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 1.0,
            val_loss,
            val_acc: 0.5,
            seconds,
            images_per_second: 1.0,
            holdout_loss: None,
            holdout_acc: None,
        }
    }

    #[test]
    fn reach_finds_the_first_epoch_at_or_under_the_target_and_sums_seconds() {
        let curve = [epoch(1, 2.0, 1.5), epoch(2, 1.05, 2.0), epoch(3, 0.9, 2.5)];
        let refs: Vec<&EpochMetrics> = curve.iter().collect();
        assert_eq!(
            reach(&refs, 1.05),
            Some(Reached {
                epochs: 2,
                seconds: 3.5
            })
        );
        assert_eq!(reach(&refs, 0.5), None);
        assert_eq!(reach(&refs[..1], 2.0).map(|r| r.epochs), Some(1));
    }

    #[test]
    fn summary_takes_medians_over_pairs_where_both_reached() {
        let row = |s: Option<(usize, f64)>, p: Option<(usize, f64)>| TimeToTarget {
            dataset: "mnist".into(),
            pair_id: "x".into(),
            // One configuration per row.
            configuration: Configuration::numbered(
                100 * s.map_or(0, |r| r.0 as u64) + p.map_or(0, |r| r.0 as u64),
            ),
            bin: 0,
            target: 1.0,
            seq: s.map(|(epochs, seconds)| Reached { epochs, seconds }),
            par: p.map(|(epochs, seconds)| Reached { epochs, seconds }),
        };
        let rows = [
            row(Some((2, 4.0)), Some((1, 1.0))),
            row(Some((4, 8.0)), Some((4, 8.0))),
            row(Some((3, 6.0)), Some((6, 3.0))),
            row(None, Some((5, 5.0))),
        ];
        let refs: Vec<&TimeToTarget> = rows.iter().collect();
        let s = summarise("mnist", &refs).unwrap();
        assert_eq!((s.n, s.both, s.unreached), (4, 3, (1, 0)));
        assert_eq!(s.median_epochs, Some((3.0, 4.0)));
        assert_eq!(s.median_seconds, Some((6.0, 3.0)));
        // Ratios 0.25, 1.0, 0.5: every resample's median is one of them.
        let ratio = s.seconds_ratio.unwrap();
        assert_eq!((ratio.median, ratio.n), (0.5, 3));
        let (lo, hi) = ratio.ci.unwrap();
        assert!([0.25, 0.5, 1.0].contains(&lo) && [0.25, 0.5, 1.0].contains(&hi) && lo <= hi);
        let unreached = summarise("mnist", &refs[3..]).unwrap();
        assert_eq!(
            (unreached.median_epochs, unreached.seconds_ratio),
            (None, None)
        );
        let Block::Table(_, rows) = &blocks(&[unreached])[2] else {
            panic!("the section ends with its table")
        };
        assert_eq!(rows[0][3..], ["–", "–", "– (0)"]);
    }
}
