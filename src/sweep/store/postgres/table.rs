//! The PostgreSQL side of the runs table's pages and of one run's curve.
use anyhow::Result;
use postgres::types::ToSql;

use super::super::columns::{EPOCH_COLUMNS, RUN_COLUMNS};
use super::super::schema::{Dialect, select_columns};
use super::super::table::{
    RunsQuery, SUMMARY_BY_SWEEP, Summary, configs_sql, page_sql, summary_span,
};
use super::super::{EpochRow, RunRow, StoredConfig};
use super::{PostgresStore, epoch_rows, run_rows};

impl PostgresStore {
    pub(super) fn table_page(&self, q: &RunsQuery) -> Result<(Vec<RunRow>, u64)> {
        let select = select_columns(
            Dialect::Postgres,
            "runs",
            RUN_COLUMNS,
            &self.absent.borrow(),
        );
        let sql = page_sql(Dialect::Postgres, q, &select)?;
        let params: Vec<&(dyn ToSql + Sync)> = sql
            .params
            .iter()
            .map(|p| p as &(dyn ToSql + Sync))
            .collect();
        let (total, rows) = self.with(|client| {
            let total: i64 = client.query_one(&sql.count, &params)?.get(0);
            Ok((total, client.query(&sql.page, &params)?))
        })?;
        Ok((run_rows(&rows)?, u64::try_from(total).unwrap_or(0)))
    }

    pub(super) fn configs_page(&self, after: i64, limit: usize) -> Result<Vec<StoredConfig>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .with(|client| Ok(client.query(configs_sql(Dialect::Postgres), &[&after, &limit])?))?;
        Ok(rows
            .iter()
            .map(|r| StoredConfig {
                seq: r.get(0),
                config: r.get(1),
            })
            .collect())
    }

    pub(super) fn summary_of_runs(&self) -> Result<Summary> {
        let (rows, span) = self.with(|client| {
            Ok((
                client.query(SUMMARY_BY_SWEEP, &[])?,
                client.query_one(&summary_span(), &[])?,
            ))
        })?;
        let by_sweep = rows
            .iter()
            .map(|r| Ok((r.get(0), r.get::<_, String>(1).parse()?, r.get(2))))
            .collect::<Result<_>>()?;
        Ok(Summary {
            by_sweep,
            first_claim: span.get(0),
            last_end: span.get(1),
            trained: span.get(2),
        })
    }

    pub(super) fn epochs_of_run(&self, run_id: &str) -> Result<Vec<EpochRow>> {
        let rows = self.with(|client| {
            Ok(client.query(
                &format!(
                    "SELECT {} FROM epochs WHERE run_id = $1 ORDER BY epoch",
                    select_columns(
                        Dialect::Postgres,
                        "epochs",
                        EPOCH_COLUMNS,
                        &self.absent.borrow()
                    )
                ),
                &[&run_id],
            )?)
        })?;
        epoch_rows(&rows)
    }
}
