//! The Slurm deploy script run by a real one-node Slurm on localhost (`scripts/slurm-test-cluster.sh`
//! starts it: munge, slurmctld, slurmd from Debian's slurm-wlm): a job array of workers trains a
//! sweep queued on the local PostgreSQL to the end.
use crate::common;

use std::process::Command;

use common::stores;
use common::sweeps::{queue_only, setup};
use shallow::sweep::store::{self, RunStatus};

#[test]
fn slurm_job_array_trains_a_sweep_on_postgres() {
    let cluster = Command::new("scripts/slurm-test-cluster.sh")
        .output()
        .unwrap();
    assert!(
        cluster.status.success(),
        "the one-node Slurm cluster did not start: {}",
        String::from_utf8_lossy(&cluster.stderr)
    );
    let s = setup(
        "layers = [1, 2, 3]\nfilters = 4\nepochs = 2\nbatch_size = 16\n",
        200,
        8,
    );
    let t = stores::postgres();
    let url = t.url();
    queue_only(&s, url);
    let logs = tempfile::tempdir().unwrap();
    let job = Command::new("sbatch")
        .args(["--wait", "--export=ALL", "--array=0-1"])
        .arg(format!(
            "--output={}/worker-%A_%a.out",
            logs.path().display()
        ))
        .arg("deploy/slurm/shallow-worker.sbatch")
        .env("SHALLOW_DB", url)
        .env(
            "SHALLOW_BIN",
            std::fs::canonicalize(common::shallow_bin()).unwrap(),
        )
        .env("SHALLOW_DATA", &s.data)
        .env("SHALLOW_WORKER_ARGS", "--offline")
        .output()
        .unwrap();
    let worker_logs: String = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(job.status.success(), "{job:?}\n{worker_logs}");
    let runs = store::open_reader(&t.location).unwrap().runs().unwrap();
    assert_eq!(runs.len(), 6);
    assert!(
        runs.iter()
            .all(|r| r.status == RunStatus::Done && r.epochs_recorded == 2)
    );
    let workers: std::collections::BTreeSet<_> =
        runs.iter().filter_map(|r| r.worker.clone()).collect();
    assert!(!workers.is_empty() && workers.len() <= 2, "{workers:?}");
}
