//! [`Store`] for [`PostgresStore`]: the queue, leases and results in SQL.
use super::*;
use std::collections::HashSet;

/// Moves up to `n` pending runs (of fusion key `key`, if given) to running for `w`, skipping
/// rows other transactions hold.
fn claim_pending(
    tx: &mut postgres::Transaction,
    w: &WorkerInfo,
    key: Option<&str>,
    n: i64,
) -> Result<Vec<Row>> {
    let (filter, key) = match key {
        Some(key) => ("AND fuse_key = $4", key),
        None => ("AND $4 = ''", ""),
    };
    Ok(tx.query(
        &sql::claim(Dialect::Postgres, filter),
        &[&w.id, &w.host, &n, &key],
    )?)
}

impl Store for PostgresStore {
    fn add_runs(&mut self, sweep: &str, config_text: &str, runs: &[RunSpec]) -> Result<Added> {
        let configs = runs
            .iter()
            .map(|r| serde_json::to_string(&r.config))
            .collect::<serde_json::Result<Vec<_>>>()?;
        let new = self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute(
                &format!(
                    "INSERT INTO sweeps (name, config_toml, created_at, updated_at)
                     VALUES ($1, $2, {NOW}, {NOW})
                     ON CONFLICT (name) DO UPDATE SET config_toml = $2, updated_at = {NOW}"
                ),
                &[&sweep, &config_text],
            )?;
            let insert = tx.prepare(
                "INSERT INTO runs (id, pair_id, sweep, config, fuse_key)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            )?;
            let mut new = 0;
            for (run, config) in runs.iter().zip(&configs) {
                let key = fusion_key(&run.config);
                new += tx.execute(&insert, &[&run.id, &run.pair_id, &sweep, config, &key])?;
            }
            tx.commit()?;
            Ok(new as usize)
        })?;
        Ok(Added {
            new,
            existing: runs.len() - new,
        })
    }

    fn register_worker(&mut self, w: &WorkerInfo) -> Result<()> {
        self.with(|client| {
            client.execute(
                &format!(
                    "INSERT INTO workers (id, host, pid, threads, started_at, heartbeat_at)
                     VALUES ($1, $2, $3, $4, {NOW}, {NOW})
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = {NOW}"
                ),
                &[&w.id, &w.host, &i64::from(w.pid), &(w.threads as i64)],
            )?;
            Ok(())
        })
    }

    fn heartbeat(&mut self, w: &WorkerInfo) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute(
                &format!("UPDATE workers SET heartbeat_at = {NOW} WHERE id = $1"),
                &[&w.id],
            )?;
            // Rows locked in queue order, as `requeue` locks them: the two cannot deadlock.
            tx.execute(
                &format!(
                    "UPDATE runs SET lease_renewed_at = {NOW}
                     WHERE seq IN (SELECT seq FROM runs WHERE worker = $1 AND status = {running}
                                   ORDER BY seq FOR UPDATE)",
                    running = sql::status(RunStatus::Running)
                ),
                &[&w.id],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn claim_group(
        &mut self,
        w: &WorkerInfo,
        limit: &dyn Fn(&RunConfig) -> usize,
    ) -> Result<Vec<RunSpec>> {
        let claimed = self.with(|client| {
            let mut tx = client.transaction()?;
            // A worker claims only when it trains nothing: runs still held under its id are
            // those whose claim committed but whose answer was lost to a dropped connection.
            // Take them again rather than leave them held by a live lease forever.
            let mut rows = tx.query(&sql::held(Dialect::Postgres), &[&w.id])?;
            if rows.is_empty() {
                rows = claim_pending(&mut tx, w, None, 1)?;
                if let Some(first) = rows.first() {
                    let config: RunConfig = serde_json::from_str(first.get(2))?;
                    let more = limit(&config).saturating_sub(1) as i64;
                    if more > 0 {
                        let key = fusion_key(&config);
                        rows.extend(claim_pending(&mut tx, w, Some(&key), more)?);
                    }
                }
            }
            let mut group = vec![];
            for row in rows {
                let (id, pair_id, config): (String, String, String) =
                    (row.get(0), row.get(1), row.get(2));
                // Epochs of an earlier attempt: the run restarts from scratch, or from its checkpoint,
                // whose epochs it records again.
                tx.execute(&sql::delete_epochs(Dialect::Postgres), &[&id])?;
                group.push((id, pair_id, config));
            }
            tx.commit()?;
            Ok(group)
        })?;
        claimed
            .into_iter()
            .map(|(id, pair_id, config)| run_spec(id, pair_id, &config))
            .collect()
    }

    fn record_epoch(&mut self, run_id: &str, w: &WorkerInfo, m: &EpochMetrics) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            ensure_owned(&mut tx, run_id, w, false)?;
            let row = EpochRow {
                run_id: run_id.to_owned(),
                metrics: m.clone(),
            };
            let values = values_of(&row, EPOCH_COLUMNS)?;
            tx.execute(&sql::record_epoch(Dialect::Postgres), &params(&values))?;
            tx.execute(
                &format!("UPDATE runs SET lease_renewed_at = {NOW} WHERE id = $1"),
                &[&run_id],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn save_checkpoint(
        &mut self,
        run_id: &str,
        w: &WorkerInfo,
        checkpoint: &Checkpoint,
    ) -> Result<()> {
        let stored = StoredCheckpoint::of(checkpoint);
        let epoch = checkpoint.epoch() as i64;
        self.with(|client| {
            let mut tx = client.transaction()?;
            ensure_owned(&mut tx, run_id, w, false)?;
            tx.execute(
                &sql::save_checkpoint(Dialect::Postgres),
                &[&run_id, &epoch, &now(), &stored.sha256, &stored.bytes],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn checkpoint(&mut self, run_id: &str) -> Result<Option<StoredCheckpoint>> {
        self.with(|client| {
            let row = client.query_opt(&sql::checkpoint(Dialect::Postgres), &[&run_id])?;
            Ok(row.map(|r| StoredCheckpoint {
                bytes: r.get(0),
                sha256: r.get(1),
            }))
        })
    }

    fn finish(&mut self, run_id: &str, w: &WorkerInfo, finish: Finish) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            if !ensure_owned(&mut tx, run_id, w, true)? {
                return Ok(());
            }
            tx.execute(&sql::delete_checkpoint(Dialect::Postgres), &[&run_id])?;
            match &finish {
                Finish::Trained(r) => {
                    let results: Vec<Column> = result_columns().collect();
                    let mut values = vec![
                        Value::Text(Some(run_id.to_owned())),
                        Value::Text(Some(RunStatus::of(r.outcome).as_str().to_owned())),
                    ];
                    values.extend(result_values(r)?);
                    tx.execute(
                        &sql::finish_trained(Dialect::Postgres, &results),
                        &params(&values),
                    )?;
                }
                Finish::Failed(error) => {
                    tx.execute(&sql::finish_failed(Dialect::Postgres), &[&run_id, error])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn requeue_abandoned(&mut self, stale_after: Duration, max_attempts: u32) -> Result<usize> {
        let stale = stale_after.as_secs_f64();
        let n = self.requeue(
            &format!("lease_renewed_at < {NOW} - $2"),
            max_attempts,
            &stale,
        )?;
        if n > 0 {
            tracing::warn!("{n} runs whose lease lapsed put back to pending (or failed)");
        }
        Ok(n)
    }

    fn release_worker(&mut self, worker: &str, max_attempts: u32) -> Result<usize> {
        self.requeue("worker = $2", max_attempts, &worker)
    }

    fn hand_back(&mut self, run_id: &str, w: &WorkerInfo) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            ensure_owned(&mut tx, run_id, w, false)?;
            tx.execute(&sql::hand_back(Dialect::Postgres), &[&run_id])?;
            tx.execute(&sql::delete_epochs(Dialect::Postgres), &[&run_id])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn retry_failed(&mut self) -> Result<usize> {
        self.with(|client| Ok(client.execute(&sql::retry_failed(Dialect::Postgres), &[])? as usize))
    }

    fn drop_pending(&mut self, ids: &[String]) -> Result<usize> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            let delete = tx.prepare(&sql::drop_pending(Dialect::Postgres))?;
            let forget = tx.prepare(&sql::delete_checkpoint(Dialect::Postgres))?;
            let mut dropped = 0;
            for id in ids {
                let n = tx.execute(&delete, &[id])?;
                if n > 0 {
                    tx.execute(&forget, &[id])?;
                }
                dropped += n as usize;
            }
            tx.commit()?;
            Ok(dropped)
        })
    }

    fn runs(&self) -> Result<Vec<RunRow>> {
        Ok(self.runs_page(0, usize::MAX)?.0)
    }

    fn epochs(&self) -> Result<Vec<EpochRow>> {
        self.epochs_between(0, i64::MAX)
    }

    fn runs_table(&self, query: &super::super::RunsQuery) -> Result<(Vec<RunRow>, u64)> {
        self.table_page(query)
    }

    fn configs_page(&self, after: i64, limit: usize) -> Result<Vec<StoredConfig>> {
        PostgresStore::configs_page(self, after, limit)
    }

    fn summary(&self) -> Result<super::super::Summary> {
        self.summary_of_runs()
    }

    fn epochs_of(&self, run_id: &str) -> Result<Vec<EpochRow>> {
        self.epochs_of_run(run_id)
    }

    fn runs_page(&self, after: i64, limit: usize) -> Result<(Vec<RunRow>, i64)> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.with(|client| {
            Ok(client.query(
                &format!(
                    "SELECT seq, {}, (SELECT COUNT(*) FROM epochs e WHERE e.run_id = runs.id)
                         AS epochs_recorded
                     FROM runs WHERE seq > $1 ORDER BY seq LIMIT $2",
                    select_columns(
                        Dialect::Postgres,
                        "runs",
                        RUN_COLUMNS,
                        &self.absent.borrow()
                    )
                ),
                &[&after, &limit],
            )?)
        })?;
        let last = rows.last().map_or(after, |r| r.get("seq"));
        let runs = run_rows(&rows)?;
        Ok((runs, last))
    }

    fn epochs_between(&self, after: i64, through: i64) -> Result<Vec<EpochRow>> {
        let rows = self.with(|client| {
            Ok(client.query(
                &format!(
                    "SELECT {} FROM epochs
                     WHERE run_id IN (SELECT id FROM runs WHERE seq > $1 AND seq <= $2)
                     ORDER BY run_id, epoch",
                    select_columns(
                        Dialect::Postgres,
                        "epochs",
                        EPOCH_COLUMNS,
                        &self.absent.borrow()
                    )
                ),
                &[&after, &through],
            )?)
        })?;
        epoch_rows(&rows)
    }

    fn status_counts(&self) -> Result<Vec<(RunStatus, i64)>> {
        let rows = self.with(|client| {
            Ok(client.query("SELECT status, COUNT(*) FROM runs GROUP BY status", &[])?)
        })?;
        let count = |s: RunStatus| {
            rows.iter()
                .find(|r| r.get::<_, String>(0) == s.as_str())
                .map_or(0, |r| r.get(1))
        };
        Ok(RunStatus::ALL.iter().map(|&s| (s, count(s))).collect())
    }

    fn running(&self, lease: Duration) -> Result<Vec<Running>> {
        let stale = lease.as_secs_f64();
        let rows = self.with(|client| {
            Ok(client.query(
                &format!(
                    "SELECT id, COALESCE(worker, ''),
                    (SELECT COALESCE(MAX(epoch), 0) FROM epochs e WHERE e.run_id = runs.id),
                    config, COALESCE(lease_renewed_at < {NOW} - $1, true)
                 FROM runs WHERE status = {running} ORDER BY worker",
                    running = sql::status(RunStatus::Running)
                ),
                &[&stale],
            )?)
        })?;
        rows.iter()
            .map(|r| {
                Ok(Running {
                    run_id: r.get(0),
                    worker: r.get(1),
                    epochs_done: r.get::<_, i64>(2) as usize,
                    config: serde_json::from_str(&r.get::<_, String>(3))?,
                    worker_gone: r.get(4),
                })
            })
            .collect()
    }

    fn sweeps(&self) -> Result<Vec<SweepRecord>> {
        let rows = self.with(|client| {
            Ok(client.query(
                "SELECT name, config_toml FROM sweeps ORDER BY created_at, name",
                &[],
            )?)
        })?;
        Ok(rows
            .iter()
            .map(|r| SweepRecord {
                name: r.get(0),
                grid: r.get(1),
            })
            .collect())
    }

    fn import(
        &mut self,
        sweeps: &[SweepRecord],
        runs: &[RunRow],
        epochs: &[EpochRow],
    ) -> Result<Added> {
        let runs: Vec<RunRow> = runs.iter().map(portable).collect();
        let values = runs
            .iter()
            .map(|r| values_of(r, RUN_COLUMNS))
            .collect::<Result<Vec<_>>>()?;
        let new = self.with(|client| {
            let mut tx = client.transaction()?;
            for SweepRecord { name, grid: text } in sweeps {
                tx.execute(
                    &format!(
                        "INSERT INTO sweeps (name, config_toml, created_at, updated_at)
                         VALUES ($1, $2, {NOW}, {NOW}) ON CONFLICT (name) DO NOTHING"
                    ),
                    &[name, text],
                )?;
            }
            let (new, inserted) = insert_runs(&mut tx, &runs, &values)?;
            insert_epochs(&mut tx, epochs, &inserted)?;
            fill_fusion_keys(&mut tx)?;
            tx.commit()?;
            Ok(new)
        })?;
        Ok(Added {
            new,
            existing: runs.len() - new,
        })
    }
}

impl PostgresStore {
    /// One statement that puts the running runs matching `condition` (on `$2`) back to pending,
    /// or failed after `max_attempts`, and clears their partial epochs: of two processes running
    /// it at once, only one changes a given run.
    fn requeue(
        &self,
        condition: &str,
        max_attempts: u32,
        arg: &(dyn postgres::types::ToSql + Sync),
    ) -> Result<usize> {
        let max = i64::from(max_attempts);
        let n: i64 = self.with(|client| {
            let row = client.query_one(
                &format!(
                    "WITH gone AS (
                       UPDATE runs SET {assignments}
                       WHERE seq IN (SELECT seq FROM runs WHERE status = {running} AND {condition}
                                     ORDER BY seq FOR UPDATE)
                       RETURNING id, status),
                     cleared AS (DELETE FROM epochs
                       WHERE run_id IN (SELECT id FROM gone WHERE status = {pending}))
                     SELECT COUNT(*) FROM gone",
                    assignments = sql::give_up_or_requeue(Dialect::Postgres, "$1"),
                    running = sql::status(RunStatus::Running),
                    pending = sql::status(RunStatus::Pending),
                ),
                &[&max, arg],
            )?;
            Ok(row.get(0))
        })?;
        Ok(n as usize)
    }
}

/// Inserts the runs this database lacks (`values`: each run's column values); returns how many
/// were new and the ids of the new finished runs (whose epochs are copied too).
fn insert_runs<'a>(
    tx: &mut impl GenericClient,
    runs: &'a [RunRow],
    values: &[Vec<Value>],
) -> Result<(usize, HashSet<&'a str>)> {
    let insert = tx.prepare(&format!(
        "INSERT INTO runs ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING",
        column_list(RUN_COLUMNS),
        placeholders('$', 1, RUN_COLUMNS.len())
    ))?;
    let (mut new, mut inserted) = (0, HashSet::new());
    for (r, values) in runs.iter().zip(values) {
        let n = tx.execute(&insert, &params(values))?;
        new += n as usize;
        if n > 0 && r.status.finished() {
            inserted.insert(r.id.as_str());
        }
    }
    Ok((new, inserted))
}

/// Inserts the epochs of the runs `inserted` has just added.
fn insert_epochs(
    tx: &mut impl GenericClient,
    epochs: &[EpochRow],
    inserted: &HashSet<&str>,
) -> Result<()> {
    let insert = tx.prepare(&sql::insert_epoch(Dialect::Postgres))?;
    for e in epochs
        .iter()
        .filter(|e| inserted.contains(e.run_id.as_str()))
    {
        tx.execute(&insert, &params(&values_of(e, EPOCH_COLUMNS)?))?;
    }
    Ok(())
}
