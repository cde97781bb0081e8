//! Expanding a parsed grid without holding it in memory: combinations are visited by index (an
//! odometer over the axes), exclusion rules are tested on indices, and run specs are built one
//! at a time. Counting a grid of ten million combinations takes a fraction of a second and no
//! memory beyond the axes.
use anyhow::{Result, anyhow};
use toml::Value;

use super::{same_value, to_config};
use crate::sweep::store::identity::RunSpec;

/// The axes of a grid, in expansion order (the last innermost), each with its distinct values.
pub(super) type Axes = Vec<(String, Vec<Value>)>;

/// An `[[exclude]]` rule as, per axis it names, which of that axis's values it matches; a rule
/// excludes a combination when every one of its axes matches.
#[derive(Debug)]
pub(super) struct Mask {
    terms: Vec<(usize, Vec<bool>)>,
}

impl Mask {
    /// `None` when the rule can never match (it is empty, or names a setting the grid lacks).
    pub(super) fn new(axes: &Axes, rule: &[(String, Vec<Value>)]) -> Option<Mask> {
        if rule.is_empty() {
            return None;
        }
        let terms = rule
            .iter()
            .map(|(key, values)| {
                let axis = axes.iter().position(|(name, _)| name == key)?;
                let hits = axes[axis]
                    .1
                    .iter()
                    .map(|v| values.iter().any(|w| same_value(v, w)))
                    .collect();
                Some((axis, hits))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Mask { terms })
    }

    fn excludes(&self, index: &[usize]) -> bool {
        self.terms.iter().all(|(axis, hits)| hits[index[*axis]])
    }
}

/// Steps through every combination of axis sizes, the last axis fastest; after the last it
/// stays finished.
struct Odometer {
    sizes: Vec<usize>,
    index: Vec<usize>,
    started: bool,
    finished: bool,
}

impl Odometer {
    fn new(sizes: Vec<usize>) -> Odometer {
        let index = vec![0; sizes.len()];
        Odometer {
            sizes,
            index,
            started: false,
            finished: false,
        }
    }

    /// The next combination, or `None` after the last.
    fn advance(&mut self) -> Option<&[usize]> {
        if self.finished {
            return None;
        }
        if !self.started {
            self.started = true;
            self.finished = self.sizes.contains(&0);
            return (!self.finished).then_some(&self.index[..]);
        }
        for axis in (0..self.sizes.len()).rev() {
            self.index[axis] += 1;
            if self.index[axis] < self.sizes[axis] {
                return Some(&self.index[..]);
            }
            self.index[axis] = 0;
        }
        self.finished = true;
        None
    }
}

/// The number of combinations before exclusions (saturating: a hostile grid cannot overflow it).
pub(super) fn combinations(axes: &Axes) -> u128 {
    axes.iter().fold(1u128, |n, (_, values)| {
        n.saturating_mul(values.len() as u128)
    })
}

/// What a grid holds, counted in one pass over indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub runs: u64,
    /// Configurations with at least one layout left (their runs share a pair id).
    pub pairs: u64,
    /// The datasets at least one run uses, sorted.
    pub datasets: Vec<String>,
}

pub(super) fn summarise(axes: &Axes, masks: &[Mask]) -> Summary {
    let dataset_axis = axes.iter().position(|(name, _)| name == "dataset");
    let layout_axis = axes.len() - 1;
    debug_assert_eq!(
        axes[layout_axis].0, "layout",
        "layout is the innermost axis"
    );
    let mut used = vec![false; dataset_axis.map_or(0, |a| axes[a].1.len())];
    let (mut runs, mut pairs, mut pair_open) = (0, 0, false);
    let mut odometer = Odometer::new(axes.iter().map(|(_, v)| v.len()).collect());
    while let Some(index) = odometer.advance() {
        if index[layout_axis] == 0 {
            pair_open = false;
        }
        if masks.iter().any(|m| m.excludes(index)) {
            continue;
        }
        runs += 1;
        if !pair_open {
            pairs += 1;
            pair_open = true;
        }
        if let Some(axis) = dataset_axis {
            used[index[axis]] = true;
        }
    }
    let mut datasets: Vec<String> = dataset_axis
        .map(|axis| {
            axes[axis]
                .1
                .iter()
                .zip(&used)
                .filter(|(_, used)| **used)
                .filter_map(|(v, _)| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    datasets.sort_unstable();
    datasets.dedup();
    Summary {
        runs,
        pairs,
        datasets,
    }
}

/// The runs of a grid, built one at a time in expansion order.
pub struct Runs<'a> {
    axes: &'a Axes,
    masks: &'a [Mask],
    odometer: Odometer,
    origin: &'a str,
}

impl<'a> Runs<'a> {
    pub(super) fn new(axes: &'a Axes, masks: &'a [Mask], origin: &'a str) -> Runs<'a> {
        Runs {
            axes,
            masks,
            odometer: Odometer::new(axes.iter().map(|(_, v)| v.len()).collect()),
            origin,
        }
    }
}

impl std::iter::FusedIterator for Runs<'_> {}

impl Iterator for Runs<'_> {
    type Item = Result<RunSpec>;

    fn next(&mut self) -> Option<Result<RunSpec>> {
        loop {
            let index = self.odometer.advance()?;
            if self.masks.iter().any(|m| m.excludes(index)) {
                continue;
            }
            let table: toml::Table = self
                .axes
                .iter()
                .zip(index)
                .map(|((name, values), &i)| (name.clone(), values[i].clone()))
                .collect();
            return Some(to_config(&table).map(RunSpec::of).map_err(|e| {
                anyhow!(
                    "{}: impossible combination {}: {e:#}",
                    self.origin,
                    describe(&table)
                )
            }));
        }
    }
}

fn describe(combination: &toml::Table) -> String {
    combination
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axes(sizes: &[usize]) -> Axes {
        sizes
            .iter()
            .enumerate()
            .map(|(a, &n)| {
                let name = if a + 1 == sizes.len() { "layout" } else { "x" };
                (
                    format!(
                        "{name}{}",
                        if name == "x" {
                            a.to_string()
                        } else {
                            String::new()
                        }
                    ),
                    (0..n as i64).map(Value::Integer).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn odometer_visits_every_combination_once_in_order() {
        let mut odometer = Odometer::new(vec![2, 3, 2]);
        let mut seen = Vec::new();
        while let Some(i) = odometer.advance() {
            seen.push(i.to_vec());
        }
        assert_eq!(seen.len(), 12);
        assert_eq!(seen[0], vec![0, 0, 0]);
        assert_eq!(seen[1], vec![0, 0, 1]);
        assert_eq!(seen[11], vec![1, 2, 1]);
        let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), 12);
        assert!(odometer.advance().is_none(), "finished stays finished");
        let mut empty = Odometer::new(vec![2, 0]);
        assert!(empty.advance().is_none() && empty.advance().is_none());
    }

    #[test]
    fn counts_agree_with_brute_force_under_exclusions() {
        let axes = axes(&[3, 4, 2]);
        let rule = vec![
            ("x0".to_owned(), vec![Value::Integer(1)]),
            ("layout".to_owned(), vec![Value::Integer(0)]),
        ];
        let whole = vec![("x1".to_owned(), vec![Value::Integer(2), Value::Integer(3)])];
        let masks: Vec<Mask> = [rule, whole]
            .iter()
            .filter_map(|r| Mask::new(&axes, r))
            .collect();
        let summary = summarise(&axes, &masks);
        let (mut runs, mut pairs) = (0, std::collections::BTreeSet::new());
        for a in 0..3 {
            for b in 0..4 {
                for l in 0..2 {
                    if (a == 1 && l == 0) || b >= 2 {
                        continue;
                    }
                    runs += 1;
                    pairs.insert((a, b));
                }
            }
        }
        assert_eq!((summary.runs, summary.pairs), (runs, pairs.len() as u64));
        assert_eq!(combinations(&axes), 24);
    }

    #[test]
    fn a_rule_on_a_setting_the_grid_lacks_never_matches() {
        let axes = axes(&[2, 2]);
        let rule = vec![("nope".to_owned(), vec![Value::Integer(0)])];
        assert!(Mask::new(&axes, &rule).is_none());
        assert!(Mask::new(&axes, &[]).is_none());
    }
}
