//! The command line as a user meets it: help, bad input, offline errors, JSON results.
use crate::common;

use std::path::Path;
use std::process::Command;

use common::{shallow_bin, write_idx_dataset};
use shallow::train::RunResult;

#[test]
fn help_lists_the_subcommands() {
    let out = Command::new(shallow_bin()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["train", "data"] {
        assert!(text.contains(word), "{text}");
    }
}

#[test]
fn offline_train_with_missing_data_names_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(shallow_bin())
        .args(["train", "--layout", "sequential", "--offline", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("train-images-idx3-ubyte.gz") && err.contains("--offline"),
        "{err}"
    );
}

#[test]
fn invalid_values_are_rejected_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("tiny"), 20, 10, 6, true);
    let out = Command::new(shallow_bin())
        .args([
            "train",
            "--dataset",
            "tiny",
            "--layout",
            "parallel",
            "--kernel",
            "4",
        ])
        .arg("--data-dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel must be odd"));
}

/// `shallow train` on the generated "tiny" IDX dataset in `dir`, its result as JSON to `json`.
fn train_tiny(dir: &Path, json: &str) -> std::process::Output {
    Command::new(shallow_bin())
        .current_dir(dir)
        .args(["train", "--dataset", "tiny", "--layout", "sequential"])
        .args(["--layers", "2", "--filters", "3", "--epochs", "2"])
        .args(["--threads", "1", "--offline", "--data-dir"])
        .arg(dir)
        .args(["--json", json])
        .output()
        .unwrap()
}

#[test]
fn any_idx_dataset_trains_and_writes_a_json_result() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("tiny"), 40, 20, 6, false);
    let out = train_tiny(tmp.path(), "result.json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = tmp.path().join("result.json");
    let result: RunResult = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(result.epochs.len(), 2);
    assert_eq!(result.train_examples, 40);
    assert_eq!(result.config.layers, 2);
    let p = 3 * 9 + 3 + 2 * (3 * 3 * 9 + 3) + 3 * 36 * 10 + 10;
    assert_eq!(result.params, p);
    assert!((result.q - 400.0 / p as f64).abs() < 1e-12);
    assert!(result.final_train_loss.is_some());

    // `--json -`: standard output is the JSON alone (the same run: same losses), the lines for
    // people are on standard error, and no file named '-' is written.
    let out = train_tiny(tmp.path(), "-");
    assert!(out.status.success());
    let piped: RunResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(piped.config, result.config);
    assert_eq!(piped.final_train_loss, result.final_train_loss);
    assert_eq!(piped.final_val_loss, result.final_val_loss);
    assert!(String::from_utf8_lossy(&out.stderr).contains("final train loss"));
    assert!(!tmp.path().join("-").exists());
}

#[test]
fn diverging_run_exits_with_code_3_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("tiny"), 200, 20, 6, false);
    let out = Command::new(shallow_bin())
        .args([
            "train",
            "--dataset",
            "tiny",
            "--layout",
            "parallel",
            "--lr",
            "1e30",
        ])
        .args([
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--data-dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("DIVERGED in epoch 1"));
}

#[test]
fn bench_step_prints_a_measurement_in_both_precisions() {
    for precision in ["fp32", "bf16"] {
        let out = Command::new(shallow_bin())
            .args(["bench-step", "--net", "tiny", "--layout", "parallel"])
            .args(["--threads", "1", "--device", "cpu", "--steps", "5"])
            .args(["--precision", precision])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m: shallow::bench::StepMeasurement = serde_json::from_slice(&out.stdout).unwrap();
        assert!(m.images_per_second > 0.0 && m.peak_rss_mb > 10.0, "{m:?}");
    }
}

/// Configurations count as comparable only with two different networks: at L = 1 sequential
/// and parallel are the same network, and so are staged-L and sequential.
#[test]
fn the_families_per_q_bin_count_only_different_networks() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("grid.toml");
    let count = |runs: &str| {
        std::fs::write(&path, format!("[runs]\ndataset = \"mnist\"\n{runs}")).unwrap();
        let grid = shallow::sweep::grid::load(&path).unwrap();
        let counts = shallow::sweep::plan::compared_per_q_bin(
            &grid,
            &shallow::sweep::plan::DataFacts::catalog(),
        )
        .unwrap();
        counts["mnist"].iter().sum::<usize>()
    };
    assert_eq!(count("layers = [1, 2, 4]\nseed = [0, 1]"), 4);
    assert_eq!(count("layers = 1\nseed = [0, 1]"), 0);
    assert_eq!(
        count("layers = 4\nlayout = [\"sequential\", \"staged-4\"]"),
        0
    );
    assert_eq!(
        count("layers = 4\nlayout = [\"staged-4\", \"staged-2\"]"),
        1
    );
}

/// The dry-run points out runs that repeat a network of their family (L = 1 in both layouts),
/// and says nothing of the kind for a grid without them.
#[test]
fn dry_run_notes_runs_that_train_the_same_network_twice() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("tiny"), 40, 20, 6, false);
    let dry_run = |layers: &str| {
        let grid = tmp.path().join("grid.toml");
        let text = format!("[runs]\ndataset = \"tiny\"\nfilters = 2\nseed = [0, 1, 2]\n{layers}");
        std::fs::write(&grid, text).unwrap();
        let out = Command::new(shallow_bin())
            .args(["sweep", "--dry-run", "--data-dir"])
            .arg(tmp.path())
            .arg(&grid)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = dry_run("layers = [1, 2]");
    assert!(
        text.contains("note: 3 run(s) train the same network as another run"),
        "{text}"
    );
    assert!(!dry_run("layers = 2").contains("note:"));
}

#[test]
fn dry_run_prints_an_estimate_and_the_families_per_q_bin() {
    let out = Command::new(shallow_bin())
        .args(["sweep", "configs/study-cpu.toml", "--dry-run", "--data-dir"])
        .arg(common::real_data())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("504 runs") && text.contains("estimated time: "),
        "{text}"
    );
    let grid = shallow::sweep::grid::load(std::path::Path::new("configs/study-cpu.toml")).unwrap();
    let counts = shallow::sweep::plan::compared_per_q_bin(
        &grid,
        &shallow::sweep::plan::DataFacts::catalog(),
    )
    .unwrap();
    assert_eq!(counts.len(), 2);
    for (dataset, bins) in counts {
        let row: String = bins.iter().map(|n| format!("{n:>9}")).collect();
        assert!(text.contains(&format!("  {dataset:<10}{row}")), "{text}");
    }
}

/// The README's table of every run setting is the one `RunConfig` describes: a setting added,
/// renamed or documented anew fails here until the README shows it as `--help` does.
#[test]
fn the_readme_lists_every_run_setting_as_run_config_describes_it() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (begin, end) = (
        "<!-- settings table: settings::markdown_table() -->\n",
        "<!-- end of settings table -->",
    );
    let start = readme
        .find(begin)
        .expect("the README marks its settings table")
        + begin.len();
    let stop = start
        + readme[start..]
            .find(end)
            .expect("the table's end is marked");
    let want = shallow::train::settings::markdown_table();
    assert!(
        readme[start..stop] == want,
        "README.md's settings table is out of date; it should read:\n{want}"
    );
}
