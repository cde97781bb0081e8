//! `shallow status` and `shallow export`: read-only views of a results store.
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::store::{self, Location, RunRow, RunStatus, RunsQuery, SortKey, Store};
use crate::human;
use crate::model::Layout;
use crate::train::settings;

/// A store's progress: what `shallow status` prints and `shallow serve` shows.
#[derive(Debug, Serialize)]
pub struct Progress {
    /// The store, password hidden.
    pub store: String,
    pub runs: usize,
    /// Runs by status over every sweep.
    pub counts: Vec<(RunStatus, i64)>,
    /// Per sweep: its name and its runs by status.
    pub sweeps: Vec<SweepProgress>,
    /// Runs that trained to their end per hour, from the first claim to the last end.
    pub runs_per_hour: Option<f64>,
    /// Runs not finished yet, and the seconds they take at that rate.
    pub remaining: usize,
    pub eta_seconds: Option<f64>,
    pub running: Vec<RunningRow>,
    /// The latest failed runs (at most 50; `counts` has them all), and the command that queues
    /// them again (GRID.toml: the grid of their sweep).
    pub failed: Vec<FailedRow>,
    pub retry_command: String,
}

#[derive(Debug, Serialize)]
pub struct SweepProgress {
    pub name: String,
    pub counts: Vec<(RunStatus, usize)>,
}

#[derive(Debug, Serialize)]
pub struct RunningRow {
    pub run_id: String,
    pub worker: String,
    pub dataset: String,
    pub layout: Layout,
    pub layers: usize,
    pub filters: usize,
    pub kernel: usize,
    pub epochs_done: usize,
    pub epochs: usize,
    /// Its worker is dead or silent: the next sweep or worker trains it again.
    pub abandoned: bool,
}

#[derive(Debug, Serialize)]
pub struct FailedRow {
    pub run_id: String,
    pub sweep: String,
    pub error: String,
    pub finished_at: Option<f64>,
}

/// Failed runs a progress view lists at most (the latest).
const FAILED_SHOWN: usize = 50;

/// The progress of `store` (the store at `db`); `lease` judges which workers are gone. Aggregated
/// by the database: a store of a million runs is summarised without reading its runs.
pub fn progress(store: &dyn Store, db: &Location, lease: Duration) -> Result<Progress> {
    let summary = store.summary()?;
    // Throughput counts runs that trained to the end: failures that take no time (a bad
    // config) would make it meaningless. Measured from the first claim to the last end.
    let runs_per_hour = match (summary.first_claim, summary.last_end) {
        (Some(first), Some(last)) if last > first => {
            Some(summary.trained as f64 / (last - first) * 3600.0)
        }
        _ => None,
    };
    let count = |wanted: &dyn Fn(RunStatus) -> bool| -> usize {
        summary
            .by_sweep
            .iter()
            .filter(|(_, s, _)| wanted(*s))
            .map(|(_, _, n)| *n as usize)
            .sum()
    };
    let remaining = count(&|s| !s.finished());
    let running = store
        .running(lease)?
        .into_iter()
        .map(|r| RunningRow {
            dataset: r.config.dataset.clone(),
            layout: r.config.layout,
            layers: r.config.layers,
            filters: r.config.filters,
            kernel: r.config.kernel,
            epochs: r.config.epochs,
            run_id: r.run_id,
            worker: r.worker,
            epochs_done: r.epochs_done,
            abandoned: r.worker_gone,
        })
        .collect();
    let (failed, _) = store.runs_table(&RunsQuery {
        status: Some(RunStatus::Failed),
        sort: Some(SortKey::named("finished_at")?),
        descending: true,
        limit: FAILED_SHOWN,
        ..RunsQuery::default()
    })?;
    let failed = failed
        .into_iter()
        .map(|r| FailedRow {
            run_id: r.id,
            sweep: r.sweep,
            error: r.error.unwrap_or_else(|| "(no message)".into()),
            finished_at: r.finished_at,
        })
        .collect();
    Ok(Progress {
        store: db.to_string(),
        runs: count(&|_| true),
        counts: RunStatus::ALL
            .iter()
            .map(|&s| (s, count(&|t| t == s) as i64))
            .collect(),
        sweeps: sweep_counts(&summary.by_sweep),
        eta_seconds: runs_per_hour.map(|per_hour| remaining as f64 / per_hour * 3600.0),
        runs_per_hour,
        remaining,
        running,
        failed,
        retry_command: format!("shallow sweep GRID.toml --db {db} --retry-failed"),
    })
}

fn sweep_counts(by_sweep: &[(String, RunStatus, i64)]) -> Vec<SweepProgress> {
    let mut sweeps: Vec<SweepProgress> = vec![];
    for (name, status, n) in by_sweep {
        if sweeps.last().is_none_or(|s| s.name != *name) {
            sweeps.push(SweepProgress {
                name: name.clone(),
                counts: vec![],
            });
        }
        if let Some(s) = sweeps.last_mut() {
            s.counts.push((*status, *n as usize));
        }
    }
    sweeps
}

/// `shallow status`: counts by status, throughput, ETA, runs in progress, last errors.
pub fn status_text(db: &Location, lease: Duration) -> Result<String> {
    let p = progress(store::open_reader(db)?.as_ref(), db, lease)?;
    let mut out = format!("{}: {} runs\n", p.store, p.runs);
    for (status, n) in &p.counts {
        out += &format!("  {status:<9} {n}\n");
    }
    if let (Some(per_hour), Some(eta)) = (p.runs_per_hour, p.eta_seconds) {
        out += &format!(
            "throughput: {per_hour:.1} runs/hour; remaining {} runs ≈ {} at that rate\n",
            p.remaining,
            human::duration(eta)
        );
    }
    for r in &p.running {
        let label = if r.abandoned {
            "abandoned (its worker is gone; the next sweep or worker trains it again)"
        } else {
            "running"
        };
        out += &format!(
            "{label}: {} ({} {} L={} F={} k={}) on {}, {} of {} epochs done\n",
            r.run_id,
            r.dataset,
            r.layout,
            r.layers,
            r.filters,
            r.kernel,
            r.worker,
            r.epochs_done,
            r.epochs
        );
    }
    for r in p.failed.iter().take(5) {
        out += &format!("failed: {}: {}\n", r.run_id, r.error);
    }
    Ok(out)
}

/// The columns of `shallow export` before the settings: the run's identity and status.
#[derive(Serialize)]
struct Identity<'a> {
    id: &'a str,
    pair_id: &'a str,
    sweep: &'a str,
    status: RunStatus,
}

impl<'a> Identity<'a> {
    fn of(r: &'a RunRow) -> Identity<'a> {
        Identity {
            id: &r.id,
            pair_id: &r.pair_id,
            sweep: &r.sweep,
            status: r.status,
        }
    }
}

/// The columns of `shallow export` after the stored ones: the epochs recorded and the
/// convergence record's fields.
#[derive(Serialize)]
struct Measured {
    epochs_recorded: i64,
    stop_reason: Option<&'static str>,
    best_epoch: Option<usize>,
    best_holdout_loss: Option<f64>,
    best_holdout_acc: Option<f64>,
    best_test_loss: Option<f64>,
    best_test_acc: Option<f64>,
    still_improving: Option<bool>,
    seconds_to_best: Option<f64>,
}

impl Measured {
    fn of(r: &RunRow) -> Measured {
        let conv = r.convergence.as_ref();
        Measured {
            epochs_recorded: r.epochs_recorded,
            stop_reason: conv.map(|v| v.stop_reason.as_str()),
            best_epoch: conv.map(|v| v.best_epoch),
            best_holdout_loss: conv.map(|v| v.best_holdout_loss),
            best_holdout_acc: conv.map(|v| v.best_holdout_acc),
            best_test_loss: conv.map(|v| v.best_val_loss),
            best_test_acc: conv.map(|v| v.best_val_acc),
            still_improving: conv.map(|v| v.still_improving),
            seconds_to_best: conv.map(|v| v.seconds_to_best),
        }
    }
}

/// The header the csv crate writes for the struct `row`.
fn header_of(row: &impl Serialize) -> Result<Vec<String>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.serialize(row)?;
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    Ok(reader.headers()?.iter().map(str::to_owned).collect())
}

/// `shallow export`: one CSV row per run — identity, config columns, status, final metrics,
/// timings — ready for pandas or polars. Written whole or not at all ([`crate::files`]).
pub fn export_csv(db: &Location, out: &Path) -> Result<usize> {
    if out.is_dir() {
        bail!("--csv {}: is a folder; give a file name", out.display());
    }
    let store = store::open_reader(db)?;
    let runs = store.runs()?;
    crate::files::write_atomically(out, |file| write_rows(&runs, file))?;
    Ok(runs.len())
}

/// [`export_csv`] to a writer (standard output for `--csv -`).
pub fn export_csv_to(db: &Location, out: impl std::io::Write) -> Result<usize> {
    let runs = store::open_reader(db)?.runs()?;
    write_rows(&runs, out).context("cannot write the CSV")?;
    Ok(runs.len())
}

/// The identity, every setting of [`settings::described`] (in force: defaults filled in), every
/// plain stored column ([`store::scalar_cells`]) and the convergence record of each run: the
/// setting and stored columns are derived, so none can be missing.
fn write_rows(runs: &[RunRow], out: impl std::io::Write) -> Result<()> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    if let Some(first) = runs.first() {
        let mut header = header_of(&Identity::of(first))?;
        header.extend(settings::names().iter().map(|n| n.to_string()));
        header.extend(store::scalar_names().iter().map(|n| n.to_string()));
        header.extend(header_of(&Measured::of(first))?);
        writer.write_record(&header)?;
    }
    for r in runs {
        let settings = r.config.values_in_force();
        let stored = store::scalar_cells(r)?;
        writer.serialize((Identity::of(r), settings, stored, Measured::of(r)))?;
    }
    writer.flush()?;
    Ok(())
}
