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
use sha2::{Digest, Sha256};
use toml::{Spanned, Value};

use crate::model::Layout;
use crate::train::RunConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    name: Option<String>,
    description: Option<String>,
    runs: BTreeMap<Spanned<String>, Spanned<Value>>,
    #[serde(default)]
    exclude: Vec<BTreeMap<Spanned<String>, Spanned<Value>>>,
}

/// One run of a sweep with its stable identity.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Hash of the canonical resolved config.
    pub id: String,
    /// Hash of the config without its layout: the sequential and parallel runs of one
    /// configuration share it.
    pub pair_id: String,
    pub config: RunConfig,
}

#[derive(Debug)]
pub struct Grid {
    pub name: String,
    pub description: String,
    pub runs: Vec<RunSpec>,
}

impl Grid {
    /// The datasets the grid uses, sorted, each once.
    pub fn datasets(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .runs
            .iter()
            .map(|r| r.config.dataset.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    pub fn pairs(&self) -> usize {
        let ids: std::collections::BTreeSet<_> = self.runs.iter().map(|r| &r.pair_id).collect();
        ids.len()
    }
}

/// The settings a grid file may leave out, with the values `shallow train` uses (derived from
/// [`crate::settings`], where each is defined), except that the layout defaults to both.
pub fn default_settings() -> toml::Table {
    let mut table = toml::Table::try_from(crate::settings::defaults(Layout::Sequential))
        .expect("a run config serialises as a TOML table");
    table.insert(
        "layout".into(),
        Value::Array(vec!["sequential".into(), "parallel".into()]),
    );
    table
}

/// Axes are expanded in this order, the last one innermost, so that the two layouts of a pair are
/// neighbours and a partly finished sweep holds complete pairs.
const AXIS_ORDER: [&str; 17] = [
    "dataset",
    "seed",
    "epochs",
    "batch_size",
    "train_limit",
    "val_limit",
    "subset",
    "precision",
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

pub fn load(path: &Path) -> Result<Grid> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Parses and expands a grid; `origin` names the file in error messages.
pub fn parse(text: &str, origin: &str) -> Result<Grid> {
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
        if !AXIS_ORDER.contains(&name.as_str()) {
            bail!(
                "{}: unknown setting `{name}` in [runs]; known: {}",
                at(key.span()),
                AXIS_ORDER.join(", ")
            );
        }
        let values = values_of(value.get_ref().clone());
        if values.is_empty() {
            bail!(
                "{}: `{name}` is an empty list: give at least one value",
                at(value.span())
            );
        }
        for v in &values {
            check_value(name, v).map_err(|e| anyhow!("{}: `{name}`: {e:#}", at(value.span())))?;
        }
        axes.insert(name.clone(), values);
    }
    let excludes = parse_excludes(&file.exclude, &at)?;
    let mut runs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for combination in cartesian(&axes) {
        if excludes.iter().any(|rule| matches(rule, &combination)) {
            continue;
        }
        let config = to_config(&combination).map_err(|e| {
            anyhow!(
                "{origin}: impossible combination {}: {e:#}",
                describe(&combination)
            )
        })?;
        let spec = RunSpec {
            id: run_id(&config),
            pair_id: pair_id(&config),
            config,
        };
        if seen.insert(spec.id.clone()) {
            runs.push(spec);
        }
    }
    if runs.is_empty() {
        bail!("{origin}: the exclude rules remove every run");
    }
    Ok(Grid {
        name: file.name.unwrap_or_else(|| {
            Path::new(origin)
                .file_stem()
                .map_or("sweep".into(), |s| s.to_string_lossy().into_owned())
        }),
        description: file.description.unwrap_or_default(),
        runs,
    })
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

/// Checks one value of one setting on its own, against the defaults for everything else.
fn check_value(name: &str, value: &Value) -> Result<()> {
    let mut table = first_of_each(&default_settings());
    table.insert(name.to_owned(), value.clone());
    to_config(&table).map(|_| ())
}

fn first_of_each(table: &toml::Table) -> toml::Table {
    table
        .iter()
        .map(|(k, v)| (k.clone(), values_of(v.clone()).remove(0)))
        .collect()
}

fn to_config(table: &toml::Table) -> Result<RunConfig> {
    let config: RunConfig = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{}", e.message()))?;
    config.validate()?;
    Ok(config)
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
                    if !AXIS_ORDER.contains(&key.get_ref().as_str()) {
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

fn matches(rule: &Rule, combination: &toml::Table) -> bool {
    !rule.is_empty()
        && rule.iter().all(|(key, values)| {
            combination
                .get(key)
                .is_some_and(|v| values.iter().any(|w| same_value(v, w)))
        })
}

/// Equality that treats `1e-3` and `0.001`, or `2` and `2.0`, as the same number.
fn same_value(a: &Value, b: &Value) -> bool {
    match (
        a.as_float().or(a.as_integer().map(|i| i as f64)),
        b.as_float().or(b.as_integer().map(|i| i as f64)),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn cartesian(axes: &BTreeMap<String, Vec<Value>>) -> Vec<toml::Table> {
    let mut combinations = vec![toml::Table::new()];
    for name in AXIS_ORDER {
        let Some(values) = axes.get(name) else {
            continue;
        };
        combinations = combinations
            .into_iter()
            .flat_map(|partial| {
                values.iter().map(move |v| {
                    let mut next = partial.clone();
                    next.insert(name.to_owned(), v.clone());
                    next
                })
            })
            .collect();
    }
    combinations
}

fn describe(combination: &toml::Table) -> String {
    combination
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Canonical form of a config: JSON with keys sorted (serde_json's map is ordered).
fn canonical(value: &serde_json::Value) -> String {
    serde_json::to_string(value).expect("a JSON value serialises")
}

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

pub fn run_id(config: &RunConfig) -> String {
    short_hash(&canonical(
        &serde_json::to_value(config).expect("config serialises"),
    ))
}

pub fn pair_id(config: &RunConfig) -> String {
    let mut value = serde_json::to_value(config).expect("config serialises");
    value
        .as_object_mut()
        .expect("config is an object")
        .remove("layout");
    short_hash(&canonical(&value))
}
