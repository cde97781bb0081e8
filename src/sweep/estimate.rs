//! The `--dry-run` time estimate: each run's multiply-adds ÷ the rate this machine reaches on
//! nets of that size, timed just now on a few of the grid's own architectures (small nets reach a
//! fraction of a large net's rate, so one reference net misjudges a grid of small ones).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use tch::Device;

use super::grid::Grid;
use crate::data;
use crate::device;
use crate::model::{Architecture, Precision};
use crate::train::{REESTIMATE_BATCHES, RunConfig, fused};

/// At most this many of the grid's architectures are timed, spread over where its work lies.
const TIMED_ARCHITECTURES: usize = 6;
/// Each timing runs training steps for about this long (at least two steps).
const TIMING: Duration = Duration::from_millis(500);

/// How the sweep would run: workers × threads on a device, fusing up to `fuse` runs.
pub struct Execution {
    pub workers: usize,
    pub threads: usize,
    pub device: Device,
    pub fuse: usize,
}

/// Known input shapes and set sizes (image shape, training images, validation images), for
/// estimates before any data is loaded; other datasets count as MNIST.
pub fn input_shape(dataset: &str) -> ([usize; 3], usize, usize) {
    match dataset {
        data::CIFAR10 => ([3, 32, 32], 50_000, 10_000),
        _ => ([1, 28, 28], 60_000, 10_000),
    }
}

pub fn architecture(cfg: &RunConfig) -> Architecture {
    cfg.architecture(input_shape(&cfg.dataset).0)
}

/// Multiply-adds of a whole run: forward + backward (≈ 3 forwards) per training image and epoch,
/// one forward per validation image and epoch; after training, the training set once, the
/// validation set in the other arrangement and, with batch norm, the batches that re-estimate
/// its statistics.
fn run_macs(cfg: &RunConfig, arch: &Architecture) -> f64 {
    let (_, train, val) = input_shape(&cfg.dataset);
    let train = cfg.train_limit.unwrap_or(train).min(train) as f64;
    let val = cfg.val_limit.unwrap_or(val).min(val) as f64;
    let reestimate = if cfg.batchnorm {
        ((REESTIMATE_BATCHES * cfg.batch_size) as f64).min(train)
    } else {
        0.0
    };
    let forwards = cfg.epochs as f64 * (3.0 * train + val) + train + val + reestimate;
    arch.forward_macs() * forwards
}

/// The grid's multiply-adds per distinct architecture, batch size and precision.
struct Work {
    arch: Architecture,
    batch: usize,
    precision: Precision,
    macs: f64,
}

/// The grid's work, smallest architecture first.
fn work_of(grid: &Grid) -> Result<Vec<Work>> {
    let mut by: HashMap<(Architecture, usize, Precision), f64> = HashMap::new();
    for run in grid.runs() {
        let cfg = run?.config;
        let arch = architecture(&cfg);
        *by.entry((arch, cfg.batch_size, cfg.precision)).or_default() += run_macs(&cfg, &arch);
    }
    let mut work: Vec<Work> = by
        .into_iter()
        .map(|((arch, batch, precision), macs)| Work {
            arch,
            batch,
            precision,
            macs,
        })
        .collect();
    work.sort_by(|a, b| a.arch.forward_macs().total_cmp(&b.arch.forward_macs()));
    Ok(work)
}

/// Multiply-adds per second of training steps of `w`'s net, `members` of them fused.
fn time_rate(w: &Work, device: Device, members: usize) -> Result<f64> {
    let mut step = fused::synthetic_step(w.arch, members, w.batch, device, w.precision)?;
    step();
    device::synchronize(device);
    let started = Instant::now();
    let mut steps = 0;
    while steps < 2 || started.elapsed() < TIMING {
        step();
        steps += 1;
        if steps % 2 == 0 {
            device::synchronize(device);
        }
    }
    device::synchronize(device);
    let macs = 3.0 * w.arch.forward_macs() * (w.batch * members * steps) as f64;
    Ok(macs / started.elapsed().as_secs_f64())
}

/// Estimated wall seconds of the whole grid under `e`, and how many architectures were timed.
pub fn grid_seconds(grid: &Grid, e: &Execution) -> Result<(f64, usize)> {
    device::set_threads(e.threads);
    let work = work_of(grid)?;
    let total: f64 = work.iter().map(|w| w.macs).sum();
    // The architecture at the middle of each of TIMED_ARCHITECTURES equal shares of the work.
    let mut picks: Vec<usize> = Vec::new();
    let mut cumulative = 0.0;
    for (i, w) in work.iter().enumerate() {
        cumulative += w.macs;
        while picks.len() < TIMED_ARCHITECTURES
            && cumulative >= total * (picks.len() as f64 + 0.5) / TIMED_ARCHITECTURES as f64
        {
            picks.push(i);
        }
    }
    picks.dedup();
    let mut timed = Vec::with_capacity(picks.len());
    for &i in &picks {
        timed.push((
            work[i].arch.forward_macs().ln(),
            time_rate(&work[i], e.device, e.fuse)?,
        ));
    }
    let rate_near = |macs: f64| {
        timed
            .iter()
            .min_by(|a, b| (a.0 - macs.ln()).abs().total_cmp(&(b.0 - macs.ln()).abs()))
            .map_or(f64::INFINITY, |t| t.1)
    };
    let seconds: f64 = work
        .iter()
        .map(|w| w.macs / rate_near(w.arch.forward_macs()))
        .sum();
    Ok((seconds / e.workers as f64, timed.len()))
}
