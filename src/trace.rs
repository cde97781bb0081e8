//! A training trace: everything `bench/reference.py replay` needs to train the same run in plain
//! PyTorch and compare the two step by step — the normalised data (with the held-out split, when
//! the run has one), the initial variables, every epoch's example order (`trace.npz`) — and what this run did with them: each step's loss and
//! checksums of every variable after the update, per epoch and final metrics (`trace.json`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::data::Tensors;
use crate::train::{Observer, RunResult, Step};

pub const ARRAYS_FILE: &str = "trace.npz";
pub const STEPS_FILE: &str = "trace.json";

/// One optimisation step: its minibatch loss and, per variable (by its name in the var store,
/// e.g. `units.weight`), the sum and the Euclidean norm of its values after the update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub epoch: usize,
    /// 0-based within the epoch.
    pub step: usize,
    pub loss: f64,
    pub checksums: BTreeMap<String, [f64; 2]>,
}

/// The `trace.json` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceFile {
    pub result: RunResult,
    pub steps: Vec<StepRecord>,
}

/// Records a run while it trains; [`Trace::finish`] writes the files.
pub struct Trace {
    dir: PathBuf,
    arrays: Vec<(String, Tensor)>,
    steps: Vec<StepRecord>,
    epoch: usize,
    step_in_epoch: usize,
}

impl Trace {
    /// Creates `dir` (so that an unwritable place fails before any training) and records the data.
    pub fn new(dir: &Path, data: &Tensors) -> Result<Trace> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the trace folder {}", dir.display()))?;
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"")
            .with_context(|| format!("cannot write into the trace folder {}", dir.display()))?;
        std::fs::remove_file(&probe).ok();
        let cpu = |t: &Tensor| t.to_device(Device::Cpu);
        let mut arrays = vec![
            ("train_x".to_owned(), cpu(&data.train_x)),
            ("train_y".to_owned(), cpu(&data.train_y)),
            ("val_x".to_owned(), cpu(&data.val_x)),
            ("val_y".to_owned(), cpu(&data.val_y)),
        ];
        if let Some((x, y)) = &data.holdout {
            arrays.push(("holdout_x".to_owned(), cpu(x)));
            arrays.push(("holdout_y".to_owned(), cpu(y)));
        }
        Ok(Trace {
            dir: dir.to_path_buf(),
            arrays,
            steps: Vec::new(),
            epoch: 0,
            step_in_epoch: 0,
        })
    }

    /// Writes `trace.npz` and `trace.json` into the folder.
    pub fn finish(self, result: &RunResult) -> Result<()> {
        let npz = self.dir.join(ARRAYS_FILE);
        Tensor::write_npz(&self.arrays, &npz)
            .with_context(|| format!("cannot write {}", npz.display()))?;
        let json = self.dir.join(STEPS_FILE);
        let doc = TraceFile {
            result: result.clone(),
            steps: self.steps,
        };
        std::fs::write(&json, serde_json::to_vec(&doc)?)
            .with_context(|| format!("cannot write {}", json.display()))
    }
}

/// Sum and norm of every variable, in f64.
fn checksums(vars: &nn::VarStore) -> BTreeMap<String, [f64; 2]> {
    vars.variables()
        .into_iter()
        .map(|(name, t)| {
            let t = t.detach().to_kind(Kind::Double);
            let sum = t.sum(Kind::Double).double_value(&[]);
            let norm = t.norm().double_value(&[]);
            (name, [sum, norm])
        })
        .collect()
}

impl Observer for Trace {
    fn start(&mut self, vars: &nn::VarStore) -> Result<()> {
        let mut initial: Vec<(String, Tensor)> = vars
            .variables()
            .into_iter()
            // A copy: on the CPU `to_device` would share the storage that training updates in place.
            .map(|(name, t)| {
                (
                    format!("init.{name}"),
                    t.detach().to_device(Device::Cpu).copy(),
                )
            })
            .collect();
        initial.sort_by(|a, b| a.0.cmp(&b.0));
        self.arrays.extend(initial);
        Ok(())
    }

    fn start_epoch(&mut self, epoch: usize, _steps: usize, order: &Tensor) {
        self.epoch = epoch;
        self.step_in_epoch = 0;
        self.arrays
            .push((format!("order.{epoch}"), order.to_device(Device::Cpu)));
    }

    fn step(&mut self, step: &Step) {
        self.steps.push(StepRecord {
            epoch: self.epoch,
            step: self.step_in_epoch,
            loss: step.loss.double_value(&[]),
            checksums: checksums(step.vars),
        });
        self.step_in_epoch += 1;
    }
}
