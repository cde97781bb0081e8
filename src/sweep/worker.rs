//! A worker process: claims pending runs from the store one at a time and trains them, until none
//! is left. Any number of workers, on any number of machines, can share one store.
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tch::Device;

use super::grid::RunSpec;
use super::store::{self, Finish, Location, Store, WorkerInfo};
use crate::data::{self, RawDataset, Selection, Tensors};
use crate::device::{self, DeviceChoice};
use crate::train::{self, EpochMetrics, Observer, RunResult, Stopped};

/// How often a worker tells the store it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A worker silent for this long is presumed dead and its run is trained again elsewhere (the
/// default of `--lease`).
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// How long a worker with `forever` waits before looking at an empty queue again.
const POLL_EVERY: Duration = Duration::from_secs(10);

pub struct WorkerOptions {
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
}

/// How many runs that differ only in lr and seed a worker trains together as one fused array
/// (`--fuse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fuse {
    /// On a GPU up to [`AUTO_MEMBERS`] within [`GPU_BUDGET`]; on a CPU one run at a time: there,
    /// fused arrays train no faster than separate runs (grouped convolutions run at the speed of
    /// their groups one by one; see README, Performance).
    Auto,
    /// At most this many (1: no fusion), within the memory this machine has.
    AtMost(usize),
}

/// The most members `--fuse auto` puts in one array on a GPU.
pub const AUTO_MEMBERS: usize = 16;
/// The estimated training memory `--fuse auto` lets one array take on a GPU.
pub const GPU_BUDGET: f64 = 16.0 * (1u64 << 30) as f64;

impl std::str::FromStr for Fuse {
    type Err = String;
    fn from_str(text: &str) -> Result<Fuse, String> {
        if text == "auto" {
            return Ok(Fuse::Auto);
        }
        match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Fuse::AtMost(n)),
            _ => Err(format!(
                "expected auto or a number of runs ≥ 1, got '{text}'"
            )),
        }
    }
}

impl std::fmt::Display for Fuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fuse::Auto => f.write_str("auto"),
            Fuse::AtMost(n) => write!(f, "{n}"),
        }
    }
}

impl Fuse {
    /// The most runs to claim as one group on `device`.
    pub fn cap(self, device: Device) -> usize {
        match self {
            Fuse::AtMost(n) => n,
            Fuse::Auto if device.is_cuda() => AUTO_MEMBERS,
            Fuse::Auto => 1,
        }
    }

    /// How many members of `cfg` on `input`-shaped data fit the memory budget (at least one).
    fn fitting(self, cfg: &crate::train::RunConfig, input: [usize; 3], device: Device) -> usize {
        let need = cfg
            .architecture(input)
            .training_memory_bytes(cfg.batch_size);
        let budget = if device.is_cuda() {
            Some(GPU_BUDGET)
        } else {
            device::available_memory().map(|b| b as f64)
        };
        budget.map_or(usize::MAX, |b| ((b / need) as usize).max(1))
    }
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
/// Slurm and Kubernetes send before SIGKILL — the run in training is handed back within a step
/// and the worker returns.
pub fn run(opts: &WorkerOptions) -> Result<WorkerSummary> {
    device::set_threads(opts.threads);
    let device = device::select_device(opts.device)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let mut store = store::open(&opts.db)?;
    let me = WorkerInfo::this_process(opts.threads);
    store.register_worker(&me)?;
    let heartbeat = Heartbeat::start(opts.db.clone(), me.clone());
    let mut cache = DataCache::new(opts.data_dir.clone(), opts.offline, device);
    let mut summary = WorkerSummary::default();
    while !stop.load(Ordering::Relaxed) {
        store.requeue_abandoned(opts.lease, opts.max_attempts)?;
        let cap = opts.fuse.cap(device);
        let group = store.claim_group(&me, &|cfg| if cfg.fusable() { cap } else { 1 })?;
        if group.is_empty() {
            if !opts.forever {
                break;
            }
            let waited = std::time::Instant::now();
            while waited.elapsed() < POLL_EVERY && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
            }
            continue;
        }
        let ids: Vec<&str> = group.iter().map(|r| r.id.as_str()).collect();
        tracing::info!("worker {} trains run(s) {}", me.id, ids.join(", "));
        let trained = std::panic::catch_unwind(AssertUnwindSafe(|| {
            train_group(
                &group,
                &mut cache,
                device,
                opts.fuse,
                store.as_mut(),
                &me,
                &stop,
            )
        }))
        .unwrap_or_else(|panic| Err(anyhow!("training panicked: {}", panic_message(&panic))));
        let results = match trained {
            Err(e) if e.is::<Stopped>() => {
                for run in &group {
                    store.hand_back(&run.id, &me)?;
                }
                tracing::info!("SIGTERM: run(s) {} handed back", ids.join(", "));
                summary.handed_back += group.len();
                break;
            }
            Err(e) if e.is::<StoreWriteFailed>() => {
                // The store failed, not the training: the runs still ours go back to the queue
                // (the attempt counted, so a run that always fails so ends failed).
                let n = store.release_worker(&me.id, opts.max_attempts)?;
                tracing::warn!("{e:#}: {n} run(s) of {} put back", ids.join(", "));
                continue;
            }
            Err(e) => group.iter().map(|_| Err(anyhow!("{e:#}"))).collect(),
            Ok(results) => results,
        };
        for (run, trained) in group.iter().zip(results) {
            record(store.as_mut(), run, &me, trained, &mut summary);
        }
    }
    heartbeat.stop();
    Ok(summary)
}

fn record(
    store: &mut dyn Store,
    run: &RunSpec,
    me: &WorkerInfo,
    trained: Result<RunResult>,
    summary: &mut WorkerSummary,
) {
    if trained.as_ref().is_err_and(|e| e.is::<HandedBack>()) {
        return;
    }
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

/// Trains a claimed group: one run alone, several as one fused array (those beyond what fits the
/// memory budget handed back first). One result per run of `group`; a run handed back gets
/// the error [`HandedBack`].
fn train_group(
    group: &[RunSpec],
    cache: &mut DataCache,
    device: Device,
    fuse: Fuse,
    store: &mut dyn Store,
    me: &WorkerInfo,
    stop: &AtomicBool,
) -> Result<Vec<Result<RunResult>>> {
    let cfg = &group[0].config;
    let tensors = cache.tensors(&cfg.dataset, &cfg.selection())?;
    let fits = group.len().min(fuse.fitting(cfg, tensors.shape, device));
    let (members, excess) = group.split_at(fits);
    for run in excess {
        store.hand_back(&run.id, me)?;
    }
    let store = std::cell::RefCell::new(store);
    let store = &store;
    let mut recorders: Vec<EpochRecorder> = members
        .iter()
        .map(|run| EpochRecorder {
            store,
            run_id: &run.id,
            worker: me,
            stop,
        })
        .collect();
    let mut observers: Vec<&mut dyn Observer> = recorders
        .iter_mut()
        .map(|r| r as &mut dyn Observer)
        .collect();
    let configs: Vec<_> = members.iter().map(|r| r.config.clone()).collect();
    let results = train::train_fused(&configs, tensors, device, &mut observers)?;
    Ok(results
        .into_iter()
        .map(Ok)
        .chain(excess.iter().map(|_| Err(HandedBack.into())))
        .collect())
}

/// A run of a claimed group given back unstarted: more members than fit the memory budget.
#[derive(Debug)]
struct HandedBack;

impl std::fmt::Display for HandedBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("handed back: the group was larger than fits in memory")
    }
}

impl std::error::Error for HandedBack {}

/// An epoch's metrics could not be written: the store failed (or the run was taken from this
/// worker), not the training.
#[derive(Debug)]
struct StoreWriteFailed;

impl std::fmt::Display for StoreWriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an epoch's metrics could not be written to the store")
    }
}

/// Writes each epoch's metrics to the store as it ends.
struct EpochRecorder<'a, 's> {
    /// Shared by the members of a fused group.
    store: &'a std::cell::RefCell<&'s mut dyn Store>,
    run_id: &'a str,
    worker: &'a WorkerInfo,
    stop: &'a AtomicBool,
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
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// A dataset and which of its examples a run uses.
type SubsetKey = (String, Selection);

/// Datasets decoded once per process; the tensors of the latest subset kept on the device (runs
/// are ordered so that consecutive ones share their data).
struct DataCache {
    data_dir: PathBuf,
    offline: bool,
    device: Device,
    raw: HashMap<String, RawDataset>,
    tensors: Option<(SubsetKey, Tensors)>,
}

impl DataCache {
    fn new(data_dir: PathBuf, offline: bool, device: Device) -> DataCache {
        DataCache {
            data_dir,
            offline,
            device,
            raw: HashMap::new(),
            tensors: None,
        }
    }

    fn tensors(&mut self, dataset: &str, selection: &Selection) -> Result<&Tensors> {
        let key = (dataset.to_owned(), selection.clone());
        if self.tensors.as_ref().is_none_or(|(k, _)| *k != key) {
            self.tensors = None;
            if !self.raw.contains_key(dataset) {
                data::ensure_available(&self.data_dir, dataset, self.offline)?;
                let raw = data::load(&self.data_dir, dataset)?;
                self.raw.insert(dataset.to_owned(), raw);
            }
            let raw = &self.raw[dataset];
            let tensors = data::prepare(raw, selection, self.device)?;
            self.tensors = Some((key, tensors));
        }
        Ok(&self.tensors.as_ref().expect("just filled").1)
    }
}

/// A thread that heartbeats through its own store connection while training blocks the worker.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Heartbeat {
    fn start(db: Location, me: WorkerInfo) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut store = match store::open(&db) {
                Ok(s) => s,
                Err(e) => return tracing::warn!("heartbeat disabled: {e:#}"),
            };
            let tick = Duration::from_millis(200);
            let mut since = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                since += tick;
                if since >= HEARTBEAT_EVERY {
                    since = Duration::ZERO;
                    if let Err(e) = store.heartbeat(&me) {
                        tracing::warn!("heartbeat failed: {e:#}");
                    }
                }
            }
        });
        Heartbeat { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
