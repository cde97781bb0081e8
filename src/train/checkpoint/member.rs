//! The checkpoint of one member of a fused group ([`super::super::fused`]): its slices of the
//! array's variables and Adam moments, its best epoch's weights, its shuffling stream, whether
//! it still trains, and the group it belongs to — a member resumes only in the same group (the
//! same runs in the same order), where it goes on bit for bit.
use std::collections::HashMap;

use anyhow::{Context, Result, ensure};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use super::{
    CODE, Checkpoint, FORMAT, MemberState, State, epoch_table, epochs_of, metadata, position,
    tensor_file,
};
use crate::train::run::Replay;
use crate::train::stopping::Snapshot;
use crate::train::{RunConfig, RunResult};

/// Member `index`'s state in a fused array, as the training loop holds it.
pub(in crate::train) struct Member<'a> {
    pub cfgs: &'a [RunConfig],
    pub index: usize,
    pub result: &'a RunResult,
    pub elapsed: f64,
    /// Its slices of the array's variables and batch-norm statistics.
    pub slices: Vec<Tensor>,
    /// Copies of its best epoch's slices.
    pub best: Option<Vec<Tensor>>,
    /// Its Adam moments and the shared step count.
    pub adam: (Vec<Tensor>, i32),
    pub order: &'a ChaCha8Rng,
    pub alive: bool,
}

/// The `group` entry: every member's settings, in order.
fn group_of(cfgs: &[RunConfig]) -> Result<String> {
    let all: Vec<String> = cfgs
        .iter()
        .map(serde_json::to_string)
        .collect::<serde_json::Result<_>>()?;
    Ok(serde_json::to_string(&all)?)
}

impl Member<'_> {
    pub fn capture(&self) -> Result<Checkpoint> {
        let epoch = self.result.epochs.last().map_or(0, |m| m.epoch);
        let indexed = |prefix: &str, ts: &[Tensor]| -> Vec<(String, Tensor)> {
            ts.iter()
                .enumerate()
                .map(|(i, t)| (format!("{prefix}.{i}"), t.shallow_clone()))
                .collect()
        };
        let mut tensors = indexed("slice", &self.slices);
        tensors.extend(indexed("best", self.best.as_deref().unwrap_or_default()));
        tensors.extend(indexed("adam", &self.adam.0));
        tensors.push((
            "adam_steps".into(),
            Tensor::from_slice(&[i64::from(self.adam.1)]),
        ));
        tensors.push(("epochs".into(), epoch_table(&self.result.epochs)));
        let state = State {
            epoch,
            elapsed: self.elapsed,
            order: self.order.get_word_pos().to_string(),
            augment: None,
            member: Some(MemberState {
                index: self.index,
                alive: self.alive,
                diverged_epoch: self.result.diverged_epoch,
            }),
        };
        let meta = HashMap::from([
            ("format".to_owned(), FORMAT.to_owned()),
            ("code".to_owned(), CODE.to_owned()),
            (
                "settings".to_owned(),
                serde_json::to_string(&self.cfgs[self.index])?,
            ),
            ("group".to_owned(), group_of(self.cfgs)?),
            ("state".to_owned(), serde_json::to_string(&state)?),
        ]);
        Ok(Checkpoint {
            epoch,
            bytes: tensor_file::encode(&tensors, meta)?,
        })
    }
}

/// Whether `checkpoint` is that of member `index` of the group `cfgs` (reads its metadata only).
pub(in crate::train) fn check(
    checkpoint: &Checkpoint,
    cfgs: &[RunConfig],
    index: usize,
) -> Result<()> {
    let meta = metadata(&checkpoint.bytes)?;
    ensure!(
        meta.get("group") == Some(&group_of(cfgs)?),
        "it was written in another fused group (or alone)"
    );
    let state: State = serde_json::from_str(meta.get("state").context("no state")?)?;
    ensure!(
        state.member.is_some_and(|m| m.index == index),
        "it was written for another place in its group"
    );
    Ok(())
}

/// Puts member `index`'s [`check`]ed checkpoint into its `slices` and `moments` (views of the
/// array's) and its shuffling stream; returns the rest, and the Adam step count all members
/// share.
pub(in crate::train) fn restore(
    checkpoint: &Checkpoint,
    cfgs: &[RunConfig],
    index: usize,
    (slices, moments): (&[Tensor], &[Tensor]),
    order: &mut ChaCha8Rng,
) -> Result<(Replay, i32)> {
    check(checkpoint, cfgs, index)?;
    let (meta, mut tensors) = tensor_file::decode(&checkpoint.bytes)?;
    let state: State = serde_json::from_str(meta.get("state").context("no state")?)?;
    let member = state.member.context("not a member's checkpoint")?;
    let mut take = |prefix: &str, n: usize| -> Vec<Tensor> {
        (0..n)
            .map_while(|i| tensors.remove(&format!("{prefix}.{i}")))
            .collect()
    };
    let (saved, best, adam) = (
        take("slice", slices.len()),
        take("best", slices.len()),
        take("adam", moments.len()),
    );
    ensure!(
        saved.len() == slices.len() && adam.len() == moments.len(),
        "the member's tensors are incomplete"
    );
    ensure!(
        best.is_empty() || best.len() == slices.len(),
        "the best epoch's weights are incomplete"
    );
    tch::no_grad(|| -> Result<()> {
        for (to, from) in slices.iter().zip(&saved).chain(moments.iter().zip(&adam)) {
            ensure!(to.size() == from.size(), "a tensor has another shape");
            to.shallow_clone().copy_(from);
        }
        Ok(())
    })?;
    order.set_word_pos(position(&state.order)?);
    let steps = tensors.remove("adam_steps").context("no Adam step count")?;
    let device = slices.first().map_or(tch::Device::Cpu, Tensor::device);
    let best = (!best.is_empty()).then(|| {
        let copies = best.iter().map(|t| t.to_device(device)).collect();
        Snapshot::of(slices, copies)
    });
    let replay = Replay {
        epochs: epochs_of(
            &tensors.remove("epochs").context("no epochs")?,
            &cfgs[index],
        )?,
        elapsed: state.elapsed,
        best,
        alive: member.alive,
        diverged_epoch: member.diverged_epoch,
    };
    Ok((replay, i32::try_from(steps.int64_value(&[0]))?))
}
