//! `shallow sweep`: expands the grid into the store, starts worker processes and shows progress;
//! `shallow status` and `shallow export` read the store.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tch::{Device, Kind, Tensor, nn, nn::OptimizerConfig};

use super::grid::{self, Grid};
use super::store::{self, RunRow, Store};
use crate::data::{self, CLASSES};
use crate::device::{self, DeviceChoice};
use crate::model::{Activation, Architecture, Head, Layout, Net, Pool};
use crate::train::RunConfig;

pub struct SweepOptions {
    pub config: PathBuf,
    pub db: PathBuf,
    pub workers: Option<usize>,
    pub threads: Option<usize>,
    pub data_dir: PathBuf,
    pub offline: bool,
    pub device: DeviceChoice,
}

/// Workers × threads for this machine: for the small nets of the grid, independent processes use
/// the cores better than one process's intra-op threads (see README "Performance"), so one
/// single-threaded worker per core unless told otherwise.
pub fn plan_workers(workers: Option<usize>, threads: Option<usize>) -> (usize, usize) {
    let cores = device::available_cores();
    match (workers, threads) {
        (Some(w), Some(t)) => (w.max(1), t.max(1)),
        (Some(w), None) => (w.max(1), (cores / w.max(1)).max(1)),
        (None, Some(t)) => ((cores / t.max(1)).max(1), t.max(1)),
        (None, None) => (cores, 1),
    }
}

/// Known input shapes, for estimates before any data is loaded.
fn input_shape(dataset: &str) -> ([usize; 3], usize, usize) {
    match dataset {
        data::CIFAR10 => ([3, 32, 32], 50_000, 10_000),
        _ => ([1, 28, 28], 60_000, 10_000),
    }
}

fn architecture(cfg: &RunConfig) -> Architecture {
    cfg.architecture(input_shape(&cfg.dataset).0)
}

/// Multiply-adds of a whole run: forward + backward (≈ 3 forwards) per training image and epoch,
/// one forward per validation image and epoch, and the final pass over the training set.
fn run_macs(cfg: &RunConfig) -> f64 {
    let (_, train, val) = input_shape(&cfg.dataset);
    let train = cfg.train_limit.unwrap_or(train).min(train) as f64;
    let val = cfg.val_limit.unwrap_or(val).min(val) as f64;
    let per_image = architecture(cfg).forward_macs();
    per_image * (cfg.epochs as f64 * (3.0 * train + val) + train)
}

/// Multiply-adds per second this machine reaches on one training step of a mid-sized net, with
/// `threads` threads: a rough calibration for estimates.
fn calibrate_macs_per_second(threads: usize) -> Result<f64> {
    device::set_threads(threads);
    let arch = Architecture {
        layout: Layout::Sequential,
        input: [1, 28, 28],
        classes: CLASSES,
        layers: 4,
        filters: 32,
        kernel: 3,
        activation: Activation::Relu,
        pool: Pool::None,
        batchnorm: false,
        head: Head::Flatten,
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root(), arch, 0)?;
    let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
    let x = Tensor::randn([32, 1, 28, 28], (Kind::Float, Device::Cpu));
    let y = Tensor::zeros([32], (Kind::Int64, Device::Cpu));
    let mut step = || opt.backward_step(&crate::train::cross_entropy(&net.forward(&x, true), &y));
    step();
    let started = Instant::now();
    let steps = 10;
    for _ in 0..steps {
        step();
    }
    Ok(3.0 * arch.forward_macs() * 32.0 * steps as f64 / started.elapsed().as_secs_f64())
}

/// Checks, before anything is queued or trained, that every dataset of the grid can be had (with
/// `fetch`, downloading what is missing) and is usable, and that every run fits its images and
/// this machine's memory. A dataset that is missing but downloadable is not loaded without
/// `fetch`; its runs are checked against its known shape.
pub fn check_inputs(grid: &Grid, data_dir: &Path, offline: bool, fetch: bool) -> Result<()> {
    for dataset in grid.datasets() {
        let shape = if fetch {
            data::ensure_available(data_dir, dataset, offline)?;
            data::load(data_dir, dataset)?.train.shape
        } else if data::needs_download(data_dir, dataset, offline)?.is_some() {
            input_shape(dataset).0
        } else {
            data::load(data_dir, dataset)?.train.shape
        };
        for run in grid.runs.iter().filter(|r| r.config.dataset == dataset) {
            crate::train::check_fits(&run.config, shape, Device::Cpu)
                .with_context(|| format!("run {} of the grid ({dataset})", run.id))?;
        }
    }
    Ok(())
}

/// `--dry-run`: what the sweep holds and roughly how long it takes here.
pub fn dry_run(grid: &Grid, workers: usize, threads: usize) -> Result<String> {
    let params: f64 = grid
        .runs
        .iter()
        .map(|r| architecture(&r.config).parameter_count() as f64)
        .sum();
    let macs: f64 = grid.runs.iter().map(|r| run_macs(&r.config)).sum();
    let rate = calibrate_macs_per_second(threads)? * workers as f64;
    Ok(format!(
        "sweep '{}': {} runs ({} pairs) on {}\n\
         total parameters: {:.3e} (mean {:.0} per run)\n\
         estimated time: {} with {workers} worker(s) × {threads} thread(s) \
         (rough: FLOP count × a rate measured just now on one CPU training step)",
        grid.name,
        grid.runs.len(),
        grid.pairs(),
        grid.datasets().join(", "),
        params,
        params / grid.runs.len() as f64,
        human_duration(macs / rate),
    ))
}

pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Final counts of a sweep.
#[derive(Debug)]
pub struct SweepOutcome {
    pub counts: Vec<(String, i64)>,
    /// Runs that this invocation's workers ended: done, diverged, failed.
    pub trained_now: [u64; 3],
    /// Worker processes that died (killed, crashed) and were replaced while runs remained.
    pub workers_lost: usize,
    pub wall_seconds: f64,
}

impl SweepOutcome {
    pub fn count(&self, status: &str) -> i64 {
        self.counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n)
    }

    /// Every run ended done or diverged: nothing failed, nothing is left.
    pub fn complete(&self) -> bool {
        ["failed", "pending", "running"]
            .iter()
            .all(|s| self.count(s) == 0)
    }
}

/// A grid checked and queued in the store, ready for workers.
pub struct Queued {
    pub name: String,
    pub runs: usize,
    pub added: store::Added,
    pub workers: usize,
    pub threads: usize,
    pub log_path: PathBuf,
}

/// Loads the grid, checks its inputs (downloading missing datasets) and adds its runs to the
/// store; nothing is queued when a check fails.
pub fn queue(opts: &SweepOptions) -> Result<Queued> {
    let grid = grid::load(&opts.config)?;
    check_inputs(&grid, &opts.data_dir, opts.offline, true)?;
    let text = std::fs::read_to_string(&opts.config)
        .with_context(|| format!("cannot read {}", opts.config.display()))?;
    let mut store = store::open(&opts.db)?;
    let added = store.add_runs(&grid.name, &text, &grid.runs)?;
    let (workers, threads) = plan_workers(opts.workers, opts.threads);
    Ok(Queued {
        name: grid.name,
        runs: grid.runs.len(),
        added,
        workers,
        threads,
        log_path: opts.db.with_extension("workers.log"),
    })
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
                        .any(|(s, n)| s == "pending" && *n > 0);
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
            ["done", "diverged", "failed"]
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

/// The overall bar (runs done/total, ETA, failures) and one line per worker.
struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    lines: Vec<(u32, ProgressBar)>,
    last_done: std::cell::Cell<u64>,
}

fn finished(counts: &[(String, i64)]) -> (u64, u64, i64) {
    let get = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    let done = (get("done") + get("diverged") + get("failed")) as u64;
    let total = counts.iter().map(|(_, n)| *n).sum::<i64>() as u64;
    (done, total, get("failed"))
}

impl Progress {
    fn new(store: &dyn Store, children: &[Child]) -> Result<Progress> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let (done, total, _) = finished(&store.status_counts()?);
        let overall = multi.add(
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "runs [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
        );
        overall.set_position(done);
        overall.reset_eta();
        let lines = children
            .iter()
            .enumerate()
            .map(|(i, child)| {
                let line = multi.add(ProgressBar::new_spinner());
                line.set_message(format!("worker {}: starting", i + 1));
                (child.id(), line)
            })
            .collect();
        Ok(Progress {
            multi,
            overall,
            lines,
            last_done: done.into(),
        })
    }

    fn update(&self, store: &dyn Store, children: &[Child]) -> Result<()> {
        let (done, total, failed) = finished(&store.status_counts()?);
        self.overall.set_length(total);
        self.overall.set_position(done);
        self.overall.set_message(if failed > 0 {
            format!("{failed} failed")
        } else {
            String::new()
        });
        if self.overall.is_hidden() && done != self.last_done.get() {
            println!("[{done}/{total}] runs finished, {failed} failed");
        }
        self.last_done.set(done);
        let running = store.running()?;
        for (i, (pid, line)) in self.lines.iter().enumerate() {
            let alive = children.iter().any(|c| c.id() == *pid);
            let here = running
                .iter()
                .find(|r| r.worker.split(':').nth(1) == Some(&pid.to_string()));
            line.set_message(match (alive, here) {
                (_, Some(r)) => format!(
                    "worker {}: {} {} {} L={} F={} k={} · epoch {}/{}",
                    i + 1,
                    &r.run_id[..8],
                    r.config.dataset,
                    r.config.layout,
                    r.config.layers,
                    r.config.filters,
                    r.config.kernel,
                    r.epochs_done + 1,
                    r.config.epochs
                ),
                (true, None) => format!("worker {}: waiting", i + 1),
                (false, None) => format!("worker {}: finished", i + 1),
            });
            line.tick();
        }
        Ok(())
    }

    /// A replacement worker takes over the line of the one that died.
    fn replace(&mut self, old: u32, new: u32) {
        if let Some(line) = self.lines.iter_mut().find(|(pid, _)| *pid == old) {
            line.0 = new;
        }
    }

    fn finish(&self) {
        self.overall.finish();
        for (_, line) in &self.lines {
            line.finish();
        }
        let _ = self.multi.clear();
    }
}

/// `shallow status`: counts by status, throughput, ETA, runs in progress, last errors.
pub fn status_text(db: &Path) -> Result<String> {
    let store = store::SqliteStore::open_existing(db)?;
    let runs = store.runs()?;
    let counts = store.status_counts()?;
    let mut out = format!("{}: {} runs\n", db.display(), runs.len());
    for (status, n) in &counts {
        out += &format!("  {status:<9} {n}\n");
    }
    let finished: Vec<&RunRow> = runs.iter().filter(|r| r.finished_at.is_some()).collect();
    let first = runs.iter().filter_map(|r| r.claimed_at).reduce(f64::min);
    let last = finished
        .iter()
        .filter_map(|r| r.finished_at)
        .reduce(f64::max);
    if let (Some(first), Some(last)) = (first, last)
        && last > first
    {
        let per_hour = finished.len() as f64 / (last - first) * 3600.0;
        let remaining = runs.len() - finished.len();
        out += &format!(
            "throughput: {per_hour:.1} runs/hour; remaining {remaining} runs ≈ {} at that rate\n",
            human_duration(remaining as f64 / per_hour * 3600.0)
        );
    }
    for r in store.running()? {
        let label = if r.worker_gone {
            "abandoned (its worker is gone; the next sweep or worker trains it again)"
        } else {
            "running"
        };
        out += &format!(
            "{label}: {} ({} {} L={} F={} k={}) on {}, {} of {} epochs done\n",
            r.run_id,
            r.config.dataset,
            r.config.layout,
            r.config.layers,
            r.config.filters,
            r.config.kernel,
            r.worker,
            r.epochs_done,
            r.config.epochs
        );
    }
    let mut failed: Vec<&RunRow> = runs.iter().filter(|r| r.status == "failed").collect();
    failed.sort_by(|a, b| {
        b.finished_at
            .partial_cmp(&a.finished_at)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for r in failed.iter().take(5) {
        out += &format!(
            "failed: {}: {}\n",
            r.id,
            r.error.as_deref().unwrap_or("(no message)")
        );
    }
    Ok(out)
}

/// `shallow export`: one CSV row per run — identity, config columns, status, final metrics,
/// timings — ready for pandas or polars.
pub fn export_csv(db: &Path, out: &Path) -> Result<usize> {
    if out.is_dir() {
        bail!("--csv {}: is a folder; give a file name", out.display());
    }
    let store = store::SqliteStore::open_existing(db)?;
    let runs = store.runs()?;
    let tmp = out.with_extension("csv.tmp");
    let mut writer =
        csv::Writer::from_path(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    writer.write_record([
        "id",
        "pair_id",
        "sweep",
        "status",
        "dataset",
        "layout",
        "layers",
        "filters",
        "kernel",
        "activation",
        "pool",
        "batchnorm",
        "head",
        "lr",
        "batch_size",
        "epochs",
        "seed",
        "train_limit",
        "val_limit",
        "subset",
        "precision",
        "params",
        "q",
        "train_examples",
        "final_train_loss",
        "final_train_acc",
        "final_val_loss",
        "final_val_acc",
        "diverged_epoch",
        "epochs_recorded",
        "train_seconds",
        "total_seconds",
        "attempts",
        "device",
        "host",
        "worker",
        "error",
    ])?;
    let opt = |v: Option<String>| v.unwrap_or_default();
    let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let int = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    let json = |v: serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    for r in &runs {
        let c = &r.config;
        writer.write_record([
            r.id.clone(),
            r.pair_id.clone(),
            r.sweep.clone(),
            r.status.clone(),
            c.dataset.clone(),
            c.layout.to_string(),
            c.layers.to_string(),
            c.filters.to_string(),
            c.kernel.to_string(),
            json(serde_json::to_value(c.activation)?),
            json(serde_json::to_value(c.pool)?),
            c.batchnorm.to_string(),
            json(serde_json::to_value(c.head)?),
            c.lr.to_string(),
            c.batch_size.to_string(),
            c.epochs.to_string(),
            c.seed.to_string(),
            c.train_limit.map(|v| v.to_string()).unwrap_or_default(),
            c.val_limit.map(|v| v.to_string()).unwrap_or_default(),
            json(serde_json::to_value(c.subset)?),
            json(serde_json::to_value(c.precision)?),
            int(r.params),
            num(r.q),
            int(r.train_examples),
            num(r.final_train_loss),
            num(r.final_train_acc),
            num(r.final_val_loss),
            num(r.final_val_acc),
            int(r.diverged_epoch),
            r.epochs_recorded.to_string(),
            num(r.train_seconds),
            num(r.total_seconds),
            r.attempts.to_string(),
            opt(r.device.clone()),
            opt(r.host.clone()),
            opt(r.worker.clone()),
            opt(r.error.clone()),
        ])?;
    }
    writer.flush()?;
    drop(writer);
    std::fs::rename(&tmp, out).map_err(|e| {
        std::fs::remove_file(&tmp).ok();
        anyhow::anyhow!("cannot write {}: {e}", out.display())
    })?;
    Ok(runs.len())
}
