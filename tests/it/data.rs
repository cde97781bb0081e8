//! Dataset readers on generated files (round trips, errors naming the file) and on the real data.
use crate::common;

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
    let arch = shallow::train::settings::defaults(shallow::model::Layout::Parallel);
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

/// SVHN's folder from the SciPy-written fixtures (`tests/fixtures/make_svhn_mat.py`): the training
/// file compressed with labels stored as double, the test file uncompressed with uint8 labels.
fn write_svhn(dir: &std::path::Path, extra: bool) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::create_dir_all(dir).unwrap();
    let mut copies = vec![
        ("svhn-train.mat", "train_32x32.mat"),
        ("svhn-test.mat", "test_32x32.mat"),
    ];
    if extra {
        copies.push(("svhn-test.mat", "extra_32x32.mat"));
    }
    for (from, to) in copies {
        std::fs::copy(fixtures.join(from), dir.join(to)).unwrap();
    }
}

/// Pixel (row, column, channel) of image n as the fixture generator wrote it.
fn svhn_pixel(n: usize, channel: usize, row: usize, col: usize) -> u8 {
    ((row * 7 + col * 3 + channel * 50 + n * 11) % 256) as u8
}

#[test]
fn svhn_reads_matlab_files_written_by_scipy() {
    let tmp = tempfile::tempdir().unwrap();
    write_svhn(&tmp.path().join("svhn"), false);
    assert!(data::missing_files(tmp.path(), "svhn").is_empty());
    let ds = data::load(tmp.path(), "svhn").unwrap();
    assert_eq!((ds.train.len(), ds.test.len(), ds.classes), (10, 3, 10));
    assert_eq!(ds.train.shape, [3, 32, 32]);
    // Label 10 is the digit 0.
    assert_eq!(ds.train.labels, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(ds.test.labels, [3, 0, 7]);
    // Column-major [row, column, channel, image] became images × channels × rows × columns.
    for (split, n) in [(&ds.train, 10), (&ds.test, 3)] {
        for (i, &p) in split.images.iter().enumerate() {
            let (image, rest) = (i / 3072, i % 3072);
            let (channel, row, col) = (rest / 1024, rest % 1024 / 32, rest % 32);
            assert_eq!(p, svhn_pixel(image, channel, row, col), "byte {i}");
        }
        assert_eq!(split.images.len(), n * 3072);
    }
    // svhn-extra needs the extra file too, and trains on train + extra.
    assert_eq!(data::missing_files(tmp.path(), "svhn-extra").len(), 1);
    write_svhn(&tmp.path().join("svhn"), true);
    let extra = data::load(tmp.path(), "svhn-extra").unwrap();
    assert_eq!((extra.train.len(), extra.test.len()), (13, 3));
    assert_eq!(extra.train.labels[10..], [3, 0, 7]);
    assert_eq!(extra.train.images[..10 * 3072], ds.train.images[..]);
}

#[test]
fn svhn_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("svhn");
    write_svhn(&dir, false);
    // The uncompressed test file's labels 3, 10, 7 (uint8): make the 10 an 11.
    let test = dir.join("test_32x32.mat");
    let mut bytes = std::fs::read(&test).unwrap();
    let at = bytes.windows(3).position(|w| w == [3, 10, 7]).unwrap();
    bytes[at + 1] = 11;
    std::fs::write(&test, &bytes).unwrap();
    let err = format!("{:#}", data::load(tmp.path(), "svhn").unwrap_err());
    assert!(
        err.contains("test_32x32.mat") && err.contains("label 11 of image 1"),
        "{err}"
    );
    // A truncated file.
    std::fs::write(&test, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", data::load(tmp.path(), "svhn").unwrap_err());
    assert!(
        err.contains("test_32x32.mat") && err.contains("past the end"),
        "{err}"
    );
    // Not a MAT file at all.
    std::fs::write(&test, b"not a mat file").unwrap();
    let err = format!("{:#}", data::load(tmp.path(), "svhn").unwrap_err());
    assert!(
        err.contains("test_32x32.mat") && err.contains("128-byte header"),
        "{err}"
    );
}

#[test]
fn svhn_trains_end_to_end_and_refuses_flips() {
    let tmp = tempfile::tempdir().unwrap();
    write_svhn(&tmp.path().join("svhn"), false);
    let train = |extra: &[&str]| {
        std::process::Command::new(common::shallow_bin())
            .args([
                "train",
                "--dataset",
                "svhn",
                "--layout",
                "parallel",
                "--layers",
                "2",
            ])
            .args(["--filters", "4"])
            .args(["--epochs", "1", "--offline", "--json", "-", "--data-dir"])
            .arg(tmp.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = train(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["train_examples"], 10);
    let out = train(&["--augment", "crop-flip"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("svhn"), "{err}");
}
