//! Optimizers and learning-rate schedules: libtorch's own optimizers (the same C++ updates as
//! `torch.optim.Adam`, `AdamW` and `SGD`), L-BFGS ([`super::lbfgs`]) and the schedules of `torch.optim.lr_scheduler`
//! (`LinearLR` warm-up, then `CosineAnnealingLR`, `StepLR` or `ReduceLROnPlateau`), stepped once
//! per epoch as PyTorch users do.
use std::collections::HashMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use super::RunConfig;
use super::lbfgs::Lbfgs;
use super::torch_optim::{self, TorchOptimizer};

/// The optimizer of a run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Adam (β = 0.9, 0.999, ε = 1e-8); `weight_decay` adds an L2 term to the gradient.
    #[default]
    Adam,
    /// AdamW: Adam with decoupled weight decay (`weight_decay`, default 0.01 as in PyTorch).
    Adamw,
    /// Stochastic gradient descent with optional `momentum` and `nesterov`.
    Sgd,
    /// L-BFGS (`lbfgs_iterations` iterations per batch, `lbfgs_history` curvature pairs,
    /// `line_search`), the quasi-Newton method the paper proposes; PyTorch's default rate is
    /// lr = 1. Needs large batches (at least 256 examples, or the whole training set).
    Lbfgs,
}

impl Optimizer {
    pub fn is_adam(&self) -> bool {
        *self == Optimizer::Adam
    }

    /// The weight decay PyTorch uses when none is given.
    pub fn default_weight_decay(self) -> f64 {
        match self {
            Optimizer::Adamw => 0.01,
            Optimizer::Adam | Optimizer::Sgd | Optimizer::Lbfgs => 0.0,
        }
    }
}

/// How the learning rate changes from epoch to epoch (after `warmup` epochs of linear warm-up).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The same rate every epoch.
    #[default]
    Constant,
    /// Cosine annealing from `lr` to 0 over the epochs after warm-up (`CosineAnnealingLR`).
    Cosine,
    /// Multiplied by `lr_factor` every `lr_step` epochs (`StepLR`).
    Step,
    /// Multiplied by `lr_factor` when the held-out loss has not improved by a relative 1e-4 for
    /// more than `lr_patience` epochs (`ReduceLROnPlateau`); needs `holdout`.
    Plateau,
}

impl Schedule {
    pub fn is_constant(&self) -> bool {
        *self == Schedule::Constant
    }
}

/// L-BFGS's line search.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum LineSearch {
    /// Bracketing and cubic interpolation to a step that satisfies the strong Wolfe conditions.
    #[default]
    StrongWolfe,
    /// Steps of length lr along the quasi-Newton direction.
    None,
}

impl LineSearch {
    pub fn is_strong_wolfe(&self) -> bool {
        *self == LineSearch::StrongWolfe
    }
}

/// The smallest batch L-BFGS accepts (unless the batch is the whole training set): its curvature
/// pairs are differences of gradients of different batches, whose noise swamps the curvature of
/// small ones.
pub const LBFGS_MIN_BATCH: usize = 256;

/// A run's optimizer: one of libtorch's, or L-BFGS, which takes several evaluations per batch.
pub enum Stepper {
    Torch(TorchOptimizer),
    Lbfgs(Lbfgs),
}

impl Stepper {
    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Stepper::Torch(opt) => opt.set_lr(lr),
            Stepper::Lbfgs(opt) => opt.set_lr(lr),
        }
    }

    /// One optimisation step on the batch whose loss `closure` computes; returns that loss
    /// before the update.
    pub fn step(&mut self, closure: &mut dyn FnMut() -> Tensor) -> Tensor {
        match self {
            Stepper::Torch(opt) => {
                let loss = closure();
                opt.backward_step(&loss);
                loss
            }
            Stepper::Lbfgs(opt) => opt.step(closure),
        }
    }

    /// The optimizer's state as named tensors (libtorch's archive as bytes, or L-BFGS's
    /// tensors), for a checkpoint.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(match self {
            Stepper::Torch(opt) => {
                vec![("torch".to_owned(), Tensor::from_slice(&opt.state()?))]
            }
            Stepper::Lbfgs(opt) => opt
                .state()
                .into_iter()
                .map(|(name, t)| (format!("lbfgs.{name}"), t))
                .collect(),
        })
    }

    /// Takes back the [`Stepper::state`] of the same optimizer over the same variables.
    pub fn restore(&mut self, state: &mut HashMap<String, Tensor>) -> Result<()> {
        match self {
            Stepper::Torch(opt) => {
                let bytes = state.remove("torch").context("no optimizer state")?;
                opt.load_state(&Vec::<u8>::try_from(bytes)?)
            }
            Stepper::Lbfgs(opt) => {
                let mut own: HashMap<String, Tensor> = state
                    .drain()
                    .filter_map(|(n, t)| Some((n.strip_prefix("lbfgs.")?.to_owned(), t)))
                    .collect();
                opt.restore(&mut own)
            }
        }
    }
}

/// Builds the run's optimizer over every trainable variable of `vars`.
pub fn build(cfg: &RunConfig, vars: &nn::VarStore) -> Result<Stepper> {
    let wd = cfg.weight_decay();
    let kind = match cfg.optimizer {
        Optimizer::Adam => torch_optim::Kind::Adam { wd },
        Optimizer::Adamw => torch_optim::Kind::AdamW { wd },
        Optimizer::Sgd => torch_optim::Kind::Sgd {
            momentum: cfg.momentum,
            wd,
            nesterov: cfg.nesterov,
        },
        Optimizer::Lbfgs => {
            return Ok(Stepper::Lbfgs(Lbfgs::new(
                vars.trainable_variables(),
                cfg.lr,
                cfg.lbfgs_iterations,
                cfg.lbfgs_history,
                cfg.line_search.is_strong_wolfe(),
            )));
        }
    };
    let opt = TorchOptimizer::new(&kind, vars, cfg.lr)?;
    Ok(Stepper::Torch(opt))
}

/// `ReduceLROnPlateau`'s relative threshold and the smallest change of rate it applies.
const PLATEAU_THRESHOLD: f64 = 1e-4;
const PLATEAU_EPS: f64 = 1e-8;

/// The learning rate of each epoch. [`LrSchedule::rate`] gives the rate of the epoch about to
/// train; [`LrSchedule::observe`] takes the held-out loss of the epoch that ended (used by
/// `plateau` only).
#[derive(Debug, Clone)]
pub struct LrSchedule {
    base: f64,
    schedule: Schedule,
    warmup: usize,
    /// Epochs after warm-up (cosine's period).
    span: usize,
    step: usize,
    factor: f64,
    patience: usize,
    /// Plateau state: the current rate, the best loss and the epochs since it.
    current: f64,
    best: f64,
    bad_epochs: usize,
}

impl LrSchedule {
    pub fn new(cfg: &RunConfig) -> LrSchedule {
        LrSchedule {
            base: cfg.lr,
            schedule: cfg.schedule,
            warmup: cfg.warmup,
            span: cfg.epochs.saturating_sub(cfg.warmup).max(1),
            step: cfg.lr_step,
            factor: cfg.lr_factor,
            patience: cfg.lr_patience,
            current: cfg.lr,
            best: f64::INFINITY,
            bad_epochs: 0,
        }
    }

    /// The rate of `epoch` (1-based).
    pub fn rate(&self, epoch: usize) -> f64 {
        if epoch <= self.warmup {
            return self.base * epoch as f64 / (self.warmup + 1) as f64;
        }
        let t = (epoch - self.warmup - 1) as f64;
        match self.schedule {
            Schedule::Constant => self.base,
            Schedule::Cosine => {
                self.base * (1.0 + (std::f64::consts::PI * t / self.span as f64).cos()) / 2.0
            }
            Schedule::Step => self.base * self.factor.powi((t as usize / self.step) as i32),
            Schedule::Plateau => self.current,
        }
    }

    /// Takes the held-out loss of `epoch`, which just ended.
    pub fn observe(&mut self, epoch: usize, holdout_loss: Option<f64>) {
        let (Schedule::Plateau, Some(loss)) = (self.schedule, holdout_loss) else {
            return;
        };
        if epoch <= self.warmup {
            return;
        }
        if loss < self.best * (1.0 - PLATEAU_THRESHOLD) {
            self.best = loss;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        if self.bad_epochs > self.patience {
            let reduced = self.current * self.factor;
            if self.current - reduced > PLATEAU_EPS {
                self.current = reduced;
            }
            self.bad_epochs = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Layout;

    fn schedule(edit: impl FnOnce(&mut RunConfig)) -> LrSchedule {
        let mut cfg = crate::train::settings::defaults(Layout::Sequential);
        cfg.lr = 0.1;
        cfg.epochs = 6;
        edit(&mut cfg);
        LrSchedule::new(&cfg)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs().max(1e-300)
    }

    #[test]
    fn linear_warm_up_then_cosine_over_the_remaining_epochs() {
        let s = schedule(|c| {
            c.schedule = Schedule::Cosine;
            c.warmup = 2;
        });
        let rates: Vec<f64> = (1..=6).map(|e| s.rate(e)).collect();
        let expected = [
            0.1 / 3.0,
            0.2 / 3.0,
            0.1,
            0.1 * (1.0 + (std::f64::consts::PI / 4.0).cos()) / 2.0,
            0.05,
            0.1 * (1.0 + (3.0 * std::f64::consts::PI / 4.0).cos()) / 2.0,
        ];
        for (r, e) in rates.iter().zip(expected) {
            assert!(close(*r, e), "{rates:?}");
        }
    }

    #[test]
    fn step_multiplies_every_lr_step_epochs() {
        let s = schedule(|c| {
            c.schedule = Schedule::Step;
            c.lr_step = 2;
            c.lr_factor = 0.5;
        });
        let rates: Vec<f64> = (1..=6).map(|e| s.rate(e)).collect();
        assert_eq!(rates, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]);
    }

    #[test]
    fn plateau_reduces_after_more_than_patience_bad_epochs() {
        let mut s = schedule(|c| {
            c.schedule = Schedule::Plateau;
            c.lr_patience = 1;
            c.lr_factor = 0.1;
        });
        // 1.0 best; 1.0 and 0.99995 are not better by a relative 1e-4: the second bad epoch
        // exceeds patience 1, the rate drops for epoch 4.
        for (epoch, loss) in [(1, 1.0), (2, 1.0), (3, 0.99995)] {
            assert!(close(s.rate(epoch), 0.1));
            s.observe(epoch, Some(loss));
        }
        assert!(close(s.rate(4), 0.01));
        s.observe(4, Some(0.5));
        assert!(close(s.rate(5), 0.01));
    }
}
