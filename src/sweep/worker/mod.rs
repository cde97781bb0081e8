//! A worker process: claims pending runs from the store one group at a time and trains them,
//! until none is left. Any number of workers, on any number of machines, can share one store.
//!
//! A run's own failure is recorded against it; a failure of the worker's environment (see
//! [`fault`](super::fault)) hands its runs back untouched and stops the worker.
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};
use tch::Device;

use super::fault::{Cause, environment, environment_fault, out_of_memory};
use super::store::identity::{RunSpec, fusion_key};
use super::store::{self, Finish, Location, Store, WorkerInfo};
use crate::device::{self, DeviceChoice};
use crate::train::{self, EpochMetrics, Observer, RunResult, Stopped};

mod cache;
mod fuse;
mod heartbeat;

use cache::DataCache;
pub use fuse::{AUTO_MEMBERS, Fuse, GPU_BUDGET};
use heartbeat::Heartbeat;

/// How long a worker with `forever` waits before looking at an empty queue again.
const POLL_EVERY: Duration = Duration::from_secs(10);

/// Everything a worker needs to know, as one value: `shallow worker` builds it from its flags,
/// and a sweep hands it to the worker processes it starts (as JSON on their standard input, so
/// that a database password stays out of `ps`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSettings {
    pub db: Location,
    pub threads: usize,
    pub data_dir: PathBuf,
    pub offline: bool,
    pub device: DeviceChoice,
    pub max_attempts: u32,
    /// A run whose worker is silent this long goes to another worker.
    pub lease: Duration,
    /// Wait for new runs when the queue is empty instead of returning.
    pub forever: bool,
    /// How many runs of one fusion group to train together.
    pub fuse: Fuse,
    /// Where each run's trained net is saved, as `<run id>.safetensors` (none if `None`).
    #[serde(default)]
    pub save_nets: Option<PathBuf>,
    /// A run's checkpoint is written to the store at the end of an epoch once this long has
    /// passed since its last (zero: after every epoch).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: Duration,
}

/// How often a run's checkpoint is written by default: a minute of training lost at most.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

fn default_checkpoint_every() -> Duration {
    CHECKPOINT_EVERY
}

/// Counts of what one worker did.
#[derive(Debug, Default)]
pub struct WorkerSummary {
    pub trained: usize,
    pub failed: usize,
    /// Runs given back unfinished on SIGTERM.
    pub handed_back: usize,
}

/// Trains runs until the queue is empty (or, with `forever`, until SIGTERM). On SIGTERM — what
/// Slurm and Kubernetes send before SIGKILL — the runs in training are handed back within a step
/// and the worker returns. An error marked as an [`EnvironmentFault`](super::fault::EnvironmentFault)
/// means the worker's environment failed: its runs were handed back (where the store allowed).
pub fn run(opts: &WorkerSettings) -> Result<WorkerSummary> {
    device::set_threads(opts.threads);
    let device = device::select_device(opts.device).map_err(environment(Cause::Device))?;
    if let Some(dir) = &opts.save_nets {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--save-nets {}", dir.display()))
            .map_err(environment(Cause::Output))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let mut store = store::open(&opts.db).map_err(environment(Cause::Store))?;
    let me = WorkerInfo::this_process(opts.threads);
    store
        .register_worker(&me)
        .map_err(environment(Cause::Store))?;
    let heartbeat = Heartbeat::start(opts.db.clone(), me.clone(), opts.lease, stop.clone());
    let mut worker = Worker {
        opts,
        store,
        me,
        device,
        cache: DataCache::new(opts.data_dir.clone(), opts.offline, device),
        stop,
        caps: HashMap::new(),
        summary: WorkerSummary::default(),
    };
    let trained = worker.train_until_done(&heartbeat);
    let beat = heartbeat.stop();
    trained?;
    beat.map_err(environment(Cause::Heartbeat))?;
    Ok(worker.summary)
}

struct Worker<'o> {
    opts: &'o WorkerSettings,
    store: Box<dyn Store + Send>,
    me: WorkerInfo,
    device: Device,
    cache: DataCache,
    /// SIGTERM, or a failed heartbeat.
    stop: Arc<AtomicBool>,
    /// Fusion keys whose groups ran out of memory, and the size to claim them at now.
    caps: HashMap<String, usize>,
    summary: WorkerSummary,
}

impl Worker<'_> {
    fn train_until_done(&mut self, heartbeat: &Heartbeat) -> Result<()> {
        while !self.stop.load(Ordering::Relaxed) {
            self.store
                .requeue_abandoned(self.opts.lease, self.opts.max_attempts)
                .map_err(environment(Cause::Store))?;
            let cap = self.opts.fuse.cap(self.device);
            let caps = &self.caps;
            let limit = |cfg: &crate::train::RunConfig| {
                if !cfg.fusable() {
                    return 1;
                }
                caps.get(&fusion_key(cfg)).map_or(cap, |&c| c.min(cap))
            };
            let group = self
                .store
                .claim_group(&self.me, &limit)
                .map_err(environment(Cause::Store))?;
            if group.is_empty() {
                if !self.opts.forever {
                    break;
                }
                self.wait_for_runs();
                continue;
            }
            if !self.train_group(group, heartbeat)? {
                break;
            }
        }
        Ok(())
    }

    fn wait_for_runs(&self) {
        let waited = std::time::Instant::now();
        while waited.elapsed() < POLL_EVERY && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Trains a claimed group and records what became of each run. `Ok(false)`: stopped by
    /// SIGTERM, the runs handed back. An error is an environment fault; the runs were handed
    /// back first.
    fn train_group(&mut self, group: Vec<RunSpec>, heartbeat: &Heartbeat) -> Result<bool> {
        let ids: Vec<&str> = group.iter().map(|r| r.id.as_str()).collect();
        tracing::info!("worker {} trains run(s) {}", self.me.id, ids.join(", "));
        let members = match self.fitting_members(&group) {
            Ok(n) => n,
            Err(e) => return self.fail_or_give_back(&group, e),
        };
        self.give_back(&group[members..])?;
        let group = &group[..members];
        let trained = std::panic::catch_unwind(AssertUnwindSafe(|| self.train_members(group)))
            .unwrap_or_else(|panic| Err(anyhow!("training panicked: {}", panic_message(&panic))));
        match trained {
            Ok(results) => {
                for (run, result) in group.iter().zip(results) {
                    self.record(run, Ok(result));
                }
                Ok(true)
            }
            Err(e) if e.is::<Stopped>() => {
                self.give_back(group)?;
                if let Some(why) = heartbeat.failure() {
                    return Err(environment(Cause::Heartbeat)(anyhow!("{why}")));
                }
                tracing::info!("SIGTERM: run(s) {} handed back", ids.join(", "));
                self.summary.handed_back += group.len();
                Ok(false)
            }
            Err(e) if e.is::<StoreWriteFailed>() => {
                // The store failed, not the training: the runs still ours go back to the queue
                // (the attempt counted, so a run that always fails so ends failed).
                let n = self
                    .store
                    .release_worker(&self.me.id, self.opts.max_attempts)
                    .map_err(environment(Cause::Store))?;
                tracing::warn!("{e:#}: {n} run(s) of {} put back", ids.join(", "));
                Ok(true)
            }
            Err(e) if group.len() > 1 && out_of_memory(&e) => {
                // Not the runs' fault: the group was too large for this device. Claimed again
                // at half the size before anyone is blamed.
                self.give_back(group)?;
                let half = group.len() / 2;
                self.caps.insert(fusion_key(&group[0].config), half);
                tracing::warn!(
                    "a fused group of {} ran out of memory; its runs are claimed {half} at a time",
                    group.len()
                );
                Ok(true)
            }
            Err(e) => self.fail_or_give_back(group, e),
        }
    }

    /// How many runs of `group` to train together: all, or those that fit the memory budget.
    fn fitting_members(&mut self, group: &[RunSpec]) -> Result<usize> {
        let cfg = &group[0].config;
        let data = self.cache.tensors_of(cfg)?;
        let shape = (data.shape, data.classes);
        Ok(group
            .len()
            .min(self.opts.fuse.fitting(cfg, shape, self.device)))
    }

    fn train_members(&mut self, group: &[RunSpec]) -> Result<Vec<RunResult>> {
        let resumes = group
            .iter()
            .map(|run| self.checkpoint_of(run))
            .collect::<Result<Vec<_>>>()?;
        let cfg = &group[0].config;
        let tensors = self.cache.tensors_of(cfg)?;
        let store = std::cell::RefCell::new(&mut self.store);
        let mut recorders: Vec<EpochRecorder> = group
            .iter()
            .map(|run| EpochRecorder {
                store: &store,
                run_id: &run.id,
                worker: &self.me,
                stop: &self.stop,
                checkpoint_every: self.opts.checkpoint_every,
                last_checkpoint: std::time::Instant::now(),
            })
            .collect();
        let mut savers = group
            .iter()
            .map(|run| {
                let dir = self.opts.save_nets.as_ref()?;
                let path = crate::model::saved::file_in(dir, &run.id);
                Some(train::SaveNet::new(&path, &run.config, tensors))
            })
            .map(Option::transpose)
            .collect::<Result<Vec<_>>>()
            .map_err(environment(Cause::Output))?;
        let mut each: Vec<train::All> = recorders
            .iter_mut()
            .zip(&mut savers)
            .map(|(recorder, saver)| {
                let mut observers: Vec<&mut dyn Observer> = vec![recorder];
                observers.extend(saver.as_mut().map(|s| s as &mut dyn Observer));
                train::All(observers)
            })
            .collect();
        let mut observers: Vec<&mut dyn Observer> =
            each.iter_mut().map(|o| o as &mut dyn Observer).collect();
        let configs: Vec<_> = group.iter().map(|r| r.config.clone()).collect();
        train::train_fused(&configs, tensors, self.device, &mut observers, &resumes)
    }

    /// The checkpoint `run` resumes from: its latest in the store, unless that is refused (not
    /// whole, changed, of other code), when the run trains from its first epoch.
    fn checkpoint_of(&mut self, run: &RunSpec) -> Result<Option<train::Checkpoint>> {
        let stored = self
            .store
            .checkpoint(&run.id)
            .map_err(environment(Cause::Store))?;
        Ok(stored.and_then(|stored| match stored.open() {
            Ok(checkpoint) => {
                tracing::info!("run {} resumes after epoch {}", run.id, checkpoint.epoch());
                Some(checkpoint)
            }
            Err(e) => {
                tracing::warn!(
                    "run {}: its checkpoint is refused ({e:#}); it trains from its first epoch",
                    run.id
                );
                None
            }
        }))
    }

    /// An environment fault hands `group` back and is returned; any other error is each run's
    /// own failure.
    fn fail_or_give_back(&mut self, group: &[RunSpec], e: anyhow::Error) -> Result<bool> {
        if let Some(cause) = environment_fault(&e) {
            self.give_back(group)?;
            let e = if e.is::<super::fault::EnvironmentFault>() {
                e
            } else {
                environment(cause)(e)
            };
            return Err(e);
        }
        for run in group {
            self.record(run, Err(anyhow!("{e:#}")));
        }
        Ok(true)
    }

    /// Hands runs back unstarted: pending again, the attempt not counted.
    fn give_back(&mut self, runs: &[RunSpec]) -> Result<()> {
        for run in runs {
            self.store
                .hand_back(&run.id, &self.me)
                .with_context(|| format!("run {} could not be handed back", run.id))
                .map_err(environment(Cause::Store))?;
        }
        Ok(())
    }

    fn record(&mut self, run: &RunSpec, trained: Result<RunResult>) {
        record(
            self.store.as_mut(),
            run,
            &self.me,
            trained,
            &mut self.summary,
        );
    }
}

fn record(
    store: &mut dyn Store,
    run: &RunSpec,
    me: &WorkerInfo,
    trained: Result<RunResult>,
    summary: &mut WorkerSummary,
) {
    let finished = match &trained {
        Ok(result) => store.finish(&run.id, me, Finish::Trained(result)),
        Err(e) => store.finish(&run.id, me, Finish::Failed(&format!("{e:#}"))),
    };
    match (trained, finished) {
        (_, Err(e)) => tracing::warn!("run {}: result not recorded: {e:#}", run.id),
        (Ok(_), Ok(())) => summary.trained += 1,
        (Err(e), Ok(())) => {
            tracing::warn!("run {} failed: {e:#}", run.id);
            summary.failed += 1;
        }
    }
}

/// An epoch's metrics could not be written: the store failed (or the run was taken from this
/// worker), not the training.
#[derive(Debug)]
struct StoreWriteFailed;

impl std::fmt::Display for StoreWriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an epoch's metrics or checkpoint could not be written to the store")
    }
}

/// Writes each epoch's metrics to the store as it ends, and the run's checkpoint every
/// `checkpoint_every`.
struct EpochRecorder<'a, 's> {
    /// Shared by the members of a fused group.
    store: &'a std::cell::RefCell<&'s mut Box<dyn Store + Send>>,
    run_id: &'a str,
    worker: &'a WorkerInfo,
    stop: &'a AtomicBool,
    checkpoint_every: Duration,
    last_checkpoint: std::time::Instant,
}

impl Observer for EpochRecorder<'_, '_> {
    fn epoch(&mut self, m: &EpochMetrics) -> Result<()> {
        self.store
            .borrow_mut()
            .record_epoch(self.run_id, self.worker, m)
            .context(StoreWriteFailed)
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn wants_checkpoint(&mut self, _epoch: usize) -> bool {
        self.last_checkpoint.elapsed() >= self.checkpoint_every
    }

    fn checkpoint(&mut self, checkpoint: &train::Checkpoint) -> Result<()> {
        self.store
            .borrow_mut()
            .save_checkpoint(self.run_id, self.worker, checkpoint)
            .context(StoreWriteFailed)?;
        self.last_checkpoint = std::time::Instant::now();
        Ok(())
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
