//! Trained nets to take away: `train --save` writes the restored weights as safetensors with
//! their architecture, normalisation and settings; `shallow eval` scores the file as training
//! scored the net; `bench/shallow_net.py` loads it into PyTorch and gives the same logits on
//! real images; broken or foreign files are refused saying what is wrong.
use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{python, real_data, shallow_on};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Trains a small MNIST net of `arch` for 2 epochs, saving it to `net`; its final test loss.
fn train_saved(arch: &[&str], net: &Path, json: &Path) -> f64 {
    let mut args = vec![
        "train",
        "--dataset",
        "mnist",
        "--filters",
        "6",
        "--layers",
        "4",
    ];
    args.extend([
        "--train-limit",
        "600",
        "--val-limit",
        "300",
        "--epochs",
        "2",
    ]);
    args.extend([
        "--offline",
        "--threads",
        "1",
        "--save",
        net.to_str().unwrap(),
    ]);
    args.extend(["--json", json.to_str().unwrap()]);
    args.extend(arch);
    let out = shallow_on(&args, &real_data());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("trained net saved to"),
        "{}",
        text(&out)
    );
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    result["final_val_loss"].as_f64().unwrap()
}

#[test]
fn a_saved_net_evaluates_as_trained_and_gives_the_same_logits_in_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let archs: [&[&str]; 3] = [
        &["--layout", "sequential", "--head", "gap", "--batchnorm"],
        &[
            "--layout",
            "parallel",
            "--pool",
            "max2",
            "--activation",
            "tanh",
        ],
        // a stopping rule: the best held-out epoch's weights are the ones saved
        &[
            "--layout",
            "staged-2",
            "--batchnorm",
            "--holdout",
            "300",
            "--stop",
            "plateau",
        ],
    ];
    for (i, arch) in archs.into_iter().enumerate() {
        let net = tmp.path().join(format!("net{i}.safetensors"));
        let outputs = tmp.path().join(format!("out{i}.safetensors"));
        let loss = train_saved(arch, &net, &tmp.path().join(format!("run{i}.json")));
        let eval = shallow_on(
            &[
                "eval",
                net.to_str().unwrap(),
                "--offline",
                "--outputs",
                outputs.to_str().unwrap(),
            ],
            &real_data(),
        );
        assert!(eval.status.success(), "{arch:?}: {}", text(&eval));
        let said = text(&eval);
        assert!(
            said.contains(&format!("on 300 test images of mnist: loss {loss:.5}")),
            "{arch:?}: training's test loss {loss:.5}, eval said: {said}"
        );
        let check = Command::new(python())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/shallow_net.py"))
            .args(["check", net.to_str().unwrap(), outputs.to_str().unwrap()])
            .env("OMP_NUM_THREADS", "1")
            .output()
            .unwrap();
        assert!(check.status.success(), "{}", text(&check));
        let measured: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
        assert_eq!(measured["images"], 300, "{measured}");
        assert!(
            measured["max_abs_diff"].as_f64().unwrap() <= 1e-5,
            "{arch:?}: PyTorch's logits differ from shallow's: {measured}"
        );
    }
}

#[test]
fn broken_foreign_and_mismatched_files_are_refused_and_a_diverged_run_saves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net.safetensors");
    train_saved(
        &["--layout", "parallel"],
        &net,
        &tmp.path().join("run.json"),
    );
    let eval = |model: &Path, extra: &[&str]| {
        let mut args = vec!["eval", model.to_str().unwrap(), "--offline"];
        args.extend(extra);
        shallow_on(&args, &real_data())
    };
    let refused = |out: Output, says: &str| {
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains(says),
            "wanted '{says}' in: {}",
            text(&out)
        );
    };
    // A truncated file.
    let bytes = std::fs::read(&net).unwrap();
    let cut = tmp.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refused(eval(&cut, &[]), "cut.safetensors");
    // A safetensors file that is no net of shallow's: eval's own outputs.
    let outputs = tmp.path().join("outputs.safetensors");
    assert!(
        eval(&net, &["--outputs", outputs.to_str().unwrap()])
            .status
            .success()
    );
    refused(eval(&outputs, &[]), "not a net saved by shallow");
    // An MNIST net on CIFAR-10's images.
    refused(
        eval(&net, &["--dataset", "cifar10"]),
        "dataset 'cifar10' has [3, 32, 32] images",
    );
    // A diverged run: nothing written.
    let diverged = tmp.path().join("diverged.safetensors");
    let args = [
        "train",
        "--dataset",
        "mnist",
        "--layout",
        "sequential",
        "--lr",
        "1e30",
        "--train-limit",
        "200",
        "--val-limit",
        "100",
        "--offline",
        "--save",
        diverged.to_str().unwrap(),
    ];
    let out = shallow_on(&args, &real_data());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("no net saved"), "{}", text(&out));
    assert!(!diverged.exists());
}

/// A sweep with `--save-nets` keeps every run's net, fused members' included (their own
/// weights and batch-norm statistics): each file scores its run's recorded test loss.
#[test]
fn a_sweep_keeps_every_runs_net_fused_members_included() {
    use common::sweeps::{query, setup, sweep_command};
    let s = setup(
        "layout = [\"sequential\", \"parallel\"]\nlayers = 2\nfilters = 3\nepochs = 2\n\
         batchnorm = true\nlr = [1e-3, 3e-3]\nseed = [0, 1]\n",
        120,
        8,
    );
    let nets = s.db.with_file_name("nets");
    let out = sweep_command(&s, 1)
        .args(["--save-nets", nets.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Members of one array share each epoch's wall time: the four runs of a layout were fused.
    let arrays = "SELECT COUNT(DISTINCT e.seconds) FROM epochs e JOIN runs r ON r.id = e.run_id
                  WHERE e.epoch = 1 GROUP BY r.config LIKE '%\"layout\":\"parallel\"%'";
    assert_eq!(query::<i64>(&s.db, arrays), [1, 1]);
    let runs: Vec<String> = query(&s.db, "SELECT id || ' ' || final_val_loss FROM runs");
    assert_eq!(runs.len(), 8);
    for run in runs {
        let (id, recorded) = run.split_once(' ').unwrap();
        let recorded: f64 = recorded.parse().unwrap();
        let net = nets.join(format!("{id}.safetensors"));
        let eval = shallow_on(&["eval", net.to_str().unwrap(), "--offline"], &s.data);
        assert!(eval.status.success(), "{}", text(&eval));
        let said = text(&eval);
        let loss: f64 = said
            .split("loss ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no loss in: {said}"));
        assert!(
            (loss - recorded).abs() <= 1e-4 * recorded.max(1.0),
            "run {id}: recorded test loss {recorded}, its saved net scores {loss}"
        );
    }
}
