//! Bad input, as careless and hostile users give it: each case a clear error naming the file or
//! setting, raised before any training or queueing, with a non-zero exit code and no panic.
use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{shallow_bin, write_idx_dataset};
use shallow::data::idx;

use common::shallow_on as shallow;

/// Failed cleanly: exit code 1 (not a panic's 101, an abort's 134 or a divergence's 3), the
/// message on stderr containing `says`, and no epoch trained.
fn assert_refused(out: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}{stdout}");
    assert!(stderr.contains(says), "expected '{says}' in: {stderr}");
    assert!(
        !stdout.contains("train loss") && !stderr.contains("train loss"),
        "trained before refusing: {stderr}{stdout}"
    );
}

fn train_args(dataset: &str) -> Vec<&str> {
    let mut args = net_args(dataset);
    args.extend(["--layers", "2", "--filters", "4"]);
    args
}

fn net_args(dataset: &str) -> Vec<&str> {
    vec![
        "train",
        "--dataset",
        dataset,
        "--layout",
        "parallel",
        "--offline",
    ]
}

#[test]
fn empty_training_or_validation_split_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("notrain"), 0, 10, 6, true);
    write_idx_dataset(&tmp.path().join("noval"), 10, 0, 6, false);
    let out = shallow(&train_args("notrain"), tmp.path());
    assert_refused(&out, "the training split holds no images");
    let out = shallow(&train_args("noval"), tmp.path());
    assert_refused(&out, "the test (validation) split holds no images");
}

/// Training images whose pixels are all equal (here every pixel 7) cannot be normalised: a clear
/// error, not a run that divides by zero and reports a loss of 1e9.
#[test]
fn training_images_without_variance_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("flat");
    std::fs::create_dir_all(&dir).unwrap();
    for (prefix, n) in [("train", 20), ("t10k", 10)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let images = vec![7u8; n * 36];
        let image_file = dir.join(format!("{prefix}-images-idx3-ubyte"));
        std::fs::write(image_file, idx::encode_idx(&[n, 6, 6], &images)).unwrap();
        let label_file = dir.join(format!("{prefix}-labels-idx1-ubyte"));
        std::fs::write(label_file, idx::encode_idx(&[n], &labels)).unwrap();
    }
    let out = shallow(&train_args("flat"), tmp.path());
    assert_refused(
        &out,
        "channel 0 of the 20 selected training images has no variance",
    );
}

#[test]
fn splits_of_different_image_sizes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mixed");
    write_idx_dataset(&dir, 20, 10, 28, true);
    let small = tmp.path().join("small");
    write_idx_dataset(&small, 20, 10, 14, true);
    for f in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::fs::copy(small.join(f), dir.join(f)).unwrap();
    }
    let out = shallow(&train_args("mixed"), tmp.path());
    assert_refused(&out, "training images are 1×28×28");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1×14×14"));
}

#[test]
fn idx_header_whose_dimensions_overflow_is_an_error() {
    let mut bytes = idx::encode_idx(&[1, 1, 1], &[0]);
    for d in 0..3 {
        bytes[4 + 4 * d..8 + 4 * d].copy_from_slice(&u32::MAX.to_be_bytes());
    }
    let err = idx::parse_idx(&bytes).unwrap_err().to_string();
    assert!(err.contains("overflow"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("huge");
    write_idx_dataset(&dir, 10, 10, 6, false);
    std::fs::write(dir.join("train-images-idx3-ubyte"), &bytes).unwrap();
    let out = shallow(&train_args("huge"), tmp.path());
    assert_refused(&out, "overflow");
    assert!(String::from_utf8_lossy(&out.stderr).contains("train-images-idx3-ubyte"));
}

#[test]
fn thread_and_worker_counts_outside_their_range_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, value) in [("--threads", "100000"), ("--threads", "0")] {
        let mut args = train_args("mnist");
        args.extend([flag, value]);
        let out = shallow(&args, tmp.path());
        assert_eq!(out.status.code(), Some(2), "clap's usage error");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("between 1 and 1024"), "{err}");
    }
    let out = Command::new(shallow_bin())
        .args(["sweep", "configs/quick.toml", "--dry-run", "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers"));
}

#[test]
fn nets_that_cannot_fit_are_refused_with_an_estimate() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("tiny"), 20, 10, 28, true);
    let mut args = net_args("tiny");
    args.extend(["--filters", "100000", "--layers", "1"]);
    assert_refused(
        &shallow(&args, tmp.path()),
        "filters must be between 1 and 65536",
    );
    let mut args = net_args("tiny");
    args.extend(["--filters", "60000", "--layers", "1"]);
    let out = shallow(&args, tmp.path());
    assert_refused(&out, "needs about");
    assert!(String::from_utf8_lossy(&out.stderr).contains("GB available"));
}

#[test]
fn unwritable_json_path_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("tiny"), 20, 10, 6, true);
    let mut args = train_args("tiny");
    let folder = tmp.path().display().to_string();
    args.extend(["--kernel", "3", "--json", &folder]);
    assert_refused(&shallow(&args, tmp.path()), "is a folder");
    let missing = tmp.path().join("no/such/dir/r.json").display().to_string();
    let mut args = train_args("tiny");
    args.extend(["--json", &missing]);
    assert_refused(&shallow(&args, tmp.path()), "cannot write");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn write_grid(dir: &Path, runs: &str, exclude: &str) -> std::path::PathBuf {
    let path = dir.join("grid.toml");
    std::fs::write(
        &path,
        format!("[runs]\n{runs}\nlayers = 2\nfilters = 4\nepochs = 1\nbatch_size = 8\n{exclude}"),
    )
    .unwrap();
    path
}

#[test]
fn unknown_or_empty_datasets_stop_a_sweep_before_anything_is_queued() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("tiny"), 20, 10, 6, true);
    write_idx_dataset(&tmp.path().join("empty"), 0, 10, 6, true);
    let db = tmp.path().join("r.db");
    for (dataset, says) in [
        ("nosuchdata", "unknown dataset 'nosuchdata'"),
        ("empty", "holds no images"),
        // Dataset names become folder and plot file names: no paths, no hidden files.
        ("../tiny", "a dataset name is 1–64 letters"),
        ("a/b", "a dataset name is 1–64 letters"),
        (".hidden", "a dataset name is 1–64 letters"),
    ] {
        let grid = write_grid(
            tmp.path(),
            &format!("dataset = [\"tiny\", \"{dataset}\"]"),
            "",
        );
        for dry in [true, false] {
            let mut cmd = Command::new(shallow_bin());
            cmd.arg("sweep").arg(&grid).arg("--db").arg(&db);
            cmd.args(["--offline", "--data-dir"]).arg(tmp.path());
            if dry {
                cmd.arg("--dry-run");
            }
            let out = cmd.output().unwrap();
            assert_refused(&out, says);
            assert!(!db.exists(), "nothing queued (dry run: {dry})");
        }
    }
}

#[test]
fn dataset_names_that_are_paths_are_refused_by_train() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("tiny"), 20, 10, 6, true);
    for name in ["../tiny", "/etc", "tiny/../tiny", ""] {
        assert_refused(&shallow(&train_args(name), tmp.path()), "a dataset name is");
    }
}

#[test]
fn exclude_value_of_the_wrong_type_is_an_error_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = write_grid(
        tmp.path(),
        "dataset = \"tiny\"\nkernel = [3, 5]",
        "\n[[exclude]]\nlayers = \"2\"\n",
    );
    let err = shallow::sweep::grid::load(&grid).unwrap_err().to_string();
    assert!(
        err.contains("grid.toml:10") && err.contains("`layers` in [[exclude]] can never match"),
        "{err}"
    );
}

#[test]
fn export_to_a_folder_is_refused_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("tiny"), 20, 10, 6, true);
    let grid = write_grid(tmp.path(), "dataset = \"tiny\"", "");
    let db = tmp.path().join("r.db");
    let out = Command::new(shallow_bin())
        .arg("sweep")
        .arg(&grid)
        .arg("--db")
        .arg(&db)
        .args(["--offline", "--workers", "1", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folder = tmp.path().join("out");
    std::fs::create_dir(&folder).unwrap();
    let out = Command::new(shallow_bin())
        .arg("export")
        .arg(&db)
        .arg("--csv")
        .arg(&folder)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a folder"));
    let entries: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(
        entries.iter().all(|e| !e
            .as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp")),
        "a temporary file left behind"
    );
}

/// A left–right flip can turn one digit into another: crop-flip on a digit dataset is refused
/// unless forced, and force_flip means nothing without it.
#[test]
fn flips_of_digits_are_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = net_args("mnist");
    args.extend(["--augment", "crop-flip"]);
    assert_refused(
        &shallow(&args, tmp.path()),
        "use augment = crop, or set force_flip",
    );
    let mut args = net_args("mnist");
    args.extend(["--augment", "crop", "--force-flip"]);
    assert_refused(
        &shallow(&args, tmp.path()),
        "force_flip is used only with augment = crop-flip",
    );
}
