//! Converged nets: the held-out split, stopping rules that restore the best epoch's weights
//! (solo and fused), and the refusal of settings that cannot work, before any training.
use crate::common;

use std::process::Command;

use common::{real_data, run_config, shallow_bin};
use shallow::data::{self, Holdout, Selection, Subset};
use shallow::model::{Layout, Pool};
use shallow::train::stopping::{StopReason, StopRule};
use shallow::train::{self, Observer, Outcome, RunConfig, RunResult, Silent};
use tch::Device;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// A small MNIST net that plateaus within a few epochs: 500 held out, plateau rule with patience
/// 2 and a 2 % relative threshold.
fn plateau_config(layout: Layout, lr: f64, batchnorm: bool) -> RunConfig {
    RunConfig {
        layers: 2,
        filters: 8,
        pool: Pool::Max2,
        batchnorm,
        lr,
        epochs: 25,
        train_limit: Some(1000),
        val_limit: Some(500),
        holdout: Some(Holdout::Count(500)),
        stop: StopRule::Plateau,
        patience: 2,
        min_delta: 0.02,
        ..run_config(data::MNIST, layout)
    }
}

/// A run that stopped kept its best held-out epoch's weights: the test-set evaluation of its final
/// weights equals what that epoch recorded, and its best epoch has the lowest held-out loss.
fn assert_restored(r: &RunResult) {
    assert_eq!(r.outcome, Outcome::Done);
    let c = r.convergence.as_ref().expect("a convergence record");
    assert!(c.restored);
    let held: Vec<f64> = r.epochs.iter().map(|m| m.holdout_loss.unwrap()).collect();
    let lowest = held.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(c.best_holdout_loss, lowest, "{held:?}");
    let best = &r.epochs[c.best_epoch - 1];
    assert_eq!(best.holdout_loss, Some(c.best_holdout_loss));
    let final_loss = r.final_val_loss.unwrap();
    assert!(
        rel(final_loss, best.val_loss) < 1e-6,
        "final test loss {final_loss} after restoring, best epoch {} recorded {}",
        c.best_epoch,
        best.val_loss
    );
    assert!((r.final_val_acc.unwrap() - best.val_acc).abs() < 1e-9);
}

#[test]
fn a_stopped_run_restores_its_best_weights() {
    let raw = data::load(&real_data(), data::MNIST).unwrap();
    for layout in [Layout::Sequential, Layout::Parallel] {
        let cfg = plateau_config(layout, 3e-3, true);
        let tensors = data::prepare(&raw, &cfg.selection(), Device::Cpu).unwrap();
        let r = train::train(&cfg, &tensors, Device::Cpu, &mut Silent).unwrap();
        let c = r.convergence.as_ref().unwrap();
        eprintln!(
            "{layout}: {} epochs, best {}, {:?}",
            r.epochs.len(),
            c.best_epoch,
            c.stop_reason
        );
        assert_eq!(c.stop_reason, StopReason::Plateau, "{layout}");
        assert!(!c.still_improving);
        assert_restored(&r);
        // The best epoch may be the last: improvements below min_delta still count as the best,
        // but not as progress for the patience.
        if c.best_epoch < r.epochs.len() {
            let last = r.epochs.last().unwrap();
            assert_ne!(
                last.val_loss,
                r.final_val_loss.unwrap(),
                "the last epoch's weights were replaced"
            );
        }
    }
}

/// Without a rule the run trains every epoch, keeps its last weights and still records its best
/// held-out epoch; at the cap it is "still improving" when it improved within the patience.
#[test]
fn without_a_rule_a_run_keeps_its_last_weights_and_records_its_best_epoch() {
    let raw = data::load(&real_data(), data::MNIST).unwrap();
    let cfg = RunConfig {
        stop: StopRule::None,
        epochs: 3,
        patience: 10,
        ..plateau_config(Layout::Sequential, 1e-3, false)
    };
    let tensors = data::prepare(&raw, &cfg.selection(), Device::Cpu).unwrap();
    let r = train::train(&cfg, &tensors, Device::Cpu, &mut Silent).unwrap();
    let c = r.convergence.unwrap();
    assert_eq!((r.epochs.len(), c.stop_reason), (3, StopReason::Cap));
    assert!(!c.restored && c.still_improving);
    let last = r.epochs.last().unwrap();
    assert!(rel(r.final_val_loss.unwrap(), last.val_loss) < 1e-6);
}

/// Members of a fused array stop on their own: each trains as many epochs, and ends at the same
/// best epoch, as its solo run, and each restores its own best weights (batch-norm statistics
/// included).
#[test]
fn fused_members_stop_independently_and_restore_their_own_best_weights() {
    let raw = data::load(&real_data(), data::MNIST).unwrap();
    for batchnorm in [false, true] {
        let cfgs: Vec<RunConfig> = [(1e-3, 0), (3e-3, 1), (1e-2, 2)]
            .into_iter()
            .map(|(lr, seed)| RunConfig {
                seed,
                ..plateau_config(Layout::Sequential, lr, batchnorm)
            })
            .collect();
        let tensors = data::prepare(&raw, &cfgs[0].selection(), Device::Cpu).unwrap();
        let mut silent = [Silent, Silent, Silent];
        let mut observers: Vec<&mut dyn Observer> =
            silent.iter_mut().map(|s| s as &mut dyn Observer).collect();
        let fused = train::train_fused(
            &cfgs,
            &tensors,
            Device::Cpu,
            &mut observers,
            &vec![None; cfgs.len()],
        )
        .unwrap();
        let epochs: Vec<usize> = fused.iter().map(|r| r.epochs.len()).collect();
        eprintln!("batchnorm {batchnorm}: members trained {epochs:?} epochs");
        for (cfg, r) in cfgs.iter().zip(&fused) {
            assert_restored(r);
            if batchnorm {
                continue; // batch norm amplifies the grouped convolution's rounding over epochs
            }
            let solo = train::train(cfg, &tensors, Device::Cpu, &mut Silent).unwrap();
            let (f, s) = (r.convergence.as_ref(), solo.convergence.as_ref());
            assert_eq!(
                (r.epochs.len(), f.map(|c| c.best_epoch)),
                (solo.epochs.len(), s.map(|c| c.best_epoch)),
                "lr {}",
                cfg.lr
            );
            let (a, b) = (r.final_val_loss.unwrap(), solo.final_val_loss.unwrap());
            assert!(rel(a, b) < 1e-3, "lr {}: fused {a}, solo {b}", cfg.lr);
        }
    }
}

/// The held-out split: stratified, disjoint from the examples trained on, the same for every
/// seed and layout (drawn with data_seed), carved before train_limit picks its examples.
#[test]
fn the_held_out_split_is_stratified_disjoint_and_shared_by_seeds() {
    let raw = data::load(&real_data(), data::MNIST).unwrap();
    let labels = &raw.train.labels;
    let selection = |data_seed| Selection {
        train_limit: Some(3000),
        val_limit: None,
        subset: Subset::Stratified,
        holdout: Some(Holdout::Count(5000)),
        data_seed,
    };
    let (held, train) = selection(0).training_indices(labels).unwrap();
    assert_eq!((held.len(), train.len()), (5000, 3000));
    let held_set: std::collections::HashSet<usize> = held.iter().copied().collect();
    assert!(train.iter().all(|i| !held_set.contains(i)), "disjoint");
    for class in 0..10u8 {
        let in_train = labels.iter().filter(|&&l| l == class).count() as f64;
        let in_held = held.iter().filter(|&&i| labels[i] == class).count() as f64;
        let expected = 5000.0 * in_train / labels.len() as f64;
        assert!(
            (in_held - expected).abs() <= 1.0,
            "class {class}: {in_held} vs {expected}"
        );
    }
    // Run seeds and layouts do not enter: the split is a function of data_seed alone.
    let cfg = |seed, layout| RunConfig {
        seed,
        holdout: Some(Holdout::Count(5000)),
        train_limit: Some(3000),
        ..run_config(data::MNIST, layout)
    };
    let of = |c: RunConfig| c.selection().training_indices(labels).unwrap();
    assert_eq!(of(cfg(0, Layout::Sequential)), of(cfg(7, Layout::Parallel)));
    let (other, _) = selection(1).training_indices(labels).unwrap();
    assert_ne!(held, other, "another data_seed draws another split");
    // Normalisation uses the examples trained on: their mean is 0 per channel.
    let tensors = data::prepare(&raw, &selection(0), Device::Cpu).unwrap();
    let mean = tensors.train_x.mean(tch::Kind::Float).double_value(&[]);
    assert!(mean.abs() < 1e-4, "{mean}");
    assert_eq!(tensors.holdout.as_ref().unwrap().1.size(), [5000]);
}

/// `shallow train` with `extra` on MNIST: its exit status and standard error.
fn train_cli(extra: &[&str]) -> (bool, String) {
    let out = Command::new(shallow_bin())
        .args([
            "train",
            "--layout",
            "parallel",
            "--layers",
            "2",
            "--filters",
            "4",
        ])
        .args(["--train-limit", "200", "--val-limit", "100", "--offline"])
        .arg("--data-dir")
        .arg(real_data())
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn settings_that_cannot_work_are_refused_before_any_training() {
    let cases: [(&[&str], &str); 11] = [
        (&["--stop", "plateau"], "set holdout"),
        (&["--schedule", "plateau"], "set holdout"),
        (&["--holdout", "60000"], "nothing to train on"),
        (&["--holdout", "5"], "empty in the held-out split"),
        (&["--holdout", "1.5"], "fraction in (0, 1)"),
        (
            &["--holdout", "100", "--stop", "plateau", "--patience", "0"],
            "patience",
        ),
        (&["--holdout", "100", "--stop", "target"], "target_loss"),
        (&["--momentum", "0.9"], "optimizer = sgd"),
        (&["--warmup", "3", "--epochs", "2"], "warmup"),
        (
            &["--optimizer", "sgd", "--nesterov"],
            "nesterov needs a momentum",
        ),
        (
            &["--optimizer", "lbfgs", "--batch-size", "64"],
            "lbfgs needs batch_size",
        ),
    ];
    for (extra, expected) in cases {
        let (ok, stderr) = train_cli(extra);
        assert!(!ok, "{extra:?} was accepted");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!stderr.contains("epoch   1"), "{extra:?} trained: {stderr}");
    }
}

#[test]
fn a_grid_that_cannot_work_is_refused_before_anything_is_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("stop = \"plateau\"\n", "set holdout"),
        ("holdout = 70000\n", "nothing to train on"),
        ("holdout = 100\nstop = \"target\"\n", "target_loss"),
        ("patience = 0\n", "patience"),
    ];
    for (i, (extra, expected)) in cases.into_iter().enumerate() {
        let grid = tmp.path().join(format!("g{i}.toml"));
        std::fs::write(
            &grid,
            format!("[runs]\ndataset = \"mnist\"\nlayers = 2\nfilters = 4\n{extra}"),
        )
        .unwrap();
        let db = tmp.path().join(format!("g{i}.db"));
        let out = Command::new(shallow_bin())
            .args(["sweep", "--no-train", "--offline"])
            .arg(&grid)
            .arg("--db")
            .arg(&db)
            .arg("--data-dir")
            .arg(real_data())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}: accepted");
        assert!(stderr.contains(expected), "{extra}: {stderr}");
        assert!(
            stderr.contains(&format!("g{i}.toml")),
            "{extra}: names the file: {stderr}"
        );
        assert!(!db.exists(), "{extra}: nothing queued");
    }
}

/// `--dry-run` estimates runs with a stopping rule at their cap while no run like them has
/// finished, and from the epochs of finished runs like them once some have; the runs already
/// finished in the store are left out of the estimate.
#[test]
fn the_dry_run_learns_the_epochs_of_stopped_runs_from_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("g.toml");
    let write_grid = |seeds: &str| {
        std::fs::write(
            &grid,
            format!(
                "[runs]\ndataset = \"mnist\"\nlayout = \"parallel\"\nlayers = 2\nfilters = 4\n\
                 train_limit = 500\nholdout = 500\nstop = [\"none\", \"plateau\"]\n\
                 patience = 2\nepochs = 20\nseed = {seeds}\n"
            ),
        )
        .unwrap();
    };
    let shallow = |args: &[&str]| {
        let out = Command::new(shallow_bin())
            .args(args)
            .args(["--offline", "--threads", "1", "--workers", "1"])
            .arg(&grid)
            .arg("--db")
            .arg(tmp.path().join("g.db"))
            .arg("--data-dir")
            .arg(real_data())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    write_grid("0");
    let before = shallow(&["sweep", "--dry-run"]);
    assert!(
        before.contains("1 run(s) left have a stopping rule")
            && before.contains("1 trained to their epoch cap (no finished run like them yet"),
        "{before}"
    );
    assert!(!before.contains("already ended"), "{before}");
    shallow(&["sweep"]);
    write_grid("[0, 1]");
    let after = shallow(&["sweep", "--dry-run"]);
    assert!(
        after.contains("for the 2 run(s) left (2 already ended in the store)"),
        "{after}"
    );
    assert!(
        after.contains(
            "1 run(s) left have a stopping rule; the estimate expects of each the share of its \
             epoch cap that finished runs like it took; 1 from runs of the same dataset, \
             arrangement, head, depth, batch norm, optimizer and training size"
        ),
        "{after}"
    );
    assert!(!after.contains("epoch cap (no finished"), "{after}");
}
