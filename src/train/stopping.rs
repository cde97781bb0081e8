//! Stopping rules on the held-out split, the best epoch's weights, and what a run records about
//! its convergence. `epochs` is a cap; `plateau` ends a run when the held-out loss has not
//! improved by a relative `min_delta` for `patience` epochs, `target` when it reaches
//! `target_loss`. Either rule restores the weights of the best held-out epoch at the end (as
//! Keras' `restore_best_weights`); `none` trains to the cap and keeps the last weights.
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{EpochMetrics, RunConfig};

/// When a run stops before its epoch cap.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum StopRule {
    /// Train every epoch up to the cap and keep the last weights.
    #[default]
    None,
    /// Stop when the held-out loss has not improved by a relative `min_delta` for `patience`
    /// epochs; keep the best held-out epoch's weights.
    Plateau,
    /// Stop once the held-out loss is at most `target_loss`; keep the best epoch's weights.
    Target,
}

impl StopRule {
    pub fn is_none(&self) -> bool {
        *self == StopRule::None
    }
}

/// Why a run ended its training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    Plateau,
    Target,
    /// It trained every epoch up to `epochs`.
    Cap,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Plateau => "plateau",
            StopReason::Target => "target",
            StopReason::Cap => "cap",
        }
    }
}

/// What a run with a held-out split records about its convergence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    pub stop_reason: StopReason,
    /// The epoch of the lowest held-out loss (1-based); its weights are the run's final ones
    /// when a stopping rule is set.
    pub best_epoch: usize,
    pub best_holdout_loss: f64,
    pub best_holdout_acc: f64,
    /// Test-set loss and accuracy at the best epoch.
    pub best_val_loss: f64,
    pub best_val_acc: f64,
    /// Stopped by the cap while the held-out loss had improved by a relative `min_delta` within
    /// the last `patience` epochs: the run had not converged.
    pub still_improving: bool,
    /// Whether the best epoch's weights were restored at the end.
    pub restored: bool,
    /// Training seconds up to the end of the best epoch.
    pub seconds_to_best: f64,
}

/// Follows the held-out loss epoch by epoch and says when the rule stops the run.
#[derive(Debug, Clone)]
pub struct Monitor {
    rule: StopRule,
    patience: usize,
    min_delta: f64,
    target: Option<f64>,
    /// The loss that counts as the last significant improvement, and epochs since it.
    reference: f64,
    since_improvement: usize,
    best: Option<(usize, f64)>,
    stopped: Option<StopReason>,
}

impl Monitor {
    pub fn new(cfg: &RunConfig) -> Monitor {
        Monitor {
            rule: cfg.stop,
            patience: cfg.patience,
            min_delta: cfg.min_delta,
            target: cfg.target_loss,
            reference: f64::INFINITY,
            since_improvement: 0,
            best: None,
            stopped: None,
        }
    }

    /// Takes an epoch's held-out loss; true when it is the best so far (its weights should be
    /// kept).
    pub fn observe(&mut self, epoch: usize, loss: f64) -> bool {
        if loss < self.reference * (1.0 - self.min_delta) {
            self.reference = loss;
            self.since_improvement = 0;
        } else {
            self.since_improvement += 1;
        }
        let best = self.best.is_none_or(|(_, b)| loss < b);
        if best {
            self.best = Some((epoch, loss));
        }
        self.stopped = match self.rule {
            StopRule::Plateau if self.since_improvement >= self.patience => {
                Some(StopReason::Plateau)
            }
            StopRule::Target if self.target.is_some_and(|t| loss <= t) => Some(StopReason::Target),
            _ => None,
        };
        best
    }

    /// The rule has ended the run.
    pub fn stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// The epoch of the lowest held-out loss so far.
    pub fn best_epoch(&self) -> Option<usize> {
        self.best.map(|(e, _)| e)
    }

    /// Whether the best weights are restored at the end.
    pub fn restores(&self) -> bool {
        !self.rule.is_none()
    }

    /// The record of a run that ended (not diverged) with these epochs.
    pub fn conclusion(&self, epochs: &[EpochMetrics]) -> Option<Convergence> {
        let best_epoch = self.best_epoch()?;
        let best = epochs.iter().find(|m| m.epoch == best_epoch)?;
        Some(Convergence {
            stop_reason: self.stopped.unwrap_or(StopReason::Cap),
            best_epoch,
            best_holdout_loss: best.holdout_loss?,
            best_holdout_acc: best.holdout_acc?,
            best_val_loss: best.val_loss,
            best_val_acc: best.val_acc,
            still_improving: self.stopped.is_none() && self.since_improvement < self.patience,
            restored: self.restores(),
            seconds_to_best: epochs
                .iter()
                .filter(|m| m.epoch <= best_epoch)
                .map(|m| m.seconds)
                .sum(),
        })
    }
}

/// Copies of a net's variables (weights and batch-norm statistics), to restore later.
pub struct Snapshot(Vec<(Tensor, Tensor)>);

impl Snapshot {
    /// Copies `vars` (which must stay the same tensors until [`Snapshot::restore`]).
    pub fn take(vars: &[Tensor]) -> Snapshot {
        Snapshot(
            vars.iter()
                .map(|v| (v.shallow_clone(), v.detach().copy()))
                .collect(),
        )
    }

    /// The copies of `vars` given (a checkpoint's best weights), in `vars`' order.
    pub fn of(vars: &[Tensor], copies: Vec<Tensor>) -> Snapshot {
        Snapshot(vars.iter().map(Tensor::shallow_clone).zip(copies).collect())
    }

    /// The copies, in the order of the variables they were taken from.
    pub fn copies(&self) -> impl Iterator<Item = Tensor> + '_ {
        self.0.iter().map(|(_, copy)| copy.shallow_clone())
    }

    /// Writes the copies back into the variables they were taken from.
    pub fn restore(&self) {
        tch::no_grad(|| {
            for (var, saved) in &self.0 {
                var.shallow_clone().copy_(saved);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Layout;

    fn monitor(edit: impl FnOnce(&mut RunConfig)) -> Monitor {
        let mut cfg = crate::train::settings::defaults(Layout::Sequential);
        edit(&mut cfg);
        Monitor::new(&cfg)
    }

    #[test]
    fn plateau_stops_after_patience_epochs_without_a_relative_improvement() {
        let mut m = monitor(|c| {
            c.stop = StopRule::Plateau;
            c.patience = 2;
            c.min_delta = 0.01;
        });
        assert!(m.observe(1, 1.0));
        // 0.995 is the best so far but not 1 % better: it counts towards patience.
        assert!(m.observe(2, 0.995));
        assert!(!m.stopped());
        assert!(!m.observe(3, 0.999));
        assert!(m.stopped());
        assert_eq!(m.best_epoch(), Some(2));
    }

    #[test]
    fn an_improvement_resets_patience() {
        let mut m = monitor(|c| {
            c.stop = StopRule::Plateau;
            c.patience = 2;
            c.min_delta = 0.0;
        });
        for (e, loss) in [(1, 1.0), (2, 1.1), (3, 0.9), (4, 0.95)] {
            m.observe(e, loss);
            assert!(!m.stopped(), "epoch {e}");
        }
        m.observe(5, 0.95);
        assert!(m.stopped());
        assert_eq!(m.best_epoch(), Some(3));
    }

    #[test]
    fn target_stops_at_the_target_and_none_never_stops() {
        let mut m = monitor(|c| {
            c.stop = StopRule::Target;
            c.target_loss = Some(0.5);
        });
        m.observe(1, 0.6);
        assert!(!m.stopped());
        m.observe(2, 0.5);
        assert!(m.stopped());
        let mut m = monitor(|_| {});
        for e in 1..=50 {
            m.observe(e, 1.0);
        }
        assert!(!m.stopped() && !m.restores());
    }
}
