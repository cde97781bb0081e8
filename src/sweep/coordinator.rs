//! `shallow sweep`: queues the grid in the store, starts worker processes, replaces those that
//! die, and reports what ended.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::grid;
use super::plan::{check_inputs, plan_workers};
use super::progress::Progress;
use super::store::{self, Location, RunRow, RunStatus};
use super::worker::Fuse;
use crate::device::DeviceChoice;

pub struct SweepOptions {
    pub config: PathBuf,
    pub db: Location,
    pub workers: Option<usize>,
    pub threads: Option<usize>,
    pub data_dir: PathBuf,
    pub offline: bool,
    pub device: DeviceChoice,
    /// The largest grid (combinations before exclusions) to accept.
    pub max_runs: u64,
    pub max_attempts: u32,
    /// Put failed runs back to pending before training.
    pub retry_failed: bool,
}

/// Worker processes on this machine, started by `shallow sweep` or `shallow worker --workers N`.
pub struct PoolOptions {
    pub db: Location,
    pub workers: usize,
    pub threads: usize,
    pub data_dir: PathBuf,
    pub offline: bool,
    pub device: DeviceChoice,
    pub max_attempts: u32,
    /// A run whose worker is silent this long goes to another worker.
    pub lease: Duration,
    /// How many runs of one fusion group each worker trains together.
    pub fuse: Fuse,
    pub forever: bool,
    pub log_path: PathBuf,
}
/// Final counts of a sweep.
#[derive(Debug)]
pub struct SweepOutcome {
    pub counts: Vec<(RunStatus, i64)>,
    /// Runs that this invocation's workers ended: done, diverged, failed.
    pub trained_now: [u64; 3],
    /// Worker processes that died (killed, crashed) and were replaced while runs remained.
    pub workers_lost: usize,
    /// SIGTERM arrived: the workers were told to hand back their runs and stop.
    pub stopped: bool,
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
    /// Failed runs put back to pending (`--retry-failed`).
    pub retried: usize,
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
    let retried = if opts.retry_failed {
        store.retry_failed()?
    } else {
        0
    };
    let (workers, threads) = plan_workers(opts.workers, opts.threads);
    Ok(Queued {
        name: grid.name.clone(),
        runs: grid.len(),
        added,
        workers,
        threads,
        log_path: opts.db.worker_log(),
        retried,
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

/// Trains the queue to completion with worker processes of `exe` (its `worker` subcommand). A
/// worker that dies while runs remain is replaced (at most three times as many replacements as
/// workers, so that a crash on every start cannot loop forever); its run goes back to pending
/// at once.
pub fn run_pool(pool: &PoolOptions, exe: &Path) -> Result<SweepOutcome> {
    let started = Instant::now();
    let since = store::now();
    let mut store = store::open(&pool.db)?;
    store.requeue_abandoned(pool.lease, pool.max_attempts)?;
    // Worker ids by process id: a reaped worker's run is released by its id.
    let mut ids = std::collections::HashMap::new();
    let spawn = |ids: &mut std::collections::HashMap<u32, String>| -> Result<Child> {
        let id = store::new_worker_id(&store::hostname(), std::process::id());
        let child = spawn_worker(exe, pool, &id)?;
        ids.insert(child.id(), id);
        Ok(child)
    };
    let mut children = (0..pool.workers)
        .map(|_| spawn(&mut ids))
        .collect::<Result<Vec<_>>>()?;
    let mut progress = Progress::new(store.as_ref(), &children)?;
    let mut lost = 0;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let mut forwarded = false;
    while !children.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
        progress.update(store.as_ref(), &children)?;
        if stop.load(Ordering::Relaxed) && !forwarded {
            // The workers may have had it too (a scheduler signals the whole job); each hands
            // its run back and exits.
            for child in &children {
                // SAFETY: signals a child process this process started and has not reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
            forwarded = true;
        }
        let mut still = Vec::new();
        for mut child in children {
            match child.try_wait()? {
                None => still.push(child),
                Some(status) if status.success() => {}
                Some(status) => {
                    lost += 1;
                    tracing::warn!("worker {} ended abnormally ({status})", child.id());
                    // Reaped now, so known dead: its run is pending again at once.
                    if let Some(id) = ids.get(&child.id()) {
                        store.release_worker(id, pool.max_attempts)?;
                    }
                    let pending = store
                        .status_counts()?
                        .iter()
                        .any(|(s, n)| *s == RunStatus::Pending && *n > 0);
                    if (pending || pool.forever) && !forwarded && lost <= 3 * pool.workers {
                        let replacement = spawn(&mut ids)?;
                        progress.replace(child.id(), replacement.id());
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
        trained_now: trained_by(&store.runs()?, &ids.into_values().collect(), since),
        counts: store.status_counts()?,
        workers_lost: lost,
        stopped: forwarded,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Done, diverged and failed runs that the workers `ids` (those this process started) ended
/// since `since`.
fn trained_by(runs: &[RunRow], ids: &std::collections::HashSet<String>, since: f64) -> [u64; 3] {
    let mut counts = [0; 3];
    for r in runs
        .iter()
        .filter(|r| r.finished_at.is_some_and(|t| t >= since))
        .filter(|r| r.worker.as_ref().is_some_and(|w| ids.contains(w)))
    {
        if let Some(i) = [RunStatus::Done, RunStatus::Diverged, RunStatus::Failed]
            .iter()
            .position(|s| *s == r.status)
        {
            counts[i] += 1;
        }
    }
    counts
}

fn spawn_worker(exe: &Path, pool: &PoolOptions, id: &str) -> Result<Child> {
    let log = &pool.log_path;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot write {}", log.display()))?;
    let mut command = Command::new(exe);
    command
        .arg("worker")
        .arg("--threads")
        .arg(pool.threads.to_string())
        .arg("--data-dir")
        .arg(&pool.data_dir)
        .arg("--device")
        .arg(format!("{:?}", pool.device).to_lowercase())
        .arg("--max-attempts")
        .arg(pool.max_attempts.to_string())
        .arg("--lease")
        .arg(pool.lease.as_secs().to_string())
        .arg("--fuse")
        .arg(pool.fuse.to_string())
        .args(pool.forever.then_some("--forever"))
        // Through the environment, not the command line: a URL's password stays out of `ps`.
        .env("SHALLOW_DB", pool.db.as_os_str())
        .env(store::WORKER_ID_ENV, id)
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
