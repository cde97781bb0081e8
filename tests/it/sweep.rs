//! The sweep as a user runs it: the binary on a generated dataset, killed and resumed, two
//! processes on one database, a diverging run, status and export.
use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::shallow_bin;
use common::sweeps::{count, query, run_sweep, setup, sweep_command, sweep_command_fusing};
use rusqlite::Connection;

fn alive(pid: i64) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Every run done, with epochs 1..=E recorded exactly once.
fn assert_complete(db: &Path, runs: i64, epochs: i64) {
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM runs WHERE status = 'done'"),
        runs
    );
    assert_eq!(count(db, "SELECT COUNT(*) FROM epochs"), runs * epochs);
    let bad = count(
        db,
        &format!(
            "SELECT COUNT(*) FROM (SELECT run_id FROM epochs GROUP BY run_id
             HAVING COUNT(*) != {epochs} OR MIN(epoch) != 1 OR MAX(epoch) != {epochs})"
        ),
    );
    assert_eq!(bad, 0, "a run has missing or extra epochs");
}

#[test]
fn killed_sweep_resumes_without_losing_or_repeating_anything() {
    let s = setup(
        "layers = [1, 2, 3]\nseed = [0, 1]\nfilters = 16\nepochs = 3\nbatch_size = 16\n",
        3000,
        16,
    );
    let mut finished_before = Vec::new();
    for round in 0..2 {
        let mut child = sweep_command(&s, 1)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill once a run is mid-way (an epoch recorded, not finished) — after a finished run in
        // the second round.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "sweep made no progress");
            std::thread::sleep(Duration::from_millis(20));
            if !s.db.exists() {
                continue;
            }
            let Ok(mid) = Connection::open(&s.db).and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM runs r WHERE status = 'running'
                     AND EXISTS (SELECT 1 FROM epochs e WHERE e.run_id = r.id)",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            }) else {
                continue;
            };
            let done = count(&s.db, "SELECT COUNT(*) FROM runs WHERE status = 'done'");
            if mid > 0 && done >= round {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The workers die with their parent (PR_SET_PDEATHSIG).
        let pids: Vec<i64> = query(&s.db, "SELECT pid FROM workers");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|&p| alive(p)) {
            assert!(
                Instant::now() < deadline,
                "workers outlived the killed sweep"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(count(&s.db, "SELECT COUNT(*) FROM runs WHERE status = 'running'") >= 1);
        finished_before = query::<String>(
            &s.db,
            "SELECT id || '@' || finished_at FROM runs WHERE status = 'done' ORDER BY id",
        );
    }
    assert!(!finished_before.is_empty());
    let out = run_sweep(&s, 1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_complete(&s.db, 12, 3);
    let finished_after: Vec<String> = query(
        &s.db,
        "SELECT id || '@' || finished_at FROM runs ORDER BY id",
    );
    for run in &finished_before {
        assert!(
            finished_after.contains(run),
            "finished run {run} was trained again"
        );
    }
    // Only interrupted runs were attempted twice — both members of the fused group (seeds 0
    // and 1) in each round; nothing finished was repeated.
    assert_eq!(
        count(&s.db, "SELECT COUNT(*) FROM runs WHERE attempts > 1"),
        4
    );
}

#[test]
fn two_sweeps_on_one_database_never_train_the_same_run() {
    let s = setup(
        "layers = [1, 2]\nfilters = [2, 4, 6]\nlr = [1e-3, 2e-3]\nepochs = 2\n",
        300,
        8,
    );
    let a = sweep_command(&s, 1).stdout(Stdio::null()).spawn().unwrap();
    let b = sweep_command(&s, 1).stdout(Stdio::null()).spawn().unwrap();
    for mut child in [a, b] {
        assert!(child.wait().unwrap().success());
    }
    assert_complete(&s.db, 24, 2);
    assert_eq!(
        count(&s.db, "SELECT MAX(attempts) FROM runs"),
        1,
        "a run was trained twice"
    );
    assert_eq!(
        count(&s.db, "SELECT COUNT(DISTINCT worker) FROM runs"),
        2,
        "one sweep did all"
    );
}

/// Fused (lr 1e-3 and 1e30 in one array): the diverging member stops alone.
#[test]
fn diverging_run_is_recorded_and_the_sweep_completes() {
    let s = setup(
        "layers = 1\nfilters = 4\nlr = [1e-3, 1e30]\nepochs = 2\n",
        300,
        8,
    );
    let out = run_sweep(&s, 2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(&s.db, "SELECT COUNT(*) FROM runs WHERE status = 'done'"),
        2
    );
    assert_eq!(
        count(
            &s.db,
            "SELECT COUNT(*) FROM runs WHERE status = 'diverged' AND diverged_epoch = 1"
        ),
        2
    );
}

#[test]
fn changed_config_adds_runs_and_keeps_finished_ones() {
    let s = setup("layers = 1\nfilters = 4\nepochs = 1\n", 200, 8);
    assert!(run_sweep(&s, 1).status.success());
    let before: Vec<String> = query(&s.db, "SELECT id || '@' || finished_at FROM runs");
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("filters = 4", "filters = [4, 5]");
    std::fs::write(&s.config, text).unwrap();
    let out = run_sweep(&s, 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 runs in the grid, 2 new, 2 already"));
    let after: Vec<String> = query(&s.db, "SELECT id || '@' || finished_at FROM runs");
    assert_eq!(after.len(), 4);
    assert!(before.iter().all(|r| after.contains(r)));
}

#[test]
fn status_and_export_describe_the_results() {
    let s = setup("layers = [1, 2]\nfilters = 3\nepochs = 1\n", 200, 8);
    assert!(run_sweep(&s, 2).status.success());
    let out = Command::new(shallow_bin())
        .arg("status")
        .arg(&s.db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("4 runs") && text.contains("done      4"),
        "{text}"
    );
    assert!(text.contains("runs/hour"), "{text}");

    let csv_path = s.db.with_extension("csv");
    let out = Command::new(shallow_bin())
        .arg("export")
        .arg(&s.db)
        .arg("--csv")
        .arg(&csv_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 4);
    // Every run setting is a column, with the value in force where the grid left it out.
    // ... and every plain stored column of a run.
    let stored = shallow::sweep::store::scalar_names();
    for name in shallow::train::settings::names().iter().chain(&stored) {
        assert!(headers.iter().any(|h| h == *name), "no column {name}");
    }
    assert!(stored.contains(&"final_val_loss") && stored.contains(&"finished_at"));
    assert_eq!(
        ["augment", "weight_decay", "optimizer", "filters"].map(|c| &rows[0][column(c)]),
        ["none", "0", "adam", "3"]
    );
    for row in &rows {
        assert_eq!(&row[column("status")], "done");
        assert!(
            row[column("final_val_loss")]
                .parse::<f64>()
                .unwrap()
                .is_finite()
        );
        let p: usize = row[column("params")].parse().unwrap();
        let l: usize = row[column("layers")].parse().unwrap();
        assert_eq!(p, 3 * 9 + 3 + l * (3 * 3 * 9 + 3) + 3 * 64 * 10 + 10);
    }
    let layouts: Vec<&str> = rows.iter().map(|r| &r[column("layout")]).collect();
    assert_eq!(
        layouts,
        ["sequential", "parallel", "sequential", "parallel"]
    );

    let piped = Command::new(shallow_bin())
        .arg("export")
        .arg(&s.db)
        .args(["--csv", "-"])
        .current_dir(s.db.parent().unwrap())
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert_eq!(piped.stdout, std::fs::read(&csv_path).unwrap());
    assert!(String::from_utf8_lossy(&piped.stderr).contains("4 runs written to standard output"));
    assert!(!s.db.parent().unwrap().join("-").exists());
}

#[test]
fn missing_database_is_a_clear_error() {
    let out = Command::new(shallow_bin())
        .args(["status", "/nonexistent/x.db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such results database"));
}

/// `--no-train` queues a grid larger than one queueing chunk (10,000 runs) and trains nothing;
/// queueing it again adds nothing; a grid above `--max-runs` is refused before anything is
/// queued, and accepted once the limit is raised.
#[test]
fn large_grid_is_queued_in_chunks_without_training() {
    let s = setup(
        "seed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\nlr = [1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7e-4, 8e-4, 9e-4, 1e-3]\nbatch_size = [8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112]\nlayers = [1, 2, 3, 4, 5, 6, 7, 8]\n",
        100,
        8,
    );
    let runs = 10 * 10 * 14 * 8 * 2;
    let refused = sweep_command(&s, 1)
        .args(["--no-train", "--max-runs", "20000"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(&format!("--max-runs {runs}")), "{err}");
    assert!(!s.db.exists(), "nothing is queued when the grid is refused");
    for (round, new) in [(0, runs), (1, 0)] {
        let out = sweep_command(&s, 1)
            .args(["--no-train", "--max-runs", &runs.to_string()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "round {round}: {out:?}");
        assert!(
            stdout.contains(&format!("{runs} runs in the grid, {new} new")),
            "round {round}: {stdout}"
        );
    }
    assert_eq!(
        count(&s.db, "SELECT COUNT(*) FROM runs WHERE status = 'pending'"),
        runs
    );
    assert_eq!(
        count(&s.db, "SELECT COUNT(DISTINCT pair_id) FROM runs"),
        runs / 2
    );
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM epochs"), 0);
}

#[test]
fn fused_sweep_records_each_member_as_its_solo_run() {
    let grid = "layers = 2\nfilters = 4\nlr = [1e-3, 3e-3]\nseed = [0, 1]\nepochs = 2\n";
    let fused = setup(grid, 300, 8);
    let solo = setup(grid, 300, 8);
    assert!(run_sweep(&fused, 1).status.success());
    let out = sweep_command_fusing(&solo, 1, "1").output().unwrap();
    assert!(out.status.success());
    assert_complete(&fused.db, 8, 2);
    assert_complete(&solo.db, 8, 2);
    let results = |db: &Path| -> Vec<String> {
        query(
            db,
            "SELECT id || ' ' || final_train_loss || ' ' || final_val_loss || ' ' || final_val_acc
             FROM runs ORDER BY id",
        )
    };
    for (a, b) in results(&fused.db).iter().zip(results(&solo.db)) {
        let a: Vec<&str> = a.split(' ').collect();
        let b: Vec<&str> = b.split(' ').collect();
        assert_eq!(a[0], b[0], "run ids");
        for (x, y) in a[1..].iter().zip(&b[1..]) {
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (x - y).abs() / y.abs().max(1.0) < 1e-3,
                "run {}: {x} vs {y}",
                a[0]
            );
        }
    }
    // Members of one array share each epoch's wall time; runs trained alone do not.
    let timings = "SELECT COUNT(DISTINCT e.seconds) FROM epochs e JOIN runs r ON r.id = e.run_id
                   WHERE e.epoch = 1 AND r.config LIKE '%\"layout\":\"parallel\"%'";
    assert_eq!(
        count(&fused.db, timings),
        1,
        "the four parallel runs trained as one array"
    );
    assert_eq!(count(&solo.db, timings), 4);
}

/// Narrowing the grid of a sweep under way: its pending runs that the grid no longer holds are
/// named, and trained unless `--drop-removed` removes them; finished runs, and the runs of a user
/// data file (whose stored ids carry the file's hash), stay.
#[test]
fn a_narrowed_grid_drops_its_removed_pending_runs_only_when_told() {
    let s = setup("", 200, 8);
    crate::datasets::write_npz(&s.data.join("user.npz"), 40, 0);
    let grid = |seeds: &str| {
        std::fs::write(
            &s.config,
            format!(
                "name = \"t\"\n[runs]\ndataset = [\"tiny\", \"npz:user.npz\"]\nlayers = 1\n\
                 filters = 2\nepochs = 1\nlayout = \"parallel\"\nseed = {seeds}\n"
            ),
        )
        .unwrap();
    };
    let queue = |extra: &[&str]| {
        let out = sweep_command(&s, 1).args(extra).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let seeds = |status: &str| {
        query::<i64>(
            &s.db,
            &format!(
                "SELECT json_extract(config, '$.seed') FROM runs WHERE status = '{status}' \
                 ORDER BY 1"
            ),
        )
    };
    grid("0");
    queue(&[]);
    assert_eq!(seeds("done"), [0, 0]);
    grid("[0, 1, 2, 3]");
    assert!(!queue(&["--no-train"]).contains("no longer"));
    grid("[1, 2]");
    let kept = queue(&["--no-train"]);
    assert!(
        kept.contains(
            "2 pending run(s) of sweep 't' are no longer in its grid and will be trained too: \
             --drop-removed removes them"
        ),
        "{kept}"
    );
    assert_eq!(seeds("pending"), [1, 1, 2, 2, 3, 3]);
    let dropped = queue(&["--no-train", "--drop-removed"]);
    assert!(
        dropped.contains("2 pending run(s) no longer in the grid removed"),
        "{dropped}"
    );
    assert_eq!(seeds("pending"), [1, 1, 2, 2]);
    assert_eq!(seeds("done"), [0, 0], "finished runs outside the grid stay");
}

/// A grid is queued seed by seed, every dataset within a seed: a sweep stopped part-way holds
/// every dataset's configurations for its first seeds, not some datasets whole and others none.
#[test]
fn the_queue_holds_every_dataset_of_a_seed_before_the_next_seed() {
    let s = setup("", 100, 8);
    common::write_idx_dataset(&s.data.join("tiny2"), 100, 50, 8, false);
    std::fs::write(
        &s.config,
        "name = \"t\"\n[runs]\ndataset = [\"tiny\", \"tiny2\"]\nlayers = [1, 2]\nfilters = 2\n\
         seed = [0, 1]\n",
    )
    .unwrap();
    let out = sweep_command(&s, 1).arg("--no-train").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let order = query::<String>(
        &s.db,
        "SELECT json_extract(config, '$.seed') || ' ' || json_extract(config, '$.dataset') \
         FROM runs ORDER BY seq",
    );
    let mut expected = Vec::new();
    for seed in [0, 1] {
        for dataset in ["tiny", "tiny2"] {
            expected.extend(std::iter::repeat_n(format!("{seed} {dataset}"), 4));
        }
    }
    assert_eq!(order, expected);
}
