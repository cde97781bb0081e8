//! The `--dry-run` time estimate: each run's multiply-adds ÷ the rate this machine reaches on
//! nets of that size, timed just now on a few of the grid's own architectures (small nets reach a
//! fraction of a large net's rate, so one reference net misjudges a grid of small ones).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use tch::Device;

use crate::data;
use crate::device;
use crate::model::{Architecture, Precision};
use crate::train::optim::Optimizer;
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

/// The training images a run uses: its limit, at most what its dataset has once the held-out
/// examples are carved off.
pub fn train_examples(cfg: &RunConfig, facts: &data::Facts) -> usize {
    let available = facts.sizes.0;
    let available = available - held_out(cfg, facts).min(available);
    cfg.train_limit.unwrap_or(available).min(available)
}

/// The training examples a run holds out.
fn held_out(cfg: &RunConfig, facts: &data::Facts) -> usize {
    cfg.holdout.map_or(0, |h| h.size(facts.sizes.0))
}

pub fn architecture(cfg: &RunConfig, facts: &data::Facts) -> Architecture {
    cfg.architecture(facts.shape, facts.classes)
}

/// Multiply-adds of a whole run: forward + backward (≈ 3 forwards) per training image, epoch and
/// evaluation of the loss (one per batch, L-BFGS up to PyTorch's `max_eval`, 5/4 of its
/// iterations), one forward per validation and held-out image and epoch (every epoch up to the cap: a stopping
/// rule may end it sooner); after training, the training set once, the
/// validation set in the other arrangement and, with batch norm, the batches that re-estimate
/// its statistics.
fn run_macs(cfg: &RunConfig, arch: &Architecture, facts: &data::Facts) -> f64 {
    let val = facts.sizes.1;
    let train = train_examples(cfg, facts) as f64;
    let val = cfg.val_limit.unwrap_or(val).min(val) as f64;
    let reestimate = if cfg.batchnorm {
        ((REESTIMATE_BATCHES * cfg.batch_size) as f64).min(train)
    } else {
        0.0
    };
    let evaluated = val + held_out(cfg, facts) as f64;
    let trained = 3.0 * train * evaluations_per_batch(cfg);
    let forwards = cfg.epochs as f64 * (trained + evaluated) + train + val + reestimate;
    arch.forward_macs() * forwards
}

/// Forward and backward passes over each batch: one, or L-BFGS's evaluations of its closure (at
/// most `max_eval` = 5/4 of its iterations, PyTorch's default, which its line search reaches).
fn evaluations_per_batch(cfg: &RunConfig) -> f64 {
    match cfg.optimizer {
        Optimizer::Lbfgs => cfg.lbfgs_iterations as f64 * 1.25,
        _ => 1.0,
    }
}

/// The grid's multiply-adds per distinct architecture, batch size and precision, added up run by
/// run as the grid streams.
#[derive(Default)]
pub struct Work(HashMap<(Architecture, usize, Precision), f64>);

impl Work {
    pub fn add(&mut self, cfg: &RunConfig, arch: Architecture, facts: &data::Facts) {
        *self
            .0
            .entry((arch, cfg.batch_size, cfg.precision))
            .or_default() += run_macs(cfg, &arch, facts);
    }

    /// Estimated wall seconds of all the work under `e`, and how many architectures were timed.
    pub fn seconds(self, e: &Execution) -> Result<(f64, usize)> {
        device::set_threads(e.threads);
        let mut work: Vec<_> = self.0.into_iter().collect();
        work.sort_by(|a, b| a.0.0.forward_macs().total_cmp(&b.0.0.forward_macs()));
        let total: f64 = work.iter().map(|w| w.1).sum();
        // The architecture at the middle of each of TIMED_ARCHITECTURES equal shares of the work.
        let mut picks: Vec<usize> = Vec::new();
        let mut cumulative = 0.0;
        for (i, w) in work.iter().enumerate() {
            cumulative += w.1;
            while picks.len() < TIMED_ARCHITECTURES
                && cumulative >= total * (picks.len() as f64 + 0.5) / TIMED_ARCHITECTURES as f64
            {
                picks.push(i);
            }
        }
        picks.dedup();
        let mut timed = Vec::with_capacity(picks.len());
        for &i in &picks {
            let ((arch, batch, precision), _) = work[i];
            let rate = time_rate(arch, batch, precision, e)?;
            timed.push((arch.forward_macs().ln(), rate));
        }
        let rate_near = |macs: f64| {
            timed
                .iter()
                .min_by(|a, b| (a.0 - macs.ln()).abs().total_cmp(&(b.0 - macs.ln()).abs()))
                .map_or(f64::INFINITY, |t| t.1)
        };
        let seconds: f64 = work
            .iter()
            .map(|((arch, _, _), macs)| macs / rate_near(arch.forward_macs()))
            .sum();
        Ok((seconds / e.workers as f64, timed.len()))
    }
}

/// Multiply-adds per second of training steps of `arch`, `e.fuse` of them fused, on `e.device`.
fn time_rate(arch: Architecture, batch: usize, precision: Precision, e: &Execution) -> Result<f64> {
    let mut step = fused::synthetic_step(arch, e.fuse, batch, e.device, precision)?;
    step();
    device::synchronize(e.device);
    let started = Instant::now();
    let mut steps = 0;
    while steps < 2 || started.elapsed() < TIMING {
        step();
        steps += 1;
        if steps % 2 == 0 {
            device::synchronize(e.device);
        }
    }
    device::synchronize(e.device);
    let macs = 3.0 * arch.forward_macs() * (batch * e.fuse * steps) as f64;
    Ok(macs / started.elapsed().as_secs_f64())
}
