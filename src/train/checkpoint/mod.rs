//! A run's state at the end of an epoch, from which it goes on as if it had never stopped: the
//! variables (weights and batch-norm statistics), the optimizer's state, the best held-out
//! epoch's weights, the positions of the shuffling and augmentation streams, and the epochs so
//! far (from which the schedule and the stopping rule are replayed). One safetensors file: the
//! tensors exact in their own dtypes, the rest as JSON in its metadata.
//!
//! A checkpoint is refused — never resumed wrongly — when it is not whole, was written for
//! other settings, or by other training code ([`CODE`]: a resumed run is bit-identical to an
//! uninterrupted one only on the code that wrote it).
use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::draws::Draws;
use super::run::Replay;
use super::stopping::Snapshot;
use super::{EpochMetrics, RunConfig, RunResult, optim::Stepper};
use crate::model::tensor_file;

pub(super) mod member;

/// The `format` entry of a checkpoint's metadata.
pub const FORMAT: &str = "shallow-checkpoint/1";

/// The training code a checkpoint belongs to: this crate's version and a hash of the sources
/// that decide how a run trains (see `build.rs`).
pub const CODE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "+",
    env!("SHALLOW_TRAINING_CODE")
);

/// A run's state after an epoch, as the bytes it is stored as.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    epoch: usize,
    bytes: Vec<u8>,
}

/// What the metadata's `state` entry holds (numbers whose bits matter are tensors: JSON's
/// decimal floats may not read back to the same bits).
#[derive(Serialize, Deserialize)]
struct State {
    epoch: usize,
    /// Wall seconds the run had taken before this checkpoint.
    elapsed: f64,
    /// Positions of the shuffling and augmentation streams (u128, as text).
    order: String,
    augment: Option<String>,
    /// For a member of a fused group: its place, whether it still trains, and the epoch it
    /// diverged in (the group's settings are the metadata's `group` entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    member: Option<MemberState>,
}

#[derive(Serialize, Deserialize)]
struct MemberState {
    index: usize,
    alive: bool,
    diverged_epoch: Option<usize>,
}

impl Checkpoint {
    /// The last epoch the checkpoint has trained.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Stored bytes read back; refused, saying why, when they are not a whole checkpoint or
    /// were written by other training code.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Checkpoint> {
        let meta = metadata(&bytes)?;
        let entry = |key: &str| meta.get(key).with_context(|| format!("no '{key}' entry"));
        let format = entry("format")?;
        ensure!(format == FORMAT, "a '{format}' file, not a '{FORMAT}'");
        let code = entry("code")?;
        ensure!(
            code == CODE,
            "written by training code {code}, and this is {CODE}: it would not resume bit for bit"
        );
        let state: State = serde_json::from_str(entry("state")?).context("unreadable state")?;
        Ok(Checkpoint {
            epoch: state.epoch,
            bytes,
        })
    }
}

/// A solo run's state, as its training loop holds it.
pub(super) struct Solo<'a> {
    pub cfg: &'a RunConfig,
    pub result: &'a RunResult,
    pub elapsed: f64,
    /// The net's variables by name, in the order of the best epoch's snapshot.
    pub variables: &'a [(String, Tensor)],
    pub best: Option<&'a Snapshot>,
    pub opt: &'a Stepper,
    pub draws: &'a Draws,
}

impl Solo<'_> {
    /// The checkpoint after the last epoch of `result`.
    pub fn capture(&self) -> Result<Checkpoint> {
        let epoch = self.result.epochs.last().map_or(0, |m| m.epoch);
        let mut tensors: Vec<(String, Tensor)> = self
            .variables
            .iter()
            .map(|(name, t)| (format!("var.{name}"), t.shallow_clone()))
            .collect();
        if let Some(best) = self.best {
            let names = self.variables.iter().map(|(name, _)| name);
            tensors.extend(
                names
                    .zip(best.copies())
                    .map(|(n, t)| (format!("best.{n}"), t)),
            );
        }
        let opt = self.opt.state()?.into_iter();
        tensors.extend(opt.map(|(name, t)| (format!("opt.{name}"), t)));
        tensors.push(("epochs".to_owned(), epoch_table(&self.result.epochs)));
        let state = State {
            epoch,
            elapsed: self.elapsed,
            order: self.draws.order.get_word_pos().to_string(),
            augment: self
                .draws
                .augment
                .as_ref()
                .map(|a| a.position().to_string()),
            member: None,
        };
        let meta = HashMap::from([
            ("format".to_owned(), FORMAT.to_owned()),
            ("code".to_owned(), CODE.to_owned()),
            ("settings".to_owned(), serde_json::to_string(self.cfg)?),
            ("state".to_owned(), serde_json::to_string(&state)?),
        ]);
        Ok(Checkpoint {
            epoch,
            bytes: tensor_file::encode(&tensors, meta)?,
        })
    }
}

/// Puts the state of `checkpoint` into a solo run of `cfg` about to train: its variables,
/// optimizer and streams; returns the rest. A checkpoint of other settings, or whose tensors
/// do not fit, is refused.
pub(super) fn restore(
    checkpoint: &Checkpoint,
    cfg: &RunConfig,
    variables: &[(String, Tensor)],
    opt: &mut Stepper,
    draws: &mut Draws,
) -> Result<Replay> {
    let (meta, mut tensors) = tensor_file::decode(&checkpoint.bytes)?;
    let state: State = serde_json::from_str(meta.get("state").context("no state")?)?;
    ensure!(
        meta.get("settings") == Some(&serde_json::to_string(cfg)?),
        "the checkpoint was written for other settings"
    );
    ensure!(
        state.member.is_none(),
        "the checkpoint is of a member of a fused group, which resumes only in its group"
    );
    let epochs = epochs_of(&tensors.remove("epochs").context("no epochs")?, cfg)?;
    let mut take = |name: String| {
        tensors
            .remove(&name)
            .with_context(|| format!("tensor {name} missing"))
    };
    let mut best = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (name, var) in variables {
            let saved = take(format!("var.{name}"))?;
            ensure!(
                saved.size() == var.size(),
                "tensor var.{name} has another shape"
            );
            var.shallow_clone().copy_(&saved);
            if let Ok(copy) = take(format!("best.{name}")) {
                best.push(copy.to_device(var.device()));
            }
        }
        Ok(())
    })?;
    ensure!(
        best.is_empty() || best.len() == variables.len(),
        "the best epoch's weights are incomplete"
    );
    let mut opt_state: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(name, t)| Some((name.strip_prefix("opt.")?.to_owned(), t)))
        .collect();
    opt.restore(&mut opt_state)?;
    draws.order.set_word_pos(position(&state.order)?);
    match (&mut draws.augment, &state.augment) {
        (Some(a), Some(p)) => a.seek(position(p)?),
        (None, None) => {}
        _ => bail!("the checkpoint's augmentation does not match the run's"),
    }
    let vars: Vec<Tensor> = variables.iter().map(|(_, t)| t.shallow_clone()).collect();
    Ok(Replay {
        epochs,
        elapsed: state.elapsed,
        best: (!best.is_empty()).then(|| Snapshot::of(&vars, best)),
        alive: true,
        diverged_epoch: None,
    })
}

/// The metadata of checkpoint `bytes` (the tensors not read); an error if they are not whole.
fn metadata(bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("not a whole checkpoint: {e:?}"))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

fn position(text: &str) -> Result<u128> {
    text.parse()
        .with_context(|| format!("stream position {text:?}"))
}

/// The columns of a checkpoint's `epochs` table (f64, one row per epoch; held-out columns NaN
/// without a held-out split).
const EPOCH_COLUMNS: usize = 8;

fn epoch_table(epochs: &[EpochMetrics]) -> Tensor {
    let values: Vec<f64> = epochs
        .iter()
        .flat_map(|m| {
            [
                m.epoch as f64,
                m.train_loss,
                m.val_loss,
                m.val_acc,
                m.holdout_loss.unwrap_or(f64::NAN),
                m.holdout_acc.unwrap_or(f64::NAN),
                m.seconds,
                m.images_per_second,
            ]
        })
        .collect();
    Tensor::from_slice(&values).view([epochs.len() as i64, EPOCH_COLUMNS as i64])
}

fn epochs_of(table: &Tensor, cfg: &RunConfig) -> Result<Vec<EpochMetrics>> {
    let values = Vec::<f64>::try_from(table.flatten(0, -1))?;
    let held = cfg.holdout.is_some();
    values
        .chunks(EPOCH_COLUMNS)
        .enumerate()
        .map(|(i, row)| {
            ensure!(
                row.len() == EPOCH_COLUMNS && row[0] == (i + 1) as f64,
                "the checkpoint's epochs are not 1, 2, …"
            );
            Ok(EpochMetrics {
                epoch: i + 1,
                train_loss: row[1],
                val_loss: row[2],
                val_acc: row[3],
                holdout_loss: held.then_some(row[4]),
                holdout_acc: held.then_some(row[5]),
                seconds: row[6],
                images_per_second: row[7],
            })
        })
        .collect()
}
