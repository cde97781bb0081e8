//! Helpers shared by the integration tests: tiny generated datasets and the real-data location.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use shallow::data::{cifar, idx};

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
        std::fs::write(dir.join(name), cifar::encode(&labels, &pixels)).unwrap();
    }
}

/// Path of the built `shallow` binary.
pub fn shallow_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shallow")
}
