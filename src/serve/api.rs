//! The dashboard's JSON endpoints: a page of the runs table and the curves of chosen runs, read
//! from the store for each request.
use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value as Json;

use super::index::SettingsIndex;
use crate::sweep::store::{EpochRow, RunRow, RunStatus, RunsQuery, SortKey, Store};

/// Rows a page may ask for at most.
pub const MAX_PAGE: usize = 500;
/// Runs whose curves one request may ask for at most.
const MAX_CURVES: usize = 20;

/// A query the dashboard cannot answer: a wrong parameter, not a store failure.
#[derive(Debug)]
pub struct BadQuery(pub String);

impl std::fmt::Display for BadQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadQuery {}

/// A page of the runs table.
#[derive(Serialize)]
pub struct RunsPage {
    pub total: u64,
    pub offset: usize,
    pub runs: Vec<RunRow>,
    /// The ids of this page's runs whose net was saved in the dashboard's `--nets` folder.
    pub nets: Vec<String>,
}

/// The query of `/api/runs`: `offset`, `limit`, `status`, `pair`, `sort`, `desc=1`, and any
/// setting by name (`layers=4`, `dataset=mnist`; a value that reads as JSON is taken as such).
pub fn runs_query(pairs: &[(String, String)]) -> Result<RunsQuery> {
    let mut q = RunsQuery {
        limit: 50,
        ..RunsQuery::default()
    };
    for (key, value) in pairs {
        match key.as_str() {
            "offset" => q.offset = value.parse().context("offset: not a count")?,
            "limit" => {
                q.limit = value.parse().context("limit: not a count")?;
                if q.limit == 0 || q.limit > MAX_PAGE {
                    bail!("limit: 1 to {MAX_PAGE} rows");
                }
            }
            "status" if !value.is_empty() => q.status = Some(value.parse::<RunStatus>()?),
            "pair" => q.pair_id = Some(value.clone()),
            "sort" if !value.is_empty() => q.sort = Some(SortKey::named(value)?),
            "desc" => q.descending = value == "1" || value == "true",
            "token" | "status" | "sort" => {}
            setting => {
                let value = serde_json::from_str(value).unwrap_or(Json::from(value.as_str()));
                q.settings.push((setting.to_owned(), value));
            }
        }
    }
    q.check()?;
    Ok(q)
}

/// A page of the runs table: settings filtered and sorted by `index`, the rest by the database.
/// `nets`: the folder of the saved nets, if any.
pub fn runs(
    store: &dyn Store,
    index: &SettingsIndex,
    pairs: &[(String, String)],
    nets: Option<&std::path::Path>,
) -> Result<RunsPage> {
    let mut q = runs_query(pairs).map_err(|e| BadQuery(format!("{e:#}")))?;
    let offset = q.offset;
    let mut total = None;
    if let Some(seqs) = index.candidates(store, &q)? {
        q.settings.clear();
        if matches!(q.sort, Some(SortKey::Setting(_))) {
            q.sort = None;
        }
        if q.status.is_none() && q.sort.is_none() && q.pair_id.is_none() {
            // The page is a slice of the candidates, in their order.
            total = Some(seqs.len() as u64);
            q.within = Some(seqs.into_iter().skip(offset).take(q.limit).collect());
            q.offset = 0;
        } else {
            q.within = Some(seqs);
        }
    }
    let (runs, counted) = store.runs_table(&q)?;
    let nets = nets.map_or_else(Vec::new, |dir| {
        runs.iter()
            .filter(|r| crate::model::saved::file_in(dir, &r.id).is_file())
            .map(|r| r.id.clone())
            .collect()
    });
    Ok(RunsPage {
        total: total.unwrap_or(counted),
        offset,
        runs,
        nets,
    })
}

/// One run's curve.
#[derive(Serialize)]
pub struct Curve {
    pub run_id: String,
    pub epochs: Vec<EpochRow>,
}

/// The curves of the runs named by `run=ID` (repeated).
pub fn curves(store: &dyn Store, pairs: &[(String, String)]) -> Result<Vec<Curve>> {
    let ids: Vec<&String> = pairs
        .iter()
        .filter(|(k, _)| k == "run")
        .map(|(_, v)| v)
        .collect();
    if ids.len() > MAX_CURVES {
        return Err(BadQuery(format!("at most {MAX_CURVES} runs' curves at once")).into());
    }
    ids.into_iter()
        .map(|id| {
            Ok(Curve {
                run_id: id.clone(),
                epochs: store.epochs_of(id)?,
            })
        })
        .collect()
}
