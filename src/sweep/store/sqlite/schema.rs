//! The SQLite schema, its version and migration, and how a database file is opened.
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::SqliteStore;
use crate::sweep::store::{SCHEMA_VERSION, check_version, schema_version_of, stored_fusion_key};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shallow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    config_toml TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    pair_id TEXT NOT NULL,
    sweep TEXT NOT NULL REFERENCES sweeps(name),
    config TEXT NOT NULL,
    fuse_key TEXT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'diverged', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    host TEXT,
    claimed_at REAL,
    finished_at REAL,
    params INTEGER,
    q REAL,
    train_examples INTEGER,
    final_train_loss REAL,
    final_train_acc REAL,
    final_val_loss REAL,
    final_val_acc REAL,
    diverged_epoch INTEGER,
    train_seconds REAL,
    total_seconds REAL,
    device TEXT,
    error TEXT,
    truncated_val_loss REAL,
    truncated_val_acc REAL,
    convergence TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, seq);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    train_loss REAL,
    val_loss REAL,
    val_acc REAL,
    seconds REAL NOT NULL,
    images_per_second REAL NOT NULL,
    holdout_loss REAL,
    holdout_acc REAL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    threads INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
";

impl SqliteStore {
    /// Opens (creating if needed) the database file, migrating an older schema in place in one
    /// transaction.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open results database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(60))?;
        let version = schema_version(&conn, path)?;
        check_version(version, &path.display().to_string())?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        if version < SCHEMA_VERSION {
            let tx = conn.unchecked_transaction()?;
            // Version 1 → 2 adds the version record itself; every table of version 1 is kept
            // as it is, so the statements below are the migration. 2 → 3 adds the runs' fusion
            // keys, computed from their configs.
            tx.execute_batch(SCHEMA)?;
            migrate_to_v3(&tx)?;
            migrate_to_v4(&tx)?;
            tx.execute(
                "INSERT INTO shallow_meta (key, value) VALUES ('schema_version', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = ?1",
                [SCHEMA_VERSION.to_string()],
            )?;
            tx.commit()
                .with_context(|| format!("{}: migration failed", path.display()))?;
            if version > 0 {
                tracing::info!(
                    "{}: migrated from schema version {version} to {SCHEMA_VERSION}",
                    path.display()
                );
            }
        }
        Ok(SqliteStore {
            conn,
            version: SCHEMA_VERSION,
        })
    }

    /// Opens an existing database for reading only: nothing is created or written, not even a
    /// journal, so an archived database in a read-only folder can be read.
    pub fn open_read_only(path: &Path) -> Result<SqliteStore> {
        if !path.is_file() {
            bail!("{}: no such results database", path.display());
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let uri = |extra: &str| {
            let path = path
                .to_string_lossy()
                .replace('%', "%25")
                .replace('?', "%3f");
            format!("file:{path}?mode=ro{extra}")
        };
        let readable = |conn: Connection| -> Result<(Connection, i64)> {
            let version = schema_version(&conn, path)?;
            Ok((conn, version))
        };
        // A WAL database whose shared-memory file cannot be created (a read-only folder) is
        // read as immutable: no writer is running on an archive.
        let (conn, version) = Connection::open_with_flags(uri(""), flags)
            .map_err(anyhow::Error::from)
            .and_then(readable)
            .or_else(|_| {
                Connection::open_with_flags(uri("&immutable=1"), flags)
                    .map_err(anyhow::Error::from)
                    .and_then(readable)
            })
            .with_context(|| format!("cannot read results database {}", path.display()))?;
        check_version(version, &path.display().to_string())?;
        if version == 0 {
            bail!(
                "{}: not a shallow results database (it is empty)",
                path.display()
            );
        }
        conn.busy_timeout(Duration::from_secs(60))?;
        Ok(SqliteStore { conn, version })
    }
}

/// Adds `column` of `kind` to `table` unless it has it.
fn add_column(tx: &rusqlite::Transaction, table: &str, column: &str, kind: &str) -> Result<()> {
    let has_column: bool = tx.query_row(
        &format!("SELECT count(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
        [column],
        |r| r.get(0),
    )?;
    if !has_column {
        tx.execute(
            &format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"),
            [],
        )?;
    }
    Ok(())
}

/// Version 4: the runs' convergence records, the epochs' held-out metrics.
fn migrate_to_v4(tx: &rusqlite::Transaction) -> Result<()> {
    add_column(tx, "runs", "convergence", "TEXT")?;
    add_column(tx, "epochs", "holdout_loss", "REAL")?;
    add_column(tx, "epochs", "holdout_acc", "REAL")
}

/// Version 3: the fusion key of every run (runs with equal keys may train as one array), indexed
/// for claiming a group, and the truncated metrics; added to the runs of an older database.
fn migrate_to_v3(tx: &rusqlite::Transaction) -> Result<()> {
    for (column, kind) in [
        ("fuse_key", "TEXT"),
        ("truncated_val_loss", "REAL"),
        ("truncated_val_acc", "REAL"),
    ] {
        add_column(tx, "runs", column, kind)?;
    }
    fill_fusion_keys(tx)?;
    tx.execute(
        "CREATE INDEX IF NOT EXISTS runs_fusion ON runs(fuse_key, status, seq)",
        [],
    )?;
    Ok(())
}

/// Computes the fusion key of every run that has none (migrated or imported).
pub(super) fn fill_fusion_keys(tx: &rusqlite::Transaction) -> Result<()> {
    let missing: Vec<(i64, String)> = tx
        .prepare("SELECT seq, config FROM runs WHERE fuse_key IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = tx.prepare("UPDATE runs SET fuse_key = ?2 WHERE seq = ?1")?;
    for (seq, config) in missing {
        update.execute(rusqlite::params![seq, stored_fusion_key(&config)?])?;
    }
    Ok(())
}

/// The schema version of a database: 0 when it is empty, 1 when it has the tables of a release
/// before versioning. A database with other tables and none of ours is refused.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
        .with_context(|| format!("{}: not a SQLite database", path.display()))?;
    schema_version_of(&tables, &path.display().to_string(), || {
        Ok(conn
            .query_row(
                "SELECT value FROM shallow_meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?)
    })
}
