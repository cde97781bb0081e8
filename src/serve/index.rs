//! The runs' settings, held by the server so that the runs table filters and sorts by a setting
//! without the database parsing every run's JSON config (hundreds of milliseconds at 200,000
//! runs). Settings never change once a run is queued, so the index only ever grows: each request
//! reads the configs queued since the last one. Stored column-wise: per setting, a small code per
//! run into that setting's distinct values.
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_json::Value as Json;

use crate::sweep::store::{RunsQuery, SortKey, Store, StoredConfig};

/// Configs read per store call while catching up.
const PAGE: usize = 20_000;

#[derive(Default)]
struct Column {
    /// Each run's value, as an index into `values`.
    codes: Vec<u32>,
    values: Vec<Json>,
    lookup: HashMap<String, u32>,
}

impl Column {
    fn push(&mut self, value: Json) {
        let key = value.to_string();
        let code = *self.lookup.entry(key).or_insert_with(|| {
            self.values.push(value);
            (self.values.len() - 1) as u32
        });
        self.codes.push(code);
    }
}

#[derive(Default)]
struct Index {
    /// The last queue position read.
    upto: i64,
    seqs: Vec<i64>,
    columns: Vec<Column>,
}

#[derive(Default)]
pub struct SettingsIndex {
    index: Mutex<Index>,
}

impl SettingsIndex {
    /// Reads the settings of every run queued so far (a server does it as it starts, so that the
    /// first page by a setting does not wait for it).
    pub fn catch_up(&self, store: &dyn Store) -> Result<()> {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.catch_up(store)
    }

    /// The queue positions of the runs whose settings match `q`'s, in the order of its setting
    /// sort (ties and unsorted: queue order); the caller's query keeps its status filter and
    /// column sort. `None` when `q` names no setting (the database does it all).
    pub fn candidates(&self, store: &dyn Store, q: &RunsQuery) -> Result<Option<Vec<i64>>> {
        let sort = match &q.sort {
            Some(SortKey::Setting(s)) => Some(*s),
            _ => None,
        };
        if q.settings.is_empty() && sort.is_none() {
            return Ok(None);
        }
        q.check()?;
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.catch_up(store)?;
        let column = |name: &str| {
            crate::train::settings::names()
                .iter()
                .position(|s| *s == name)
                .expect("checked")
        };
        // Per filter, which codes of its column match (a default also matches an absent value).
        let filters: Vec<(usize, Vec<bool>)> = q
            .settings
            .iter()
            .map(|(name, wanted)| {
                let c = &index.columns[column(name)];
                let default = RunsQuery::is_default(name, wanted)?;
                let matches = c
                    .values
                    .iter()
                    .map(|v| v == wanted || (v.is_null() && default))
                    .collect();
                Ok((column(name), matches))
            })
            .collect::<Result<_>>()?;
        let mut chosen: Vec<usize> = (0..index.seqs.len())
            .filter(|&i| {
                filters
                    .iter()
                    .all(|(c, matches)| matches[index.columns[*c].codes[i] as usize])
            })
            .collect();
        if let Some(name) = sort {
            let c = &index.columns[column(name)];
            let rank = ranks(&c.values, q.descending);
            chosen.sort_by_key(|&i| rank[c.codes[i] as usize]);
        }
        Ok(Some(chosen.into_iter().map(|i| index.seqs[i]).collect()))
    }
}

impl Index {
    fn catch_up(&mut self, store: &dyn Store) -> Result<()> {
        if self.columns.is_empty() {
            self.columns = crate::train::settings::names()
                .iter()
                .map(|_| Column::default())
                .collect();
        }
        loop {
            let page = store.configs_page(self.upto, PAGE)?;
            let Some(last) = page.last().map(|c| c.seq) else {
                return Ok(());
            };
            for StoredConfig { seq, config: text } in page {
                let config: serde_json::Map<String, Json> = serde_json::from_str(&text)
                    .with_context(|| format!("the config of the run at queue position {seq}"))?;
                for (name, column) in crate::train::settings::names()
                    .iter()
                    .zip(&mut self.columns)
                {
                    column.push(config.get(*name).cloned().unwrap_or(Json::Null));
                }
                self.seqs.push(seq);
            }
            self.upto = last;
        }
    }
}

/// Each value's place in a sort: numbers by value, then text, then anything else; a missing
/// value (the setting's default) last either way, as the database sorts NULLs.
fn ranks(values: &[Json], descending: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&values[a], &values[b]);
        match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ if descending => compare(y, x),
            _ => compare(x, y),
        }
    });
    let mut rank = vec![0; values.len()];
    for (place, &i) in order.iter().enumerate() {
        rank[i] = place;
    }
    rank
}

fn compare(x: &Json, y: &Json) -> Ordering {
    match (x, y) {
        (Json::Number(a), Json::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            a.total_cmp(&b)
        }
        (Json::Number(_), _) => Ordering::Less,
        (_, Json::Number(_)) => Ordering::Greater,
        (Json::String(a), Json::String(b)) => a.cmp(b),
        (Json::String(_), _) => Ordering::Less,
        (_, Json::String(_)) => Ordering::Greater,
        _ => x.to_string().cmp(&y.to_string()),
    }
}
