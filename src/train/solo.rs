//! A run trained alone: one net, its variable store and one of libtorch's optimizers (or our
//! L-BFGS), as the one-member case of the training loop ([`super::run`]).
use std::time::Instant;

use anyhow::Result;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor, nn};

use super::draws::Draws;
use super::run::{self, Members, Record, Replay};
use super::{
    Checkpoint, Observer, RunConfig, RunResult, Step, check_fits, check_holdout, checkpoint,
    cross_entropy, evaluate, optim, truncated_evaluation,
};
use crate::data::Tensors;
use crate::model::{Net, parameter_count};

/// One net and what trains it.
struct Solo<'a> {
    cfg: &'a RunConfig,
    net: Net,
    vs: nn::VarStore,
    /// The variables by name, sorted by name (the order of snapshots and checkpoints).
    named: Vec<(String, Tensor)>,
    opt: optim::Stepper,
    draws: Draws,
}

/// [`super::train`], resumed after the epoch of `resume` when given (the checkpoint's epochs
/// are told to the observer again, then training goes on as if it had never stopped). The
/// observer is handed a [`Checkpoint`] after each epoch it asks for one
/// ([`Observer::wants_checkpoint`]).
pub fn train_from(
    cfg: &RunConfig,
    data: &Tensors,
    device: Device,
    observer: &mut dyn Observer,
    resume: Option<&Checkpoint>,
) -> Result<RunResult> {
    cfg.validate()?;
    check_holdout(cfg, data)?;
    check_fits(cfg, data.shape, data.classes, device)?;
    crate::device::warn_if_bf16_is_slow(device, cfg.precision);
    let started = Instant::now();
    let vs = nn::VarStore::new(device);
    let net = Net::new(
        &vs.root(),
        cfg.architecture(data.shape, data.classes),
        cfg.seed,
    )?
    .with_precision(cfg.precision);
    let params = parameter_count(&vs);
    let opt = optim::build(cfg, &vs)?;
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut solo = Solo {
        cfg,
        net,
        named,
        opt,
        draws: Draws::new(cfg),
        vs,
    };
    observer.start(&solo.vs)?;
    let mut results = run::run(
        &mut solo,
        std::slice::from_ref(cfg),
        (data, params, device),
        &mut [observer],
        &[resume],
        started,
    )?;
    Ok(results.remove(0))
}

impl Members for Solo<'_> {
    /// The training images and labels in the epoch's order: one gather per epoch, and the
    /// batches are views (no per-step copy).
    type Inputs = (Tensor, Tensor);

    fn order_streams(&mut self) -> &mut [ChaCha8Rng] {
        std::slice::from_mut(&mut self.draws.order)
    }

    fn set_rate(&mut self, _m: usize, lr: f64) {
        self.opt.set_lr(lr);
    }

    fn inputs(&self, data: &Tensors, orders: &[Tensor]) -> (Tensor, Tensor) {
        let order = orders[0].to_device(data.train_x.device());
        (
            data.train_x.index_select(0, &order),
            data.train_y.index_select(0, &order),
        )
    }

    fn batch(&mut self, (xs, ys): &(Tensor, Tensor), start: i64, len: i64) -> (Tensor, Tensor) {
        let x = xs.narrow(0, start, len);
        let x = match &mut self.draws.augment {
            Some(a) => a.apply(&x),
            None => x,
        };
        (x, ys.narrow(0, start, len))
    }

    fn step(&mut self, x: &Tensor, y: &Tensor) -> Tensor {
        let net = &self.net;
        self.opt
            .step(&mut || cross_entropy(&net.forward(x, true), y))
            .reshape([1])
    }

    fn observe_step(
        &self,
        observers: &mut [&mut dyn Observer],
        losses: &Tensor,
        running: Option<&[f64]>,
    ) {
        observers[0].step(&Step {
            loss: &losses.squeeze_dim(0),
            running_loss: running.map(|r| r[0]),
            vars: &self.vs,
        });
    }

    /// Nothing to do: the loop trains no further epoch of a run that trains alone.
    fn freeze(&mut self, _m: usize) {}

    fn evaluate(&self, x: &Tensor, y: &Tensor) -> Vec<(f64, f64)> {
        vec![evaluate(&self.net, x, y)]
    }

    fn variables(&self, _m: usize) -> Vec<Tensor> {
        self.named.iter().map(|(_, t)| t.shallow_clone()).collect()
    }

    fn trained(&self, _m: usize) -> Vec<(String, Tensor)> {
        self.named
            .iter()
            .map(|(name, t)| (name.clone(), t.shallow_clone()))
            .collect()
    }

    fn truncated(&self, _m: usize, data: &Tensors, batch_size: usize) -> Result<(f64, f64)> {
        truncated_evaluation(&self.net, data, batch_size)
    }

    fn checkpoint(&self, _m: usize, record: &Record) -> Result<Checkpoint> {
        checkpoint::Solo {
            cfg: self.cfg,
            result: record.result,
            elapsed: record.elapsed,
            variables: &self.named,
            best: record.best,
            opt: &self.opt,
            draws: &self.draws,
        }
        .capture()
    }

    fn resume(&mut self, resumes: &[Option<&Checkpoint>]) -> Result<Option<Vec<Replay>>> {
        let Some(checkpoint) = resumes[0] else {
            return Ok(None);
        };
        let replay = checkpoint::restore(
            checkpoint,
            self.cfg,
            &self.named,
            &mut self.opt,
            &mut self.draws,
        )?;
        Ok(Some(vec![replay]))
    }
}
