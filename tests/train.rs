//! One training run on real and generated data.
mod common;

use common::{assert_bf16_within_tolerance_of_fp32, real_data, run_config, write_idx_dataset};
use shallow::data::{self, Subset};
use shallow::model::{Layout, Pool};
use shallow::train::{self, Outcome, RunConfig, Silent};
use tch::Device;

#[test]
fn one_epoch_on_5k_mnist_exceeds_90_percent_in_both_layouts() {
    let raw = data::load(&real_data(), data::MNIST).unwrap();
    for layout in [Layout::Sequential, Layout::Parallel] {
        let cfg = RunConfig {
            pool: Pool::Max2,
            ..run_config(data::MNIST, layout)
        };
        let tensors = data::prepare(
            &raw,
            cfg.train_limit,
            cfg.val_limit,
            cfg.subset,
            Device::Cpu,
        );
        let r = train::train(&cfg, &tensors, Device::Cpu, &mut Silent).unwrap();
        assert_eq!(r.outcome, Outcome::Done);
        let acc = r.final_val_acc.unwrap();
        assert!(acc > 0.90, "{layout}: val acc {acc}");
        assert!(
            r.final_train_loss.unwrap() < r.epochs[0].train_loss,
            "eval-mode loss after training"
        );
    }
}

#[test]
fn bf16_final_losses_stay_within_tolerance_of_fp32() {
    assert_bf16_within_tolerance_of_fp32(Device::Cpu);
}

fn tiny(dir: &std::path::Path) -> data::Tensors {
    write_idx_dataset(&dir.join("tiny"), 60, 20, 6, false);
    let raw = data::load(dir, "tiny").unwrap();
    data::prepare(&raw, None, None, Subset::First, Device::Cpu)
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
