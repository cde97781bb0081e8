//! Which settings drive the difference: per dataset, Δ per value of every setting the grid varies
//! (tested as the verdicts are, on configurations), and each setting's importance — its share of
//! the variation of the per-configuration Δ across configurations ([`anova`]), with a bootstrap
//! interval. With a stopping rule the final metrics are those of each run's restored best
//! held-out epoch, so the breakdown is at the best epoch too.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use super::analysis::{Configuration, Pair};
use super::anova::{self, Importance};
use super::equivalence::{self, EquivalenceRow, Margins, Quantity};
use super::plots;
use super::render::Block;

/// Settings never broken down by: the two that make a pair and the replicate, and the data file
/// behind a dataset name.
const NOT_SETTINGS: [&str; 4] = ["dataset", "layout", "seed", "data_hash"];

/// One dataset's breakdown.
pub struct Drivers {
    pub dataset: String,
    /// Per varied setting and value (in the order values sort), the equivalence rows of its
    /// pairs, group named `dataset · setting=value`.
    pub by_value: Vec<(String, String, Vec<EquivalenceRow>)>,
    /// The varied settings ranked by their share of Δ(validation loss)'s variation, the residual
    /// last; `None` with fewer than three configurations.
    pub importances: Option<Vec<Importance>>,
    /// Configurations behind the importances.
    pub configurations: usize,
}

impl Drivers {
    /// The most important setting, when one explains any variation.
    pub fn top(&self) -> Option<&Importance> {
        self.importances
            .as_ref()?
            .first()
            .filter(|i| i.name != "residual" && i.share > 0.0)
    }
}

/// The breakdown of every dataset with finished pairs.
pub fn drivers(pairs: &[Pair], cohorts: &[String], margins: &Margins) -> Vec<Drivers> {
    cohorts
        .iter()
        .filter_map(|d| {
            let of: Vec<&Pair> = pairs
                .iter()
                .filter(|p| p.cohort() == d && p.both_have_results())
                .collect();
            (!of.is_empty()).then(|| of_dataset(d, &of, margins))
        })
        .collect()
}

fn of_dataset(dataset: &str, pairs: &[&Pair], margins: &Margins) -> Drivers {
    let texts: Vec<BTreeMap<String, String>> = pairs
        .iter()
        .map(|p| crate::train::settings::value_texts(&p.seq.config))
        .collect();
    let varied = varied(&texts);
    // Per pair, its level of each varied setting.
    let levels: Vec<Vec<usize>> = texts
        .iter()
        .map(|t| varied.iter().map(|v| v.level(t)).collect())
        .collect();
    let mut by_value = Vec::new();
    for (s, setting) in varied.iter().enumerate() {
        for (l, label) in setting.labels.iter().enumerate() {
            let members: Vec<&Pair> = pairs
                .iter()
                .zip(&levels)
                .filter(|(_, of)| of[s] == l)
                .map(|(p, _)| *p)
                .collect();
            let group = format!("{dataset} · {}={label}", setting.name);
            let rows = equivalence::group_rows(&group, &members, margins);
            by_value.push((setting.name.clone(), label.clone(), rows));
        }
    }
    let (factors, y) = configuration_table(pairs, &levels, &varied);
    let importances = (y.len() >= 3)
        .then(|| anova::importances(&factors, &y))
        .flatten();
    Drivers {
        dataset: dataset.to_owned(),
        by_value,
        importances,
        configurations: y.len(),
    }
}

/// A numeric setting with more distinct values than this (a sampled grid's learning rates, say)
/// is broken down by this many ranges of consecutive values instead, so that tables, plots and
/// the importance model (one column per level) stay readable and small.
const MAX_LEVELS: usize = 12;

/// A setting taking more than one value: its levels as the breakdown shows them, in order — each
/// value, or ranges of values ([`MAX_LEVELS`]).
struct Varied {
    name: String,
    labels: Vec<String>,
    /// Each value's level.
    level_of: BTreeMap<String, usize>,
}

impl Varied {
    fn level(&self, texts: &BTreeMap<String, String>) -> usize {
        self.level_of[&texts[&self.name]]
    }
}

/// The settings taking more than one value among `texts`, each with its values sorted (numbers
/// by value) and, numeric ones with more than [`MAX_LEVELS`], grouped into as many ranges of
/// (as nearly as can be) equally many consecutive values, labelled `low–high`.
fn varied(texts: &[BTreeMap<String, String>]) -> Vec<Varied> {
    let Some(first) = texts.first() else {
        return Vec::new();
    };
    first
        .keys()
        .filter(|k| !NOT_SETTINGS.contains(&k.as_str()))
        .filter_map(|k| {
            let mut values: Vec<String> = texts.iter().filter_map(|t| t.get(k).cloned()).collect();
            values.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => x.total_cmp(&y),
                _ => a.cmp(b),
            });
            values.dedup();
            (values.len() > 1).then(|| levels(k, values))
        })
        .collect()
}

fn levels(name: &str, values: Vec<String>) -> Varied {
    let numeric = values.iter().all(|v| v.parse::<f64>().is_ok());
    let ranges = if numeric && values.len() > MAX_LEVELS {
        MAX_LEVELS
    } else {
        values.len()
    };
    let mut labels = Vec::with_capacity(ranges);
    let mut level_of = BTreeMap::new();
    for level in 0..ranges {
        let chunk = &values[level * values.len() / ranges..(level + 1) * values.len() / ranges];
        labels.push(match chunk {
            [one] => one.clone(),
            [low, .., high] => format!("{low}–{high}"),
            [] => unreachable!("ranges ≤ values: every range holds a value"),
        });
        level_of.extend(chunk.iter().map(|v| (v.clone(), level)));
    }
    Varied {
        name: name.to_owned(),
        labels,
        level_of,
    }
}

/// Per configuration: its level of every varied setting and its Δ of the relative validation
/// loss (the mean over its seeds' pairs, as the verdicts take it).
fn configuration_table(
    pairs: &[&Pair],
    levels: &[Vec<usize>],
    varied: &[Varied],
) -> (Vec<anova::Factor>, Vec<f64>) {
    let mut sums: BTreeMap<Configuration, (usize, f64, usize)> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        if let Some(d) = relative_loss(p) {
            let e = sums.entry(p.configuration).or_insert((i, 0.0, 0));
            e.1 += d;
            e.2 += 1;
        }
    }
    let mut factors: Vec<anova::Factor> = varied
        .iter()
        .map(|v| (v.name.clone(), Vec::new()))
        .collect();
    let mut y = Vec::new();
    for (first, sum, n) in sums.into_values() {
        y.push(sum / n as f64);
        for ((_, of), (v, &level)) in factors.iter_mut().zip(varied.iter().zip(&levels[first])) {
            of.push(v.labels[level].clone());
        }
    }
    (factors, y)
}

fn relative_loss(p: &Pair) -> Option<f64> {
    let (s, q) = (p.seq.final_val_loss?, p.par.final_val_loss?);
    (s > 0.0).then(|| (q - s) / s)
}

/// The report's section: per dataset the importances (a sentence naming the top setting and a
/// table), Δ per value (a table and a forest plot per quantity).
pub fn blocks(out: &Path, drivers: &[Drivers], margins: &Margins) -> Result<Vec<Block>> {
    if drivers.iter().all(|d| d.by_value.is_empty()) {
        return Ok(Vec::new());
    }
    let mut blocks = vec![
        Block::Heading("Which settings drive Δ".into()),
        Block::Paragraph(
            "Per dataset and per value of every setting the sweep varies: Δ (parallel − \
             sequential) over the pairs with that value, tested as the verdicts are (n \
             configurations, 90 % interval, TOST against the margin). **Importance**: each \
             setting's share of the variation of the per-configuration Δ of the validation loss \
             — its type II sum of squares in the main-effects linear model of Δ on all varied \
             settings (each a categorical factor), over the total sum of squares. For a full \
             factorial grid this is the classical ANOVA decomposition; for a grid with excluded \
             combinations it credits a setting only with what the others cannot explain, so \
             variation two settings share (settings varied together) is credited to neither \
             (df 0: confounded). Interactions are not modelled; what the main effects leave is \
             the residual. Intervals: 95 % bootstrap over configurations."
                .into(),
        ),
    ];
    for d in drivers.iter().filter(|d| !d.by_value.is_empty()) {
        blocks.push(Block::Paragraph(importance_sentence(d)));
        if let Some(ranked) = &d.importances {
            blocks.push(importance_table(ranked));
        }
        blocks.push(value_table(d, margins));
        for q in Quantity::ALL {
            blocks.extend(forest(out, d, q, margins)?);
        }
    }
    Ok(blocks)
}

/// "**mnist**: Δ depends mostly on `head` (54 % [31, 77] of …)".
pub fn importance_sentence(d: &Drivers) -> String {
    let Some(ranked) = &d.importances else {
        return format!(
            "**{}**: {} configuration(s): too few to apportion Δ's variation.",
            d.dataset, d.configurations
        );
    };
    let share = |i: &Importance| {
        let ci = i.ci.map_or(String::new(), |(lo, hi)| {
            format!(" [{:.0}, {:.0}]", 100.0 * lo, 100.0 * hi)
        });
        format!("{:.0} %{ci}", 100.0 * i.share)
    };
    let residual = ranked.last().expect("the residual entry");
    match d.top() {
        Some(top) => format!(
            "**{}**: Δ of the validation loss depends mostly on `{}` ({} of its variation across \
             {} configurations); {} is left to interactions and noise.",
            d.dataset,
            top.name,
            share(top),
            d.configurations,
            share(residual)
        ),
        None => format!(
            "**{}**: no setting explains any of Δ's variation across {} configurations.",
            d.dataset, d.configurations
        ),
    }
}

fn importance_table(ranked: &[Importance]) -> Block {
    let rows = ranked
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                format!("{:.1} %", 100.0 * i.share),
                i.ci.map_or("–".into(), |(lo, hi)| {
                    format!("[{:.1}, {:.1}]", 100.0 * lo, 100.0 * hi)
                }),
                if i.df == 0 {
                    "0 (confounded)".into()
                } else {
                    i.df.to_string()
                },
            ]
        })
        .collect();
    Block::Table(
        ["setting", "share of Δ's variation", "95 % CI", "df"]
            .map(String::from)
            .to_vec(),
        rows,
    )
}

fn value_table(d: &Drivers, margins: &Margins) -> Block {
    let mut rows = Vec::new();
    for (setting, value, eq) in &d.by_value {
        for r in eq {
            let q = r.quantity;
            rows.push(vec![
                format!("{setting} = {value}"),
                q.name().into(),
                format!("{} ({})", r.n, r.pairs),
                r.t.map_or(format!("{} (median)", q.format(r.median)), |t| {
                    format!(
                        "{} [{}, {}]",
                        q.format(t.mean),
                        q.format(t.ci90.0),
                        q.format(t.ci90.1)
                    )
                }),
                r.verdict.text(q, margins),
            ]);
        }
    }
    Block::Table(
        [
            &format!("{}: value", d.dataset),
            "Δ of",
            "n (pairs)",
            "mean Δ [90% CI]",
            "verdict",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    )
}

fn forest(out: &Path, d: &Drivers, q: Quantity, margins: &Margins) -> Result<Option<Block>> {
    let (scale, unit) = q.plot_axis();
    let rows: Vec<plots::ForestRow> = d
        .by_value
        .iter()
        .flat_map(|(setting, value, eq)| eq.iter().map(move |r| (setting, value, r)))
        .filter(|(_, _, r)| r.quantity == q)
        .filter_map(|(setting, value, r)| r.forest_row(format!("{setting}={value} (n={})", r.n)))
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let kind = match q {
        Quantity::RelValLoss => "drivers_val_loss",
        Quantity::ValAccPoints => "drivers_val_acc",
    };
    let name = plots::figure_name(kind, &d.dataset);
    plots::forest(
        &out.join("plots"),
        &name,
        &format!("{}: parallel − sequential by setting", d.dataset),
        unit,
        &rows,
        scale * q.margin(margins),
    )?;
    Ok(Some(Block::Figure(
        name,
        format!(
            "{}: {unit} per value of each varied setting: mean (dot) with its 90 % interval (bar) \
             and median (cross), against the ±margin band.",
            d.dataset
        ),
    )))
}

/// `tables/drivers.csv` (Δ per setting value) and `tables/importance.csv` (the ranked shares).
pub fn write_tables(out: &Path, drivers: &[Drivers]) -> Result<()> {
    #[derive(serde::Serialize)]
    struct ValueRow<'a> {
        dataset: &'a str,
        setting: &'a str,
        value: &'a str,
        delta_of: &'a str,
        configurations: usize,
        pairs: usize,
        mean: Option<f64>,
        ci90_low: Option<f64>,
        ci90_high: Option<f64>,
        median: f64,
        verdict: String,
    }
    #[derive(serde::Serialize)]
    struct ShareRow<'a> {
        dataset: &'a str,
        setting: &'a str,
        share: f64,
        ci95_low: Option<f64>,
        ci95_high: Option<f64>,
        df: usize,
        configurations: usize,
    }
    let values = drivers.iter().flat_map(|d| {
        d.by_value.iter().flat_map(move |(setting, value, eq)| {
            eq.iter().map(move |r| ValueRow {
                dataset: &d.dataset,
                setting,
                value,
                delta_of: r.quantity.name(),
                configurations: r.n,
                pairs: r.pairs,
                mean: r.t.map(|t| t.mean),
                ci90_low: r.t.map(|t| t.ci90.0),
                ci90_high: r.t.map(|t| t.ci90.1),
                median: r.median,
                verdict: format!("{:?}", r.verdict),
            })
        })
    });
    super::tables::write_rows(&out.join("tables").join("drivers.csv"), values)?;
    let shares = drivers.iter().flat_map(|d| {
        d.importances.iter().flatten().map(move |i| ShareRow {
            dataset: &d.dataset,
            setting: &i.name,
            share: i.share,
            ci95_low: i.ci.map(|c| c.0),
            ci95_high: i.ci.map(|c| c.1),
            df: i.df,
            configurations: d.configurations,
        })
    });
    super::tables::write_rows(&out.join("tables").join("importance.csv"), shares)
}
