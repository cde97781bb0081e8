//! What a run tells while it trains: the [`Observer`] interface, and the observers every caller
//! shares (none, several at once, a progress bar, saving the trained net).
use anyhow::Result;
use indicatif::ProgressBar;
use tch::{Tensor, nn};

use super::{Checkpoint, EpochMetrics};
use crate::data::Tensors;

/// One optimisation step, as an observer sees it after the update.
pub struct Step<'a> {
    /// The minibatch loss (before the update), a scalar tensor on the training device.
    pub loss: &'a Tensor,
    /// The loss read back to the host every [`super::CHECK_EVERY`] steps and at an epoch's last step.
    pub running_loss: Option<f64>,
    /// The net's variables after the update.
    pub vars: &'a nn::VarStore,
}

/// Receives progress: `start` with the initial variables, `start_epoch` with the epoch's example
/// order, `step` after each optimisation step, `epoch` after each epoch (an error from `start` or
/// `epoch` aborts the run, e.g. when the results store is gone).
pub trait Observer {
    fn start(&mut self, _vars: &nn::VarStore) -> Result<()> {
        Ok(())
    }
    /// `order` holds the indices of the training examples in the order the epoch visits them.
    fn start_epoch(&mut self, _epoch: usize, _steps: usize, _order: &Tensor) {}
    fn step(&mut self, _step: &Step) {}
    fn epoch(&mut self, _metrics: &EpochMetrics) -> Result<()> {
        Ok(())
    }
    /// Asked before every step: `true` stops training with the error [`Stopped`].
    fn should_stop(&self) -> bool {
        false
    }
    /// Asked at the end of every epoch after which training goes on: `true` to be handed the
    /// run's [`Checkpoint`] (built only then).
    fn wants_checkpoint(&mut self, _epoch: usize) -> bool {
        false
    }
    /// The run's state after the epoch just asked about; an error aborts the run.
    fn checkpoint(&mut self, _checkpoint: &Checkpoint) -> Result<()> {
        Ok(())
    }
    /// The trained net's variables and batch-norm statistics by name, once, at the end of a run
    /// that did not diverge (the best held-out epoch's, where a stopping rule restored them);
    /// an error fails the run.
    fn trained(&mut self, _state: &[(String, Tensor)]) -> Result<()> {
        Ok(())
    }
}

/// Training was stopped on request ([`Observer::should_stop`]), e.g. by SIGTERM.
#[derive(Debug)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("training stopped on request")
    }
}

impl std::error::Error for Stopped {}

/// Several observers, each told everything, in order.
pub struct All<'a>(pub Vec<&'a mut dyn Observer>);
impl Observer for All<'_> {
    fn start(&mut self, vars: &nn::VarStore) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.start(vars))
    }
    fn start_epoch(&mut self, epoch: usize, steps: usize, order: &Tensor) {
        for o in &mut self.0 {
            o.start_epoch(epoch, steps, order);
        }
    }
    fn step(&mut self, step: &Step) {
        for o in &mut self.0 {
            o.step(step);
        }
    }
    fn epoch(&mut self, metrics: &EpochMetrics) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.epoch(metrics))
    }
    fn should_stop(&self) -> bool {
        self.0.iter().any(|o| o.should_stop())
    }
    fn trained(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.trained(state))
    }
    fn wants_checkpoint(&mut self, epoch: usize) -> bool {
        // Every observer is asked (each may keep its own clock).
        let mut wants = false;
        for o in &mut self.0 {
            wants |= o.wants_checkpoint(epoch);
        }
        wants
    }
    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.checkpoint(checkpoint))
    }
}

/// Writes the trained net to a file ([`crate::model::saved`]) at the end of the run.
pub struct SaveNet {
    path: std::path::PathBuf,
    meta: crate::model::saved::Metadata,
}

impl SaveNet {
    /// Saves the net of `cfg` trained on `data` to `path`; fails now if `path` cannot be
    /// written, before any training.
    pub fn new(path: &std::path::Path, cfg: &super::RunConfig, data: &Tensors) -> Result<SaveNet> {
        crate::files::check_writable(path)?;
        Ok(SaveNet {
            path: path.to_owned(),
            meta: crate::model::saved::Metadata {
                architecture: cfg.architecture(data.shape, data.classes),
                normalisation: data.normalisation.clone(),
                settings: serde_json::to_value(cfg)?,
            },
        })
    }
}

impl Observer for SaveNet {
    fn trained(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        crate::model::saved::save(&self.path, state, &self.meta)
    }
}

/// Observes nothing.
pub struct Silent;
impl Observer for Silent {}

/// A progress bar per epoch with ETA.
pub struct Bar(pub ProgressBar);
impl Observer for Bar {
    fn start_epoch(&mut self, epoch: usize, steps: usize, _order: &Tensor) {
        self.0.reset();
        self.0.set_length(steps as u64);
        self.0.set_prefix(format!("epoch {epoch}"));
    }
    fn step(&mut self, step: &Step) {
        self.0.inc(1);
        if let Some(loss) = step.running_loss {
            self.0.set_message(format!("loss {loss:.4}"));
        }
    }
    fn epoch(&mut self, m: &EpochMetrics) -> Result<()> {
        let holdout = match (m.holdout_loss, m.holdout_acc) {
            (Some(loss), Some(acc)) => {
                format!(
                    "held-out loss {loss:.4}  held-out acc {:.2}%  ",
                    100.0 * acc
                )
            }
            _ => String::new(),
        };
        let line = format!(
            "epoch {:>3}: train loss {:.4}  {holdout}{} loss {:.4}  {} acc {:.2}%  {:.1}s  {:.0} img/s",
            m.epoch,
            m.train_loss,
            if holdout.is_empty() { "val" } else { "test" },
            m.val_loss,
            if holdout.is_empty() { "val" } else { "test" },
            100.0 * m.val_acc,
            m.seconds,
            m.images_per_second
        );
        // A hidden bar (no terminal) swallows println; the line goes where the bar would have
        // drawn it, standard error, so standard output stays the result's alone.
        if self.0.is_hidden() {
            eprintln!("{line}");
        } else {
            self.0.println(line);
        }
        Ok(())
    }
}
