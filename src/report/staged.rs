//! The depth–width continuum: runs of one family (one configuration and seed: one pair id) in
//! several arrangements — D = 1 (parallel) … D = L (sequential) stages — compared by D.
use std::collections::BTreeMap;

use super::analysis::{Estimate, is_finished};
use super::render::Block;
use super::stats::median;
use crate::sweep::store::RunRow;

/// A family's final validation loss per number of stages D.
#[derive(Debug, Clone)]
pub struct Family {
    pub dataset: String,
    pub layers: usize,
    pub pair_id: String,
    /// (D, final validation loss), D ascending.
    pub by_stages: Vec<(usize, f64)>,
}

/// Families with finished runs in at least three arrangements (so at least one staged one
/// beside the two ends, or several staged ones), by dataset, L and pair id.
pub fn families(runs: &[RunRow]) -> Vec<Family> {
    let mut groups: BTreeMap<(&str, usize, &str), BTreeMap<usize, f64>> = BTreeMap::new();
    for r in runs.iter().filter(|r| is_finished(r)) {
        let Some(loss) = r.final_val_loss else {
            continue;
        };
        let d = r.config.layout.stages(r.config.layers);
        groups
            .entry((&r.config.dataset, r.config.layers, &r.pair_id))
            .or_default()
            .insert(d, loss);
    }
    groups
        .into_iter()
        .filter(|(_, by)| by.len() >= 3)
        .map(|((dataset, layers, pair_id), by)| Family {
            dataset: dataset.to_owned(),
            layers,
            pair_id: pair_id.to_owned(),
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
}

/// Mean (with its 95 % bootstrap interval) and median final validation loss per dataset, L and D.
pub fn cells(families: &[Family]) -> Vec<StageCell> {
    let mut by: BTreeMap<(&str, usize, usize), Vec<f64>> = BTreeMap::new();
    for f in families {
        for &(d, loss) in &f.by_stages {
            by.entry((&f.dataset, f.layers, d)).or_default().push(loss);
        }
    }
    by.into_iter()
        .map(|((dataset, layers, stages), losses)| StageCell {
            dataset: dataset.to_owned(),
            layers,
            stages,
            n: losses.len(),
            median: median(&losses),
            val_loss: Estimate::of(&losses),
        })
        .collect()
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
    ]
    .map(String::from)
    .to_vec();
    let rows = cells
        .iter()
        .map(|c| {
            let arrangement = match c.stages {
                1 => "parallel".to_owned(),
                d if d == c.layers => "sequential".to_owned(),
                d => format!("{d} stages of {}", c.layers / d),
            };
            vec![
                c.dataset.clone(),
                c.layers.to_string(),
                c.stages.to_string(),
                arrangement,
                c.n.to_string(),
                super::cell_text(c.val_loss),
                format!("{:.5}", c.median),
            ]
        })
        .collect();
    vec![
        Block::Heading("The depth–width continuum".into()),
        Block::Paragraph(
            "The same L units in D stages of L/D units side by side (D = 1: parallel, D = L: \
             sequential), per family — one configuration and seed trained in three or more \
             arrangements, with identical initial weights and data order. Means over the \
             families of each dataset and L, with 95% bootstrap intervals."
                .into(),
        ),
        Block::Table(headers, rows),
    ]
}
