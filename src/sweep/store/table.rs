//! One page of the runs table, filtered by status and settings and sorted in the database, so
//! that a store of a million runs is browsed a page at a time (`shallow serve`). The SQL is built
//! here once for both backends; names are checked against the known columns and settings, values
//! are bound, never spliced.
use anyhow::{Result, bail};
use serde_json::Value as Json;

use super::RunStatus;
use super::columns::RUN_COLUMNS;
use super::row::Kind;
use super::schema::Dialect;
use crate::train::settings;

/// What a page of the runs table shows.
#[derive(Debug, Clone, Default)]
pub struct RunsQuery {
    pub status: Option<RunStatus>,
    /// Only the runs of this family (one configuration and seed, every layout).
    pub pair_id: Option<String>,
    /// Settings every run shown has, by name (a setting at its default matches runs whose stored
    /// config leaves it out).
    pub settings: Vec<(String, Json)>,
    pub sort: Option<SortKey>,
    pub descending: bool,
    pub offset: usize,
    pub limit: usize,
    /// Only the runs at these queue positions (`seq`), in this order unless `sort` names a
    /// column: what a caller that filtered and sorted by settings itself asks for.
    pub within: Option<Vec<i64>>,
}

impl RunsQuery {
    /// Every setting it filters by exists and takes that value: an error names the first that
    /// does not.
    pub fn check(&self) -> Result<()> {
        for (name, value) in &self.settings {
            if !crate::train::settings::names().contains(&name.as_str()) {
                bail!("no setting named `{name}` to filter by");
            }
            is_default(name, value)?;
        }
        Ok(())
    }

    /// Whether `value` is the default of setting `name`, which stored configs leave out.
    pub fn is_default(name: &str, value: &Json) -> Result<bool> {
        is_default(name, value)
    }
}

/// A column of the runs table, or a setting of the runs' configs.
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    Column(&'static str),
    Setting(&'static str),
}

impl SortKey {
    /// The key of this name: a stored column (not the config itself), else a setting.
    pub fn named(name: &str) -> Result<SortKey> {
        if let Some(c) = RUN_COLUMNS
            .iter()
            .find(|c| c.name == name && c.kind != Kind::Json)
        {
            return Ok(SortKey::Column(c.name));
        }
        match crate::train::settings::names().iter().find(|s| **s == name) {
            Some(s) => Ok(SortKey::Setting(s)),
            None => bail!("no column or setting named `{name}` to sort by"),
        }
    }
}

/// Runs by sweep and status, and the span of the training so far: what a progress display
/// needs, aggregated by the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub by_sweep: Vec<(String, RunStatus, i64)>,
    /// The first claim of any run.
    pub first_claim: Option<f64>,
    /// The last end of a run that trained to its end (done or diverged), and how many did.
    pub last_end: Option<f64>,
    pub trained: i64,
}

/// Queue positions and configs of up to a page of runs after a position, in queue order (both
/// dialects; parameters: the position, the page size).
pub(super) fn configs_sql(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "SELECT seq, config FROM runs WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        Dialect::Postgres => "SELECT seq, config FROM runs WHERE seq > $1 ORDER BY seq LIMIT $2",
    }
}

/// The two queries of a [`Summary`], the same in both dialects.
pub(super) const SUMMARY_BY_SWEEP: &str =
    "SELECT sweep, status, COUNT(*) FROM runs GROUP BY sweep, status ORDER BY sweep, status";
pub(super) fn summary_span() -> String {
    let finished = super::sql::finished();
    format!(
        "SELECT MIN(claimed_at),
         MAX(CASE WHEN status IN ({finished}) THEN finished_at END),
         COUNT(CASE WHEN status IN ({finished}) AND finished_at IS NOT NULL THEN 1 END)
         FROM runs"
    )
}

/// The SQL of a page and of its count, and the parameters both bind (all text).
pub(super) struct PageSql {
    pub page: String,
    pub count: String,
    pub params: Vec<String>,
}

/// The page query over `select` (the columns to read) for `q`.
pub(super) fn page_sql(d: Dialect, q: &RunsQuery, select: &str) -> Result<PageSql> {
    q.check()?;
    let mut conditions = vec![];
    let mut params = vec![];
    let bind = |value: String, params: &mut Vec<String>| {
        params.push(value);
        match d {
            Dialect::Sqlite => format!("?{}", params.len()),
            Dialect::Postgres => format!("${}", params.len()),
        }
    };
    if let Some(status) = q.status {
        conditions.push(format!(
            "status = {}",
            bind(status.as_str().into(), &mut params)
        ));
    }
    if let Some(pair) = &q.pair_id {
        conditions.push(format!("pair_id = {}", bind(pair.clone(), &mut params)));
    }
    for (name, value) in &q.settings {
        let Some(name) = crate::train::settings::names().iter().find(|s| *s == name) else {
            bail!("no setting named `{name}` to filter by");
        };
        let at = bind(value.to_string(), &mut params);
        let stored = setting(d, name);
        let equal = match d {
            Dialect::Sqlite => format!("{stored} = json_extract({at}, '$')"),
            Dialect::Postgres => format!("{stored} = ({at}::text)::jsonb"),
        };
        conditions.push(if is_default(name, value)? {
            format!("({stored} IS NULL OR {equal})")
        } else {
            equal
        });
    }
    // With `within`, the listed positions drive the query (each looks up its run by `seq`);
    // CROSS JOIN keeps SQLite from scanning the list once per run.
    let source = match &q.within {
        None => "runs".to_owned(),
        Some(seqs) => {
            let list = seqs
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            match d {
                Dialect::Sqlite => format!(
                    "(SELECT key AS at_key, value AS at_seq FROM json_each({})) AS c \
                     CROSS JOIN runs ON runs.seq = c.at_seq",
                    bind(format!("[{list}]"), &mut params)
                ),
                Dialect::Postgres => format!(
                    "unnest(({}::text)::bigint[]) WITH ORDINALITY AS c(at_seq, at_key) \
                     JOIN runs ON runs.seq = c.at_seq",
                    bind(format!("{{{list}}}"), &mut params)
                ),
            }
        }
    };
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let direction = if q.descending { "DESC" } else { "ASC" };
    let tie = if q.within.is_some() {
        "c.at_key"
    } else {
        "seq"
    };
    let order = match &q.sort {
        None if q.within.is_some() => "c.at_key".to_owned(),
        None => format!("seq {direction}"),
        Some(SortKey::Column(c)) => format!("{c} {direction} NULLS LAST, {tie}"),
        Some(SortKey::Setting(s)) => format!("{} {direction} NULLS LAST, {tie}", setting(d, s)),
    };
    Ok(PageSql {
        page: format!(
            "SELECT {select}, (SELECT COUNT(*) FROM epochs e WHERE e.run_id = runs.id)
                 AS epochs_recorded
             FROM {source} {filter} ORDER BY {order} LIMIT {} OFFSET {}",
            q.limit, q.offset
        ),
        count: format!("SELECT COUNT(*) FROM {source} {filter}"),
        params,
    })
}

/// A setting's stored value (NULL where the config leaves it out).
fn setting(d: Dialect, name: &str) -> String {
    match d {
        Dialect::Sqlite => format!("json_extract(config, '$.{name}')"),
        Dialect::Postgres => format!("(config::jsonb -> '{name}')"),
    }
}

/// Whether `value` is the setting's default, which stored configs leave out: set on a config and
/// serialised again, it disappears.
fn is_default(name: &str, value: &Json) -> Result<bool> {
    let base = settings::defaults(crate::model::Layout::Sequential);
    let Json::Object(mut fields) = serde_json::to_value(&base)? else {
        bail!("a run config serialises as an object");
    };
    fields.insert(name.to_owned(), value.clone());
    let config: crate::train::RunConfig = match serde_json::from_value(Json::Object(fields)) {
        Ok(config) => config,
        Err(e) => bail!("`{name}` = {value} is not a value of that setting: {e}"),
    };
    let Json::Object(again) = serde_json::to_value(&config)? else {
        bail!("a run config serialises as an object");
    };
    Ok(!again.contains_key(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_recognised_by_serde_round_trip() {
        assert!(is_default("optimizer", &Json::from("adam")).unwrap());
        assert!(!is_default("optimizer", &Json::from("lbfgs")).unwrap());
        assert!(!is_default("layers", &Json::from(4)).unwrap());
        assert!(is_default("layers", &Json::from("four")).is_err());
    }

    #[test]
    fn names_are_checked_and_values_bound() {
        assert!(SortKey::named("final_val_loss").is_ok());
        assert_eq!(SortKey::named("lr").unwrap(), SortKey::Setting("lr"));
        assert!(SortKey::named("config").is_err());
        assert!(SortKey::named("x; DROP TABLE runs").is_err());
        let q = RunsQuery {
            settings: vec![("dataset'--".into(), Json::from("mnist"))],
            ..RunsQuery::default()
        };
        assert!(page_sql(Dialect::Sqlite, &q, "id").is_err());
        let q = RunsQuery {
            status: Some(RunStatus::Done),
            settings: vec![("dataset".into(), Json::from("mnist'); --"))],
            limit: 10,
            ..RunsQuery::default()
        };
        let sql = page_sql(Dialect::Postgres, &q, "id").unwrap();
        assert!(!sql.page.contains("mnist"));
        assert_eq!(sql.params, ["done", "\"mnist'); --\""]);
    }
}
