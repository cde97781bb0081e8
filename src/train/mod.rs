//! One training run: Adam on softmax cross-entropy, per-epoch validation, divergence detection,
//! and the paper's "training loss": the loss over the whole training set in eval mode after the
//! last epoch.
use anyhow::{Result, ensure};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

use crate::data::Tensors;
use crate::model::{Layout, Net, determination_ratio};
pub use settings::RunConfig;
use stopping::{Convergence, Monitor};

pub(crate) mod adam;
pub mod augment;
pub mod checkpoint;
mod draws;
pub(crate) mod fused;
pub mod lbfgs;
mod observer;
pub mod optim;
mod run;
pub mod settings;
mod solo;
pub mod stopping;
pub(crate) mod torch_optim;
pub use checkpoint::Checkpoint;
pub use fused::train_fused;
pub use observer::{All, Bar, Observer, SaveNet, Silent, Step, Stopped};
pub use solo::train_from;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Mean of the minibatch losses seen during the epoch (train mode).
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// Loss and accuracy on the official test set (or its `val_limit` subset).
    #[serde(deserialize_with = "nan_if_null")]
    pub val_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub val_acc: f64,
    /// Loss and accuracy on the held-out split, when the run has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_acc: Option<f64>,
    /// Wall time of the epoch's training steps (without validation).
    pub seconds: f64,
    pub images_per_second: f64,
}

/// A number that JSON (and the store) write as null when it is not finite: read back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Done,
    /// The loss became NaN or infinite.
    Diverged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub config: RunConfig,
    pub params: usize,
    pub train_examples: usize,
    /// Determination ratio (training examples × outputs) / parameters.
    pub q: f64,
    pub outcome: Outcome,
    /// The epoch in which the loss stopped being finite.
    pub diverged_epoch: Option<usize>,
    pub epochs: Vec<EpochMetrics>,
    /// Loss and accuracy over the full training set in eval mode after the last epoch.
    pub final_train_loss: Option<f64>,
    pub final_train_acc: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub final_val_acc: Option<f64>,
    /// Validation loss and accuracy of the trained units arranged the other way
    /// ([`truncation_of`]): a sequential net's units side by side (its first-order truncation),
    /// a parallel net's stacked, a staged net's side by side.
    #[serde(default)]
    pub truncated_val_loss: Option<f64>,
    #[serde(default)]
    pub truncated_val_acc: Option<f64>,
    /// Stop reason, best held-out epoch and its losses, for a run with a held-out split that
    /// ended without diverging. With a stopping rule the final metrics are those of the best
    /// epoch's weights, restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence: Option<Convergence>,
    /// Sum of the epochs' training time.
    pub train_seconds: f64,
    /// Wall time of the whole run, evaluation included.
    pub total_seconds: f64,
    pub device: String,
}

impl RunResult {
    /// A run about to train: no epochs yet, outcome done until it diverges.
    fn begin(cfg: &RunConfig, params: usize, data: &Tensors, device: Device) -> RunResult {
        let train_examples = data.train_len();
        RunResult {
            config: cfg.clone(),
            params,
            train_examples,
            q: determination_ratio(train_examples, data.classes, params),
            outcome: Outcome::Done,
            diverged_epoch: None,
            epochs: Vec::with_capacity(cfg.epochs),
            final_train_loss: None,
            final_train_acc: None,
            final_val_loss: None,
            final_val_acc: None,
            truncated_val_loss: None,
            truncated_val_acc: None,
            convergence: None,
            train_seconds: 0.0,
            total_seconds: 0.0,
            device: format!("{device:?}"),
        }
    }

    /// Marks the run diverged in `epoch`.
    fn diverge(&mut self, epoch: usize) {
        self.outcome = Outcome::Diverged;
        self.diverged_epoch = Some(epoch);
    }

    /// Records an epoch that ended; false (and the run diverged) if its losses are not finite.
    fn push_epoch(&mut self, m: EpochMetrics) -> bool {
        let finite = m.train_loss.is_finite()
            && m.val_loss.is_finite()
            && m.holdout_loss.is_none_or(f64::is_finite);
        self.train_seconds += m.seconds;
        let epoch = m.epoch;
        self.epochs.push(m);
        if !finite {
            self.diverge(epoch);
        }
        finite
    }

    /// Records the evaluation of the rearranged net ([`truncated_evaluation`]).
    fn truncated(&mut self, (loss, acc): (f64, f64)) {
        self.truncated_val_loss = Some(loss);
        self.truncated_val_acc = Some(acc);
    }

    /// The final metrics of a run trained to the end, from the evaluation of its final weights
    /// (the last epoch's, or the best held-out epoch's when a stopping rule restored them) on the
    /// training and the test set.
    fn conclude(&mut self, train: (f64, f64), (val_loss, val_acc): (f64, f64), monitor: &Monitor) {
        let (train_loss, train_acc) = train;
        let last_epoch = self.epochs.last().expect("at least one epoch").epoch;
        self.convergence = monitor.conclusion(&self.epochs);
        self.final_train_loss = Some(train_loss);
        self.final_train_acc = Some(train_acc);
        self.final_val_loss = Some(val_loss);
        self.final_val_acc = Some(val_acc);
        if !train_loss.is_finite() {
            self.diverge(last_epoch);
        }
    }
}

/// How often (in steps) the running loss is read back, for divergence and progress display.
/// Reading it forces a device sync, so not every step.
const CHECK_EVERY: usize = 50;
/// Evaluation batch: large enough to be efficient, small enough for L·F-channel activations.
const EVAL_BATCH: i64 = 256;

/// Refuses, before any work, a run whose architecture does not fit its images or whose training
/// step would not fit the memory this machine has left (checked on the CPU; a GPU's own limit
/// shows as libtorch's out-of-memory error).
pub fn check_fits(
    cfg: &RunConfig,
    input: [usize; 3],
    classes: usize,
    device: Device,
) -> Result<()> {
    check_fits_within(cfg, input, classes, memory_to_check(device))
}

/// The memory a run on `device` is checked against: what this machine has left on the CPU,
/// nothing on a GPU (its own limit shows as libtorch's out-of-memory error).
fn memory_to_check(device: Device) -> Option<u64> {
    (device == Device::Cpu)
        .then(crate::device::available_memory)
        .flatten()
}

/// [`check_fits`] against `available` bytes of memory (`None`: unknown, not checked), for
/// callers that check many runs against one reading.
pub fn check_fits_within(
    cfg: &RunConfig,
    input: [usize; 3],
    classes: usize,
    available: Option<u64>,
) -> Result<()> {
    let arch = cfg.architecture(input, classes);
    arch.validate()?;
    let need = arch.training_memory_bytes(cfg.batch_size);
    if let Some(have) = available {
        ensure!(
            need <= have as f64,
            "L={} F={} k={} with batch size {} needs about {:.1} GB to train (P = {} parameters), \
             but this machine has {:.1} GB available",
            cfg.layers,
            cfg.filters,
            cfg.kernel,
            cfg.batch_size,
            need / 1e9,
            arch.parameter_count(),
            have as f64 / 1e9
        );
    }
    Ok(())
}

/// The data must hold the held-out split the run asks for (see [`RunConfig::selection`]).
fn check_holdout(cfg: &RunConfig, data: &Tensors) -> Result<()> {
    ensure!(
        cfg.holdout.is_some() == data.holdout.is_some(),
        "the run's holdout setting ({:?}) does not match its data (prepared {} a held-out split)",
        cfg.holdout,
        if data.holdout.is_some() {
            "with"
        } else {
            "without"
        }
    );
    Ok(())
}

/// Trains one network on `data` and evaluates it.
pub fn train(
    cfg: &RunConfig,
    data: &Tensors,
    device: Device,
    observer: &mut dyn Observer,
) -> Result<RunResult> {
    train_from(cfg, data, device, observer, None)
}

/// Batches of training images over which a rearranged net's batch-norm statistics are
/// re-estimated (all of the training set if it has fewer).
pub const REESTIMATE_BATCHES: usize = 100;

/// The layout a trained net's units are rearranged into for [`truncated_evaluation`]: a
/// sequential (or staged) net's units side by side — its first-order truncation — and a
/// parallel net's units stacked — the higher-order terms added.
pub fn truncation_of(layout: Layout) -> Layout {
    match layout {
        Layout::Parallel => Layout::Sequential,
        Layout::Sequential | Layout::Staged(_) => Layout::Parallel,
    }
}

/// Validation loss and accuracy of `net`'s trained units arranged as [`truncation_of`] its
/// layout; with batch norm, its running statistics are first re-estimated over the first
/// [`REESTIMATE_BATCHES`] training batches of `batch_size` images, in file order.
pub fn truncated_evaluation(net: &Net, data: &Tensors, batch_size: usize) -> Result<(f64, f64)> {
    let mut other = net.rearranged(truncation_of(net.architecture().layout))?;
    let n = data.train_len();
    let batches = (0..n.div_ceil(batch_size))
        .take(REESTIMATE_BATCHES)
        .map(|b| {
            let start = b * batch_size;
            let len = batch_size.min(n - start);
            data.train_x.narrow(0, start as i64, len as i64)
        });
    other.reestimate_statistics(batches);
    Ok(evaluate(&other, &data.val_x, &data.val_y))
}

fn shuffled_indices(n: usize, rng: &mut ChaCha8Rng) -> Tensor {
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(rng);
    Tensor::from_slice(&order)
}

/// Mean softmax cross-entropy of `logits` against class indices, in the logits' precision
/// (tch's `cross_entropy_for_logits` would round to f32).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(targets, None, Reduction::Mean, -100, 0.0)
}

/// The logits of `net` for the images `x`, in eval mode, a batch at a time.
pub fn logits(net: &Net, x: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let n = x.size()[0];
        let parts: Vec<Tensor> = (0..n)
            .step_by(EVAL_BATCH as usize)
            .map(|start| net.forward(&x.narrow(0, start, EVAL_BATCH.min(n - start)), false))
            .collect();
        Tensor::cat(&parts, 0)
    })
}

/// Mean loss and accuracy in eval mode (batch norm with running statistics), without gradients.
pub fn evaluate(net: &Net, x: &Tensor, y: &Tensor) -> (f64, f64) {
    tch::no_grad(|| {
        let n = y.size()[0];
        let mut loss_sum = Tensor::zeros([], (Kind::Float, x.device()));
        let mut correct = Tensor::zeros([], (Kind::Int64, x.device()));
        for start in (0..n).step_by(EVAL_BATCH as usize) {
            let len = EVAL_BATCH.min(n - start);
            let logits = net.forward(&x.narrow(0, start, len), false);
            let yb = y.narrow(0, start, len);
            let _ = loss_sum.g_add_(&(cross_entropy(&logits, &yb) * len as f64));
            let _ = correct.g_add_(&logits.argmax(-1, false).eq_tensor(&yb).sum(Kind::Int64));
        }
        (
            loss_sum.double_value(&[]) / n as f64,
            correct.int64_value(&[]) as f64 / n as f64,
        )
    })
}
