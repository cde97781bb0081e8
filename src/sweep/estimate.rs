//! The `--dry-run` time estimate: each run's multiply-adds ÷ the rate this machine reaches on
//! nets of that size, timed just now on a few of the grid's own architectures (small nets reach a
//! fraction of a large net's rate, so one reference net misjudges a grid of small ones).
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tch::Device;

use super::store::{self, Location, RunStatus};
use crate::data;
use crate::device;
use crate::model::{Architecture, Precision};
use crate::train::optim::Optimizer;
use crate::train::settings::RunConfig;
use crate::train::{REESTIMATE_BATCHES, fused};

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

/// Multiply-adds of a run of `epochs` epochs: forward + backward (≈ 3 forwards) per training
/// image, epoch and evaluation of the loss (one per batch, L-BFGS up to PyTorch's `max_eval`, 5/4
/// of its iterations), one forward per validation and held-out image and epoch; after training,
/// the training set once, the validation set in the other arrangement and, with batch norm, the
/// batches that re-estimate its statistics.
fn run_macs(cfg: &RunConfig, arch: &Architecture, facts: &data::Facts, epochs: f64) -> f64 {
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
    let forwards = epochs * (trained + evaluated) + train + val + reestimate;
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
    /// Adds a run expected to train `epochs` epochs.
    pub fn add(&mut self, cfg: &RunConfig, arch: Architecture, facts: &data::Facts, epochs: f64) {
        *self
            .0
            .entry((arch, cfg.batch_size, cfg.precision))
            .or_default() += run_macs(cfg, &arch, facts, epochs);
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

/// How alike two runs must be for one's epochs to foretell the other's, from the most alike to
/// the least: the epochs a run with a stopping rule takes depend above all on its network and
/// optimizer, then on its data.
const LIKENESS: [&str; 3] = [
    "dataset, arrangement, head, depth, batch norm, optimizer and training size",
    "arrangement, head, depth, batch norm and optimizer",
    "arrangement, head and optimizer",
];

fn likeness_key(cfg: &RunConfig, level: usize) -> String {
    let (layout, head, optimizer) = (cfg.layout, cfg.head, cfg.optimizer);
    match level {
        0 => format!(
            "{}|{layout}|{head:?}|{}|{}|{optimizer:?}|{:?}",
            cfg.dataset, cfg.layers, cfg.batchnorm, cfg.train_limit
        ),
        1 => format!(
            "{layout}|{head:?}|{}|{}|{optimizer:?}",
            cfg.layers, cfg.batchnorm
        ),
        _ => format!("{layout}|{head:?}|{optimizer:?}"),
    }
}

/// What the runs already finished in a sweep's store tell about the rest: which runs need no
/// estimate, and what share of its epoch cap a run with a stopping rule takes, from the finished
/// runs most like it.
#[derive(Default)]
pub struct History {
    /// The runs that ended ([`RunStatus::ended`]): done or diverged, nothing left to train.
    ended: HashSet<String>,
    /// Per likeness level and key: the sum of finished runs' epochs ÷ cap, and their number.
    share: [HashMap<String, (f64, usize)>; 3],
    /// Runs whose epochs came from each likeness level, and from none (trained to the cap).
    pub matched: [usize; 4],
}

/// Runs read from the store per page.
const HISTORY_PAGE: usize = 10_000;

impl History {
    /// The finished runs of the store at `location`; none if it is a SQLite file not yet made.
    pub fn read(location: &Location) -> Result<History> {
        let mut history = History::default();
        if let Location::Sqlite(path) = location
            && !path.exists()
        {
            return Ok(history);
        }
        let store = store::open_reader(location)
            .with_context(|| format!("reading the runs already finished in {location}"))?;
        for row in store::each_run(&*store, HISTORY_PAGE) {
            let row = row?;
            if row.status.ended() {
                history.ended.insert(row.id.clone());
            }
            if row.status == RunStatus::Done {
                history.record(&row.config, row.epochs_recorded as usize);
            }
        }
        Ok(history)
    }

    /// Learns from a run of `cfg` that trained `epochs` epochs and ended done.
    fn record(&mut self, cfg: &RunConfig, epochs: usize) {
        if cfg.stop.is_none() {
            return;
        }
        let share = epochs as f64 / cfg.epochs.max(1) as f64;
        for (level, shares) in self.share.iter_mut().enumerate() {
            let entry = shares.entry(likeness_key(cfg, level)).or_default();
            entry.0 += share;
            entry.1 += 1;
        }
    }

    pub fn ended(&self, id: &str) -> bool {
        self.ended.contains(id)
    }

    /// The epochs `cfg` is expected to train: all of them without a stopping rule; with one, the
    /// mean share of the cap that the finished runs most like it took, or the cap when none is
    /// like it.
    pub fn expected_epochs(&mut self, cfg: &RunConfig) -> f64 {
        let cap = cfg.epochs as f64;
        if cfg.stop.is_none() {
            return cap;
        }
        for (level, shares) in self.share.iter().enumerate() {
            if let Some((sum, n)) = shares.get(&likeness_key(cfg, level)) {
                self.matched[level] += 1;
                return cap * sum / *n as f64;
            }
        }
        self.matched[3] += 1;
        cap
    }

    /// Says where the epochs of the runs with a stopping rule came from.
    pub fn note(&self) -> String {
        let stopping: usize = self.matched.iter().sum();
        if stopping == 0 {
            return String::new();
        }
        let mut out = format!(
            "{stopping} run(s) left have a stopping rule; the estimate expects of each the share of \
             its epoch cap that finished runs like it took"
        );
        for (level, what) in LIKENESS.iter().enumerate() {
            if self.matched[level] > 0 {
                out += &format!("; {} from runs of the same {what}", self.matched[level]);
            }
        }
        if self.matched[3] > 0 {
            out += &format!(
                "; {} trained to their epoch cap (no finished run like them yet: they may end \
                 sooner)",
                self.matched[3]
            );
        }
        out + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Head, Layout};
    use crate::train::stopping::StopRule;

    fn plateau(dataset: &str, layout: Layout, head: Head, train_limit: usize) -> RunConfig {
        RunConfig {
            dataset: dataset.into(),
            head,
            epochs: 200,
            stop: StopRule::Plateau,
            train_limit: Some(train_limit),
            ..crate::train::settings::defaults(layout)
        }
    }

    /// A run expects the mean share of its cap that the most alike finished runs took: the same
    /// configuration first, then the same network on any data, then the same arrangement, head
    /// and optimizer; its cap when nothing alike has finished, all its epochs without a rule.
    #[test]
    fn epochs_come_from_the_most_alike_finished_runs() {
        let mut h = History::default();
        h.record(&plateau("mnist", Layout::Parallel, Head::Gap, 1000), 50);
        h.record(&plateau("mnist", Layout::Parallel, Head::Gap, 1000), 100);
        h.record(&plateau("mnist", Layout::Parallel, Head::Gap, 3000), 30);
        h.record(
            &plateau("mnist", Layout::Sequential, Head::Flatten, 500),
            20,
        );
        let mut no_rule = plateau("mnist", Layout::Parallel, Head::Gap, 1000);
        no_rule.stop = StopRule::None;
        h.record(&no_rule, 200);

        let same = plateau("mnist", Layout::Parallel, Head::Gap, 1000);
        assert_eq!(h.expected_epochs(&same), 75.0);
        let other_data = plateau("cifar10", Layout::Parallel, Head::Gap, 6000);
        assert_eq!(h.expected_epochs(&other_data), 60.0);
        let mut deeper = plateau("cifar10", Layout::Sequential, Head::Flatten, 500);
        deeper.layers = 8;
        assert_eq!(h.expected_epochs(&deeper), 20.0);
        let unseen = plateau("mnist", Layout::Sequential, Head::Gap, 1000);
        assert_eq!(h.expected_epochs(&unseen), 200.0);
        let mut capped = unseen.clone();
        capped.stop = StopRule::None;
        capped.epochs = 7;
        assert_eq!(h.expected_epochs(&capped), 7.0);
        assert_eq!(h.matched, [1, 1, 1, 1]);
        assert!(
            h.note().contains("4 run(s) left have a stopping rule"),
            "{}",
            h.note()
        );
    }
}
