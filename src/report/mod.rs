//! `shallow report`: turns a results database into the answer to "is the shallow layout as good
//! as the deep one?" — Markdown and self-contained HTML, CSV tables, SVG/PNG plots. It only reads
//! the store, and works on partial sweeps and on databases still being written.
pub mod analysis;
pub mod plots;
pub mod stats;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::sweep::store::{RunRow, SqliteStore, Store};
use analysis::{Metric, Pair, Q_BINS, fmt_interval, fmt_p, fmt_signed};

/// A piece of the report, rendered to both Markdown and HTML.
enum Block {
    Heading(String),
    Paragraph(String),
    Table(Vec<String>, Vec<Vec<String>>),
    Figure(String, String),
}

/// What was written.
pub struct ReportFiles {
    pub markdown: std::path::PathBuf,
    pub html: std::path::PathBuf,
    pub finished_runs: usize,
    pub total_runs: usize,
}

pub fn generate(db: &Path, out: &Path) -> Result<ReportFiles> {
    let store = SqliteStore::open_existing(db)?;
    let runs = store.runs()?;
    let epochs = store.epochs()?;
    for sub in ["tables", "plots"] {
        std::fs::create_dir_all(out.join(sub))
            .with_context(|| format!("cannot create {}", out.join(sub).display()))?;
    }
    let datasets = analysis::datasets(&runs);
    let pairs = analysis::pairs(&runs);
    let cells = analysis::table2(&runs);
    let paired = analysis::paired_comparisons(&pairs);
    let diverged = analysis::diverged_counts(&pairs);

    let mut blocks = vec![Block::Heading(format!(
        "Deep vs shallow: report on {}",
        db.display()
    ))];
    blocks.extend(summary(&runs));
    blocks.push(Block::Heading("Conclusion".into()));
    for d in &datasets {
        if let Some(text) = analysis::conclusion(d, &paired) {
            blocks.push(Block::Paragraph(text));
        }
    }
    blocks.extend(table2_blocks(&cells, &datasets));
    blocks.extend(paired_blocks(&paired, &diverged));
    blocks.extend(figures(out, &pairs, &datasets, &epochs)?);

    write_csvs(out, &cells, &paired, &diverged)?;
    let markdown = out.join("report.md");
    std::fs::write(&markdown, to_markdown(&blocks))?;
    let html = out.join("report.html");
    std::fs::write(&html, to_html(&blocks, out)?)?;
    Ok(ReportFiles {
        markdown,
        html,
        finished_runs: runs
            .iter()
            .filter(|r| matches!(r.status.as_str(), "done" | "diverged" | "failed"))
            .count(),
        total_runs: runs.len(),
    })
}

fn summary(runs: &[RunRow]) -> Vec<Block> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in runs {
        *counts.entry(r.status.as_str()).or_default() += 1;
    }
    let open = counts.get("pending").unwrap_or(&0) + counts.get("running").unwrap_or(&0);
    let compute: f64 = runs.iter().filter_map(|r| r.total_seconds).sum();
    let mut text = format!(
        "{} runs: {}. Total compute time {}.",
        runs.len(),
        counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        crate::sweep::coordinator::human_duration(compute)
    );
    if open > 0 {
        text += &format!(
            " **Partial sweep**: {open} runs are not finished yet; this report covers the finished ones."
        );
    }
    let mut axes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in runs {
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&r.config) {
            for (k, v) in map {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                let values = axes.entry(k).or_default();
                if !values.contains(&v) {
                    values.push(v);
                }
            }
        }
    }
    let rows = axes
        .into_iter()
        .map(|(k, v)| vec![k, v.join(", ")])
        .collect();
    vec![
        Block::Heading("Sweep".into()),
        Block::Paragraph(text),
        Block::Table(vec!["setting".into(), "values in the sweep".into()], rows),
    ]
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

fn table2_blocks(cells: &[analysis::Table2Cell], datasets: &[String]) -> Vec<Block> {
    let mut blocks = vec![
        Block::Heading("Table 2: mean final losses per Q bin".into()),
        Block::Paragraph(
            "Mean final training loss (whole training set, eval mode) and validation loss of the \
             finished runs, with 95% bootstrap intervals of the mean and the number of runs n \
             (diverged runs counted apart). Bins: Q in [0,1), [1,3), [3,10), [10,∞), lower edge \
             inclusive. The columns marked *paper* are the values published in Bermeitinger et \
             al. (2023), Table 2, for comparison."
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
    for d in datasets {
        for c in cells.iter().filter(|c| &c.dataset == d) {
            let paper = analysis::paper_value(d, c.layout, c.bin);
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
        "pairs",
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
                s.n.to_string(),
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
             signed-rank test. Pairs with a diverged run are left out of Δ and counted below."
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
        .filter(|p| p.dataset() == dataset && p.both_finished())
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
    datasets: &[String],
    epochs: &[crate::sweep::store::EpochRow],
) -> Result<Vec<Block>> {
    let dir = out.join("plots");
    let mut blocks = vec![Block::Heading("Plots".into())];
    plots::layout_scatter(&dir, "val_loss_pairs", pairs, Metric::ValLoss, datasets)?;
    blocks.push(Block::Figure(
        "val_loss_pairs".into(),
        "Final validation loss, parallel vs sequential per pair (below the line: shallow better)."
            .into(),
    ));
    plots::layout_scatter(&dir, "train_loss_pairs", pairs, Metric::TrainLoss, datasets)?;
    blocks.push(Block::Figure(
        "train_loss_pairs".into(),
        "Final training loss, parallel vs sequential per pair.".into(),
    ));
    for d in datasets {
        let name = format!("loss_vs_q_{d}");
        plots::loss_vs_q(&dir, &name, pairs, d)?;
        blocks.push(Block::Figure(
            name,
            format!("{d}: final validation loss against Q, with the bin edges 1, 3, 10."),
        ));
    }
    let chosen: Vec<(String, &Pair)> = datasets
        .iter()
        .flat_map(|d| representative(pairs, d))
        .collect();
    plots::learning_curves(&dir, "learning_curves", &chosen, epochs)?;
    blocks.push(Block::Figure("learning_curves".into(), "Validation loss per epoch for pairs at the 10th, 50th and 90th percentile of Δ validation loss.".into()));
    plots::epoch_seconds(&dir, "epoch_seconds", pairs, datasets)?;
    blocks.push(Block::Figure("epoch_seconds".into(), "Training seconds per epoch, parallel vs sequential per pair (below the line: parallel faster).".into()));
    Ok(blocks)
}

fn write_csvs(
    out: &Path,
    cells: &[analysis::Table2Cell],
    paired: &[analysis::PairedStat],
    diverged: &[(String, usize, usize, usize, usize)],
) -> Result<()> {
    let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    let mut w = csv::Writer::from_path(out.join("tables/table2.csv"))?;
    w.write_record([
        "dataset",
        "layout",
        "q_bin",
        "n",
        "diverged",
        "train_loss_mean",
        "train_loss_ci_low",
        "train_loss_ci_high",
        "val_loss_mean",
        "val_loss_ci_low",
        "val_loss_ci_high",
        "paper_train_loss",
        "paper_val_loss",
    ])?;
    for c in cells {
        let paper = analysis::paper_value(&c.dataset, c.layout, c.bin);
        let est = |e: Option<analysis::Estimate>| {
            [
                opt(e.map(|e| e.mean)),
                opt(e.and_then(|e| e.ci).map(|c| c.0)),
                opt(e.and_then(|e| e.ci).map(|c| c.1)),
            ]
        };
        let [tm, tl, th] = est(c.train_loss);
        let [vm, vl, vh] = est(c.val_loss);
        w.write_record([
            c.dataset.clone(),
            c.layout.to_string(),
            Q_BINS[c.bin].into(),
            c.n.to_string(),
            c.diverged.to_string(),
            tm,
            tl,
            th,
            vm,
            vl,
            vh,
            opt(paper.map(|p| p.0)),
            opt(paper.map(|p| p.1)),
        ])?;
    }
    w.flush()?;
    let mut w = csv::Writer::from_path(out.join("tables/paired.csv"))?;
    w.write_record([
        "group",
        "metric",
        "n",
        "median_delta",
        "median_ci_low",
        "median_ci_high",
        "mean_delta",
        "parallel_win_rate",
        "wilcoxon_statistic",
        "wilcoxon_p",
    ])?;
    for s in paired {
        w.write_record([
            s.group.clone(),
            s.metric.name().into(),
            s.n.to_string(),
            s.median.to_string(),
            opt(s.ci_median.map(|c| c.0)),
            opt(s.ci_median.map(|c| c.1)),
            s.mean.to_string(),
            s.win_rate.to_string(),
            opt(s.wilcoxon.map(|w| w.statistic)),
            opt(s.wilcoxon.map(|w| w.p_value)),
        ])?;
    }
    w.flush()?;
    let mut w = csv::Writer::from_path(out.join("tables/diverged.csv"))?;
    w.write_record([
        "dataset",
        "ended_pairs",
        "sequential_only",
        "parallel_only",
        "both",
    ])?;
    for (d, s, p, b, n) in diverged {
        w.write_record([
            d.clone(),
            n.to_string(),
            s.to_string(),
            p.to_string(),
            b.to_string(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn to_markdown(blocks: &[Block]) -> String {
    let mut md = String::new();
    let mut first = true;
    for b in blocks {
        match b {
            Block::Heading(t) if first => {
                let _ = writeln!(md, "# {t}\n");
                first = false;
            }
            Block::Heading(t) => {
                let _ = writeln!(md, "## {t}\n");
            }
            Block::Paragraph(t) => {
                let _ = writeln!(md, "{t}\n");
            }
            Block::Table(headers, rows) => {
                let _ = writeln!(md, "| {} |", headers.join(" | "));
                let _ = writeln!(md, "|{}|", vec!["---"; headers.len()].join("|"));
                for row in rows {
                    let _ = writeln!(md, "| {} |", row.join(" | "));
                }
                md.push('\n');
            }
            Block::Figure(name, caption) => {
                let _ = writeln!(md, "![{caption}](plots/{name}.svg)\n\n*{caption}*\n");
            }
        }
    }
    md
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Light emphasis: `**bold**` and `*italic*` as the Markdown shows them.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(text).split("**").enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<strong>{part}</strong>");
        } else {
            for (j, p) in part.split('*').enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<em>{p}</em>");
                } else {
                    out.push_str(p);
                }
            }
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}\
th{background:#f3f3f3}figure{margin:1.5em 0}figcaption{font-style:italic;color:#555}svg{max-width:100%;height:auto}";

fn to_html(blocks: &[Block], out: &Path) -> Result<String> {
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>shallow report</title><style>{STYLE}</style></head><body>\n"
    );
    let mut first = true;
    for b in blocks {
        match b {
            Block::Heading(t) => {
                let level = if first { 1 } else { 2 };
                first = false;
                let _ = writeln!(html, "<h{level}>{}</h{level}>", escape(t));
            }
            Block::Paragraph(t) => {
                let _ = writeln!(html, "<p>{}</p>", inline(t));
            }
            Block::Table(headers, rows) => {
                html.push_str("<table><thead><tr>");
                for h in headers {
                    let _ = write!(html, "<th>{}</th>", escape(h));
                }
                html.push_str("</tr></thead><tbody>\n");
                for row in rows {
                    html.push_str("<tr>");
                    for cell in row {
                        let _ = write!(html, "<td>{}</td>", escape(cell));
                    }
                    html.push_str("</tr>\n");
                }
                html.push_str("</tbody></table>\n");
            }
            Block::Figure(name, caption) => {
                let path = out.join("plots").join(format!("{name}.svg"));
                let svg = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let svg = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
                let _ = writeln!(
                    html,
                    "<figure>{svg}<figcaption>{}</figcaption></figure>",
                    escape(caption)
                );
            }
        }
    }
    html.push_str("</body></html>\n");
    Ok(html)
}
