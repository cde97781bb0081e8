//! The user's own data under hostile conditions: folder walks that cannot loop, NaN pixels,
//! empty class folders, stray files, a dry run that sizes user datasets as they are, and error
//! texts a user can act on.
use crate::common;
use crate::datasets::{write_images, write_npz};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::shallow_bin;
use common::sweeps::query;
use shallow::data::{self, npz};
use shallow::model::q_bin;

use common::shallow_on as shallow;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn train_args(dataset: &str) -> Vec<&str> {
    vec![
        "train",
        "--dataset",
        dataset,
        "--layout",
        "parallel",
        "--layers",
        "2",
        "--filters",
        "4",
        "--batch-size",
        "8",
        "--offline",
    ]
}

/// Two symlinks back up the tree (the case that hung `train` for good): nothing below a class
/// folder is walked, so the dataset loads, hashes and trains at once, the links ignored.
#[test]
fn symlink_loops_in_an_image_folder_cannot_hang_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("loop");
    write_images(&root.join("train"), &["a", "b"], 6, false);
    write_images(&root.join("test"), &["a", "b"], 2, false);
    std::os::unix::fs::symlink("..", root.join("train/a/up")).unwrap();
    std::os::unix::fs::symlink(root.join("train"), root.join("train/b/loop2")).unwrap();
    let mut child = Command::new(shallow_bin())
        .args(train_args("folder:loop"))
        .arg("--data-dir")
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("train on a folder with symlink loops still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let raw = data::load(tmp.path(), "folder:loop").unwrap();
    assert_eq!((raw.train.len(), raw.test.len()), (12, 4));
}

/// The hash covers exactly the files the reader loads: notes and nested folders change nothing,
/// an image does.
#[test]
fn a_folder_datasets_hash_covers_exactly_the_images_it_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("imgs");
    write_images(&root.join("train"), &["a", "b"], 3, false);
    write_images(&root.join("test"), &["a", "b"], 1, false);
    let hash = || {
        data::content_hash(tmp.path(), "folder:imgs")
            .unwrap()
            .unwrap()
    };
    let before = hash();
    std::fs::write(root.join("notes.txt"), "taken on a Tuesday").unwrap();
    std::fs::write(root.join("train/a/notes.txt"), "blurry").unwrap();
    write_images(&root.join("train/a/extra"), &["deeper"], 2, false);
    write_images(&root.join("unused"), &["x"], 2, false);
    assert_eq!(
        hash(),
        before,
        "files the reader never opens changed the hash"
    );
    write_images(&root.join("test"), &["b"], 2, false);
    assert_ne!(
        hash(),
        before,
        "an added test image did not change the hash"
    );
}

/// An empty training class folder is an error naming the folder and the class.
#[test]
fn an_empty_training_class_folder_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("imgs");
    write_images(&root.join("train"), &["a", "b", "c"], 3, false);
    write_images(&root.join("test"), &["a", "b", "c"], 1, false);
    for f in std::fs::read_dir(root.join("train/c")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out = shallow(&train_args("folder:imgs"), tmp.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("train/c: class 'c' has no images"),
        "expected the folder and class named: {err}"
    );
}

/// Float images as an `.npz`: `x_train` and `x_test` of 8×8 grey images, 4 classes.
fn write_float_npz(path: &Path, train: &[f32], test: &[f32]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (split, pixels) in [("train", train), ("test", test)] {
        let n = pixels.len() / 64;
        let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.start_file(format!("x_{split}.npy"), stored).unwrap();
        zip.write_all(&npz::encode_npy("<f4", &[n, 8, 8], &bytes))
            .unwrap();
        let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
        zip.start_file(format!("y_{split}.npy"), stored).unwrap();
        zip.write_all(&npz::encode_npy("|u1", &[n], &labels))
            .unwrap();
    }
    zip.finish().unwrap();
}

/// NaN or infinite pixels are refused with the file, the split and the first bad index, in
/// either split; an all-NaN file says NaN, not "no variance".
#[test]
fn nan_and_infinite_pixels_are_refused_with_file_split_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    let good: Vec<f32> = (0..16 * 64).map(|i| (i % 64) as f32 / 64.0).collect();
    let mut bad_train = good.clone();
    bad_train[3 * 64 + 5] = f32::NAN;
    let mut bad_test = good[..8 * 64].to_vec();
    bad_test[70] = f32::INFINITY;
    let cases = [
        (
            "nan-train.npz",
            bad_train,
            good[..8 * 64].to_vec(),
            "x_train",
            "pixel 197 (image 3) is NaN",
        ),
        (
            "inf-test.npz",
            good.clone(),
            bad_test,
            "x_test",
            "pixel 70 (image 1) is inf",
        ),
        (
            "all-nan.npz",
            vec![f32::NAN; 16 * 64],
            vec![f32::NAN; 8 * 64],
            "x_train",
            "pixel 0 (image 0) is NaN",
        ),
    ];
    for (file, train, test, split, says) in cases {
        write_float_npz(&tmp.path().join(file), &train, &test);
        let out = shallow(&train_args(&format!("npz:{file}")), tmp.path());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(file) && err.contains(split) && err.contains(says),
            "{file}: expected {split} and '{says}' in: {err}"
        );
    }
}

/// The numbers of a dry run's output line `total parameters: … (mean P per run)` and its Q-bin
/// row for `dataset`.
fn dry_run_p_and_bin(stdout: &str, dataset: &str) -> (u64, usize) {
    let p = stdout
        .split("(mean ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no mean parameters in: {stdout}"));
    let row: Vec<usize> = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(dataset))
        .unwrap_or_else(|| panic!("no row for {dataset} in: {stdout}"))
        .split_whitespace()
        .skip(1)
        .map(|c| c.parse().unwrap())
        .collect();
    let bin = row.iter().position(|&c| c > 0).expect("a populated bin");
    (p, bin)
}

/// The dry run sizes an `.npz` and an image folder as they are (8×8 RGB in 4 classes, 6×5 grey
/// in 3): its P and Q bin are those the trained runs store; once they are trained, it knows them
/// as finished.
#[test]
fn the_dry_run_sizes_user_datasets_as_the_trained_runs_do() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_npz(&data.join("mine.npz"), 40, 0);
    write_images(&data.join("imgs/train"), &["a", "b", "c"], 30, false);
    write_images(&data.join("imgs/test"), &["a", "b", "c"], 4, false);
    for dataset in ["npz:mine.npz", "folder:imgs"] {
        let grid = tmp.path().join("g.toml");
        std::fs::write(
            &grid,
            format!(
                "name = \"sizes\"\n[runs]\ndataset = \"{dataset}\"\nlayers = 2\nfilters = 4\n\
                 head = \"gap\"\npool = \"none\"\nbatch_size = 8\n"
            ),
        )
        .unwrap();
        let grid_arg = grid.to_str().unwrap();
        let dry = shallow(&["sweep", grid_arg, "--dry-run", "--offline"], &data);
        assert!(dry.status.success(), "{}", stderr(&dry));
        let (p, bin) = dry_run_p_and_bin(&String::from_utf8_lossy(&dry.stdout), dataset);
        let db = tmp
            .path()
            .join(format!("{}.db", dataset.replace([':', '.'], "-")));
        let db_arg = db.to_str().unwrap();
        let run = shallow(&["sweep", grid_arg, "--db", db_arg, "--offline"], &data);
        assert!(run.status.success(), "{}", stderr(&run));
        let stored: Vec<(i64, f64)> = {
            let conn = rusqlite::Connection::open(&db).unwrap();
            let mut q = conn.prepare("SELECT params, q FROM runs").unwrap();
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert_eq!(stored.len(), 2);
        for (params, q) in stored {
            assert_eq!(
                p, params as u64,
                "{dataset}: dry run's P against the trained run's"
            );
            assert_eq!(bin, q_bin(q), "{dataset}: dry run's Q bin against Q = {q}");
        }
        assert_eq!(
            query::<String>(&db, "SELECT status FROM runs"),
            vec!["done"; 2]
        );
        let again = shallow(
            &["sweep", grid_arg, "--dry-run", "--offline", "--db", db_arg],
            &data,
        );
        let again = String::from_utf8_lossy(&again.stdout);
        assert!(
            again.contains("for the 0 run(s) left (2 already ended in the store)"),
            "{dataset}: the finished runs (whose ids carry the file's hash) are known: {again}"
        );
    }
}

/// Error texts in the user's terms, not Rust's.
#[test]
fn errors_speak_the_users_language() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("adir")).unwrap();
    write_npz(&tmp.path().join("mine.npz"), 40, 0);
    let out = shallow(&train_args("npz:adir"), tmp.path());
    assert!(
        stderr(&out).contains("adir is a folder; npz: names a .npz file"),
        "{}",
        stderr(&out)
    );
    let out = shallow(&train_args("folder:mine.npz"), tmp.path());
    assert!(
        stderr(&out).contains("mine.npz is a file; folder: names a folder"),
        "{}",
        stderr(&out)
    );
    let mut args = train_args("npz:mine.npz");
    args.extend(["--stop", "plateau"]);
    let out = shallow(&args, tmp.path());
    let err = stderr(&out);
    assert!(
        err.contains("stop = plateau decide(s) on the held-out loss") && !err.contains("schedule"),
        "{err}"
    );
    for (line, says) in [
        (
            "holdout = \"abc\"",
            "a count of examples (holdout = 5000) or a fraction in (0, 1)",
        ),
        ("stop = 3", "`stop`"),
    ] {
        let grid = tmp.path().join("bad.toml");
        std::fs::write(
            &grid,
            format!("[runs]\ndataset = \"npz:mine.npz\"\n{line}\n"),
        )
        .unwrap();
        let out = shallow(
            &["sweep", grid.to_str().unwrap(), "--dry-run", "--offline"],
            tmp.path(),
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("bad.toml:3") && err.contains(says),
            "{line}: {err}"
        );
        for internal in ["untagged", "variant", "Some("] {
            assert!(!err.contains(internal), "{line}: Rust's words in: {err}");
        }
    }
}
