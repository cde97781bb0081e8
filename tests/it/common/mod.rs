//! Helpers shared by the integration tests: tiny generated datasets and the real-data location.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

pub mod stores;
pub mod sweeps;
pub mod synthetic;

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use shallow::data::{self, Subset, cifar, idx};
use shallow::model::{Activation, Head, Layout, Pool, Precision};
use shallow::train::{self, Outcome, RunConfig, Silent};
use tch::Device;

/// `$SHALLOW_DATA`, the real datasets (CI sets it to ../shared/data). Tests that need real data
/// fail loudly without it rather than pass vacuously.
pub fn real_data() -> PathBuf {
    let dir = std::env::var_os("SHALLOW_DATA")
        .map(PathBuf::from)
        .expect("set SHALLOW_DATA to the folder holding mnist/ and cifar-10-batches-bin/");
    assert!(
        dir.join("mnist").is_dir(),
        "{} has no mnist/",
        dir.display()
    );
    dir
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Pixel value of image `i` at flat position `p`, a function of the label so a net can learn it.
fn pixel(label: u8, i: usize, p: usize) -> u8 {
    ((label as usize * 23 + p * 7 + i) % 256) as u8
}

/// Writes an IDX dataset of `n_train`/`n_test` images of `side`×`side` into `dir`, gzipped or raw.
pub fn write_idx_dataset(dir: &Path, n_train: usize, n_test: usize, side: usize, gz: bool) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let images: Vec<u8> = (0..n)
            .flat_map(|i| (0..side * side).map(move |p| (i, p)))
            .map(|(i, p)| pixel(labels[i], i, p))
            .collect();
        let files = [
            (
                format!("{prefix}-images-idx3-ubyte"),
                idx::encode_idx(&[n, side, side], &images),
            ),
            (
                format!("{prefix}-labels-idx1-ubyte"),
                idx::encode_idx(&[n], &labels),
            ),
        ];
        for (name, bytes) in files {
            if gz {
                std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

/// Writes a CIFAR-10 binary dataset with `per_file` records in each of the six batch files.
pub fn write_cifar_dataset(dir: &Path, per_file: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let names = cifar::TRAIN_FILES.iter().chain([&cifar::TEST_FILE]);
    for (f, name) in names.enumerate() {
        let labels: Vec<u8> = (0..per_file).map(|i| ((i + f) % 10) as u8).collect();
        let pixels: Vec<u8> = (0..per_file)
            .flat_map(|i| (0..cifar::PIXELS).map(move |p| (i, p)))
            .map(|(i, p)| pixel(labels[i], i, p))
            .collect();
        std::fs::write(dir.join(name), cifar::encode(1, &labels, &pixels)).unwrap();
    }
}

/// Headless Chromium with a profile of its own in `profile` and no network of its own; fails,
/// saying what to install, where it is missing.
pub fn headless_chromium(profile: &Path) -> std::process::Command {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "this test needs headless Chromium: apt-get install chromium"
    );
    let mut command = std::process::Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Path of the built `shallow` binary.
pub fn shallow_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shallow")
}

/// The project's Python with PyTorch importable (`SHALLOW_TORCH_FULL=1 scripts/setup.sh`).
pub fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let ok = std::process::Command::new(&python)
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

/// Runs `shallow ARGS --data-dir DATA` to its end.
pub fn shallow_on(args: &[&str], data: &Path) -> std::process::Output {
    std::process::Command::new(shallow_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

/// The MNIST bench net (L=4, F=32, k=3) on 5k/2k stratified examples, one epoch.
pub fn run_config(dataset: &str, layout: Layout) -> RunConfig {
    RunConfig {
        dataset: dataset.into(),
        layout,
        layers: 4,
        filters: 32,
        kernel: 3,
        activation: Activation::Relu,
        pool: Pool::None,
        batchnorm: false,
        head: Head::Flatten,
        lr: 1e-3,
        batch_size: 32,
        epochs: 1,
        seed: 0,
        train_limit: Some(5000),
        val_limit: Some(2000),
        subset: Subset::Stratified,
        precision: Precision::Fp32,
        ..shallow::train::settings::defaults(layout)
    }
}

/// The accuracy README states for `--precision bf16`: final losses within this fraction of fp32's.
const BF16_TOLERANCE: f64 = 0.10;

/// Trains the MNIST bench net (L=4, F=32, k=3) on 3k MNIST for one epoch in both layouts and
/// precisions on `device`; bf16's final training and validation losses must stay within
/// BF16_TOLERANCE of fp32's.
pub fn assert_bf16_within_tolerance_of_fp32(device: Device, layouts: &[Layout]) {
    let raw = data::load(&real_data(), data::MNIST).unwrap();
    for &layout in layouts {
        // 1,000 images, pooled to 14×14 after the stem: bf16 without native CPU support is
        // emulated, ~20× slower than fp32, and the tolerance is about the arithmetic (every
        // convolution, the linear layer, backward and the f32 master weights), which a smaller
        // image and a shorter epoch exercise as well.
        let cfg = RunConfig {
            train_limit: Some(1000),
            val_limit: Some(500),
            pool: Pool::Max2,
            ..run_config(data::MNIST, layout)
        };
        let tensors = data::prepare(&raw, &cfg.selection(), device).unwrap();
        let run = |precision| {
            let cfg = RunConfig {
                precision,
                ..cfg.clone()
            };
            let r = train::train(&cfg, &tensors, device, &mut Silent).unwrap();
            assert_eq!(r.outcome, Outcome::Done, "{layout} {precision}");
            (r.final_train_loss.unwrap(), r.final_val_loss.unwrap())
        };
        let (fp32, bf16) = (run(Precision::Fp32), run(Precision::Bf16));
        for (what, a, b) in [("train", fp32.0, bf16.0), ("val", fp32.1, bf16.1)] {
            assert!(
                (a - b).abs() <= BF16_TOLERANCE * a,
                "{layout} on {device:?}: {what} loss fp32 {a} vs bf16 {b}"
            );
        }
    }
}
