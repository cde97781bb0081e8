//! `shallow sweep`: queues the grid in the store, starts worker processes, replaces those that
//! die, and reports what ended.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::grid;
use super::plan::{check_inputs, plan_workers};
use super::progress::Progress;
use super::store::{self, RunRow, RunStatus};
use crate::device::DeviceChoice;

pub struct SweepOptions {
    pub config: PathBuf,
    pub db: PathBuf,
    pub workers: Option<usize>,
    pub threads: Option<usize>,
    pub data_dir: PathBuf,
    pub offline: bool,
    pub device: DeviceChoice,
    /// The largest grid (combinations before exclusions) to accept.
    pub max_runs: u64,
}
/// Final counts of a sweep.
#[derive(Debug)]
pub struct SweepOutcome {
    pub counts: Vec<(RunStatus, i64)>,
    /// Runs that this invocation's workers ended: done, diverged, failed.
    pub trained_now: [u64; 3],
    /// Worker processes that died (killed, crashed) and were replaced while runs remained.
    pub workers_lost: usize,
    pub wall_seconds: f64,
}

impl SweepOutcome {
    pub fn count(&self, status: RunStatus) -> i64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }

    /// Every run ended done or diverged: nothing failed, nothing is left.
    pub fn complete(&self) -> bool {
        RunStatus::ALL
            .iter()
            .all(|&s| s.ended() || self.count(s) == 0)
    }
}

/// A grid checked and queued in the store, ready for workers.
pub struct Queued {
    pub name: String,
    pub runs: u64,
    pub added: store::Added,
    pub workers: usize,
    pub threads: usize,
    pub log_path: PathBuf,
}

/// Loads the grid, checks its inputs (downloading missing datasets) and adds its runs to the
/// store; nothing is queued when a check fails.
pub fn queue(opts: &SweepOptions) -> Result<Queued> {
    let grid = grid::load_limited(&opts.config, opts.max_runs)?;
    check_inputs(&grid, &opts.data_dir, opts.offline, true)?;
    let text = std::fs::read_to_string(&opts.config)
        .with_context(|| format!("cannot read {}", opts.config.display()))?;
    let mut store = store::open(&opts.db)?;
    let added = queue_in_chunks(store.as_mut(), &grid, &text)?;
    let (workers, threads) = plan_workers(opts.workers, opts.threads);
    Ok(Queued {
        name: grid.name.clone(),
        runs: grid.len(),
        added,
        workers,
        threads,
        log_path: opts.db.with_extension("workers.log"),
    })
}

/// Runs are added this many at a time, each chunk one transaction: a grid of millions of runs is
/// queued in bounded memory, and a queueing cut short is completed by the next `sweep`.
const QUEUE_CHUNK: usize = 10_000;

fn queue_in_chunks(
    store: &mut dyn store::Store,
    grid: &grid::Grid,
    text: &str,
) -> Result<store::Added> {
    let mut added = store::Added {
        new: 0,
        existing: 0,
    };
    let mut chunk = Vec::with_capacity(QUEUE_CHUNK);
    let mut runs = grid.runs().peekable();
    while runs.peek().is_some() {
        chunk.clear();
        for run in runs.by_ref().take(QUEUE_CHUNK) {
            chunk.push(run?);
        }
        let a = store.add_runs(&grid.name, text, &chunk)?;
        added.new += a.new;
        added.existing += a.existing;
    }
    Ok(added)
}

/// Trains a queued sweep to completion with worker processes of `exe` (its hidden `worker`
/// subcommand). A worker that dies while runs remain is replaced (at most three times as many
/// replacements as workers, so that a crash on every start cannot loop forever); its run goes
/// back to pending at once.
pub fn run_sweep(opts: &SweepOptions, exe: &Path, queued: &Queued) -> Result<SweepOutcome> {
    let started = Instant::now();
    let since = store::now();
    let mut store = store::open(&opts.db)?;
    store.requeue_abandoned(super::worker::STALE_AFTER)?;
    let (workers, threads) = (queued.workers, queued.threads);
    let spawn = || spawn_worker(exe, opts, threads, &queued.log_path);
    let mut children = (0..workers).map(|_| spawn()).collect::<Result<Vec<_>>>()?;
    let mut spawned: Vec<u32> = children.iter().map(Child::id).collect();
    let mut progress = Progress::new(store.as_ref(), &children)?;
    let mut lost = 0;
    while !children.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
        progress.update(store.as_ref(), &children)?;
        let mut still = Vec::new();
        for mut child in children {
            match child.try_wait()? {
                None => still.push(child),
                Some(status) if status.success() => {}
                Some(status) => {
                    lost += 1;
                    tracing::warn!("worker {} ended abnormally ({status})", child.id());
                    // Reaped now, so it is seen dead: its run is pending again at once.
                    store.requeue_abandoned(super::worker::STALE_AFTER)?;
                    let pending = store
                        .status_counts()?
                        .iter()
                        .any(|(s, n)| *s == RunStatus::Pending && *n > 0);
                    if pending && lost <= 3 * workers {
                        let replacement = spawn()?;
                        progress.replace(child.id(), replacement.id());
                        spawned.push(replacement.id());
                        still.push(replacement);
                    }
                }
            }
        }
        children = still;
    }
    progress.update(store.as_ref(), &children)?;
    progress.finish();
    Ok(SweepOutcome {
        trained_now: trained_by(&store.runs()?, &spawned, since),
        counts: store.status_counts()?,
        workers_lost: lost,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Done, diverged and failed runs that the worker processes `pids` of this host ended since
/// `since` (a worker's id is `host:pid:start`).
fn trained_by(runs: &[RunRow], pids: &[u32], since: f64) -> [u64; 3] {
    let host = store::hostname();
    let mut counts = [0; 3];
    for r in runs
        .iter()
        .filter(|r| r.finished_at.is_some_and(|t| t >= since))
    {
        let mine = r.worker.as_deref().is_some_and(|w| {
            let mut parts = w.split(':');
            parts.next() == Some(host.as_str())
                && parts
                    .next()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|p| pids.contains(&p))
        });
        if let (true, Some(i)) = (
            mine,
            [RunStatus::Done, RunStatus::Diverged, RunStatus::Failed]
                .iter()
                .position(|s| *s == r.status),
        ) {
            counts[i] += 1;
        }
    }
    counts
}

fn spawn_worker(exe: &Path, opts: &SweepOptions, threads: usize, log: &Path) -> Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot write {}", log.display()))?;
    let mut command = Command::new(exe);
    command
        .arg("worker")
        .arg("--db")
        .arg(&opts.db)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--data-dir")
        .arg(&opts.data_dir)
        .arg("--device")
        .arg(format!("{:?}", opts.device).to_lowercase())
        .arg("--offline")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .env(
            "SHALLOW_LOG",
            std::env::var("SHALLOW_LOG").unwrap_or("info".into()),
        );
    // Workers die with the sweep process, even on SIGKILL: a later `shallow sweep` then finds
    // their runs abandoned and trains them again, and no orphan keeps writing.
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn().context("cannot start a worker process")
}
