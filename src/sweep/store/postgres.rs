//! The PostgreSQL backend: one database server shared by workers on any number of machines.
//!
//! Every time that decides liveness is the server's clock (`clock_timestamp()`), never a
//! worker's. A claimed run is held by a lease its worker renews with each heartbeat; a run whose
//! lease lapsed is put back by one statement that only one process can win. Claims take the first
//! pending run with `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on or win the same
//! run. Writes of a worker whose run was taken from it are refused, and it stops training it.
use std::cell::RefCell;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use postgres::{Client, GenericClient, NoTls, Row};

use super::columns::{
    Column, EPOCH_COLUMNS, RUN_COLUMNS, column_list, decode_epoch, decode_run, placeholders,
    positions, result_columns, result_values, values_of,
};
use super::identity::{RunSpec, fusion_key};
use super::row::{Kind, Value};
use super::schema::{self, Absent, Dialect, Step, select_columns};
use super::sql;
use super::{
    Added, EpochRow, Finish, RunRow, RunStatus, Running, SCHEMA_VERSION, Store, StoredCheckpoint,
    StoredConfig, SweepRecord, WorkerInfo, check_version, not_owned, now, portable, redact,
    run_spec, schema_version_of, stored_fusion_key,
};
use crate::train::{Checkpoint, EpochMetrics, RunConfig};

/// The server's time, in seconds since the Unix epoch.
const NOW: &str = "extract(epoch from clock_timestamp())::float8";

/// How long a worker keeps trying to reach a server that went away (a restart, a failover).
const RECONNECT_FOR: Duration = Duration::from_secs(60);

pub struct PostgresStore {
    /// In a cell so that the trait's read methods (`&self`) can use and reconnect it too.
    client: RefCell<Client>,
    url: String,
    read_only: bool,
    /// The columns the database lacks (only a reader's, which never migrates, can lack any).
    absent: RefCell<Absent>,
}

impl PostgresStore {
    /// Connects; a writer creates or migrates the schema (serialised by an advisory lock, so
    /// many workers starting at once do not race), a reader only checks it.
    pub fn connect(url: &str, read_only: bool) -> Result<PostgresStore> {
        let client = connect(url)?;
        let store = PostgresStore {
            client: RefCell::new(client),
            url: url.to_owned(),
            read_only,
            absent: RefCell::new(Absent::default()),
        };
        store.prepare()?;
        Ok(store)
    }

    fn prepare(&self) -> Result<()> {
        let name = redact(&self.url);
        let mut client = self.client.borrow_mut();
        if self.read_only {
            client.batch_execute("SET default_transaction_read_only = on")?;
            let version = schema_version(&mut *client, &name)?;
            check_version(version, &name)?;
            if version == 0 {
                bail!("{name}: not a shallow results database (it has no tables)");
            }
            *self.absent.borrow_mut() = absent_columns(&mut *client)?;
            return Ok(());
        }
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(7025716231)", &[])?;
        let version = schema_version(&mut tx, &name)?;
        check_version(version, &name)?;
        if version < SCHEMA_VERSION {
            migrate(&mut tx, version)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `op`, reconnecting (for up to a minute) and retrying when the connection was lost,
    /// and retrying at once when the server aborted its transaction as a deadlock victim or a
    /// serialization failure (SQLSTATE 40P01, 40001). Every write below is idempotent for its
    /// owner or guarded by ownership, so a retry after a commit whose answer was lost does no
    /// harm.
    fn with<T>(&self, mut op: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(10);
        loop {
            let result = op(&mut self.client.borrow_mut());
            match result {
                Err(e) if started.elapsed() < RECONNECT_FOR && transient(&e) => {
                    tracing::debug!("{}: retried: {e:#}", redact(&self.url));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) if self.connection_lost(&e) && started.elapsed() < RECONNECT_FOR => {
                    tracing::warn!(
                        "{}: connection lost ({e:#}); reconnecting",
                        redact(&self.url)
                    );
                    std::thread::sleep(Duration::from_secs(1));
                    if let Ok(client) = connect(&self.url) {
                        *self.client.borrow_mut() = client;
                        self.prepare()?;
                    }
                }
                result => return result,
            }
        }
    }

    /// Whether `error` means the connection is gone: the client saw it close, or the server
    /// said it is ending this session. A server that shuts down or terminates a backend sends
    /// a FATAL error first and closes the socket after it; a call can get that error before
    /// the client has read the close.
    fn connection_lost(&self, error: &anyhow::Error) -> bool {
        self.client.borrow().is_closed()
            || error.chain().any(|cause| {
                cause
                    .downcast_ref::<postgres::Error>()
                    .is_some_and(session_ended)
            })
    }
}

/// A transaction the server rolled back to break a deadlock or keep transactions serializable:
/// retrying it is the documented remedy.
fn transient(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<postgres::Error>()
            .and_then(postgres::Error::code)
            .is_some_and(|code| {
                *code == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                    || *code == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
            })
    })
}

/// A closed connection, a FATAL or PANIC error (the server ends the session after either),
/// or a connection-exception or shutdown SQLSTATE.
fn session_ended(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    let Some(db) = error.as_db_error() else {
        return false;
    };
    let code = db.code().code();
    matches!(db.severity(), "FATAL" | "PANIC") || code.starts_with("08") || code.starts_with("57P")
}

fn connect(url: &str) -> Result<Client> {
    Client::connect(url, NoTls).with_context(|| format!("cannot connect to {}", redact(url)))
}

/// Brings a database of schema `from` (0: new) to the current version: the tables it lacks,
/// the columns it lacks, the numbered migrations' steps, the indexes and the version record.
fn migrate(tx: &mut impl GenericClient, from: i64) -> Result<()> {
    tx.batch_execute(&schema::create_tables(Dialect::Postgres))?;
    for (table, c) in absent_columns(tx)?.columns(Dialect::Postgres) {
        let kind = Dialect::Postgres.kind(c.kind);
        tx.batch_execute(&format!("ALTER TABLE {table} ADD COLUMN {} {kind}", c.name))?;
    }
    for step in schema::steps_from(from) {
        match step {
            Step::FillFusionKeys => fill_fusion_keys(tx)?,
        }
    }
    tx.batch_execute(schema::CREATE_INDEXES)?;
    tx.execute(
        "INSERT INTO shallow_meta (key, value) VALUES ('schema_version', $1)
         ON CONFLICT (key) DO UPDATE SET value = $1",
        &[&SCHEMA_VERSION.to_string()],
    )?;
    Ok(())
}

/// The columns of ours the database's tables lack.
fn absent_columns(client: &mut impl GenericClient) -> Result<Absent> {
    Absent::of(Dialect::Postgres, |table| {
        let rows = client.query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_name = $1 AND table_schema = current_schema()",
            &[&table],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    })
}

/// Computes the fusion key of every run that has none (migrated or imported).
fn fill_fusion_keys(client: &mut impl GenericClient) -> Result<()> {
    let missing = client.query("SELECT seq, config FROM runs WHERE fuse_key IS NULL", &[])?;
    for row in missing {
        let (seq, config): (i64, String) = (row.get(0), row.get(1));
        client.execute(
            "UPDATE runs SET fuse_key = $2 WHERE seq = $1",
            &[&seq, &stored_fusion_key(&config)?],
        )?;
    }
    Ok(())
}

fn schema_version(client: &mut impl GenericClient, name: &str) -> Result<i64> {
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema()",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    schema_version_of(&tables, name, || {
        let row = client.query_opt(
            "SELECT value FROM shallow_meta WHERE key = 'schema_version'",
            &[],
        )?;
        Ok(row.map(|r| r.get(0)))
    })
}

/// Refuses writes from a worker that no longer holds the run. `done_ok`: a finished run this
/// worker finished is fine (a retried finish whose first answer was lost).
fn ensure_owned(
    tx: &mut impl GenericClient,
    run_id: &str,
    w: &WorkerInfo,
    done_ok: bool,
) -> Result<bool> {
    let row = tx.query_opt(&sql::owner(Dialect::Postgres), &[&run_id])?;
    let (status, worker): (String, Option<String>) = match row {
        Some(r) => (r.get(0), r.get(1)),
        None => return Err(not_owned(run_id, w)),
    };
    let mine = worker.as_deref() == Some(w.id.as_str());
    match status.parse::<RunStatus>()? {
        RunStatus::Running if mine => Ok(true),
        s if done_ok && mine && s.finished() => Ok(false),
        _ => Err(not_owned(run_id, w)),
    }
}

/// A value as PostgreSQL binds it: the typed option inside.
fn param(v: &Value) -> &(dyn postgres::types::ToSql + Sync) {
    match v {
        Value::Text(t) => t,
        Value::Integer(i) => i,
        Value::Real(x) => x,
    }
}

fn params(values: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    values.iter().map(param).collect()
}

/// Column `c` of `row`, at position `at` (found by its name).
fn read(row: &Row, at: usize, c: &Column) -> Result<Value> {
    Ok(match c.kind {
        Kind::Text | Kind::Json => Value::Text(row.try_get(at)?),
        Kind::Integer => Value::Integer(row.try_get(at)?),
        Kind::Real => Value::Real(row.try_get(at)?),
    })
}

/// Decodes `rows` of a query with `columns` (and `extra` columns for `decode`).
fn decode_rows<T>(
    rows: &[Row],
    columns: &[Column],
    decode: impl Fn(&Row, &dyn Fn(usize, &Column) -> Result<Value>) -> Result<T>,
) -> Result<Vec<T>> {
    let Some(first) = rows.first() else {
        return Ok(vec![]);
    };
    let names: Vec<&str> = first.columns().iter().map(|c| c.name()).collect();
    let at = positions(columns, &names)?;
    rows.iter()
        .map(|r| decode(r, &|i, c| read(r, at[i], c)))
        .collect()
}

fn run_rows(rows: &[Row]) -> Result<Vec<RunRow>> {
    decode_rows(rows, RUN_COLUMNS, |r, value_of| {
        decode_run(value_of, r.try_get("epochs_recorded")?)
    })
}

fn epoch_rows(rows: &[Row]) -> Result<Vec<EpochRow>> {
    decode_rows(rows, EPOCH_COLUMNS, |_, value_of| decode_epoch(value_of))
}

mod store_impl;
mod table;
