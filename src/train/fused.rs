//! Several runs trained together as one fused array ([`FusedNet`]): runs that differ only in
//! learning rate and seed. Each member keeps what it has alone — its initial weights, its data
//! order, its learning rate and Adam state — and ends with its own [`RunResult`], as if trained
//! alone. The loss is the sum of the members' mean losses, so each member's gradient is exactly
//! its own. A member whose loss stops being finite is recorded diverged in that epoch and frozen
//! (weights, state and learning rate zeroed) while the others go on.
use std::time::Instant;

use anyhow::{Result, ensure};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Reduction, Tensor};

use super::Checkpoint;
use super::adam::MemberAdam;
use super::checkpoint::member;
use super::stopping::{Monitor, Snapshot};
use super::{
    CHECK_EVERY, EVAL_BATCH, EpochMetrics, Observer, Outcome, RunConfig, RunResult, SHUFFLE_STREAM,
    Stopped, check_fits_within, memory_to_check, shuffled_indices, train_from,
    truncated_evaluation,
};
use crate::data::Tensors;
use crate::model::fused::FusedNet;
use crate::model::{Architecture, Precision};

/// Trains `cfgs` (one run each, all of one [`RunConfig::fusion_group`]) together; `observers[m]`
/// is told member m's epoch orders and metrics, and any of them can stop the whole array. Fused
/// members get no per-step calls ([`Observer::start`], [`Observer::step`]): they have no variable
/// store of their own. One run is trained by [`train_from`], today's path. `resumes[m]` is the
/// checkpoint member m resumes from, if any.
pub fn train_fused(
    cfgs: &[RunConfig],
    data: &Tensors,
    device: Device,
    observers: &mut [&mut dyn Observer],
    resumes: &[Option<Checkpoint>],
) -> Result<Vec<RunResult>> {
    ensure!(
        !cfgs.is_empty() && cfgs.len() == observers.len() && cfgs.len() == resumes.len(),
        "fused training needs one observer and one checkpoint (or none) per run"
    );
    if let ([cfg], [observer], [resume]) = (cfgs, &mut *observers, resumes) {
        return Ok(vec![train_from(
            cfg,
            data,
            device,
            *observer,
            resume.as_ref(),
        )?]);
    }
    let first = &cfgs[0];
    for cfg in cfgs {
        cfg.validate()?;
        ensure!(
            cfg.fusion_group() == first.fusion_group(),
            "runs trained together may differ only in lr and seed"
        );
    }
    ensure!(
        first.fusable(),
        "runs trained together train with Adam at a constant rate, without weight decay or \
         augmentation"
    );
    super::check_holdout(first, data)?;
    check_members_fit(first, data, device, cfgs.len())?;
    crate::device::warn_if_bf16_is_slow(device, first.precision);
    let started = Instant::now();
    let arch = first.architecture(data.shape, data.classes);
    let seeds: Vec<u64> = cfgs.iter().map(|c| c.seed).collect();
    let lrs: Vec<f64> = cfgs.iter().map(|c| c.lr).collect();
    let net = FusedNet::new(arch, &seeds, device)?.with_precision(first.precision);
    let mut array = Array {
        adam: MemberAdam::new(&net, &lrs),
        net,
        rngs: seeds
            .iter()
            .map(|s| ChaCha8Rng::seed_from_u64(s ^ SHUFFLE_STREAM))
            .collect(),
        alive: vec![true; cfgs.len()],
    };
    let params = arch.parameter_count();
    let mut results: Vec<RunResult> = cfgs
        .iter()
        .map(|c| RunResult::begin(c, params, data, device))
        .collect();
    let mut monitors: Vec<Monitor> = cfgs.iter().map(Monitor::new).collect();
    let mut best: Vec<Option<Snapshot>> = cfgs.iter().map(|_| None).collect();
    let mut group = Group {
        cfgs,
        results: &mut results,
        monitors: &mut monitors,
        best: &mut best,
        before: 0.0,
    };
    let done = group.resume(&mut array, resumes, observers)?;
    let before = group.before;
    for epoch in done + 1..=first.epochs {
        if !array.alive.contains(&true) {
            break;
        }
        let trained = array.alive.clone();
        let metrics = array.epoch(data, first.batch_size, epoch, observers)?;
        for (m, metrics) in metrics.into_iter().enumerate() {
            if !trained[m] {
                continue;
            }
            let Some(metrics) = metrics else {
                results[m].diverge(epoch);
                continue;
            };
            observers[m].epoch(&metrics)?;
            let holdout_loss = metrics.holdout_loss;
            if !results[m].push_epoch(metrics) {
                array.freeze(m);
                continue;
            }
            let monitor = &mut monitors[m];
            if let Some(loss) = holdout_loss
                && monitor.observe(epoch, loss)
                && monitor.restores()
            {
                best[m] = Some(Snapshot::take(&array.net.member_slices(m)));
            }
            if monitor.stopped() {
                // Stopped members are frozen like diverged ones; their best weights come back
                // from the snapshot before the final evaluation.
                array.freeze(m);
            }
        }
        if epoch < first.epochs && array.alive.contains(&true) {
            let elapsed = before + started.elapsed().as_secs_f64();
            let group = Group {
                cfgs,
                results: &mut results,
                monitors: &mut monitors,
                best: &mut best,
                before: elapsed,
            };
            group.checkpoint(&array, epoch, observers)?;
        }
    }
    for snapshot in best.iter().flatten() {
        snapshot.restore();
    }
    let finals = array.evaluate(&data.train_x, &data.train_y);
    let tests = array.evaluate(&data.val_x, &data.val_y);
    for (m, result) in results.iter_mut().enumerate() {
        if result.outcome == Outcome::Done {
            observers[m].trained(&array.net.member_state(m))?;
            result.conclude(finals[m], tests[m], &monitors[m]);
            let member = array.net.member_net(m);
            result.truncated(truncated_evaluation(&member, data, first.batch_size)?);
        }
    }
    for result in &mut results {
        result.total_seconds = before + started.elapsed().as_secs_f64();
    }
    Ok(results)
}

/// The members' records beside the array: results, stopping rules and best weights.
struct Group<'a> {
    cfgs: &'a [RunConfig],
    results: &'a mut [RunResult],
    monitors: &'a mut [Monitor],
    best: &'a mut [Option<Snapshot>],
    /// Wall seconds of earlier attempts (resumed), or of the run so far (checkpointing).
    before: f64,
}

impl Group<'_> {
    /// Resumes every member from its checkpoint when each has one of this group, after one
    /// epoch; otherwise (told why) all start afresh. Returns the epochs already trained.
    fn resume(
        &mut self,
        array: &mut Array,
        resumes: &[Option<Checkpoint>],
        observers: &mut [&mut dyn Observer],
    ) -> Result<usize> {
        let Some(epoch) = self.resumable(resumes) else {
            return Ok(0);
        };
        for (m, checkpoint) in resumes.iter().flatten().enumerate() {
            let slices = array.net.member_slices(m);
            let (moments, _) = array.adam.member_state(m);
            let r = member::restore(
                checkpoint,
                self.cfgs,
                m,
                (&slices, &moments),
                &mut array.rngs[m],
            )?;
            array.adam.set_steps(r.adam_steps);
            self.before = self.before.max(r.elapsed);
            self.best[m] = r.best.map(|copies| Snapshot::of(&slices, copies));
            for metrics in r.epochs {
                observers[m].epoch(&metrics)?;
                let holdout_loss = metrics.holdout_loss;
                let epoch = metrics.epoch;
                if self.results[m].push_epoch(metrics)
                    && let Some(loss) = holdout_loss
                {
                    self.monitors[m].observe(epoch, loss);
                }
            }
            if let Some(e) = r.diverged_epoch {
                self.results[m].diverge(e);
            }
            if !r.alive {
                array.alive[m] = false;
                array.adam.stop(m);
            }
        }
        Ok(epoch)
    }

    /// The epoch every member's checkpoint is after, if all are of this group at one epoch.
    fn resumable(&self, resumes: &[Option<Checkpoint>]) -> Option<usize> {
        if resumes.iter().all(Option::is_none) {
            return None;
        }
        let why = resumes.iter().enumerate().find_map(|(m, c)| match c {
            None => Some(format!("member {m} has none")),
            Some(c) if c.epoch() != resumes[0].as_ref()?.epoch() => {
                Some("its members' checkpoints are of different epochs".into())
            }
            Some(c) => member::check(c, self.cfgs, m)
                .err()
                .map(|e| format!("member {m}'s is refused: {e:#}")),
        });
        match why {
            Some(why) => {
                tracing::warn!("a fused group trains from its first epoch: {why}");
                None
            }
            None => resumes[0].as_ref().map(Checkpoint::epoch),
        }
    }

    /// Hands every member's checkpoint to its observer, when any of them asks for one (so
    /// that all are of one epoch).
    fn checkpoint(
        &self,
        array: &Array,
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
        for (m, observer) in observers.iter_mut().enumerate() {
            let state = member::Member {
                cfgs: self.cfgs,
                index: m,
                result: &self.results[m],
                elapsed: self.before,
                slices: array.net.member_slices(m),
                best: self.best[m].as_ref().map(|s| s.copies().collect()),
                adam: array.adam.member_state(m),
                order: &array.rngs[m],
                alive: array.alive[m],
            };
            observer.checkpoint(&state.capture()?)?;
        }
        Ok(())
    }
}

/// Refuses, before any work, an array whose training step would not fit this machine's memory
/// (each member needs what it needs alone).
fn check_members_fit(cfg: &RunConfig, data: &Tensors, device: Device, m: usize) -> Result<()> {
    let available = memory_to_check(device).map(|have| have / m as u64);
    check_fits_within(cfg, data.shape, data.classes, available).map_err(|e| {
        e.context(format!(
            "{m} runs trained together need {m}× one run's memory; train fewer together (--fuse)"
        ))
    })
}

/// The fused net, its optimizer, each member's shuffling stream and whether it still trains.
struct Array {
    net: FusedNet,
    adam: MemberAdam,
    rngs: Vec<ChaCha8Rng>,
    alive: Vec<bool>,
}

impl Array {
    fn freeze(&mut self, m: usize) {
        self.alive[m] = false;
        self.adam.freeze(m);
        self.net.reset_statistics(m);
    }

    /// One pass of every member over its own shuffled training set, then validation. Per
    /// member: its metrics, or `None` if it was frozen before or its loss stopped being finite
    /// during the pass (it is frozen at once).
    fn epoch(
        &mut self,
        data: &Tensors,
        batch_size: usize,
        epoch: usize,
        observers: &mut [&mut dyn Observer],
    ) -> Result<Vec<Option<EpochMetrics>>> {
        let n = data.train_len();
        let steps = n.div_ceil(batch_size);
        let members = self.alive.len() as i64;
        let started = Instant::now();
        let orders: Vec<Tensor> = self
            .rngs
            .iter_mut()
            .map(|rng| shuffled_indices(n, rng))
            .collect();
        for (observer, order) in observers.iter_mut().zip(&orders) {
            observer.start_epoch(epoch, steps, order);
        }
        let device = data.train_x.device();
        let orders = Tensor::stack(&orders, 0).to_device(device);
        let item: Vec<i64> = data.train_x.size()[1..].to_vec();
        let mut loss_sums = Tensor::zeros([members], (Kind::Float, device));
        let mut finite = self.alive.clone();
        for step in 0..steps {
            if observers.iter().any(|o| o.should_stop()) {
                return Err(Stopped.into());
            }
            let start = (step * batch_size) as i64;
            let len = batch_size.min(n - step * batch_size) as i64;
            let idx = orders.narrow(1, start, len).reshape([-1]);
            let mut shape = vec![members, len];
            shape.extend_from_slice(&item);
            let x = FusedNet::interleave(&data.train_x.index_select(0, &idx).view(&shape[..]));
            let y = data.train_y.index_select(0, &idx).view([members, len]);
            let losses = self::step(&self.net, &mut self.adam, &x, &y);
            let _ = loss_sums.g_add_(&(losses.detach() * len as f64));
            if step % CHECK_EVERY == CHECK_EVERY - 1 || step + 1 == steps {
                let now = Vec::<f64>::try_from(losses.to_kind(Kind::Double))?;
                for (m, loss) in now.into_iter().enumerate() {
                    if finite[m] && !loss.is_finite() {
                        finite[m] = false;
                        self.freeze(m);
                    }
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let val = self.evaluate(&data.val_x, &data.val_y);
        let holdout = data.holdout.as_ref().map(|(x, y)| self.evaluate(x, y));
        let sums = Vec::<f64>::try_from(loss_sums.to_kind(Kind::Double))?;
        Ok((0..members as usize)
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

    /// Each member's mean loss and accuracy on `x`, `y` in eval mode, without gradients.
    fn evaluate(&self, x: &Tensor, y: &Tensor) -> Vec<(f64, f64)> {
        let members = self.alive.len() as i64;
        tch::no_grad(|| {
            let n = y.size()[0];
            let mut loss_sum = Tensor::zeros([members], (Kind::Double, x.device()));
            let mut correct = Tensor::zeros([members], (Kind::Int64, x.device()));
            for start in (0..n).step_by(EVAL_BATCH as usize) {
                let len = EVAL_BATCH.min(n - start);
                let xb = x.narrow(0, start, len).repeat([1, members, 1, 1]);
                let logits = self.net.forward(&xb, false);
                let yb = y
                    .narrow(0, start, len)
                    .unsqueeze(0)
                    .expand([members, len], true);
                let losses = member_losses(&logits, &yb, Reduction::Sum);
                let _ = loss_sum.g_add_(&losses.to_kind(Kind::Double));
                let hits = logits.argmax(-1, false).eq_tensor(&yb);
                let _ = correct.g_add_(&hits.sum_dim_intlist(1, false, Kind::Int64));
            }
            let losses = Vec::<f64>::try_from(loss_sum).expect("f64 losses");
            let correct = Vec::<i64>::try_from(correct).expect("i64 counts");
            losses
                .into_iter()
                .zip(correct)
                .map(|(l, c)| (l / n as f64, c as f64 / n as f64))
                .collect()
        })
    }
}

/// One optimisation step of every member on its own batch (`x` `[N, M·C, H, W]` as
/// [`FusedNet::interleave`] makes it, `y` `[M, N]`); returns the members' losses `[M]` before
/// the update.
pub fn step(net: &FusedNet, adam: &mut MemberAdam, x: &Tensor, y: &Tensor) -> Tensor {
    let losses = member_losses(&net.forward(x, true), y, Reduction::Mean);
    adam.zero_grad();
    losses.sum(Kind::Float).backward();
    adam.step();
    losses
}

/// A training step of `members` nets of `arch` fused into one array (seeds 0…M−1, lr 1e-3), each
/// on a fixed synthetic batch of `batch` images: for timing (the benchmark, sweep estimates).
pub fn synthetic_step(
    arch: Architecture,
    members: usize,
    batch: usize,
    device: Device,
    precision: Precision,
) -> Result<impl FnMut()> {
    let seeds: Vec<u64> = (0..members as u64).collect();
    let net = FusedNet::new(arch, &seeds, device)?.with_precision(precision);
    let mut adam = MemberAdam::new(&net, &vec![1e-3; members]);
    let [c, h, w] = arch.input.map(|d| d as i64);
    let (m, b) = (members as i64, batch as i64);
    let x = FusedNet::interleave(&Tensor::randn([m, b, c, h, w], (Kind::Float, device)));
    let y = Tensor::randint(arch.classes as i64, [m, b], (Kind::Int64, device));
    Ok(move || {
        let _ = step(&net, &mut adam, &x, &y);
    })
}

/// Each member's cross-entropy `[M]` (mean or sum over its examples) from logits `[M, N, K]`
/// and targets `[M, N]`.
fn member_losses(logits: &Tensor, targets: &Tensor, reduction: Reduction) -> Tensor {
    let [m, n, k] = logits.size()[..] else {
        unreachable!("fused logits are [M, N, K]")
    };
    let each = logits
        .reshape([m * n, k])
        .cross_entropy_loss::<Tensor>(&targets.reshape([m * n]), None, Reduction::None, -100, 0.0)
        .view([m, n]);
    match reduction {
        Reduction::Sum => each.sum_dim_intlist(1, false, None::<Kind>),
        _ => each.mean_dim(1, false, None::<Kind>),
    }
}
