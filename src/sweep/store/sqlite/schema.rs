//! The SQLite schema, its version and migration, and how a database file is opened.
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::SqliteStore;
use crate::sweep::store::schema::{self, Absent, Dialect, Step};
use crate::sweep::store::{SCHEMA_VERSION, check_version, schema_version_of, stored_fusion_key};

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
            migrate(&tx, version)
                .and_then(|()| Ok(tx.commit()?))
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
            absent: Absent::default(),
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
        // Readers scan: a 32 MiB page cache (the default is 2 MiB) saves most re-reads of a
        // large database's pages (`copy` reads epochs by run, all over the file).
        conn.pragma_update(None, "cache_size", -32768)?;
        let absent = absent_columns(&conn)?;
        Ok(SqliteStore { conn, absent })
    }
}

/// Brings a database of schema `from` (0: new) to the current version, in `tx`: the tables it
/// lacks, the columns it lacks, the numbered migrations' steps, the indexes and the version
/// record.
fn migrate(tx: &rusqlite::Transaction, from: i64) -> Result<()> {
    tx.execute_batch(&schema::create_tables(Dialect::Sqlite))?;
    for (table, c) in absent_columns(tx)?.columns(Dialect::Sqlite) {
        let kind = Dialect::Sqlite.kind(c.kind);
        tx.execute(
            &format!("ALTER TABLE {table} ADD COLUMN {} {kind}", c.name),
            [],
        )?;
    }
    for step in schema::steps_from(from) {
        match step {
            Step::FillFusionKeys => fill_fusion_keys(tx)?,
        }
    }
    tx.execute_batch(schema::CREATE_INDEXES)?;
    tx.execute(
        "INSERT INTO shallow_meta (key, value) VALUES ('schema_version', ?1)
         ON CONFLICT (key) DO UPDATE SET value = ?1",
        [SCHEMA_VERSION.to_string()],
    )?;
    Ok(())
}

/// The columns of ours the database's tables lack.
pub(super) fn absent_columns(conn: &Connection) -> Result<Absent> {
    Absent::of(Dialect::Sqlite, |table| {
        let mut q = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
        let names = q.query_map([table], |r| r.get(0))?;
        Ok(names.collect::<rusqlite::Result<_>>()?)
    })
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
