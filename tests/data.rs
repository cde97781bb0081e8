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
        err.contains("t10k-labels-idx1-ubyte: label 10 at index 0"),
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
