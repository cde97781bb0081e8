//! Several runs trained together as one fused array ([`FusedNet`]): runs that differ only in
//! learning rate and seed. Each member keeps what it has alone — its initial weights, its data
//! order, its learning rate and Adam state — and ends with its own [`RunResult`], as if trained
//! alone. The loss is the sum of the members' mean losses, so each member's gradient is exactly
//! its own. A member whose loss stops being finite is recorded diverged in that epoch and frozen
//! (weights, state and learning rate zeroed) while the others go on. The array is trained by the
//! loop every run goes through ([`super::run`]).
use std::time::Instant;

use anyhow::{Result, ensure};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Reduction, Tensor};

use super::adam::MemberAdam;
use super::checkpoint::member;
use super::draws;
use super::run::{self, Members, Record, Replay};
use super::{
    Checkpoint, EVAL_BATCH, Observer, RunConfig, RunResult, check_fits_within, memory_to_check,
    train_from, truncated_evaluation,
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
        cfgs,
        adam: MemberAdam::new(&net, &lrs),
        net,
        rngs: seeds.iter().map(|&s| draws::order_stream(s)).collect(),
    };
    let resumes: Vec<Option<&Checkpoint>> = resumes.iter().map(Option::as_ref).collect();
    run::run(
        &mut array,
        cfgs,
        (data, arch.parameter_count(), device),
        observers,
        &resumes,
        started,
    )
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

/// The fused net, its optimizer and each member's shuffling stream.
struct Array<'a> {
    cfgs: &'a [RunConfig],
    net: FusedNet,
    adam: MemberAdam,
    rngs: Vec<ChaCha8Rng>,
}

impl Members for Array<'_> {
    /// Every member's order of the training examples, `[M, N]` on the training device, and the
    /// training images and labels: each step gathers its batch (gathering whole epochs would
    /// hold M copies of the training set).
    type Inputs = [Tensor; 3];

    fn order_streams(&mut self) -> &mut [ChaCha8Rng] {
        &mut self.rngs
    }

    fn set_rate(&mut self, m: usize, lr: f64) {
        self.adam.set_lr(m, lr);
    }

    fn inputs(&self, data: &Tensors, orders: &[Tensor]) -> [Tensor; 3] {
        [
            Tensor::stack(orders, 0).to_device(data.train_x.device()),
            data.train_x.shallow_clone(),
            data.train_y.shallow_clone(),
        ]
    }

    fn batch(&mut self, [orders, xs, ys]: &[Tensor; 3], start: i64, len: i64) -> (Tensor, Tensor) {
        let members = self.cfgs.len() as i64;
        let idx = orders.narrow(1, start, len).reshape([-1]);
        let mut shape = vec![members, len];
        shape.extend_from_slice(&xs.size()[1..]);
        let x = FusedNet::interleave(&xs.index_select(0, &idx).view(&shape[..]));
        (x, ys.index_select(0, &idx).view([members, len]))
    }

    fn step(&mut self, x: &Tensor, y: &Tensor) -> Tensor {
        self::step(&self.net, &mut self.adam, x, y)
    }

    /// Its weights, Adam state and learning rate zeroed (its slice then computes finite zeros,
    /// whatever NaN it held, and never changes again) and its statistics reset.
    fn freeze(&mut self, m: usize) {
        self.adam.freeze(m);
        self.net.reset_statistics(m);
    }

    fn evaluate(&self, x: &Tensor, y: &Tensor) -> Vec<(f64, f64)> {
        let members = self.cfgs.len() as i64;
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

    fn variables(&self, m: usize) -> Vec<Tensor> {
        self.net.member_slices(m)
    }

    fn trained(&self, m: usize) -> Vec<(String, Tensor)> {
        self.net.member_state(m)
    }

    fn truncated(&self, m: usize, data: &Tensors, batch_size: usize) -> Result<(f64, f64)> {
        truncated_evaluation(&self.net.member_net(m), data, batch_size)
    }

    fn checkpoint(&self, m: usize, record: &Record) -> Result<Checkpoint> {
        member::Member {
            cfgs: self.cfgs,
            index: m,
            result: record.result,
            elapsed: record.elapsed,
            slices: self.net.member_slices(m),
            best: record.best.map(|s| s.copies().collect()),
            adam: self.adam.member_state(m),
            order: &self.rngs[m],
            alive: record.alive,
        }
        .capture()
    }

    /// Every member resumes from its checkpoint when each has one of this group, after one
    /// epoch; otherwise (told why) all start afresh.
    fn resume(&mut self, resumes: &[Option<&Checkpoint>]) -> Result<Option<Vec<Replay>>> {
        if !self.resumable(resumes) {
            return Ok(None);
        }
        let mut replays = Vec::with_capacity(resumes.len());
        for (m, checkpoint) in resumes.iter().flatten().enumerate() {
            let slices = self.net.member_slices(m);
            let (moments, _) = self.adam.member_state(m);
            let (replay, steps) = member::restore(
                checkpoint,
                self.cfgs,
                m,
                (&slices, &moments),
                &mut self.rngs[m],
            )?;
            self.adam.set_steps(steps);
            if !replay.alive {
                // Its frozen weights and statistics came back with its slices.
                self.adam.set_lr(m, 0.0);
            }
            replays.push(replay);
        }
        Ok(Some(replays))
    }
}

impl Array<'_> {
    /// Whether every member has a checkpoint of this group, all after one epoch (told why not).
    fn resumable(&self, resumes: &[Option<&Checkpoint>]) -> bool {
        if resumes.iter().all(Option::is_none) {
            return false;
        }
        let epoch = resumes[0].map(Checkpoint::epoch);
        let why = resumes.iter().enumerate().find_map(|(m, c)| match c {
            None => Some(format!("member {m} has none")),
            Some(c) if Some(c.epoch()) != epoch => {
                Some("its members' checkpoints are of different epochs".into())
            }
            Some(c) => member::check(c, self.cfgs, m)
                .err()
                .map(|e| format!("member {m}'s is refused: {e:#}")),
        });
        if let Some(why) = &why {
            tracing::warn!("a fused group trains from its first epoch: {why}");
        }
        why.is_none()
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
