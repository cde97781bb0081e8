//! The report's verdicts: one sentence per dataset and quantity, the forest plots, and the
//! table of equivalence tests behind them.
use std::path::Path;

use anyhow::Result;

use super::analysis::{Cohorts, fmt_p};
use super::drivers::Drivers;
use super::equivalence::{self, EquivalenceRow, Margins, Quantity};
use super::plots;
use super::render::Block;

/// The report's opening: one verdict per cohort (dataset, or dataset and optimizer) and
/// quantity, and the forest plots.
pub fn blocks(
    out: &Path,
    rows: &[EquivalenceRow],
    of: Cohorts,
    cohorts: &[String],
    drivers: &[Drivers],
    margins: &Margins,
    same_network: usize,
) -> Result<Vec<Block>> {
    let mut blocks = vec![
        Block::Heading("Verdicts".into()),
        Block::Paragraph(format!(
            "Is the parallel (shallow) layout as good as the sequential (deep) one? Per pair \
             (same configuration and seed) Δ = parallel − sequential: the validation loss relative \
             to the sequential run's, and the validation accuracy in points; the tests take one Δ \
             per configuration, the mean over its seeds, as seeds of one configuration are not \
             independent evidence about the layouts. *Equivalent* means a \
             paired TOST (two one-sided t-tests, α = 0.05) places the mean Δ inside the margin \
             ±{} (loss) or ±{} (accuracy), i.e. its 90 % interval lies inside the margin; \
             otherwise a two-sided paired t-test at α = 0.05 decides *parallel better* or \
             *sequential better*, and what neither settles is *inconclusive*. Margins are set \
             with `shallow report --margin loss=2%,acc=0.5`.",
            Quantity::RelValLoss
                .format(margins.val_loss)
                .trim_start_matches('+'),
            Quantity::ValAccPoints
                .format(margins.val_acc_points)
                .trim_start_matches('+'),
        )),
    ];
    if of.by_optimizer() {
        blocks.push(Block::Paragraph(
            "The runs were trained with more than one optimizer, so this report compares the \
             layouts per dataset and optimizer (`mnist · adam`): each optimizer is its own \
             training recipe, and pooling them would let one that trains badly sway a dataset's \
             verdict. The *Optimizers* section sets the optimizers against each other."
                .into(),
        ));
    }
    if same_network > 0 {
        blocks.push(Block::Paragraph(format!(
            "{same_network} pair(s) with L = 1 are left out of every comparison in this report: \
             with one unit both layouts are the same network, x + F₁(x), trained identically, \
             so their Δ is 0 by construction and says nothing about depth against width."
        )));
    }
    for d in cohorts {
        let mut dataset_rows = rows.iter().filter(|r| &r.group == d).peekable();
        if dataset_rows.peek().is_none() {
            blocks.push(Block::Paragraph(format!(
                "**{d}**: no verdict — no pair (one configuration and seed trained in both the \
                 sequential and the parallel layout) in which both runs finished."
            )));
        }
        for row in dataset_rows {
            blocks.push(Block::Paragraph(format!(
                "**{d}**, {}",
                equivalence::sentence(row, margins)
            )));
        }
        if let Some(dr) = drivers
            .iter()
            .find(|dr| &dr.dataset == d && dr.top().is_some())
        {
            blocks.push(Block::Paragraph(super::drivers::importance_sentence(dr)));
        }
    }
    let dir = out.join("plots");
    for q in Quantity::ALL {
        blocks.extend(forest_figure(&dir, rows, q, margins)?);
    }
    Ok(blocks)
}

/// The forest plot of quantity `q` over the groups that can be tested, drawn into `dir`; none
/// when no group can.
fn forest_figure(
    dir: &Path,
    rows: &[EquivalenceRow],
    q: Quantity,
    margins: &Margins,
) -> Result<Option<Block>> {
    let (scale, unit) = q.plot_axis();
    let forest: Vec<plots::ForestRow> = rows
        .iter()
        .filter(|r| r.quantity == q)
        .filter_map(|r| r.forest_row(format!("{} (n={})", r.group, r.n)))
        .collect();
    if forest.is_empty() {
        return Ok(None);
    }
    let name = match q {
        Quantity::RelValLoss => "forest_val_loss",
        Quantity::ValAccPoints => "forest_val_acc",
    };
    plots::forest(
        dir,
        name,
        &format!("parallel − sequential: {}", q.name()),
        unit,
        &forest,
        scale * q.margin(margins),
    )?;
    Ok(Some(Block::Figure(
        name.into(),
        format!(
            "{unit} per group: mean (dot) with its 90 % interval (bar; inside the shaded \
             ±margin band = equivalent by TOST) and median (cross)."
        ),
    )))
}

/// Every group's equivalence test, with the seed-to-seed spread beside the layout difference.
pub fn table(rows: &[EquivalenceRow], margins: &Margins) -> Vec<Block> {
    let headers = [
        "group",
        "Δ of",
        "n (pairs)",
        "mean Δ [90% CI]",
        "TOST p",
        "t-test p",
        "verdict",
        "n needed",
        "median |Δ layout|",
        "median |Δ seed| seq (n)",
        "median |Δ seed| par (n)",
    ]
    .map(String::from)
    .to_vec();
    let spread = |q: Quantity, s: Option<(f64, usize)>| {
        s.map_or("–".into(), |(m, n)| {
            format!("{} ({n})", q.format(m).trim_start_matches('+'))
        })
    };
    let table = rows
        .iter()
        .map(|r| {
            let q = r.quantity;
            vec![
                r.group.clone(),
                q.name().into(),
                format!("{} ({})", r.n, r.pairs),
                r.t.map_or("–".into(), |t| {
                    format!(
                        "{} [{}, {}]",
                        q.format(t.mean),
                        q.format(t.ci90.0),
                        q.format(t.ci90.1)
                    )
                }),
                r.tost_p.map_or("–".into(), fmt_p),
                r.t.map_or("–".into(), |t| fmt_p(t.p_difference)),
                r.verdict.text(q, margins),
                r.n_needed.map_or("–".into(), |n| n.to_string()),
                q.format(r.median_abs).trim_start_matches('+').into(),
                spread(q, r.seeds.sequential),
                spread(q, r.seeds.parallel),
            ]
        })
        .collect();
    vec![
        Block::Heading("Equivalence tests and seed noise".into()),
        Block::Paragraph(
            "Per group: the paired TOST and t-test behind the verdicts, on n configurations \
             (one Δ each: the mean over its seeds' pairs, so that seeds of one configuration do \
             not count as independent evidence); *n needed*: how many configurations in all the \
             observed mean and spread would need to settle the question (TOST while |mean Δ| is \
             inside the margin, else the t-test). With several seeds per \
             configuration, the seed-to-seed spread — median |Δ| between two seeds of the same \
             configuration in the same layout — shows whether the layout difference exceeds what \
             a change of seed alone does."
                .into(),
        ),
        Block::Table(headers, table),
    ]
}
