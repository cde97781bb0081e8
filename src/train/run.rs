//! The one training loop every run goes through: alone (one member, [`super::solo`]) or fused
//! with others into one array ([`super::fused`]). What differs between the two — how a batch is
//! gathered, how a step updates, how a member is evaluated, frozen and checkpointed — is a
//! [`Members`] implementation; the loop keeps each member's records (its result, stopping rule,
//! schedule and best weights) and decides, per member, when it diverged, stops or is
//! checkpointed, in one place.
use std::time::Instant;

use anyhow::Result;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::optim::LrSchedule;
use super::stopping::{Monitor, Snapshot};
use super::{
    CHECK_EVERY, Checkpoint, EpochMetrics, Observer, Outcome, RunConfig, RunResult, Stopped,
    shuffled_indices,
};
use crate::data::Tensors;

/// What the loop trains: `M` runs that take every step together (one, alone).
pub(super) trait Members {
    /// What an epoch's batches are cut from (its examples gathered in the members' orders).
    type Inputs;

    /// Each member's shuffling stream, drawn once per epoch.
    fn order_streams(&mut self) -> &mut [ChaCha8Rng];
    /// Member `m`'s learning rate for the coming epoch.
    fn set_rate(&mut self, m: usize, lr: f64);
    /// The epoch's inputs, from every member's order of the training examples.
    fn inputs(&self, data: &Tensors, orders: &[Tensor]) -> Self::Inputs;
    /// Every member's batch of `len` examples from position `start` of its order: images and
    /// labels as [`Members::step`] takes them.
    fn batch(&mut self, inputs: &Self::Inputs, start: i64, len: i64) -> (Tensor, Tensor);
    /// One optimisation step of every member; the members' losses `[M]` before the update.
    fn step(&mut self, x: &Tensor, y: &Tensor) -> Tensor;
    /// Tells the observers of a step (members without variables of their own are not told).
    fn observe_step(
        &self,
        _observers: &mut [&mut dyn Observer],
        _losses: &Tensor,
        _running: Option<&[f64]>,
    ) {
    }
    /// Member `m` trains no more (diverged or stopped); the others go on.
    fn freeze(&mut self, m: usize);
    /// Each member's mean loss and accuracy on `x`, `y` in eval mode, without gradients.
    fn evaluate(&self, x: &Tensor, y: &Tensor) -> Vec<(f64, f64)>;
    /// Member `m`'s variables and batch-norm statistics, as its best epoch's snapshot holds them.
    fn variables(&self, m: usize) -> Vec<Tensor>;
    /// Member `m`'s trained variables and statistics by name ([`Observer::trained`]).
    fn trained(&self, m: usize) -> Vec<(String, Tensor)>;
    /// Member `m`'s units rearranged ([`super::truncated_evaluation`]).
    fn truncated(&self, m: usize, data: &Tensors, batch_size: usize) -> Result<(f64, f64)>;
    /// Member `m`'s checkpoint after the last epoch of `record`.
    fn checkpoint(&self, m: usize, record: &Record) -> Result<Checkpoint>;
    /// Puts the members' checkpoints into the members; what each takes back besides (one
    /// [`Replay`] per member), or `None` when they train from their first epoch.
    fn resume(&mut self, resumes: &[Option<&Checkpoint>]) -> Result<Option<Vec<Replay>>>;
}

/// A member's records, as its checkpoint takes them.
pub(super) struct Record<'a> {
    pub result: &'a RunResult,
    /// Wall seconds of the run so far, earlier attempts included.
    pub elapsed: f64,
    pub best: Option<&'a Snapshot>,
    pub alive: bool,
}

/// What a member resumed from its checkpoint takes back besides its state.
pub(super) struct Replay {
    /// The epochs trained so far.
    pub epochs: Vec<EpochMetrics>,
    pub elapsed: f64,
    pub best: Option<Snapshot>,
    pub alive: bool,
    pub diverged_epoch: Option<usize>,
}

/// One member's records beside the array.
struct Run {
    result: RunResult,
    schedule: LrSchedule,
    monitor: Monitor,
    best: Option<Snapshot>,
    alive: bool,
}

/// Trains `members` (run `cfgs[m]` each, all with the first's epochs and batch size) on `data`,
/// resumed from `resumes` where [`Members::resume`] takes them; `observers[m]` is told member
/// m's progress and any of them can stop all. `started`: when the run began (setup included).
pub(super) fn run<M: Members>(
    members: &mut M,
    cfgs: &[RunConfig],
    (data, params, device): (&Tensors, usize, tch::Device),
    observers: &mut [&mut dyn Observer],
    resumes: &[Option<&Checkpoint>],
    started: Instant,
) -> Result<Vec<RunResult>> {
    let first = &cfgs[0];
    let mut runs: Vec<Run> = cfgs
        .iter()
        .map(|cfg| Run {
            result: RunResult::begin(cfg, params, data, device),
            schedule: LrSchedule::new(cfg),
            monitor: Monitor::new(cfg),
            best: None,
            alive: true,
        })
        .collect();
    let mut before = 0.0;
    let mut done = 0;
    if let Some(replays) = members.resume(resumes)? {
        for ((run, replay), observer) in runs.iter_mut().zip(replays).zip(observers.iter_mut()) {
            before = f64::max(before, replay.elapsed);
            done = done.max(replay.epochs.last().map_or(0, |m| m.epoch));
            run.replay(replay, *observer)?;
        }
    }
    for epoch in done + 1..=first.epochs {
        if !runs.iter().any(|r| r.alive) {
            break;
        }
        for (m, run) in runs.iter().enumerate().filter(|(_, r)| r.alive) {
            members.set_rate(m, run.schedule.rate(epoch));
        }
        let alive: Vec<bool> = runs.iter().map(|r| r.alive).collect();
        let metrics = train_epoch(members, &alive, data, first.batch_size, epoch, observers)?;
        for (m, metrics) in metrics.into_iter().enumerate() {
            if alive[m] {
                runs[m].conclude_epoch(m, epoch, metrics, members, observers[m])?;
            }
        }
        if epoch < first.epochs && runs.iter().any(|r| r.alive) {
            let elapsed = before + started.elapsed().as_secs_f64();
            checkpoint(members, &runs, elapsed, epoch, observers)?;
        }
    }
    finish(members, &mut runs, data, first.batch_size, observers)?;
    Ok(runs
        .into_iter()
        .map(|mut run| {
            run.result.total_seconds = before + started.elapsed().as_secs_f64();
            run.result
        })
        .collect())
}

impl Run {
    /// Tells the observer the resumed epochs again and replays them into the records.
    fn replay(&mut self, replay: Replay, observer: &mut dyn Observer) -> Result<()> {
        self.best = replay.best;
        self.alive = replay.alive;
        for metrics in replay.epochs {
            observer.epoch(&metrics)?;
            let (epoch, holdout_loss) = (metrics.epoch, metrics.holdout_loss);
            if self.result.push_epoch(metrics) {
                self.schedule.observe(epoch, holdout_loss);
                if let Some(loss) = holdout_loss {
                    self.monitor.observe(epoch, loss);
                }
            }
        }
        if let Some(epoch) = replay.diverged_epoch {
            self.result.diverge(epoch);
        }
        Ok(())
    }

    /// Records member `m`'s `epoch` (`None`: it diverged during the epoch, and is frozen):
    /// freezes it when its losses are not finite or its stopping rule stops it, and keeps its
    /// weights when its held-out loss is the best so far.
    fn conclude_epoch(
        &mut self,
        m: usize,
        epoch: usize,
        metrics: Option<EpochMetrics>,
        members: &mut impl Members,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let Some(metrics) = metrics else {
            self.result.diverge(epoch);
            self.alive = false;
            return Ok(());
        };
        observer.epoch(&metrics)?;
        let holdout_loss = metrics.holdout_loss;
        if !self.result.push_epoch(metrics) {
            self.freeze(m, members);
            return Ok(());
        }
        self.schedule.observe(epoch, holdout_loss);
        if let Some(loss) = holdout_loss
            && self.monitor.observe(epoch, loss)
            && self.monitor.restores()
        {
            self.best = Some(Snapshot::take(&members.variables(m)));
        }
        if self.monitor.stopped() {
            // Its best weights come back from the snapshot before the final evaluation.
            self.freeze(m, members);
        }
        Ok(())
    }

    fn freeze(&mut self, m: usize, members: &mut impl Members) {
        self.alive = false;
        members.freeze(m);
    }
}

/// Hands every member's checkpoint to its observer when any of them asks for one (so that all
/// are of one epoch).
fn checkpoint(
    members: &impl Members,
    runs: &[Run],
    elapsed: f64,
    epoch: usize,
    observers: &mut [&mut dyn Observer],
) -> Result<()> {
    let mut due = false;
    for observer in observers.iter_mut() {
        due |= observer.wants_checkpoint(epoch);
    }
    if !due {
        return Ok(());
    }
    for (m, (run, observer)) in runs.iter().zip(observers.iter_mut()).enumerate() {
        let record = Record {
            result: &run.result,
            elapsed,
            best: run.best.as_ref(),
            alive: run.alive,
        };
        observer.checkpoint(&members.checkpoint(m, &record)?)?;
    }
    Ok(())
}

/// The final metrics of every member trained to the end, from its final weights (the best
/// held-out epoch's where its stopping rule keeps them).
fn finish(
    members: &impl Members,
    runs: &mut [Run],
    data: &Tensors,
    batch_size: usize,
    observers: &mut [&mut dyn Observer],
) -> Result<()> {
    let trained = |run: &Run| run.result.outcome == Outcome::Done;
    if !runs.iter().any(trained) {
        return Ok(());
    }
    for run in runs.iter().filter(|r| trained(r)) {
        if let Some(best) = &run.best {
            best.restore();
        }
    }
    let finals = members.evaluate(&data.train_x, &data.train_y);
    let tests = members.evaluate(&data.val_x, &data.val_y);
    for (m, run) in runs.iter_mut().enumerate().filter(|(_, r)| trained(r)) {
        observers[m].trained(&members.trained(m))?;
        run.result.conclude(finals[m], tests[m], &run.monitor);
        run.result
            .truncated(members.truncated(m, data, batch_size)?);
    }
    Ok(())
}

/// One pass of every member in `alive` over its own shuffled training set, then validation.
/// Per member: its metrics, or `None` if it was frozen before or its loss stopped being finite
/// during the pass (it is frozen at once; the pass ends early when no member is left). The
/// error [`Stopped`] if an observer asked to stop.
fn train_epoch(
    members: &mut impl Members,
    alive: &[bool],
    data: &Tensors,
    batch_size: usize,
    epoch: usize,
    observers: &mut [&mut dyn Observer],
) -> Result<Vec<Option<EpochMetrics>>> {
    let n = data.train_len();
    let steps = n.div_ceil(batch_size);
    let started = Instant::now();
    let orders: Vec<Tensor> = members
        .order_streams()
        .iter_mut()
        .map(|rng| shuffled_indices(n, rng))
        .collect();
    for (observer, order) in observers.iter_mut().zip(&orders) {
        observer.start_epoch(epoch, steps, order);
    }
    let inputs = members.inputs(data, &orders);
    let device = data.train_x.device();
    let mut loss_sums = Tensor::zeros([alive.len() as i64], (Kind::Float, device));
    let mut finite = alive.to_vec();
    for step in 0..steps {
        if observers.iter().any(|o| o.should_stop()) {
            return Err(Stopped.into());
        }
        let start = (step * batch_size) as i64;
        let len = batch_size.min(n - step * batch_size) as i64;
        let (x, y) = members.batch(&inputs, start, len);
        let losses = members.step(&x, &y);
        let _ = loss_sums.g_add_(&(losses.detach() * len as f64));
        let running = if step % CHECK_EVERY == CHECK_EVERY - 1 || step + 1 == steps {
            Some(Vec::<f64>::try_from(losses.to_kind(Kind::Double))?)
        } else {
            None
        };
        for (m, loss) in running.iter().flatten().enumerate() {
            if finite[m] && !loss.is_finite() {
                finite[m] = false;
                members.freeze(m);
            }
        }
        if !finite.contains(&true) {
            return Ok(vec![None; alive.len()]);
        }
        members.observe_step(observers, &losses, running.as_deref());
    }
    let seconds = started.elapsed().as_secs_f64();
    let val = members.evaluate(&data.val_x, &data.val_y);
    let holdout = data.holdout.as_ref().map(|(x, y)| members.evaluate(x, y));
    let sums = Vec::<f64>::try_from(loss_sums.to_kind(Kind::Double))?;
    Ok((0..alive.len())
        .map(|m| {
            finite[m].then(|| EpochMetrics {
                epoch,
                train_loss: sums[m] / n as f64,
                val_loss: val[m].0,
                val_acc: val[m].1,
                holdout_loss: holdout.as_ref().map(|h| h[m].0),
                holdout_acc: holdout.as_ref().map(|h| h[m].1),
                seconds,
                images_per_second: n as f64 / seconds,
            })
        })
        .collect())
}
