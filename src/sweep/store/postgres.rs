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

use super::{
    Added, EPOCH_COLUMNS, EpochRow, EpochValues, Finish, RUN_COLUMNS, RunRow, RunStatus, Running,
    SCHEMA_VERSION, Store, WorkerInfo, check_version, column_list, convergence_of,
    convergence_text, finite, not_owned, placeholders, portable, redact, run_spec,
    schema_version_of, select_columns, stored_fusion_key,
};
use crate::sweep::grid::RunSpec;
use crate::sweep::grid::fusion_key;
use crate::train::{EpochMetrics, Outcome, RunConfig};

/// The server's time, in seconds since the Unix epoch.
const NOW: &str = "extract(epoch from clock_timestamp())::float8";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shallow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    config_toml TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    pair_id TEXT NOT NULL,
    sweep TEXT NOT NULL REFERENCES sweeps(name),
    config TEXT NOT NULL,
    fuse_key TEXT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'diverged', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    worker TEXT,
    host TEXT,
    claimed_at DOUBLE PRECISION,
    lease_renewed_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    params BIGINT,
    q DOUBLE PRECISION,
    train_examples BIGINT,
    final_train_loss DOUBLE PRECISION,
    final_train_acc DOUBLE PRECISION,
    final_val_loss DOUBLE PRECISION,
    final_val_acc DOUBLE PRECISION,
    diverged_epoch BIGINT,
    train_seconds DOUBLE PRECISION,
    total_seconds DOUBLE PRECISION,
    device TEXT,
    error TEXT,
    truncated_val_loss DOUBLE PRECISION,
    truncated_val_acc DOUBLE PRECISION,
    convergence TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, seq);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(id),
    epoch BIGINT NOT NULL,
    train_loss DOUBLE PRECISION,
    val_loss DOUBLE PRECISION,
    val_acc DOUBLE PRECISION,
    seconds DOUBLE PRECISION NOT NULL,
    images_per_second DOUBLE PRECISION NOT NULL,
    holdout_loss DOUBLE PRECISION,
    holdout_acc DOUBLE PRECISION,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    threads BIGINT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
";

/// How long a worker keeps trying to reach a server that went away (a restart, a failover).
const RECONNECT_FOR: Duration = Duration::from_secs(60);

pub struct PostgresStore {
    /// In a cell so that the trait's read methods (`&self`) can use and reconnect it too.
    client: RefCell<Client>,
    url: String,
    read_only: bool,
    /// The schema version of the database (older only for a reader, which never migrates).
    version: std::cell::Cell<i64>,
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
            version: std::cell::Cell::new(SCHEMA_VERSION),
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
            self.version.set(version);
            return Ok(());
        }
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(7025716231)", &[])?;
        let version = schema_version(&mut tx, &name)?;
        check_version(version, &name)?;
        if version < SCHEMA_VERSION {
            tx.batch_execute(SCHEMA)?;
            // Version 3: the runs' fusion keys, computed from their configs, and truncated metrics.
            tx.batch_execute(
                "ALTER TABLE runs ADD COLUMN IF NOT EXISTS fuse_key TEXT;
                 ALTER TABLE runs ADD COLUMN IF NOT EXISTS truncated_val_loss DOUBLE PRECISION;
                 ALTER TABLE runs ADD COLUMN IF NOT EXISTS truncated_val_acc DOUBLE PRECISION;",
            )?;
            // Version 4: the runs' convergence records, the epochs' held-out metrics.
            tx.batch_execute(
                "ALTER TABLE runs ADD COLUMN IF NOT EXISTS convergence TEXT;
                 ALTER TABLE epochs ADD COLUMN IF NOT EXISTS holdout_loss DOUBLE PRECISION;
                 ALTER TABLE epochs ADD COLUMN IF NOT EXISTS holdout_acc DOUBLE PRECISION;",
            )?;
            fill_fusion_keys(&mut tx)?;
            tx.batch_execute(
                "CREATE INDEX IF NOT EXISTS runs_fusion ON runs(fuse_key, status, seq)",
            )?;
            tx.execute(
                "INSERT INTO shallow_meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = $1",
                &[&SCHEMA_VERSION.to_string()],
            )?;
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
    let row = tx.query_opt(
        "SELECT status, worker FROM runs WHERE id = $1 FOR UPDATE",
        &[&run_id],
    )?;
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

fn run_row(r: &Row) -> Result<RunRow> {
    let config: String = r.get(4);
    Ok(RunRow {
        id: r.get(0),
        pair_id: r.get(1),
        sweep: r.get(2),
        status: r.get::<_, String>(3).parse()?,
        config: serde_json::from_str(&config)?,
        attempts: r.get(5),
        worker: r.get(6),
        host: r.get(7),
        claimed_at: r.get(8),
        finished_at: r.get(9),
        params: r.get(10),
        q: r.get(11),
        train_examples: r.get(12),
        final_train_loss: r.get(13),
        final_train_acc: r.get(14),
        final_val_loss: r.get(15),
        final_val_acc: r.get(16),
        diverged_epoch: r.get(17),
        train_seconds: r.get(18),
        total_seconds: r.get(19),
        device: r.get(20),
        error: r.get(21),
        truncated_val_loss: r.get(22),
        truncated_val_acc: r.get(23),
        convergence: convergence_of(r.get(24))?,
        epochs_recorded: r.get(25),
    })
}

mod store_impl;
