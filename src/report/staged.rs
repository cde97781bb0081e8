//! The depth–width continuum: runs of one family (one configuration and seed: one pair id) in
//! several arrangements — D = 1 (parallel) … D = L (sequential) stages — compared by D.
use std::collections::BTreeMap;

use super::analysis::{
    Cohorts, Configuration, Estimate, MedianEstimate, configuration_key, has_results,
};
use super::render::Block;
use super::stats::median;
use crate::sweep::store::RunRow;

/// A family's final validation loss per number of stages D.
#[derive(Debug, Clone)]
pub struct Family {
    pub dataset: String,
    pub layers: usize,
    pub pair_id: String,
    /// The family's configuration without its seed ([`configuration_key`]).
    pub configuration: Configuration,
    /// (D, final validation loss), D ascending.
    pub by_stages: Vec<(usize, f64)>,
}

/// Families with finished runs in at least three arrangements (so at least one staged one
/// beside the two ends, or several staged ones), by dataset, L and pair id.
pub fn families(runs: &[RunRow]) -> Vec<Family> {
    type Runs<'a> = (&'a RunRow, BTreeMap<usize, f64>);
    let cohorts = Cohorts::of(runs);
    let mut groups: BTreeMap<(String, usize, &str), Runs> = BTreeMap::new();
    for r in runs.iter().filter(|r| has_results(r)) {
        let Some(loss) = r.final_val_loss else {
            continue;
        };
        let d = r.config.layout.stages(r.config.layers);
        groups
            .entry((cohorts.label(&r.config), r.config.layers, &r.pair_id))
            .or_insert_with(|| (r, BTreeMap::new()))
            .1
            .insert(d, loss);
    }
    groups
        .into_iter()
        .filter(|(_, (_, by))| by.len() >= 3)
        .map(|((dataset, layers, pair_id), (run, by))| Family {
            dataset,
            layers,
            pair_id: pair_id.to_owned(),
            configuration: configuration_key(run),
            by_stages: by.into_iter().collect(),
        })
        .collect()
}

/// Table-2-style cell: one dataset, L and D over the families.
#[derive(Debug, Clone)]
pub struct StageCell {
    pub dataset: String,
    pub layers: usize,
    pub stages: usize,
    pub n: usize,
    pub val_loss: Option<Estimate>,
    pub median: f64,
    /// Paired: per family with a sequential run, this D's loss ÷ the sequential run's.
    pub vs_sequential: Option<MedianEstimate>,
}

/// Mean (with its 95 % bootstrap interval) and median final validation loss per dataset, L and D,
/// and the median ratio to the same family's sequential run.
pub fn cells(families: &[Family]) -> Vec<StageCell> {
    // Per cell: the losses, and the ratios to the family's sequential run.
    type Losses = (Vec<(Configuration, f64)>, Vec<(Configuration, f64)>);
    let mut by: BTreeMap<(&str, usize, usize), Losses> = BTreeMap::new();
    for f in families {
        let sequential = f.by_stages.iter().find(|(d, _)| *d == f.layers);
        for &(d, loss) in &f.by_stages {
            let cell = by.entry((&f.dataset, f.layers, d)).or_default();
            cell.0.push((f.configuration, loss));
            cell.1
                .extend(sequential.map(|(_, seq)| (f.configuration, loss / seq)));
        }
    }
    by.into_iter()
        .map(|((dataset, layers, stages), (losses, ratios))| StageCell {
            dataset: dataset.to_owned(),
            layers,
            stages,
            n: losses.len(),
            median: median(&losses.iter().map(|l| l.1).collect::<Vec<_>>()),
            val_loss: Estimate::of(&losses),
            vs_sequential: MedianEstimate::of(&ratios),
        })
        .collect()
}

/// The name of D stages of `layers` units.
pub fn arrangement(stages: usize, layers: usize) -> String {
    match stages {
        1 => "parallel".to_owned(),
        d if d == layers => "sequential".to_owned(),
        d => format!("{d} stages of {}", layers / d),
    }
}

/// The report's section (nothing when the sweep has no staged runs).
pub fn blocks(cells: &[StageCell]) -> Vec<Block> {
    if cells.is_empty() {
        return vec![];
    }
    let headers = [
        "dataset",
        "L",
        "stages D",
        "arrangement",
        "families",
        "final val loss: mean [95% CI]",
        "median",
        "÷ sequential, paired: median [95% CI]",
    ]
    .map(String::from)
    .to_vec();
    let rows = cells
        .iter()
        .map(|c| {
            vec![
                c.dataset.clone(),
                c.layers.to_string(),
                c.stages.to_string(),
                arrangement(c.stages, c.layers),
                c.n.to_string(),
                super::cell_text(c.val_loss),
                format!("{:.5}", c.median),
                MedianEstimate::text(c.vs_sequential, 3),
            ]
        })
        .collect();
    vec![
        Block::Heading("The depth–width continuum".into()),
        Block::Paragraph(
            "The same L units in D stages of L/D units side by side (D = 1: parallel, D = L: \
             sequential), per family — one configuration and seed trained in three or more \
             arrangements, with identical initial weights and data order. Means over the \
             families of each dataset and L, with 95% bootstrap intervals (resampling configurations); the last column \
             divides each family's loss by its own sequential run's (below 1: fewer stages did \
             better). Per cell: tables/stages.csv."
                .into(),
        ),
        Block::Table(headers, rows),
    ]
}
