//! Checkpoints: a run resumed from any epoch's checkpoint goes on bit for bit as the run that
//! never stopped (every optimizer, the schedule, the stopping rule and its best weights, the
//! augmentation), and a checkpoint that is not whole, or is of other settings or code, is
//! refused.
use crate::common;

use common::{real_data, run_config};
use shallow::data::{self, Holdout, Tensors};
use shallow::model::{Layout, Pool};
use shallow::train::augment::Augment;
use shallow::train::optim::{Optimizer, Schedule};
use shallow::train::stopping::StopRule;
use shallow::train::{self, Checkpoint, Observer, RunConfig, RunResult};
use tch::Device;

/// Keeps every checkpoint it is offered.
#[derive(Default)]
struct Keep(Vec<Checkpoint>);

impl Observer for Keep {
    fn wants_checkpoint(&mut self, _epoch: usize) -> bool {
        true
    }
    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        self.0.push(checkpoint.clone());
        Ok(())
    }
}

/// A small MNIST net with a held-out split, the plateau rule (its best weights restored) and
/// the plateau schedule.
fn config(layout: Layout, edit: impl FnOnce(&mut RunConfig)) -> RunConfig {
    let mut cfg = RunConfig {
        layers: 2,
        filters: 4,
        pool: Pool::Max2,
        batchnorm: true,
        epochs: 5,
        train_limit: Some(600),
        val_limit: Some(200),
        holdout: Some(Holdout::Count(200)),
        stop: StopRule::Plateau,
        patience: 3,
        min_delta: 0.0,
        schedule: Schedule::Plateau,
        lr_patience: 0,
        lr_factor: 0.5,
        ..run_config(data::MNIST, layout)
    };
    edit(&mut cfg);
    cfg
}

fn tensors(cfg: &RunConfig) -> Tensors {
    let raw = data::load(&real_data(), data::MNIST).unwrap();
    data::prepare(&raw, &cfg.selection(), Device::Cpu).unwrap()
}

/// Everything a run records but its timings.
fn without_times(r: &RunResult) -> RunResult {
    let mut r = r.clone();
    for m in &mut r.epochs {
        (m.seconds, m.images_per_second) = (0.0, 0.0);
    }
    (r.train_seconds, r.total_seconds) = (0.0, 0.0);
    if let Some(c) = &mut r.convergence {
        c.seconds_to_best = 0.0;
    }
    r
}

/// A change to the base config.
type Edit = fn(&mut RunConfig);

#[test]
fn a_run_resumed_from_any_epoch_equals_the_run_that_never_stopped() {
    let variants: [(&str, Edit); 4] = [
        ("adam, crop augmentation", |c| c.augment = Augment::Crop),
        ("sgd with momentum", |c| {
            (c.optimizer, c.lr, c.momentum) = (Optimizer::Sgd, 0.05, 0.9)
        }),
        ("adamw", |c| c.optimizer = Optimizer::Adamw),
        ("l-bfgs", |c| {
            (c.optimizer, c.lr, c.batch_size) = (Optimizer::Lbfgs, 0.5, 300);
            c.lbfgs_iterations = 3;
        }),
    ];
    for (what, edit) in variants {
        let cfg = config(Layout::Parallel, edit);
        let data = tensors(&cfg);
        let mut kept = Keep::default();
        let whole = train::train(&cfg, &data, Device::Cpu, &mut kept).unwrap();
        assert!(kept.0.len() >= 2, "{what}: {} checkpoints", kept.0.len());
        for checkpoint in &kept.0 {
            let stored = Checkpoint::from_bytes(checkpoint.bytes().to_vec()).unwrap();
            let mut silent = train::Silent;
            let resumed =
                train::train_from(&cfg, &data, Device::Cpu, &mut silent, Some(&stored)).unwrap();
            assert_eq!(
                without_times(&resumed),
                without_times(&whole),
                "{what}: resumed after epoch {}",
                checkpoint.epoch()
            );
        }
    }
}

#[test]
fn a_checkpoint_not_whole_or_of_other_settings_or_code_is_refused() {
    let cfg = config(Layout::Sequential, |_| {});
    let data = tensors(&cfg);
    let mut kept = Keep::default();
    train::train(
        &RunConfig {
            epochs: 2,
            ..cfg.clone()
        },
        &data,
        Device::Cpu,
        &mut kept,
    )
    .unwrap();
    let bytes = kept.0[0].bytes().to_vec();
    for cut in [bytes.len() - 1, bytes.len() / 2, 3] {
        let err = Checkpoint::from_bytes(bytes[..cut].to_vec()).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a whole checkpoint"),
            "{err:#}"
        );
    }
    let code = train::checkpoint::CODE.as_bytes();
    let at = bytes.windows(code.len()).position(|w| w == code).unwrap();
    let mut other = bytes.clone();
    other[at..at + code.len()].fill(b'0');
    let err = Checkpoint::from_bytes(other).unwrap_err();
    assert!(format!("{err:#}").contains("training code"), "{err:#}");
    let seed = RunConfig {
        seed: 7,
        epochs: 2,
        ..cfg
    };
    let err = train::train_from(
        &seed,
        &data,
        Device::Cpu,
        &mut train::Silent,
        Some(&kept.0[0]),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("other settings"), "{err:#}");
}
