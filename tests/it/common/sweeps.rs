//! A sweep on a generated dataset, run through the binary, and queries of its database.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;

use super::{shallow_bin, write_idx_dataset};

pub struct Setup {
    _tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub config: PathBuf,
    pub db: PathBuf,
}

pub fn setup(runs_toml: &str, train: usize, side: usize) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_idx_dataset(&data.join("tiny"), train, 50, side, false);
    let config = tmp.path().join("grid.toml");
    std::fs::write(
        &config,
        format!("name = \"t\"\n[runs]\ndataset = \"tiny\"\n{runs_toml}"),
    )
    .unwrap();
    let db = tmp.path().join("results.db");
    Setup {
        _tmp: tmp,
        data,
        config,
        db,
    }
}

/// Runs that differ only in lr and seed train fused (as one array) in tests' sweeps.
pub const TEST_FUSE: &str = "4";

/// `shallow sweep` of the setup's grid with `workers` one-thread workers, fusing up to
/// [`TEST_FUSE`] runs.
pub fn sweep_command(s: &Setup, workers: usize) -> Command {
    sweep_command_fusing(s, workers, TEST_FUSE)
}

/// [`sweep_command`] with `--fuse fuse`.
pub fn sweep_command_fusing(s: &Setup, workers: usize, fuse: &str) -> Command {
    let mut c = Command::new(shallow_bin());
    c.arg("sweep")
        .arg(&s.config)
        .arg("--db")
        .arg(&s.db)
        .arg("--data-dir")
        .arg(&s.data)
        .args([
            "--offline",
            "--threads",
            "1",
            "--workers",
            &workers.to_string(),
            "--fuse",
            fuse,
        ]);
    c
}

pub fn run_sweep(s: &Setup, workers: usize) -> Output {
    sweep_command(s, workers).output().unwrap()
}

pub fn query<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> Vec<T> {
    let conn = Connection::open(db).unwrap();
    let mut q = conn.prepare(sql).unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

pub fn count(db: &Path, sql: &str) -> i64 {
    query::<i64>(db, sql)[0]
}

/// Queues the grid of `s` with `--no-train` into the database `db` (given through `SHALLOW_DB`).
pub fn queue_only(s: &Setup, db: &str) {
    let out = Command::new(shallow_bin())
        .args([
            "sweep",
            s.config.to_str().unwrap(),
            "--no-train",
            "--offline",
        ])
        .arg("--data-dir")
        .arg(&s.data)
        .env("SHALLOW_DB", db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
