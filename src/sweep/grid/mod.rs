//! The grid spec: a TOML file whose `[runs]` table gives every run setting as one value or a list
//! of values; the sweep is the cartesian product of the lists, minus the `[[exclude]]` rules.
//!
//! ```toml
//! name = "example"
//! [runs]
//! dataset = ["mnist", "cifar10"]
//! layout = ["sequential", "parallel"]
//! layers = [2, 4]
//! epochs = 1
//! [[exclude]]           # drops every run matching all of its keys (a list matches any of its values)
//! dataset = "cifar10"
//! layers = 4
//! ```
//! Settings left out take the defaults of [`default_settings`] (those of `shallow train`).
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use toml::{Spanned, Value};

use crate::model::Layout;
use crate::sweep::store::identity::RunSpec;
use crate::train::RunConfig;

mod expand;

use expand::{Axes, Mask};
pub use expand::{Runs, Summary};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    name: Option<String>,
    description: Option<String>,
    runs: BTreeMap<Spanned<String>, Spanned<Value>>,
    #[serde(default)]
    exclude: Vec<BTreeMap<Spanned<String>, Spanned<Value>>>,
}

/// Grids whose cartesian product (before `[[exclude]]`) is larger than this are refused unless
/// the caller raises the limit (`shallow sweep --max-runs`): a typo such as an extra list can
/// otherwise queue more runs than anyone could train.
pub const DEFAULT_MAX_RUNS: u64 = 1_000_000;

/// A parsed grid. Its runs are not held in memory: [`Grid::runs`] builds them one at a time and
/// [`Grid::summary`] holds their counts.
#[derive(Debug)]
pub struct Grid {
    pub name: String,
    pub description: String,
    origin: String,
    axes: Axes,
    masks: Vec<Mask>,
    summary: Summary,
}

impl Grid {
    /// The runs, in expansion order (the two layouts of a pair neighbours). An item is an error
    /// only for a combination of individually valid values that no run can have.
    pub fn runs(&self) -> Runs<'_> {
        Runs::new(&self.axes, &self.masks, &self.origin)
    }

    /// The file the grid was read from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The datasets the grid uses, sorted, each once.
    pub fn datasets(&self) -> &[String] {
        &self.summary.datasets
    }

    pub fn len(&self) -> u64 {
        self.summary.runs
    }

    pub fn is_empty(&self) -> bool {
        self.summary.runs == 0
    }

    pub fn pairs(&self) -> u64 {
        self.summary.pairs
    }
}

/// The settings a grid file may leave out, with the values `shallow train` uses (derived from
/// [`crate::train::settings`], where each is defined), except that the layout defaults to both.
pub fn default_settings() -> toml::Table {
    let mut table = toml::Table::try_from(crate::train::settings::defaults(Layout::Sequential))
        .expect("a run config serialises as a TOML table");
    table.insert(
        "layout".into(),
        Value::Array(vec!["sequential".into(), "parallel".into()]),
    );
    table
}

/// The settings expanded outermost, in this order: a partly finished sweep then holds every
/// configuration of every dataset for its first seeds — a whole answer with fewer replicates,
/// which the next seeds make more precise — rather than some datasets done and others untouched.
const OUTERMOST: [&str; 4] = ["seed", "dataset", "holdout", "data_seed"];
/// The settings expanded innermost, `layout` last: the layouts of a configuration are
/// neighbours, and the nets of one training recipe follow each other.
const INNERMOST: [&str; 9] = [
    "lr",
    "batchnorm",
    "pool",
    "head",
    "activation",
    "kernel",
    "filters",
    "layers",
    "layout",
];

/// Every run setting a grid may name — every field of [`RunConfig`] ([`crate::train::settings::names`])
/// — in the order a grid expands them, the last one innermost: [`OUTERMOST`], the others in the
/// order of `RunConfig`'s fields, then [`INNERMOST`], so that a partly finished sweep holds
/// complete pairs.
pub fn settings() -> &'static [&'static str] {
    static ORDER: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    ORDER.get_or_init(|| {
        let names = crate::train::settings::names();
        let middle = names
            .iter()
            .copied()
            .filter(|n| !OUTERMOST.contains(n) && !INNERMOST.contains(n));
        OUTERMOST
            .into_iter()
            .chain(middle)
            .chain(INNERMOST)
            .collect()
    })
}

pub fn load(path: &Path) -> Result<Grid> {
    load_limited(path, DEFAULT_MAX_RUNS)
}

/// [`load`] with a limit on the grid's size other than [`DEFAULT_MAX_RUNS`].
pub fn load_limited(path: &Path, max_runs: u64) -> Result<Grid> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_limited(&text, &path.display().to_string(), max_runs)
}

/// Parses a grid; `origin` names the file in error messages.
pub fn parse(text: &str, origin: &str) -> Result<Grid> {
    parse_limited(text, origin, DEFAULT_MAX_RUNS)
}

/// [`parse`] with a limit on the grid's size other than [`DEFAULT_MAX_RUNS`].
pub fn parse_limited(text: &str, origin: &str, max_runs: u64) -> Result<Grid> {
    let at = |span: std::ops::Range<usize>| format!("{origin}:{}", line_of(text, span.start));
    let file: GridFile = toml::from_str(text).map_err(|e| {
        let place = e.span().map(&at).unwrap_or_else(|| origin.to_owned());
        anyhow!("{place}: {}", e.message())
    })?;
    let mut axes: BTreeMap<String, Vec<Value>> = default_settings()
        .into_iter()
        .map(|(k, v)| (k, values_of(v)))
        .collect();
    for (key, value) in &file.runs {
        let name = key.get_ref();
        if !settings().contains(&name.as_str()) {
            bail!(
                "{}: unknown setting `{name}` in [runs]; known: {}",
                at(key.span()),
                settings().join(", ")
            );
        }
        let values = values_of(value.get_ref().clone());
        if values.is_empty() {
            bail!(
                "{}: `{name}` is an empty list: give at least one value",
                at(value.span())
            );
        }
        let values = distinct_values(name, values)
            .map_err(|e| anyhow!("{}: `{name}`: {e:#}", at(value.span())))?;
        axes.insert(name.clone(), values);
    }
    let axes: Axes = settings()
        .iter()
        .filter_map(|name| axes.remove_entry(*name))
        .collect();
    let size = expand::combinations(&axes);
    if size > u128::from(max_runs) {
        bail!(
            "{origin}: the grid expands to {size} combinations (before [[exclude]]), more than the \
             limit of {max_runs}; if that is intended, raise it with --max-runs {size}"
        );
    }
    let masks: Vec<Mask> = parse_excludes(&file.exclude, &at)?
        .iter()
        .filter_map(|rule| Mask::new(&axes, rule))
        .collect();
    let summary = expand::summarise(&axes, &masks);
    if summary.runs == 0 {
        bail!("{origin}: the exclude rules remove every run");
    }
    Ok(Grid {
        name: file.name.unwrap_or_else(|| {
            Path::new(origin)
                .file_stem()
                .map_or("sweep".into(), |s| s.to_string_lossy().into_owned())
        }),
        description: file.description.unwrap_or_default(),
        origin: origin.to_owned(),
        axes,
        masks,
        summary,
    })
}

/// Checks each value of one setting and drops repeats (`1e-3` after `0.001`), so that every
/// combination is a distinct run.
fn distinct_values(name: &str, values: Vec<Value>) -> Result<Vec<Value>> {
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    for v in values {
        let config = serde_json::to_value(check_value(name, &v)?)?;
        if seen.insert(config.get(name).map(ToString::to_string)) {
            kept.push(v);
        }
    }
    Ok(kept)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn values_of(value: Value) -> Vec<Value> {
    match value {
        Value::Array(values) => values,
        single => vec![single],
    }
}

/// Checks one value of one setting on its own, against the defaults for everything else (what a
/// value needs of other settings is checked per combination, as the grid streams).
fn check_value(name: &str, value: &Value) -> Result<RunConfig> {
    let mut table = first_of_each(&default_settings());
    table.insert(name.to_owned(), value.clone());
    let config = parse_config(&table).map_err(|e| match choices_of(name) {
        Some(choices) => anyhow!("expected one of {choices}, found {value}"),
        None => e,
    })?;
    config.validate_settings()?;
    Ok(config)
}

/// The values a setting with named choices (`stop`, `head`, …) takes, as `--help` lists them.
fn choices_of(name: &str) -> Option<String> {
    let setting = crate::train::settings::described()
        .iter()
        .find(|s| s.name == name)?;
    (!setting.choices.is_empty()).then(|| setting.choices.join(", "))
}

fn first_of_each(table: &toml::Table) -> toml::Table {
    table
        .iter()
        .map(|(k, v)| (k.clone(), values_of(v.clone()).remove(0)))
        .collect()
}

pub(super) fn to_config(table: &toml::Table) -> Result<RunConfig> {
    let config = parse_config(table)?;
    config.validate()?;
    Ok(config)
}

fn parse_config(table: &toml::Table) -> Result<RunConfig> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{}", e.message()))
}

type Rule = Vec<(String, Vec<Value>)>;

fn parse_excludes(
    rules: &[BTreeMap<Spanned<String>, Spanned<Value>>],
    at: &dyn Fn(std::ops::Range<usize>) -> String,
) -> Result<Vec<Rule>> {
    rules
        .iter()
        .map(|rule| {
            rule.iter()
                .map(|(key, value)| {
                    if !settings().contains(&key.get_ref().as_str()) {
                        bail!(
                            "{}: unknown setting `{}` in [[exclude]]",
                            at(key.span()),
                            key.get_ref()
                        );
                    }
                    let name = key.get_ref();
                    let values = values_of(value.get_ref().clone());
                    for v in &values {
                        check_value(name, v).map_err(|e| {
                            anyhow!(
                                "{}: `{name}` in [[exclude]] can never match: {e:#}",
                                at(value.span())
                            )
                        })?;
                    }
                    Ok((name.clone(), values))
                })
                .collect()
        })
        .collect()
}

/// Equality that treats `1e-3` and `0.001`, or `2` and `2.0`, as the same number.
pub(super) fn same_value(a: &Value, b: &Value) -> bool {
    match (
        a.as_float().or(a.as_integer().map(|i| i as f64)),
        b.as_float().or(b.as_integer().map(|i| i as f64)),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The content hash of each user data file (`npz:`, `folder:`) of a grid, by dataset name (see
/// [`RunConfig::data_hash`]): stamped into its runs, and so into their ids, as they are queued —
/// a grid's runs are compared with stored ones only once stamped.
#[derive(Debug, Default)]
pub struct DataHashes(std::collections::HashMap<String, String>);

impl DataHashes {
    /// Hashes the user data files of `grid` under `data_dir`.
    pub fn of(grid: &Grid, data_dir: &Path) -> Result<DataHashes> {
        let mut hashes = DataHashes::default();
        for dataset in grid.datasets() {
            if let Some(hash) = crate::data::content_hash(data_dir, dataset)? {
                hashes.0.insert(dataset.clone(), hash);
            }
        }
        Ok(hashes)
    }

    pub fn get(&self, dataset: &str) -> Option<&String> {
        self.0.get(dataset)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `run` with its data file's hash in its config and ids.
    pub fn stamp(&self, run: RunSpec) -> RunSpec {
        match self.0.get(&run.config.dataset) {
            Some(hash) => RunSpec::of(RunConfig {
                data_hash: Some(hash.clone()),
                ..run.config
            }),
            None => run,
        }
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;

    #[test]
    fn the_expansion_order_names_every_setting_once_and_no_other() {
        let names = crate::train::settings::names();
        for n in OUTERMOST.iter().chain(&INNERMOST) {
            assert!(names.contains(n), "{n} is not a setting of RunConfig");
        }
        let mut order = settings().to_vec();
        assert_eq!(order.last(), Some(&"layout"));
        order.sort_unstable();
        let mut all = names.to_vec();
        all.sort_unstable();
        assert_eq!(order, all);
    }
}
