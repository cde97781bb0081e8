//! The schema of both backends, derived from the column lists, and its numbered migrations,
//! which both backends run step by step.
use std::collections::HashSet;

use anyhow::Result;

use super::columns::{Column, EPOCH_COLUMNS, RUN_BOOKKEEPING, RUN_COLUMNS, column};
use super::row::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// PostgreSQL's lease of a run, renewed with each heartbeat: liveness by the server's clock.
/// (SQLite, on one machine, judges liveness by the workers' heartbeats and pids.)
const POSTGRES_LEASE: &[Column] = &[column("lease_renewed_at", Kind::Real)];

impl Dialect {
    pub(super) fn kind(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (_, Kind::Text | Kind::Json) => "TEXT",
            (Dialect::Sqlite, Kind::Integer) => "INTEGER",
            (Dialect::Sqlite, Kind::Real) => "REAL",
            (Dialect::Postgres, Kind::Integer) => "BIGINT",
            (Dialect::Postgres, Kind::Real) => "DOUBLE PRECISION",
        }
    }

    /// Every column of the runs table after `seq`: the rows' own, the store's bookkeeping and
    /// this backend's.
    fn run_columns(self) -> impl Iterator<Item = &'static Column> {
        let own = match self {
            Dialect::Sqlite => &[][..],
            Dialect::Postgres => POSTGRES_LEASE,
        };
        RUN_COLUMNS.iter().chain(RUN_BOOKKEEPING).chain(own)
    }

    /// Every column of the runs and epochs tables, with its table.
    fn stored_columns(self) -> impl Iterator<Item = (&'static str, &'static Column)> {
        let runs = self.run_columns().map(|c| ("runs", c));
        runs.chain(EPOCH_COLUMNS.iter().map(|c| ("epochs", c)))
    }

    /// The type of a column of bytes.
    fn blob(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
        }
    }

    fn definitions<'a>(self, columns: impl Iterator<Item = &'a Column>) -> String {
        columns
            .map(|c| {
                format!(
                    "    {} {} {}",
                    c.name,
                    self.kind(c.kind),
                    c.constraint.sql()
                )
            })
            .map(|d| d.trim_end().to_owned())
            .collect::<Vec<_>>()
            .join(",\n")
    }
}

/// The columns of `runs` and `epochs` a database lacks (one made by an older release, opened by
/// a reader, which never migrates), as `table.column`.
#[derive(Debug, Clone, Default)]
pub(super) struct Absent(HashSet<String>);

impl Absent {
    /// What a database whose tables have the columns `present(table)` lacks.
    pub(super) fn of(
        d: Dialect,
        mut present: impl FnMut(&str) -> Result<HashSet<String>>,
    ) -> Result<Absent> {
        let mut absent = HashSet::new();
        for (table, c) in d.stored_columns() {
            if !present(table)?.contains(c.name) {
                absent.insert(format!("{table}.{}", c.name));
            }
        }
        Ok(Absent(absent))
    }

    fn has(&self, table: &str, c: &Column) -> bool {
        self.0.contains(&format!("{table}.{}", c.name))
    }

    /// The (table, column) pairs to add.
    pub(super) fn columns(&self, d: Dialect) -> Vec<(&'static str, &'static Column)> {
        d.stored_columns()
            .filter(|(table, c)| self.has(table, c))
            .collect()
    }
}

/// `columns` of `table` to select, by name: those the database lacks are read as NULL.
pub(super) fn select_columns(
    d: Dialect,
    table: &str,
    columns: &[Column],
    absent: &Absent,
) -> String {
    columns
        .iter()
        .map(|c| {
            if absent.has(table, c) {
                format!("CAST(NULL AS {}) AS {}", d.kind(c.kind), c.name)
            } else {
                c.name.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// CREATE TABLE IF NOT EXISTS of every table at the current version.
pub(super) fn create_tables(d: Dialect) -> String {
    let (real, int) = (d.kind(Kind::Real), d.kind(Kind::Integer));
    let seq = match d {
        Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS shallow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    config_toml TEXT NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    seq {seq},
{runs}
);
CREATE TABLE IF NOT EXISTS epochs (
{epochs},
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT PRIMARY KEY,
    epoch {int} NOT NULL,
    saved_at {real} NOT NULL,
    sha256 TEXT NOT NULL,
    bytes {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid {int} NOT NULL,
    threads {int} NOT NULL,
    started_at {real} NOT NULL,
    heartbeat_at {real} NOT NULL
);",
        blob = d.blob(),
        runs = d.definitions(d.run_columns()),
        epochs = d.definitions(EPOCH_COLUMNS.iter()),
    )
}

/// The indexes, created once every column they cover exists.
pub(super) const CREATE_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, seq);
CREATE INDEX IF NOT EXISTS runs_fusion ON runs(fuse_key, status, seq);";

/// A step of a migration beyond adding the columns an older database lacks (which every
/// migration does first, derived from the column lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Compute the fusion key of every run from its config.
    FillFusionKeys,
}

/// The migrations, by the version each leads to: what each version changed beyond its columns.
/// Version 1 is the schema of releases before versioning; version 2 added the version record
/// (`shallow_meta`, created with the tables); 3 the runs' fusion keys (computed here) and
/// truncated metrics; 4 the runs' convergence records and the epochs' held-out metrics; 5 the
/// runs' checkpoints (a table, created with the tables).
pub(super) const MIGRATIONS: &[(i64, &[Step])] =
    &[(2, &[]), (3, &[Step::FillFusionKeys]), (4, &[]), (5, &[])];

/// The steps from version `from` to the current one. A new database (`from` 0) gets its tables
/// whole and needs none.
pub(super) fn steps_from(from: i64) -> impl Iterator<Item = Step> {
    MIGRATIONS
        .iter()
        .filter(move |(v, _)| from > 0 && *v > from)
        .flat_map(|(_, steps)| steps.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::super::SCHEMA_VERSION;
    use super::*;

    #[test]
    fn every_version_has_its_migration() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (2..=SCHEMA_VERSION).collect::<Vec<_>>());
        assert_eq!(steps_from(0).count(), 0);
        assert_eq!(steps_from(SCHEMA_VERSION).count(), 0);
        assert_eq!(steps_from(2).collect::<Vec<_>>(), [Step::FillFusionKeys]);
    }
}
