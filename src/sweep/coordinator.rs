//! `shallow sweep`: queues the grid in the store, starts worker processes, replaces those that
//! die, and reports what ended.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::fault::{EXIT_ENVIRONMENT, FAULT_FILE_ENV};
use super::grid;
use super::plan::{check_inputs, plan_workers};
use super::progress::Progress;
use super::store::{self, Location, RunStatus};
use super::worker::WorkerSettings;
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
    /// Remove the pending runs queued for another version of a user data file of the grid.
    pub requeue_changed_data: bool,
    /// Remove pending runs of the sweep that its grid no longer holds.
    pub drop_removed: bool,
}

/// Worker processes on this machine, started by `shallow sweep` or `shallow worker --workers N`.
pub struct PoolOptions {
    /// What every worker process is given.
    pub worker: WorkerSettings,
    pub workers: usize,
    pub log_path: PathBuf,
}
/// Runs ended by the workers of one sweep invocation, by how they ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trained {
    pub done: u64,
    pub diverged: u64,
    pub failed: u64,
}

impl Trained {
    pub fn total(&self) -> u64 {
        self.done + self.diverged + self.failed
    }
}

/// Final counts of a sweep.
#[derive(Debug)]
pub struct SweepOutcome {
    pub counts: Vec<(RunStatus, i64)>,
    /// Runs that this invocation's workers ended.
    pub trained_now: Trained,
    /// Worker processes that died (killed, crashed) and were replaced while runs remained.
    pub workers_lost: usize,
    /// SIGTERM arrived: the workers were told to hand back their runs and stop.
    pub stopped: bool,
    /// Why workers stopped on a fault of their environment (each cause once), which handed
    /// their runs back; such workers are not replaced.
    pub faults: Vec<String>,
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
    /// Pending runs of a changed data file removed (`--requeue-changed-data`), and the finished
    /// runs of such files, which stay.
    pub stale: Stale,
    /// Pending runs of the sweep that its grid no longer holds, and whether they were removed
    /// (`--drop-removed`) or stay queued.
    pub removed: Removed,
}

/// Pending runs of a sweep that its grid (narrowed since they were queued) no longer holds.
#[derive(Debug, Default)]
pub struct Removed {
    pub pending: usize,
    pub dropped: bool,
}

/// The run ids of a grid as it was queued, each kept as a 64-bit hash so that a grid of
/// millions of runs stays small.
#[derive(Default)]
struct HeldIds(std::collections::HashSet<u64>);

impl HeldIds {
    fn key(id: &str) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(id, &mut h);
        std::hash::Hasher::finish(&h)
    }
    fn insert(&mut self, id: &str) {
        self.0.insert(Self::key(id));
    }
    fn contains(&self, id: &str) -> bool {
        self.0.contains(&Self::key(id))
    }
}

/// The ids of the pending runs of sweep `sweep` in `store` that its grid, queued as `held`, no
/// longer holds.
fn removed_runs(store: &dyn store::Store, sweep: &str, held: &HeldIds) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for run in store::each_run(store, QUEUE_CHUNK) {
        let run = run?;
        if run.sweep == sweep && run.status == RunStatus::Pending && !held.contains(&run.id) {
            removed.push(run.id);
        }
    }
    Ok(removed)
}

/// The runs of a sweep queued for another version of a user data file than the one here now.
#[derive(Debug, Default)]
pub struct Stale {
    pub pending: Vec<String>,
    pub finished: usize,
    /// The data files concerned.
    pub datasets: Vec<String>,
}

/// The runs of sweep `sweep` whose user dataset is in `hashes` under another content hash.
fn stale_runs(store: &dyn store::Store, sweep: &str, hashes: &grid::DataHashes) -> Result<Stale> {
    let mut stale = Stale::default();
    if hashes.is_empty() {
        return Ok(stale);
    }
    for run in store::each_run(store, QUEUE_CHUNK) {
        let run = run?;
        let cfg = &run.config;
        let Some(here) = hashes.get(&cfg.dataset) else {
            continue;
        };
        if run.sweep != sweep || cfg.data_hash.as_ref() == Some(here) {
            continue;
        }
        if !stale.datasets.contains(&cfg.dataset) {
            stale.datasets.push(cfg.dataset.clone());
        }
        match run.status {
            RunStatus::Pending => stale.pending.push(run.id),
            s if s.ended() => stale.finished += 1,
            _ => {}
        }
    }
    Ok(stale)
}

/// Loads the grid, checks its inputs (downloading missing datasets) and adds its runs to the
/// store; nothing is queued when a check fails.
pub fn queue(opts: &SweepOptions) -> Result<Queued> {
    let grid = grid::load_limited(&opts.config, opts.max_runs)?;
    check_inputs(&grid, &opts.data_dir, opts.offline, true)?;
    let text = std::fs::read_to_string(&opts.config)
        .with_context(|| format!("cannot read {}", opts.config.display()))?;
    let hashes = grid::DataHashes::of(&grid, &opts.data_dir)?;
    let mut store = store::open(&opts.db)?;
    let stale = stale_runs(store.as_ref(), &grid.name, &hashes)?;
    anyhow::ensure!(
        stale.pending.is_empty() || opts.requeue_changed_data,
        "{} pending run(s) of sweep '{}' were queued for another version of {} than the one in \
         {} now, and would stop every worker with a data fault: restore the file, or run this \
         command again with --requeue-changed-data to remove them and queue the runs of the file \
         as it is now",
        stale.pending.len(),
        grid.name,
        stale.datasets.join(", "),
        opts.data_dir.display()
    );
    let (added, held) = queue_in_chunks(store.as_mut(), &grid, &text, &hashes)?;
    store.drop_pending(&stale.pending)?;
    let removed = removed_runs(store.as_ref(), &grid.name, &held)?;
    if opts.drop_removed {
        store.drop_pending(&removed)?;
    }
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
        stale,
        removed: Removed {
            pending: removed.len(),
            dropped: opts.drop_removed,
        },
    })
}

/// Runs are added this many at a time, each chunk one transaction: a grid of millions of runs is
/// queued in bounded memory, and a queueing cut short is completed by the next `sweep`.
const QUEUE_CHUNK: usize = 10_000;

/// `hashes`: the content hash of each user data file, stamped into its runs. Returns what was
/// added, and the ids of every run of the grid.
fn queue_in_chunks(
    store: &mut dyn store::Store,
    grid: &grid::Grid,
    text: &str,
    hashes: &grid::DataHashes,
) -> Result<(store::Added, HeldIds)> {
    let mut held = HeldIds::default();
    let mut added = store::Added {
        new: 0,
        existing: 0,
    };
    let mut chunk = Vec::with_capacity(QUEUE_CHUNK);
    let mut runs = grid.runs().peekable();
    while runs.peek().is_some() {
        chunk.clear();
        for run in runs.by_ref().take(QUEUE_CHUNK) {
            let run = hashes.stamp(run?);
            held.insert(&run.id);
            chunk.push(run);
        }
        let a = store.add_runs(&grid.name, text, &chunk)?;
        added.new += a.new;
        added.existing += a.existing;
    }
    Ok((added, held))
}

/// Trains the queue to completion with worker processes of `exe` (its hidden `worker-child`
/// subcommand). A worker that dies while runs remain is replaced (at most three times as many
/// replacements as workers, so that a crash on every start cannot loop forever); its run goes back
/// to pending at once. A worker stopped by a fault of its environment is not replaced: its
/// runs were handed back, and the fault is reported.
pub fn run_pool(pool: &PoolOptions, exe: &Path) -> Result<SweepOutcome> {
    let started = Instant::now();
    let since = store::now();
    let settings = &pool.worker;
    let mut store = store::open(&settings.db)?;
    store.requeue_abandoned(settings.lease, settings.max_attempts)?;
    let fault_dir = tempfile::tempdir().context("cannot create a folder for worker faults")?;
    let mut children: Vec<Worker> = (0..pool.workers)
        .map(|_| Worker::spawn(exe, pool, fault_dir.path()))
        .collect::<Result<_>>()?;
    let mut ids = std::collections::HashSet::new();
    ids.extend(children.iter().map(|w| w.id.clone()));
    let mut progress = Progress::new(store.as_ref(), &ids_of(&children));
    let (mut lost, mut faults) = (0, Vec::<String>::new());
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let mut forwarded = false;
    while !children.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
        progress.update(store.as_ref(), &ids_of(&children), settings.lease);
        if stop.load(Ordering::Relaxed) && !forwarded {
            // The workers may have had it too (a scheduler signals the whole job); each hands
            // its run back and exits.
            for child in &children {
                // SAFETY: signals a child process this process started and has not reaped.
                unsafe { libc::kill(child.process.id() as libc::pid_t, libc::SIGTERM) };
            }
            forwarded = true;
        }
        let mut still = Vec::new();
        for mut child in children {
            let Some(status) = child.process.try_wait()? else {
                still.push(child);
                continue;
            };
            if status.success() {
                continue;
            }
            // Reaped now, so known dead: its run is pending again at once.
            store.release_worker(&child.id, settings.max_attempts)?;
            if status.code() == Some(i32::from(EXIT_ENVIRONMENT)) {
                let fault = child.fault();
                tracing::error!("worker {} stopped: {fault}", child.id);
                if !faults.contains(&fault) {
                    faults.push(fault);
                }
                continue;
            }
            lost += 1;
            tracing::warn!("worker {} ended abnormally ({status})", child.id);
            let pending = store
                .status_counts()?
                .iter()
                .any(|(s, n)| *s == RunStatus::Pending && *n > 0);
            if (pending || settings.forever) && !forwarded && lost <= 3 * pool.workers {
                let replacement = Worker::spawn(exe, pool, fault_dir.path())?;
                ids.insert(replacement.id.clone());
                progress.replace(&child.id, &replacement.id);
                still.push(replacement);
            }
        }
        children = still;
    }
    progress.update(store.as_ref(), &ids_of(&children), settings.lease);
    progress.finish();
    Ok(SweepOutcome {
        trained_now: trained_by(store.as_ref(), &ids, since)?,
        counts: store.status_counts()?,
        workers_lost: lost,
        stopped: forwarded,
        faults,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// A worker process this sweep started, under the id it gave it.
fn ids_of(workers: &[Worker]) -> Vec<&str> {
    workers.iter().map(|w| w.id.as_str()).collect()
}

struct Worker {
    pub id: String,
    process: Child,
    fault_file: PathBuf,
}

impl Worker {
    /// Starts `exe worker-child` with the pool's settings as JSON on its standard input.
    fn spawn(exe: &Path, pool: &PoolOptions, fault_dir: &Path) -> Result<Worker> {
        let id = store::new_worker_id(&store::hostname(), std::process::id());
        let fault_file = fault_dir.join(id.replace([':', '/'], "_"));
        let log = &pool.log_path;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot write {}", log.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("worker-child")
            .env(store::WORKER_ID_ENV, &id)
            .env(FAULT_FILE_ENV, &fault_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log_file)
            .env(
                "SHALLOW_LOG",
                std::env::var("SHALLOW_LOG").unwrap_or("info".into()),
            );
        // Workers die with the sweep process, even on SIGKILL: a later `shallow sweep` then
        // finds their runs abandoned and trains them again, and no orphan keeps writing.
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut process = command.spawn().context("cannot start a worker process")?;
        let settings = serde_json::to_vec(&pool.worker)?;
        let mut stdin = process.stdin.take().expect("stdin is piped");
        std::io::Write::write_all(&mut stdin, &settings)
            .context("cannot hand a worker process its settings")?;
        Ok(Worker {
            id,
            process,
            fault_file,
        })
    }

    /// What the worker wrote about the fault that stopped it.
    fn fault(&self) -> String {
        std::fs::read_to_string(&self.fault_file)
            .map(|f| f.trim().to_owned())
            .unwrap_or_else(|_| "a fault of its environment (see the worker log)".into())
    }
}

/// Done, diverged and failed runs that the workers `ids` (those this process started) ended
/// since `since`.
fn trained_by(
    store: &dyn store::Store,
    ids: &std::collections::HashSet<String>,
    since: f64,
) -> Result<Trained> {
    let mut trained = Trained::default();
    for r in store::each_run(store, QUEUE_CHUNK) {
        let r = r?;
        let ours = r.worker.as_ref().is_some_and(|w| ids.contains(w));
        if !ours || r.finished_at.is_none_or(|t| t < since) {
            continue;
        }
        match r.status {
            RunStatus::Done => trained.done += 1,
            RunStatus::Diverged => trained.diverged += 1,
            RunStatus::Failed => trained.failed += 1,
            RunStatus::Pending | RunStatus::Running => {}
        }
    }
    Ok(trained)
}
