//! The SQLite side of the runs table's pages and of one run's curve.
use anyhow::Result;
use rusqlite::params_from_iter;

use super::super::columns::{EPOCH_COLUMNS, RUN_COLUMNS, decode_epoch, decode_run, positions};
use super::super::schema::{Dialect, select_columns};
use super::super::table::{
    RunsQuery, SUMMARY_BY_SWEEP, Summary, configs_sql, page_sql, summary_span,
};
use super::super::{EpochRow, RunRow, StoredConfig};
use super::{SqliteStore, read};

impl SqliteStore {
    pub(super) fn table_page(&self, q: &RunsQuery) -> Result<(Vec<RunRow>, u64)> {
        let select = select_columns(Dialect::Sqlite, "runs", RUN_COLUMNS, &self.absent);
        let sql = page_sql(Dialect::Sqlite, q, &select)?;
        let total: i64 = self
            .conn
            .query_row(&sql.count, params_from_iter(&sql.params), |r| r.get(0))?;
        let mut query = self.conn.prepare(&sql.page)?;
        let at = positions(RUN_COLUMNS, &query.column_names().collect::<Vec<_>>())?;
        let recorded = query.column_index("epochs_recorded")?;
        let mut rows = query.query(params_from_iter(&sql.params))?;
        let mut runs = Vec::new();
        while let Some(row) = rows.next()? {
            runs.push(decode_run(|i, c| read(row, at[i], c), row.get(recorded)?)?);
        }
        Ok((runs, u64::try_from(total).unwrap_or(0)))
    }

    pub(super) fn configs_page(&self, after: i64, limit: usize) -> Result<Vec<StoredConfig>> {
        let mut query = self.conn.prepare(configs_sql(Dialect::Sqlite))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = query.query_map(rusqlite::params![after, limit], |r| {
            Ok(StoredConfig {
                seq: r.get(0)?,
                config: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub(super) fn summary_of_runs(&self) -> Result<Summary> {
        let mut query = self.conn.prepare(SUMMARY_BY_SWEEP)?;
        let mut rows = query.query([])?;
        let mut by_sweep = vec![];
        while let Some(row) = rows.next()? {
            let status: String = row.get(1)?;
            by_sweep.push((row.get(0)?, status.parse()?, row.get(2)?));
        }
        let (first_claim, last_end, trained) = self.conn.query_row(&summary_span(), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(Summary {
            by_sweep,
            first_claim,
            last_end,
            trained,
        })
    }

    pub(super) fn epochs_of_run(&self, run_id: &str) -> Result<Vec<EpochRow>> {
        let mut query = self.conn.prepare(&format!(
            "SELECT {} FROM epochs WHERE run_id = ?1 ORDER BY epoch",
            select_columns(Dialect::Sqlite, "epochs", EPOCH_COLUMNS, &self.absent)
        ))?;
        let at = positions(EPOCH_COLUMNS, &query.column_names().collect::<Vec<_>>())?;
        let mut rows = query.query([run_id])?;
        let mut epochs = Vec::new();
        while let Some(row) = rows.next()? {
            epochs.push(decode_epoch(|i, c| read(row, at[i], c))?);
        }
        Ok(epochs)
    }
}
