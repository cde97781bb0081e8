//! shallow trains exactly as plain PyTorch does: `shallow train --trace` records a run (data,
//! initial weights, batch order, every step's loss and variable checksums) and
//! `bench/reference.py replay` trains the same run in PyTorch from the same weights and order,
//! failing at the first step and tensor where the two part (tolerances in reference.py).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{real_data, shallow_bin};

/// The project's Python with PyTorch importable (`SHALLOW_TORCH_FULL=1 scripts/setup.sh`).
fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import torch, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the PyTorch reference tests need torch and numpy importable from {}: \
         run `SHALLOW_TORCH_FULL=1 scripts/setup.sh`",
        python.display()
    );
    python
}

/// One epoch of a small subset, traced by shallow and replayed by the reference.
fn assert_replay_matches(dataset: &str, layout: &str, batchnorm: bool, arch: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    let data = real_data();
    let mut args = vec![
        "train",
        "--dataset",
        dataset,
        "--layout",
        layout,
        "--layers",
        "3",
        "--filters",
        "8",
        "--train-limit",
        "600",
        "--val-limit",
        "300",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--seed",
        "11",
        "--lr",
        "3e-4",
        "--threads",
        "1",
        "--offline",
    ];
    args.extend_from_slice(arch);
    if batchnorm {
        args.push("--batchnorm");
    }
    let out = Command::new(shallow_bin())
        .args(&args)
        .arg("--data-dir")
        .arg(&data)
        .arg("--trace")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shallow train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/reference.py"))
        .args(["replay", "--threads", "1", "--trace"])
        .arg(&trace)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let what = format!("{dataset} {layout} batchnorm={batchnorm}");
    assert!(
        out.status.success(),
        "{what}: PyTorch parts from shallow: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["match"], true, "{what}: {report}");
    // 600 examples in batches of 32: 18 full batches and a last one of 24.
    assert_eq!(report["steps"], 19, "{what}: {report}");
    eprintln!("{what}: {report}");
}

#[test]
fn mnist_trains_as_pytorch_does_step_by_step() {
    for layout in ["sequential", "parallel"] {
        for batchnorm in [false, true] {
            assert_replay_matches("mnist", layout, batchnorm, &[]);
        }
    }
}

#[test]
fn cifar10_trains_as_pytorch_does_step_by_step() {
    // The other architecture options along: tanh, 2×2 max-pool, global-average-pool head.
    let arch = ["--activation", "tanh", "--pool", "max2", "--head", "gap"];
    for layout in ["sequential", "parallel"] {
        for batchnorm in [false, true] {
            assert_replay_matches("cifar10", layout, batchnorm, &arch);
        }
    }
}

/// A replay that parts from the trace must say where: here the trace's third step loss is
/// altered, so the reference must name epoch 1, step 2, the loss.
#[test]
fn a_mismatch_names_the_first_step_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    let out = Command::new(shallow_bin())
        .args([
            "train",
            "--layout",
            "parallel",
            "--layers",
            "2",
            "--filters",
            "4",
            "--train-limit",
            "200",
            "--val-limit",
            "100",
            "--threads",
            "1",
            "--offline",
        ])
        .arg("--data-dir")
        .arg(real_data())
        .arg("--trace")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success());
    let json_path = trace.join("trace.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let sum = &mut doc["steps"][2]["checksums"]["head.weight"][0];
    *sum = serde_json::json!(sum.as_f64().unwrap() + 0.5);
    std::fs::write(&json_path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/reference.py"))
        .args(["replay", "--threads", "1", "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("epoch 1 step 2: head.weight (sum)"),
        "{stdout}"
    );
}
