//! The SQLite backend of the results store: one file in WAL mode; claims are single atomic
//! statements, so any number of processes on one machine can share it.
use std::time::Duration;

use anyhow::Result;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};

use super::columns::{
    Column, EPOCH_COLUMNS, RUN_COLUMNS, column_list, decode_epoch, decode_run, placeholders,
    positions, result_columns, result_values, values_of,
};
use super::identity::{RunSpec, fusion_key};
use super::row::Value;
use super::schema::{Absent, Dialect, select_columns};
use super::sql;
use super::{
    Added, EpochRow, Finish, RunRow, RunStatus, Running, Store, StoredCheckpoint, StoredConfig,
    SweepRecord, WorkerInfo, not_owned, now, run_spec, worker_gone,
};
use crate::train::{Checkpoint, EpochMetrics, RunConfig};

pub struct SqliteStore {
    conn: Connection,
    /// The columns the database lacks (only a reader's, which never migrates, can lack any).
    absent: Absent,
}

mod schema;
mod table;

impl Store for SqliteStore {
    fn add_runs(&mut self, sweep: &str, config_text: &str, runs: &[RunSpec]) -> Result<Added> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let t = now();
        tx.execute(
            "INSERT INTO sweeps (name, config_toml, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET config_toml = ?2, updated_at = ?3",
            params![sweep, config_text, t],
        )?;
        let mut new = 0;
        {
            let mut insert = tx.prepare(
                "INSERT INTO runs (id, pair_id, sweep, config, fuse_key)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
            )?;
            for run in runs {
                new += insert.execute(params![
                    run.id,
                    run.pair_id,
                    sweep,
                    serde_json::to_string(&run.config)?,
                    fusion_key(&run.config)
                ])?;
            }
        }
        tx.commit()?;
        Ok(Added {
            new,
            existing: runs.len() - new,
        })
    }

    fn register_worker(&mut self, w: &WorkerInfo) -> Result<()> {
        let t = now();
        self.conn.execute(
            "INSERT OR REPLACE INTO workers (id, host, pid, threads, started_at, heartbeat_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![w.id, w.host, w.pid, w.threads as i64, t],
        )?;
        Ok(())
    }

    fn heartbeat(&mut self, w: &WorkerInfo) -> Result<()> {
        self.conn.execute(
            "UPDATE workers SET heartbeat_at = ?2 WHERE id = ?1",
            params![w.id, now()],
        )?;
        Ok(())
    }

    fn claim_group(
        &mut self,
        w: &WorkerInfo,
        limit: &dyn Fn(&RunConfig) -> usize,
    ) -> Result<Vec<RunSpec>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claim = |filter: &str, key: Option<&str>, n: i64| -> Result<Vec<RunSpec>> {
            let sql = sql::claim(Dialect::Sqlite, filter);
            let mut q = tx.prepare(&sql)?;
            let rows = q.query_map(params![w.id, w.host, n, key, now()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
            rows.map(|r| {
                let (id, pair_id, config): (String, String, String) = r?;
                // Epochs of an earlier attempt: the run restarts from scratch, or from its checkpoint,
                // whose epochs it records again.
                tx.execute(&sql::delete_epochs(Dialect::Sqlite), [&id])?;
                run_spec(id, pair_id, &config)
            })
            .collect()
        };
        // A worker claims only when it trains nothing: runs still held under its id are those
        // whose claim it lost track of (an error after the commit). Take them again rather than
        // leave them held by a live worker forever — as the PostgreSQL backend does.
        let held = {
            let mut q = tx.prepare(&sql::held(Dialect::Sqlite))?;
            let rows = q.query_map([&w.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<Vec<(String, String, String)>>>()?
        };
        if !held.is_empty() {
            let group = held
                .into_iter()
                .map(|(id, pair_id, config)| {
                    tx.execute(&sql::delete_epochs(Dialect::Sqlite), [&id])?;
                    run_spec(id, pair_id, &config)
                })
                .collect::<Result<Vec<_>>>()?;
            tx.commit()?;
            return Ok(group);
        }
        let mut group = claim("AND ?4 IS NULL", None, 1)?;
        if let Some(first) = group.first() {
            let more = limit(&first.config).saturating_sub(1) as i64;
            if more > 0 {
                let key = fusion_key(&first.config);
                group.extend(claim("AND fuse_key = ?4", Some(&key), more)?);
            }
        }
        tx.commit()?;
        Ok(group)
    }

    fn record_epoch(&mut self, run_id: &str, w: &WorkerInfo, m: &EpochMetrics) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_owned(&tx, run_id, w)?;
        tx.execute(
            &sql::record_epoch(Dialect::Sqlite),
            params_from_iter(epoch_values(run_id, m)?),
        )?;
        tx.execute(
            "UPDATE workers SET heartbeat_at = ?2 WHERE id = ?1",
            params![w.id, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn save_checkpoint(
        &mut self,
        run_id: &str,
        w: &WorkerInfo,
        checkpoint: &Checkpoint,
    ) -> Result<()> {
        let stored = StoredCheckpoint::of(checkpoint);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_owned(&tx, run_id, w)?;
        tx.execute(
            &sql::save_checkpoint(Dialect::Sqlite),
            params![
                run_id,
                checkpoint.epoch() as i64,
                now(),
                stored.sha256,
                stored.bytes
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn checkpoint(&mut self, run_id: &str) -> Result<Option<StoredCheckpoint>> {
        Ok(self
            .conn
            .query_row(&sql::checkpoint(Dialect::Sqlite), [run_id], |r| {
                Ok(StoredCheckpoint {
                    bytes: r.get(0)?,
                    sha256: r.get(1)?,
                })
            })
            .optional()?)
    }

    fn finish(&mut self, run_id: &str, w: &WorkerInfo, finish: Finish) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_owned(&tx, run_id, w)?;
        tx.execute(&sql::delete_checkpoint(Dialect::Sqlite), [run_id])?;
        match finish {
            Finish::Trained(r) => {
                let results: Vec<Column> = result_columns().collect();
                let mut values = vec![
                    Value::Text(Some(run_id.to_owned())),
                    Value::Text(Some(RunStatus::of(r.outcome).as_str().to_owned())),
                ];
                values.extend(result_values(r)?);
                values.push(Value::Real(Some(now())));
                tx.execute(
                    &sql::finish_trained(Dialect::Sqlite, &results),
                    params_from_iter(values),
                )?;
            }
            Finish::Failed(error) => {
                tx.execute(
                    &sql::finish_failed(Dialect::Sqlite),
                    params![run_id, error, now()],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn requeue_abandoned(&mut self, stale_after: Duration, max_attempts: u32) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deadline = now() - stale_after.as_secs_f64();
        let abandoned: Vec<String> = {
            let mut query = tx.prepare(&format!(
                "SELECT r.id, w.host, w.pid, w.heartbeat_at FROM runs r
                 LEFT JOIN workers w ON w.id = r.worker WHERE r.status = {}",
                sql::status(RunStatus::Running)
            ))?;
            let rows = query.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, Option<u32>>(2)?,
                    row.get::<_, Option<f64>>(3)?,
                ))
            })?;
            let mut ids = Vec::new();
            for row in rows {
                let (id, host, pid, heartbeat) = row?;
                if worker_gone(host.as_deref(), pid, heartbeat, deadline) {
                    ids.push(id);
                }
            }
            ids
        };
        for id in &abandoned {
            tx.execute(&requeue(), params![id, max_attempts])?;
            tx.execute(&sql::delete_epochs(Dialect::Sqlite), [id])?;
        }
        tx.commit()?;
        if !abandoned.is_empty() {
            tracing::warn!("{} abandoned runs put back to pending", abandoned.len());
        }
        Ok(abandoned.len())
    }

    fn release_worker(&mut self, worker: &str, max_attempts: u32) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<String> = tx
            .prepare(&format!(
                "SELECT id FROM runs WHERE status = {} AND worker = ?1",
                sql::status(RunStatus::Running)
            ))?
            .query_map([worker], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in &ids {
            tx.execute(&requeue(), params![id, max_attempts])?;
            tx.execute(&sql::delete_epochs(Dialect::Sqlite), [id])?;
        }
        tx.commit()?;
        Ok(ids.len())
    }

    fn hand_back(&mut self, run_id: &str, w: &WorkerInfo) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_owned(&tx, run_id, w)?;
        tx.execute(&sql::hand_back(Dialect::Sqlite), [run_id])?;
        tx.execute(&sql::delete_epochs(Dialect::Sqlite), [run_id])?;
        tx.commit()?;
        Ok(())
    }

    fn retry_failed(&mut self) -> Result<usize> {
        Ok(self.conn.execute(&sql::retry_failed(Dialect::Sqlite), [])?)
    }

    fn drop_pending(&mut self, ids: &[String]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut dropped = 0;
        {
            let mut delete = tx.prepare(&sql::drop_pending(Dialect::Sqlite))?;
            let mut forget = tx.prepare(&sql::delete_checkpoint(Dialect::Sqlite))?;
            for id in ids {
                let n = delete.execute(params![id])?;
                if n > 0 {
                    forget.execute(params![id])?;
                }
                dropped += n;
            }
        }
        tx.commit()?;
        Ok(dropped)
    }

    fn runs(&self) -> Result<Vec<RunRow>> {
        Ok(self.runs_page(0, usize::MAX)?.0)
    }

    fn epochs(&self) -> Result<Vec<EpochRow>> {
        self.epochs_between(0, i64::MAX)
    }

    fn runs_table(&self, query: &super::RunsQuery) -> Result<(Vec<RunRow>, u64)> {
        self.table_page(query)
    }

    fn configs_page(&self, after: i64, limit: usize) -> Result<Vec<StoredConfig>> {
        SqliteStore::configs_page(self, after, limit)
    }

    fn summary(&self) -> Result<super::Summary> {
        self.summary_of_runs()
    }

    fn epochs_of(&self, run_id: &str) -> Result<Vec<EpochRow>> {
        self.epochs_of_run(run_id)
    }

    fn runs_page(&self, after: i64, limit: usize) -> Result<(Vec<RunRow>, i64)> {
        let mut query = self.conn.prepare(&format!(
            "SELECT seq, {}, (SELECT COUNT(*) FROM epochs e WHERE e.run_id = runs.id)
                 AS epochs_recorded
             FROM runs WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            select_columns(Dialect::Sqlite, "runs", RUN_COLUMNS, &self.absent)
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let at = positions(RUN_COLUMNS, &query.column_names().collect::<Vec<_>>())?;
        let (seq, recorded) = (
            query.column_index("seq")?,
            query.column_index("epochs_recorded")?,
        );
        let mut rows = query.query(params![after, limit])?;
        let (mut runs, mut last) = (Vec::new(), after);
        while let Some(row) = rows.next()? {
            runs.push(decode_run(|i, c| read(row, at[i], c), row.get(recorded)?)?);
            last = row.get(seq)?;
        }
        Ok((runs, last))
    }

    fn epochs_between(&self, after: i64, through: i64) -> Result<Vec<EpochRow>> {
        let mut query = self.conn.prepare(&format!(
            "SELECT {} FROM epochs
             WHERE run_id IN (SELECT id FROM runs WHERE seq > ?1 AND seq <= ?2)
             ORDER BY run_id, epoch",
            select_columns(Dialect::Sqlite, "epochs", EPOCH_COLUMNS, &self.absent)
        ))?;
        let at = positions(EPOCH_COLUMNS, &query.column_names().collect::<Vec<_>>())?;
        let mut rows = query.query(params![after, through])?;
        let mut epochs = Vec::new();
        while let Some(row) = rows.next()? {
            epochs.push(decode_epoch(|i, c| read(row, at[i], c))?);
        }
        Ok(epochs)
    }

    fn status_counts(&self) -> Result<Vec<(RunStatus, i64)>> {
        RunStatus::ALL
            .iter()
            .map(|s| {
                let n = self.conn.query_row(
                    "SELECT COUNT(*) FROM runs WHERE status = ?1",
                    [s.as_str()],
                    |r| r.get(0),
                )?;
                Ok((*s, n))
            })
            .collect()
    }

    fn sweeps(&self) -> Result<Vec<SweepRecord>> {
        let mut query = self
            .conn
            .prepare("SELECT name, config_toml FROM sweeps ORDER BY created_at, name")?;
        let rows = query.query_map([], |r| {
            Ok(SweepRecord {
                name: r.get(0)?,
                grid: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn import(
        &mut self,
        sweeps: &[SweepRecord],
        runs: &[RunRow],
        epochs: &[EpochRow],
    ) -> Result<Added> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for SweepRecord { name, grid: text } in sweeps {
            tx.execute(
                "INSERT INTO sweeps (name, config_toml, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?3) ON CONFLICT (name) DO NOTHING",
                params![name, text, now()],
            )?;
        }
        let (mut new, mut inserted) = (0, std::collections::HashSet::new());
        {
            let mut insert = tx.prepare(&format!(
                "INSERT INTO runs ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING",
                column_list(RUN_COLUMNS),
                placeholders('?', 1, RUN_COLUMNS.len())
            ))?;
            for r in runs.iter().map(super::portable) {
                let n = insert.execute(params_from_iter(values_of(&r, RUN_COLUMNS)?))?;
                new += n;
                if n > 0 && r.status.finished() {
                    inserted.insert(r.id.clone());
                }
            }
            let mut insert = tx.prepare(&sql::insert_epoch(Dialect::Sqlite))?;
            for e in epochs.iter().filter(|e| inserted.contains(&e.run_id)) {
                insert.execute(params_from_iter(values_of(e, EPOCH_COLUMNS)?))?;
            }
        }
        schema::fill_fusion_keys(&tx)?;
        tx.commit()?;
        Ok(Added {
            new,
            existing: runs.len() - new,
        })
    }

    fn running(&self, lease: Duration) -> Result<Vec<Running>> {
        let mut query = self.conn.prepare(&format!(
            "SELECT r.id, COALESCE(r.worker, ''),
                    (SELECT COALESCE(MAX(epoch), 0) FROM epochs e WHERE e.run_id = r.id),
                    r.config, w.host, w.pid, w.heartbeat_at
             FROM runs r LEFT JOIN workers w ON w.id = r.worker
             WHERE r.status = {} ORDER BY r.worker",
            sql::status(RunStatus::Running)
        ))?;
        let deadline = now() - lease.as_secs_f64();
        let rows = query.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<u32>>(5)?,
                r.get::<_, Option<f64>>(6)?,
            ))
        })?;
        rows.map(|row| {
            let (run_id, worker, epochs, config, host, pid, beat) = row?;
            Ok(Running {
                run_id,
                worker,
                epochs_done: epochs as usize,
                config: serde_json::from_str(&config)?,
                worker_gone: worker_gone(host.as_deref(), pid, beat, deadline),
            })
        })
        .collect()
    }
}

/// Refuses writes from a worker that no longer owns the run (it was requeued meanwhile).
fn ensure_owned(tx: &rusqlite::Transaction, run_id: &str, w: &WorkerInfo) -> Result<()> {
    let owner: Option<(String, Option<String>)> = tx
        .query_row(&sql::owner(Dialect::Sqlite), [run_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match owner {
        Some((status, Some(worker)))
            if status.parse::<RunStatus>()? == RunStatus::Running && worker == w.id =>
        {
            Ok(())
        }
        _ => Err(not_owned(run_id, w)),
    }
}

/// Puts abandoned run `?1` back to pending, or marks it failed once its worker died on it `?2`
/// times.
fn requeue() -> String {
    format!(
        "UPDATE runs SET {} WHERE id = ?1",
        sql::give_up_or_requeue(Dialect::Sqlite, "?2")
    )
}

/// The stored values of epoch `m` of run `run_id`.
fn epoch_values(run_id: &str, m: &EpochMetrics) -> Result<Vec<Value>> {
    let row = EpochRow {
        run_id: run_id.to_owned(),
        metrics: m.clone(),
    };
    values_of(&row, EPOCH_COLUMNS)
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Value::Text(text) => text.to_sql(),
            Value::Integer(i) => i.to_sql(),
            Value::Real(x) => x.to_sql(),
        }
    }
}

/// Column `c` of `row`, at position `at` (found by its name).
fn read(row: &rusqlite::Row, at: usize, c: &Column) -> Result<Value> {
    Ok(match (row.get_ref(at)?, Value::null(c.kind)) {
        (ValueRef::Null, null) => null,
        (ValueRef::Text(t), Value::Text(_)) => Value::Text(Some(std::str::from_utf8(t)?.into())),
        (ValueRef::Integer(i), Value::Integer(_)) => Value::Integer(Some(i)),
        (ValueRef::Real(x), Value::Real(_)) => Value::Real(Some(x)),
        (ValueRef::Integer(i), Value::Real(_)) => Value::Real(Some(i as f64)),
        (other, _) => anyhow::bail!(
            "column {}: a stored {} where {:?} belongs",
            c.name,
            other.data_type(),
            c.kind
        ),
    })
}
