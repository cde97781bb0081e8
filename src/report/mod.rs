//! `shallow report`: turns a results database into the answer to "is the shallow layout as good
//! as the deep one?" — Markdown and self-contained HTML, CSV tables, SVG/PNG plots. It only reads
//! the store, and works on partial sweeps and on databases still being written.
pub mod analysis;
pub mod anova;
mod converged;
pub mod convergence;
pub mod drivers;
pub mod equivalence;
mod optimizers;
pub mod plots;
mod render;
mod speed;
pub mod staged;
pub mod stats;
mod tables;
pub mod truncation;
mod verdicts;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};

use crate::sweep::store::{self, Location, RunRow, RunStatus};
use analysis::{Metric, Pair, Q_BINS, fmt_interval, fmt_p, fmt_signed};
use equivalence::Margins;
use render::Block;

/// What was written.
pub struct ReportFiles {
    pub markdown: std::path::PathBuf,
    pub html: std::path::PathBuf,
    pub finished_runs: usize,
    pub total_runs: usize,
}

pub fn generate(db: &Location, out: &Path, margins: &Margins) -> Result<ReportFiles> {
    let store = store::open_reader(db)?;
    let runs = store.runs()?;
    let epochs = store.epochs()?;
    for sub in ["tables", "plots"] {
        std::fs::create_dir_all(out.join(sub))
            .with_context(|| format!("cannot create {}", out.join(sub).display()))?;
    }
    let cohorts = analysis::cohorts(&runs);
    let (pairs, same_network) = analysis::compared_pairs(&runs);
    let cells = analysis::table2(&runs);
    let paired = analysis::paired_comparisons(&pairs);
    let diverged = analysis::diverged_counts(&pairs);
    let verdicts = equivalence::equivalence(&pairs, margins);
    let to_target = speed::time_to_target(&pairs, &epochs);
    let converged = converged::Section::of(&runs, &pairs, &epochs, margins);
    let drivers = drivers::drivers(&pairs, &cohorts, margins);
    let optimizers = optimizers::comparisons(&runs);

    let mut blocks = vec![Block::Heading(format!(
        "Deep vs shallow: report on {}",
        db.name()
    ))];
    blocks.extend(converged.warning());
    blocks.extend(verdicts::blocks(
        out,
        &verdicts,
        analysis::Cohorts::of(&runs),
        &cohorts,
        &drivers,
        margins,
        same_network,
    )?);
    blocks.extend(drivers::blocks(out, &drivers, margins)?);
    blocks.extend(converged.blocks(out, &cohorts, margins)?);
    blocks.extend(optimizers::blocks(&optimizers));
    blocks.extend(summary(&runs));
    blocks.extend(table2_blocks(&cells, &cohorts));
    blocks.extend(paired_blocks(&paired, &diverged));
    blocks.extend(speed::blocks(&speed::summaries(&to_target, &cohorts)));
    let truncated = truncation::rows(&runs);
    blocks.extend(truncation::blocks(&truncated));
    let families = staged::families(&runs);
    let stage_cells = staged::cells(&families);
    blocks.extend(staged::blocks(&stage_cells));
    blocks.extend(verdicts::table(&verdicts, margins));
    blocks.extend(figures(out, &pairs, &cohorts, &epochs)?);
    blocks.extend(staged_figures(out, &families, &cohorts)?);
    plots::time_to_target(&out.join("plots"), "time_to_target", &to_target, &cohorts)?;
    blocks.push(Block::Figure(
        "time_to_target".into(),
        "Training seconds each layout needed to first reach the better final validation loss + 5 %, \
         per pair (below the line: parallel faster)."
            .into(),
    ));

    tables::write_csvs(out, &cells, &paired, &diverged, &verdicts)?;
    tables::write_time_to_target(out, &to_target)?;
    tables::write_truncation(out, &truncated)?;
    tables::write_stages(out, &stage_cells)?;
    converged.write_tables(out)?;
    drivers::write_tables(out, &drivers)?;
    if !optimizers.is_empty() {
        optimizers::write_table(out, &optimizers)?;
    }
    write_pages(out, &blocks, &runs)
}

/// The verdicts so far, for `shallow serve`: a self-contained HTML page of the report's own
/// verdicts with their forest plots, its summary, Table 2 and the verdict table, from the runs
/// alone (no epochs are read). The plots it shows are drawn in `scratch`.
pub fn verdicts_page(db: &Location, scratch: &Path, margins: &Margins) -> Result<VerdictsPage> {
    let runs = store::open_reader(db)?.runs()?;
    std::fs::create_dir_all(scratch.join("plots"))
        .with_context(|| format!("cannot create {}", scratch.join("plots").display()))?;
    let cohorts = analysis::cohorts(&runs);
    let (pairs, same_network) = analysis::compared_pairs(&runs);
    let verdicts = equivalence::equivalence(&pairs, margins);
    let drivers = drivers::drivers(&pairs, &cohorts, margins);
    let mut blocks = vec![Block::Heading(format!("Verdicts so far on {db}"))];
    blocks.extend(verdicts::blocks(
        scratch,
        &verdicts,
        analysis::Cohorts::of(&runs),
        &cohorts,
        &drivers,
        margins,
        same_network,
    )?);
    blocks.extend(drivers::blocks(scratch, &drivers, margins)?);
    blocks.extend(summary(&runs));
    blocks.extend(table2_blocks(&analysis::table2(&runs), &cohorts));
    blocks.extend(verdicts::table(&verdicts, margins));
    Ok(VerdictsPage {
        html: render::to_html(&render::to_markdown(&blocks), scratch)?,
        finished_runs: finished_runs(&runs),
        total_runs: runs.len(),
    })
}

/// [`verdicts_page`]'s page, and how many of the runs it was made from had finished.
pub struct VerdictsPage {
    pub html: String,
    pub finished_runs: usize,
    pub total_runs: usize,
}

fn finished_runs(runs: &[RunRow]) -> usize {
    runs.iter().filter(|r| r.status.finished()).count()
}

/// `report.md` and the self-contained `report.html` of `blocks`.
fn write_pages(out: &Path, blocks: &[Block], runs: &[RunRow]) -> Result<ReportFiles> {
    let markdown = out.join("report.md");
    let text = render::to_markdown(blocks);
    std::fs::write(&markdown, &text)
        .with_context(|| format!("cannot write {}", markdown.display()))?;
    let html = out.join("report.html");
    std::fs::write(&html, render::to_html(&text, out)?)
        .with_context(|| format!("cannot write {}", html.display()))?;
    Ok(ReportFiles {
        markdown,
        html,
        finished_runs: finished_runs(runs),
        total_runs: runs.len(),
    })
}

fn summary(runs: &[RunRow]) -> Vec<Block> {
    let mut counts: BTreeMap<RunStatus, usize> = BTreeMap::new();
    for r in runs {
        *counts.entry(r.status).or_default() += 1;
    }
    let open = counts.get(&RunStatus::Pending).unwrap_or(&0)
        + counts.get(&RunStatus::Running).unwrap_or(&0);
    let compute: f64 = runs.iter().filter_map(|r| r.total_seconds).sum();
    let mut text = format!(
        "{} runs: {}. Total compute time {}.",
        runs.len(),
        counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        crate::human::duration(compute)
    );
    if open > 0 {
        text += &format!(
            " **Partial sweep**: {open} runs are not finished yet; this report covers the finished ones."
        );
    }
    text += &outputs_text(runs);
    vec![
        Block::Heading("Sweep".into()),
        Block::Paragraph(text),
        settings_table(runs),
    ]
}

/// Every setting with its values in the sweep, in order of first appearance.
fn settings_table(runs: &[RunRow]) -> Block {
    // A value of any setting but those that vary within a configuration first appears with a
    // new configuration, so only those are serialised whole.
    let mut axes: BTreeMap<String, (Vec<String>, HashSet<String>)> = BTreeMap::new();
    let mut add = |k: String, v: String| {
        let (values, seen) = axes.entry(k).or_default();
        if seen.insert(v.clone()) {
            values.push(v);
        }
    };
    let mut configurations = HashSet::new();
    for r in runs {
        if configurations.insert(analysis::configuration_key(r)) {
            if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&r.config) {
                for (k, v) in map {
                    add(k, v.as_str().map_or_else(|| v.to_string(), str::to_owned));
                }
            }
        } else {
            for (k, v) in analysis::within_configuration(&r.config).1 {
                add(k.into(), v);
            }
        }
    }
    let rows = axes
        .into_iter()
        .map(|(k, (v, _))| vec![k, v.join(", ")])
        .collect();
    Block::Table(vec!["setting".into(), "values in the sweep".into()], rows)
}

/// The outputs M of each dataset's nets (its classes), recovered from its runs' Q = N·M/P.
fn outputs_text(runs: &[RunRow]) -> String {
    let mut outputs: BTreeMap<&str, usize> = BTreeMap::new();
    for r in runs {
        if let (Some(q), Some(p), Some(n)) = (r.q, r.params, r.train_examples)
            && n > 0
        {
            let m = (q * p as f64 / n as f64).round() as usize;
            outputs.entry(r.config.dataset.as_str()).or_insert(m);
        }
    }
    if outputs.is_empty() {
        return String::new();
    }
    let list: Vec<String> = outputs
        .iter()
        .map(|(d, m)| format!("{d} M = {m}"))
        .collect();
    format!(
        " Outputs per dataset (its classes, the M of Q = training examples × M / parameters): {}.",
        list.join(", ")
    )
}

fn cell_text(e: Option<analysis::Estimate>) -> String {
    match e {
        Some(e) => match e.ci {
            Some((lo, hi)) => format!("{:.5} [{lo:.5}, {hi:.5}]", e.mean),
            None => format!("{:.5}", e.mean),
        },
        None => "–".into(),
    }
}

fn table2_blocks(cells: &[analysis::Table2Cell], cohorts: &[String]) -> Vec<Block> {
    let mut blocks = vec![
        Block::Heading("Table 2: mean final losses per Q bin".into()),
        Block::Paragraph(
            "Mean final training loss (whole training set, eval mode) and validation loss of the \
             finished runs, with 95% bootstrap intervals of the mean (as every interval in this \
             report, resampling configurations: the seeds of one configuration are drawn \
             together, as they are not independent) and the number of runs n \
             (diverged runs counted apart). Bins: Q in [0,1), [1,3), [3,10), [10,∞), lower edge \
             inclusive. The columns marked *paper* are the values published in Bermeitinger et \
             al. (2023), Table 2, for comparison; the paper's \"validation\" loss is, as far as \
             we know, measured on the official test set, as ours is (with a held-out split, the \
             validation column here is still the test set: see *Converged nets*)."
                .into(),
        ),
    ];
    let headers = [
        "dataset",
        "layout",
        "Q bin",
        "n",
        "diverged",
        "train loss",
        "val loss",
        "paper train loss",
        "paper val loss",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for d in cohorts {
        for c in cells.iter().filter(|c| &c.cohort == d) {
            let paper = analysis::paper_value(&c.dataset, c.layout, c.bin);
            rows.push(vec![
                d.clone(),
                c.layout.to_string(),
                Q_BINS[c.bin].into(),
                c.n.to_string(),
                c.diverged.to_string(),
                cell_text(c.train_loss),
                cell_text(c.val_loss),
                paper.map_or("–".into(), |p| format!("{:.5}", p.0)),
                paper.map_or("–".into(), |p| format!("{:.5}", p.1)),
            ]);
        }
    }
    blocks.push(Block::Table(headers, rows));
    blocks
}

fn paired_blocks(
    paired: &[analysis::PairedStat],
    diverged: &[(String, usize, usize, usize, usize)],
) -> Vec<Block> {
    let headers = [
        "group",
        "Δ (parallel − sequential) of",
        "pairs (configurations)",
        "median Δ [95% CI]",
        "mean Δ",
        "parallel better in",
        "Wilcoxon p",
    ]
    .map(String::from)
    .to_vec();
    let rows = paired
        .iter()
        .map(|s| {
            vec![
                s.group.clone(),
                s.metric.name().into(),
                format!("{} ({})", s.n, s.configurations),
                format!("{} {}", fmt_signed(s.median), fmt_interval(s.ci_median)),
                fmt_signed(s.mean),
                format!("{:.0}%", 100.0 * s.win_rate),
                s.wilcoxon.map_or("–".into(), |w| fmt_p(w.p_value)),
            ]
        })
        .collect();
    let div_rows = diverged
        .iter()
        .map(|(d, s, p, b, n)| {
            vec![
                d.clone(),
                n.to_string(),
                s.to_string(),
                p.to_string(),
                b.to_string(),
            ]
        })
        .collect();
    vec![
        Block::Heading("Paired comparison".into()),
        Block::Paragraph(
            "Each configuration was trained in both layouts with the same seed, data order and \
             initial weights; Δ = parallel − sequential per pair (negative Δ loss: the shallow \
             layout is better). Intervals: 95% bootstrap of the median; p: two-sided Wilcoxon \
             signed-rank test for a difference, on one Δ per configuration (the mean over its \
             seeds' pairs), as the verdicts' tests (a large p is no evidence of equality: the \
             verdicts above rest on equivalence tests). Pairs with a diverged run are left out of \
             Δ and counted below."
                .into(),
        ),
        Block::Table(headers, rows),
        Block::Heading("Diverged runs".into()),
        Block::Table(
            [
                "dataset",
                "ended pairs",
                "sequential only",
                "parallel only",
                "both",
            ]
            .map(String::from)
            .to_vec(),
            div_rows,
        ),
    ]
}

/// Pairs at the 10th, 50th and 90th percentile of Δ validation loss, per dataset.
fn representative<'a>(pairs: &'a [Pair<'a>], dataset: &str) -> Vec<(String, &'a Pair<'a>)> {
    let mut finished: Vec<(&Pair, f64)> = pairs
        .iter()
        .filter(|p| p.cohort() == dataset && p.both_have_results())
        .filter_map(|p| {
            Some((
                p,
                Metric::ValLoss.value(p.par)? - Metric::ValLoss.value(p.seq)?,
            ))
        })
        .collect();
    finished.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut chosen: Vec<usize> = [0.1, 0.5, 0.9]
        .iter()
        .map(|q| ((finished.len().saturating_sub(1)) as f64 * q).round() as usize)
        .collect();
    chosen.dedup();
    chosen
        .into_iter()
        .filter_map(|i| finished.get(i))
        .map(|(p, d)| {
            let c = &p.seq.config;
            (
                format!(
                    "{dataset} L={} F={} k={} (Δ {})",
                    c.layers,
                    c.filters,
                    c.kernel,
                    fmt_signed(*d)
                ),
                *p,
            )
        })
        .collect()
}

fn figures(
    out: &Path,
    pairs: &[Pair],
    cohorts: &[String],
    epochs: &[crate::sweep::store::EpochRow],
) -> Result<Vec<Block>> {
    let dir = out.join("plots");
    let mut blocks = vec![Block::Heading("Plots".into())];
    plots::layout_scatter(&dir, "val_loss_pairs", pairs, Metric::ValLoss, cohorts)?;
    blocks.push(Block::Figure(
        "val_loss_pairs".into(),
        "Final validation loss, parallel vs sequential per pair (below the line: shallow better)."
            .into(),
    ));
    plots::layout_scatter(&dir, "train_loss_pairs", pairs, Metric::TrainLoss, cohorts)?;
    blocks.push(Block::Figure(
        "train_loss_pairs".into(),
        "Final training loss, parallel vs sequential per pair.".into(),
    ));
    for d in cohorts {
        let name = plots::figure_name("loss_vs_q", d);
        plots::loss_vs_q(&dir, &name, pairs, d)?;
        blocks.push(Block::Figure(
            name,
            format!("{d}: final validation loss against Q, with the bin edges 1, 3, 10."),
        ));
    }
    let chosen: Vec<(String, &Pair)> = cohorts
        .iter()
        .flat_map(|d| representative(pairs, d))
        .collect();
    plots::learning_curves(&dir, "learning_curves", &chosen, epochs)?;
    blocks.push(Block::Figure("learning_curves".into(), "Validation loss per epoch for pairs at the 10th, 50th and 90th percentile of Δ validation loss.".into()));
    plots::epoch_seconds(&dir, "epoch_seconds", pairs, cohorts)?;
    blocks.push(Block::Figure("epoch_seconds".into(), "Training seconds per epoch, parallel vs sequential per pair (below the line: parallel faster).".into()));
    Ok(blocks)
}

/// Validation loss against D per dataset, where the sweep has staged families.
fn staged_figures(
    out: &Path,
    families: &[staged::Family],
    cohorts: &[String],
) -> Result<Vec<Block>> {
    let mut blocks = vec![];
    for d in cohorts
        .iter()
        .filter(|d| families.iter().any(|f| &f.dataset == *d))
    {
        let name = plots::figure_name("val_loss_vs_stages", d);
        plots::val_loss_vs_stages(&out.join("plots"), &name, families, d)?;
        blocks.push(Block::Figure(
            name,
            format!("{d}: final validation loss against the number of stages D, one line per family (thin) and the median per L (bold)."),
        ));
    }
    Ok(blocks)
}
