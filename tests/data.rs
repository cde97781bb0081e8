//! Dataset readers on generated files (round trips, errors naming the file) and on the real data.
mod common;

use common::{real_data, write_cifar_dataset, write_idx_dataset};
use shallow::data::{self, idx};

#[test]
fn generated_idx_dataset_round_trips_gzipped_and_raw() {
    for gz in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        write_idx_dataset(&tmp.path().join("tiny"), 23, 7, 5, gz);
        assert!(data::missing_files(tmp.path(), "tiny").is_empty());
        let ds = data::load(tmp.path(), "tiny").unwrap();
        assert_eq!((ds.train.len(), ds.test.len()), (23, 7));
        assert_eq!(ds.train.shape, [1, 5, 5]);
        assert_eq!(ds.train.labels[..3], [0, 1, 2]);
        assert_eq!(ds.train.images.len(), 23 * 25);
        // pixel(label 1, image 1, position 2) as written by the generator
        assert_eq!(ds.train.images[25 + 2], 23 + 14 + 1);
    }
}

#[test]
fn generated_cifar_dataset_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar_dataset(&tmp.path().join("cifar-10-batches-bin"), 4);
    let ds = data::load(tmp.path(), data::CIFAR10).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (20, 4));
    assert_eq!(ds.train.shape, [3, 32, 32]);
    // second training file starts with label (0 + 1) % 10
    assert_eq!(ds.train.labels[4], 1);
}

#[test]
fn truncated_idx_file_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    write_idx_dataset(&dir, 10, 10, 4, false);
    let path = dir.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = format!("{:#}", data::load(tmp.path(), "tiny").unwrap_err());
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    assert!(err.contains("need 160 bytes, found 157"), "{err}");
}

#[test]
fn corrupt_gzip_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    write_idx_dataset(&dir, 10, 10, 4, true);
    let path = dir.join("t10k-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", data::load(tmp.path(), "tiny").unwrap_err());
    assert!(err.contains("t10k-labels-idx1-ubyte.gz"), "{err}");
}

#[test]
fn wrong_magic_and_out_of_range_labels_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    write_idx_dataset(&dir, 10, 10, 4, false);
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx::encode_idx(&[10], &[10; 10]),
    )
    .unwrap();
    let err = format!("{:#}", data::load(tmp.path(), "tiny").unwrap_err());
    assert!(
        err.contains("the test (validation) split's label 10 at index 0 is outside the dataset's classes 0..=9"),
        "{err}"
    );
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        [1u8, 0, 8, 1, 0, 0, 0, 0],
    )
    .unwrap();
    let err = format!("{:#}", data::load(tmp.path(), "tiny").unwrap_err());
    assert!(err.contains("wrong magic"), "{err}");
}

#[test]
fn mismatched_image_and_label_counts_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    write_idx_dataset(&dir, 10, 10, 4, false);
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx::encode_idx(&[9], &[1; 9]),
    )
    .unwrap();
    let err = format!("{:#}", data::load(tmp.path(), "tiny").unwrap_err());
    assert!(err.contains("expected 10 labels"), "{err}");
}

#[test]
fn truncated_cifar_file_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    write_cifar_dataset(&dir, 2);
    let path = dir.join("data_batch_3.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = format!("{:#}", data::load(tmp.path(), data::CIFAR10).unwrap_err());
    assert!(
        err.contains("data_batch_3.bin") && err.contains("3073-byte"),
        "{err}"
    );
}

#[test]
fn missing_files_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = data::missing_files(tmp.path(), data::MNIST);
    assert_eq!(missing.len(), 4);
    assert!(missing[0].ends_with("mnist/train-images-idx3-ubyte.gz"));
    let err = data::ensure_available(tmp.path(), data::CIFAR10, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--offline") && err.contains("test_batch.bin"),
        "{err}"
    );
}

#[test]
fn real_mnist_has_official_counts_and_first_labels() {
    let ds = data::load(&real_data(), data::MNIST).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (60_000, 10_000));
    assert_eq!(ds.train.shape, [1, 28, 28]);
    assert_eq!((ds.train.labels[0], ds.test.labels[0]), (5, 7));
}

#[test]
fn real_cifar10_has_official_counts_and_first_labels() {
    let ds = data::load(&real_data(), data::CIFAR10).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (50_000, 10_000));
    assert_eq!(ds.test.labels[..5], [3, 8, 8, 0, 6]);
    for class in 0..10 {
        assert_eq!(
            ds.train.labels.iter().filter(|&&l| l == class).count(),
            5000
        );
    }
}

/// Writes a CIFAR-100 binary dataset (two label bytes: coarse `fine / 5`, then fine) with
/// `train`/`test` records into `dir`.
fn write_cifar100_dataset(dir: &std::path::Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, n) in [("train.bin", train), ("test.bin", test)] {
        let mut bytes = Vec::new();
        for i in 0..n {
            let fine = (i % 100) as u8;
            bytes.extend([fine / 5, fine]);
            bytes.extend((0..data::cifar::PIXELS).map(|p| ((i * 31 + p * 7) % 256) as u8));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// CIFAR-100 in its real binary format (generated): `cifar100` reads the fine labels (100
/// classes), `cifar100-coarse` the coarse ones (20) from the same files.
#[test]
fn generated_cifar100_reads_fine_or_coarse_labels() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar100_dataset(&tmp.path().join("cifar-100-binary"), 300, 200);
    let fine = data::load(tmp.path(), "cifar100").unwrap();
    assert_eq!(
        (fine.classes, fine.train.len(), fine.test.len()),
        (100, 300, 200)
    );
    assert_eq!(fine.train.shape, [3, 32, 32]);
    assert_eq!(&fine.train.labels[..3], &[0, 1, 2]);
    assert_eq!(fine.train.labels[99], 99);
    let coarse = data::load(tmp.path(), "cifar100-coarse").unwrap();
    assert_eq!(coarse.classes, 20);
    assert_eq!(coarse.train.labels[99], 19);
    assert_eq!(coarse.train.images, fine.train.images);
    assert!(data::missing_files(tmp.path(), "cifar100").is_empty());
    assert_eq!(data::missing_files(tmp.path(), "kmnist").len(), 4);
}

/// Fashion-MNIST and KMNIST are IDX datasets in folders of their names, of 10 classes.
#[test]
fn fashion_and_kmnist_load_from_their_folders() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["fashion", "kmnist"] {
        write_idx_dataset(&tmp.path().join(name), 40, 20, 28, true);
        let raw = data::load(tmp.path(), name).unwrap();
        assert_eq!((raw.classes, raw.train.shape), (10, [1, 28, 28]), "{name}");
    }
}

/// A dataset of the user's with any number of classes: M is one more than its largest
/// training label, every class must have training examples, and labels beyond a built-in
/// dataset's classes are refused.
#[test]
fn idx_datasets_of_any_number_of_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, train: &[u8], test: &[u8]| {
        let dir = tmp.path().join(name);
        write_idx_dataset(&dir, train.len(), test.len(), 4, false);
        for (prefix, labels) in [("train", train), ("t10k", test)] {
            let file = dir.join(format!("{prefix}-labels-idx1-ubyte"));
            std::fs::write(file, idx::encode_idx(&[labels.len()], labels)).unwrap();
        }
    };
    let twelve: Vec<u8> = (0..48).map(|i| i % 12).collect();
    write("twelve", &twelve, &twelve[..24]);
    assert_eq!(data::load(tmp.path(), "twelve").unwrap().classes, 12);
    write("gap", &[0, 1, 3, 0, 1, 3], &[0, 1]);
    let err = format!("{:#}", data::load(tmp.path(), "gap").unwrap_err());
    assert!(
        err.contains("class 2 of 0..=3 has no training example"),
        "{err}"
    );
    write("one", &[0, 0, 0], &[0]);
    let err = format!("{:#}", data::load(tmp.path(), "one").unwrap_err());
    assert!(err.contains("needs at least 2"), "{err}");
    write("fashion", &twelve, &twelve[..24]);
    let err = format!("{:#}", data::load(tmp.path(), "fashion").unwrap_err());
    assert!(
        err.contains("label 10 at index 10 is outside the dataset's classes 0..=9"),
        "{err}"
    );
}

/// A 3-class dataset trains a net with 3 outputs, and its Q counts 3 outputs: Q = N × 3 / P.
#[test]
fn a_three_class_dataset_trains_with_three_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tri");
    write_idx_dataset(&dir, 60, 30, 6, false);
    for (prefix, n) in [("train", 60), ("t10k", 30)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let file = dir.join(format!("{prefix}-labels-idx1-ubyte"));
        std::fs::write(file, idx::encode_idx(&[n], &labels)).unwrap();
    }
    let out = std::process::Command::new(common::shallow_bin())
        .args([
            "train",
            "--dataset",
            "tri",
            "--layout",
            "parallel",
            "--layers",
            "2",
        ])
        .args([
            "--filters",
            "4",
            "--epochs",
            "1",
            "--offline",
            "--json",
            "-",
            "--data-dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (q, n, p) = (
        result["q"].as_f64().unwrap(),
        result["train_examples"].as_f64().unwrap(),
        result["params"].as_f64().unwrap(),
    );
    assert_eq!(n, 60.0);
    assert!((q * p / n - 3.0).abs() < 1e-9, "M = Q·P/N = {}", q * p / n);
    // The same net with 10 outputs has 7 × (features + 1) more parameters.
    let arch = shallow::settings::defaults(shallow::model::Layout::Parallel);
    let cfg = shallow::train::RunConfig {
        layers: 2,
        filters: 4,
        ..arch
    };
    let ten = cfg.architecture([1, 6, 6], 10).parameter_count();
    let three = cfg.architecture([1, 6, 6], 3).parameter_count();
    assert_eq!(three as f64, p);
    assert_eq!((ten - three) % 7, 0);
}
