//! Truncation: each trained net evaluated with its units arranged the other way. A sequential net's
//! units side by side are its first-order truncation, so the gap between the two validation losses
//! is the measured weight of the higher-order terms in a net trained deep; a parallel net's units
//! stacked add higher-order terms it was never trained with.
use std::collections::BTreeMap;

use super::analysis::{Cohorts, Configuration, MedianEstimate, configuration_key, has_results};
use super::render::Block;
use super::stats::mean;
use crate::model::Layout;
use crate::sweep::store::RunRow;
use crate::train::truncation_of;

/// The runs of one dataset, layout, depth L and batch-norm setting that have a truncated
/// evaluation.
#[derive(Debug, Clone)]
pub struct TruncationRow {
    pub dataset: String,
    pub layout: Layout,
    pub layers: usize,
    pub batchnorm: bool,
    pub n: usize,
    pub mean_val_loss: f64,
    pub mean_truncated_val_loss: f64,
    /// Median over the runs of truncated ÷ trained validation loss, with its 95 % interval.
    pub loss_ratio: Option<MedianEstimate>,
    pub mean_val_acc: f64,
    pub mean_truncated_val_acc: f64,
}

/// Per cohort ([`Cohorts`]), layout, L and batch-norm setting, the finished runs' validation loss
/// and accuracy as trained and rearranged.
pub fn rows(runs: &[RunRow]) -> Vec<TruncationRow> {
    type Key = (String, Layout, usize, bool);
    let cohorts = Cohorts::of(runs);
    let mut groups: BTreeMap<Key, Vec<&RunRow>> = BTreeMap::new();
    for r in runs.iter().filter(|r| has_results(r)) {
        if r.truncated_val_loss.is_some() && r.truncated_val_acc.is_some() {
            let c = &r.config;
            let key = (cohorts.label(c), c.layout, c.layers, c.batchnorm);
            groups.entry(key).or_default().push(r);
        }
    }
    groups
        .into_iter()
        .map(|((dataset, layout, layers, batchnorm), rs)| {
            let col = |f: &dyn Fn(&RunRow) -> Option<f64>| -> Vec<f64> {
                rs.iter().filter_map(|r| f(r)).collect()
            };
            let ratios: Vec<(Configuration, f64)> = rs
                .iter()
                .filter_map(|r| {
                    let ratio = r.truncated_val_loss? / r.final_val_loss?;
                    Some((configuration_key(r), ratio))
                })
                .collect();
            TruncationRow {
                dataset,
                layout,
                layers,
                batchnorm,
                n: rs.len(),
                mean_val_loss: mean(&col(&|r| r.final_val_loss)),
                mean_truncated_val_loss: mean(&col(&|r| r.truncated_val_loss)),
                loss_ratio: MedianEstimate::of(&ratios),
                mean_val_acc: mean(&col(&|r| r.final_val_acc)),
                mean_truncated_val_acc: mean(&col(&|r| r.truncated_val_acc)),
            }
        })
        .collect()
}

/// The report's section.
pub fn blocks(rows: &[TruncationRow]) -> Vec<Block> {
    let headers = [
        "dataset",
        "trained as",
        "evaluated as",
        "L",
        "BN",
        "runs",
        "val loss trained → rearranged (means)",
        "rearranged ÷ trained val loss: median [95% CI]",
        "val acc trained → rearranged (means)",
    ]
    .map(String::from)
    .to_vec();
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.dataset.clone(),
                r.layout.to_string(),
                truncation_of(r.layout).to_string(),
                r.layers.to_string(),
                if r.batchnorm { "yes" } else { "no" }.into(),
                r.n.to_string(),
                format!("{:.4} → {:.4}", r.mean_val_loss, r.mean_truncated_val_loss),
                MedianEstimate::text(r.loss_ratio, 2),
                format!(
                    "{:.2}% → {:.2}%",
                    100.0 * r.mean_val_acc,
                    100.0 * r.mean_truncated_val_acc
                ),
            ]
        })
        .collect();
    vec![
        Block::Heading("Truncation: the trained units arranged the other way".into()),
        Block::Paragraph(format!(
            "After training, every run's units were also evaluated in the other arrangement: a \
             sequential (or staged) net's side by side — its first-order truncation, so the \
             change in validation loss measures the higher-order terms of a net trained deep — \
             and a parallel net's stacked. With batch norm the running statistics were first \
             re-estimated over the first {} training batches. A ratio near 1 means the other \
             arrangement computes nearly the same function. Per group: tables/truncation.csv.",
            crate::train::REESTIMATE_BATCHES
        )),
        Block::Table(headers, table),
    ]
}
