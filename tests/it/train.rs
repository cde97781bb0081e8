//! One training run on real and generated data.
use crate::common;

use common::{assert_bf16_within_tolerance_of_fp32, real_data, run_config, write_idx_dataset};
use shallow::data::{self, Subset};
use shallow::model::{Layout, Pool};
use shallow::train::{self, Outcome, RunConfig, Silent};
use tch::Device;

// Each layout is a test of its own, so that the two run side by side.
#[test]
fn one_epoch_on_5k_mnist_exceeds_90_percent_sequential() {
    one_epoch_on_5k_mnist_exceeds_90_percent(Layout::Sequential);
}

#[test]
fn one_epoch_on_5k_mnist_exceeds_90_percent_parallel() {
    one_epoch_on_5k_mnist_exceeds_90_percent(Layout::Parallel);
}

fn one_epoch_on_5k_mnist_exceeds_90_percent(layout: Layout) {
    let raw = data::load(&real_data(), data::MNIST).unwrap();
    let cfg = RunConfig {
        pool: Pool::Max2,
        ..run_config(data::MNIST, layout)
    };
    let tensors = data::prepare(&raw, &cfg.selection(), Device::Cpu).unwrap();
    let r = train::train(&cfg, &tensors, Device::Cpu, &mut Silent).unwrap();
    assert_eq!(r.outcome, Outcome::Done);
    let acc = r.final_val_acc.unwrap();
    assert!(acc > 0.90, "{layout}: val acc {acc}");
    assert!(
        r.final_train_loss.unwrap() < r.epochs[0].train_loss,
        "eval-mode loss after training"
    );
}

#[test]
fn bf16_final_losses_stay_within_tolerance_of_fp32_sequential() {
    assert_bf16_within_tolerance_of_fp32(Device::Cpu, &[Layout::Sequential]);
}

#[test]
fn bf16_final_losses_stay_within_tolerance_of_fp32_parallel() {
    assert_bf16_within_tolerance_of_fp32(Device::Cpu, &[Layout::Parallel]);
}

fn tiny(dir: &std::path::Path) -> data::Tensors {
    write_idx_dataset(&dir.join("tiny"), 60, 20, 6, false);
    let raw = data::load(dir, "tiny").unwrap();
    let selection = data::Selection {
        subset: Subset::First,
        ..data::Selection::all()
    };
    data::prepare(&raw, &selection, Device::Cpu).unwrap()
}

fn tiny_config(layout: Layout) -> RunConfig {
    RunConfig {
        layers: 2,
        filters: 3,
        epochs: 3,
        batch_size: 16,
        train_limit: None,
        val_limit: None,
        ..run_config("tiny", layout)
    }
}

#[test]
fn same_config_and_seed_reproduce_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let tensors = tiny(tmp.path());
    let cfg = tiny_config(Layout::Parallel);
    let a = train::train(&cfg, &tensors, Device::Cpu, &mut Silent).unwrap();
    let b = train::train(&cfg, &tensors, Device::Cpu, &mut Silent).unwrap();
    let losses = |r: &train::RunResult| r.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(a.final_val_loss, b.final_val_loss);
    let other = train::train(
        &RunConfig { seed: 1, ..cfg },
        &tensors,
        Device::Cpu,
        &mut Silent,
    )
    .unwrap();
    assert_ne!(losses(&a), losses(&other));
}

#[test]
fn non_finite_loss_ends_the_run_as_diverged_with_its_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let tensors = tiny(tmp.path());
    let cfg = RunConfig {
        lr: 1e30,
        ..tiny_config(Layout::Sequential)
    };
    let r = train::train(&cfg, &tensors, Device::Cpu, &mut Silent).unwrap();
    assert_eq!(r.outcome, Outcome::Diverged);
    assert_eq!(r.diverged_epoch, Some(1));
    assert!(r.final_train_loss.is_none() && r.epochs.is_empty());
}

#[test]
fn every_epoch_is_reported_to_the_observer() {
    struct Recorder(Vec<usize>);
    impl train::Observer for Recorder {
        fn epoch(&mut self, m: &train::EpochMetrics) -> anyhow::Result<()> {
            self.0.push(m.epoch);
            Ok(())
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let tensors = tiny(tmp.path());
    let mut recorder = Recorder(Vec::new());
    let r = train::train(
        &tiny_config(Layout::Parallel),
        &tensors,
        Device::Cpu,
        &mut recorder,
    )
    .unwrap();
    assert_eq!(recorder.0, vec![1, 2, 3]);
    assert_eq!(r.epochs.len(), 3);
}

/// The truncated evaluation of a net is the evaluation of a net of the other layout holding the
/// same weights (one seed gives every layout the same weights), exactly without batch norm; a
/// trained run records it.
#[test]
fn truncated_evaluation_is_the_other_layout_with_the_same_weights() {
    use shallow::model::Net;
    let tmp = tempfile::tempdir().unwrap();
    let tensors = tiny(tmp.path());
    for (layout, other) in [
        (Layout::Sequential, Layout::Parallel),
        (Layout::Parallel, Layout::Sequential),
        (Layout::Staged(2), Layout::Parallel),
    ] {
        let cfg = tiny_config(layout);
        let arch = |l| {
            cfg.architecture(tensors.shape, tensors.classes)
                .with_layout(l)
        };
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let net = Net::new(&vs.root(), arch(layout), 3).unwrap();
        let vs2 = tch::nn::VarStore::new(Device::Cpu);
        let twin = Net::new(&vs2.root(), arch(other), 3).unwrap();
        let got = train::truncated_evaluation(&net, &tensors, cfg.batch_size).unwrap();
        let want = train::evaluate(&twin, &tensors.val_x, &tensors.val_y);
        assert_eq!(got, want, "{layout} evaluated as {other}");
    }
    let r = train::train(
        &tiny_config(Layout::Sequential),
        &tensors,
        Device::Cpu,
        &mut Silent,
    )
    .unwrap();
    assert!(r.truncated_val_loss.unwrap().is_finite());
    assert!((0.0..=1.0).contains(&r.truncated_val_acc.unwrap()));
}
