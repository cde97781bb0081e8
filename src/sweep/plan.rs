//! Planning a sweep before it runs: workers × threads for this machine, the checks of its inputs,
//! and the `--dry-run` estimate.
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::Device;

use super::grid::Grid;
use crate::data::{self, CLASSES};
use crate::device;
use crate::model::{Activation, Architecture, Head, Layout, Pool, Precision};
use crate::train::{RunConfig, fused};

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

/// Multiply-adds per second this machine reaches training a mid-sized net, `members` of them
/// fused into one array, on `device` with `threads` threads: a rough calibration for estimates.
fn calibrate_macs_per_second(threads: usize, device: Device, members: usize) -> Result<f64> {
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
    let batch = 32;
    let mut step = fused::synthetic_step(arch, members, batch, device, Precision::Fp32)?;
    step();
    device::synchronize(device);
    let started = Instant::now();
    let steps = 10;
    for _ in 0..steps {
        step();
    }
    device::synchronize(device);
    let macs = 3.0 * arch.forward_macs() * (batch * members * steps) as f64;
    Ok(macs / started.elapsed().as_secs_f64())
}

/// Checks, before anything is queued or trained, that every dataset of the grid can be had (with
/// `fetch`, downloading what is missing) and is usable, and that every run fits its images and
/// this machine's memory. A dataset that is missing but downloadable is not loaded without
/// `fetch`; its runs are checked against its known shape.
pub fn check_inputs(grid: &Grid, data_dir: &Path, offline: bool, fetch: bool) -> Result<()> {
    let mut shapes = std::collections::BTreeMap::new();
    for dataset in grid.datasets() {
        let shape = if fetch {
            data::ensure_available(data_dir, dataset, offline)?;
            data::load(data_dir, dataset)?.train.shape
        } else if data::needs_download(data_dir, dataset, offline)?.is_some() {
            input_shape(dataset).0
        } else {
            data::load(data_dir, dataset)?.train.shape
        };
        shapes.insert(dataset.as_str(), shape);
    }
    let available = device::available_memory();
    for run in grid.runs() {
        let run = run?;
        let dataset = run.config.dataset.as_str();
        crate::train::check_fits_within(&run.config, shapes[dataset], available)
            .with_context(|| format!("run {} of the grid ({dataset})", run.id))?;
    }
    Ok(())
}

/// How the sweep would run: workers × threads on a device, fusing up to `fuse` runs.
pub struct Execution {
    pub workers: usize,
    pub threads: usize,
    pub device: Device,
    pub fuse: usize,
}

/// `--dry-run`: what the sweep holds and roughly how long it takes here. Streams the runs.
pub fn dry_run(grid: &Grid, e: &Execution) -> Result<String> {
    let (workers, threads) = (e.workers, e.threads);
    let (mut params, mut macs) = (0.0, 0.0);
    for run in grid.runs() {
        let run = run?;
        params += architecture(&run.config).parameter_count() as f64;
        macs += run_macs(&run.config);
    }
    let rate = calibrate_macs_per_second(threads, e.device, e.fuse)? * workers as f64;
    Ok(format!(
        "sweep '{}': {} runs ({} pairs) on {}\n\
         total parameters: {:.3e} (mean {:.0} per run)\n\
         estimated time: {} with {workers} worker(s) × {threads} thread(s) on {:?}, up to {} \
         run(s) fused per array (rough: FLOP count ÷ a rate measured just now on training \
         steps of that many fused nets)",
        grid.name,
        grid.len(),
        grid.pairs(),
        grid.datasets().join(", "),
        params,
        params / grid.len() as f64,
        human_duration(macs / rate),
        e.device,
        e.fuse,
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
