//! Chaos on PostgreSQL: four worker processes on one sweep of 24 tiny runs, and beside them one
//! whose data directory is empty; twelve times a worker holding a run is killed with SIGKILL (each
//! replaced as a scheduler would), and the database server is restarted once mid-sweep. Every run
//! must end done exactly once with epochs 1..E exactly once, and with the same final metrics as an
//! undisturbed sweep of the same grid; the broken worker must stop with the environment's exit
//! code, failing nothing.
use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::stores;
use common::sweeps::{Setup, queue_only as queue, setup};
use shallow::sweep::store::{self, Location, RunStatus};

const LEASE: &str = "15";

/// The chaos test restarts the server: the tests of this file run one at a time under `cargo
/// test` (under nextest, in processes of their own, `.config/nextest.toml` runs it alone).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Starts a worker whose log goes to a new file in `logs`.
fn worker(s: &Setup, url: &str, logs: &Path) -> Child {
    worker_on(&s.data, url, logs)
}

/// [`worker`] on the data directory `data`.
fn worker_on(data: &Path, url: &str, logs: &Path) -> Child {
    let n = std::fs::read_dir(logs).unwrap().count();
    let log = std::fs::File::create(logs.join(format!("worker-{n:03}.log"))).unwrap();
    Command::new(common::shallow_bin())
        .args([
            "worker",
            "--threads",
            "1",
            "--offline",
            "--max-attempts",
            "1000",
        ])
        .args(["--lease", LEASE])
        .arg("--data-dir")
        .arg(data)
        .env("SHALLOW_DB", url)
        .env("SHALLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// What a failed chaos test prints: every run's state and the end of every worker's log.
fn diagnosis(location: &Location, logs: &Path) -> String {
    let runs = store::open_reader(location).unwrap().runs().unwrap();
    let mut out: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{} {:?} attempts {} epochs {} worker {:?} error {:?}",
                r.id, r.status, r.attempts, r.epochs_recorded, r.worker, r.error
            )
        })
        .collect();
    let mut files: Vec<_> = std::fs::read_dir(logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push(format!("--- {}", file.display()));
        out.extend(
            lines[lines.len().saturating_sub(8)..]
                .iter()
                .map(|l| l.to_string()),
        );
    }
    out.join("\n")
}

/// Run id, final validation and training loss, epochs recorded.
type Metrics = (String, Option<f64>, Option<f64>, i64);

/// Final metrics by run id, and every run's status.
fn results(location: &Location) -> (Vec<Metrics>, Vec<RunStatus>) {
    let runs = store::open_reader(location).unwrap().runs().unwrap();
    let mut metrics: Vec<_> = runs
        .iter()
        .map(|r| {
            (
                r.id.clone(),
                r.final_val_loss,
                r.final_train_loss,
                r.epochs_recorded,
            )
        })
        .collect();
    metrics.sort_by(|a, b| a.0.cmp(&b.0));
    (metrics, runs.iter().map(|r| r.status).collect())
}

/// Indexes into `workers` of those holding a running run (a worker's id embeds its pid).
fn holders(location: &Location, workers: &[Child]) -> Vec<usize> {
    let running = store::open_reader(location)
        .and_then(|s| s.running(Duration::from_secs(3600)))
        .unwrap_or_default();
    workers
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            let pid = w.id().to_string();
            running
                .iter()
                .any(|r| r.worker.split(':').nth(1) == Some(pid.as_str()))
        })
        .map(|(i, _)| i)
        .collect()
}

fn restart_server() {
    let (data, bin) = (
        std::env::var("SHALLOW_TEST_PG_DATA"),
        std::env::var("SHALLOW_TEST_PG_BIN"),
    );
    let (Ok(data), Ok(bin)) = (data, bin) else {
        panic!(
            "the chaos test restarts the server: start it with eval \"$(scripts/pg-test-server.sh)\""
        );
    };
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(format!("{bin}/pg_ctl"));
        c
    } else {
        Command::new(format!("{bin}/pg_ctl"))
    };
    let out = command
        .args(["restart", "-m", "fast", "-w", "-D", &data])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_ctl restart: {out:?}");
}

#[test]
fn killed_workers_and_a_server_restart_lose_nothing_and_repeat_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let grid = "layers = [1, 2, 3]\nfilters = [4, 8]\nseed = [0, 1]\nepochs = 3\nbatch_size = 16\n";
    let s = setup(grid, 600, 8);
    let (calm, chaos) = (stores::postgres(), stores::postgres());
    let logs = tempfile::tempdir().unwrap();
    let logs = logs.path();
    // The undisturbed reference.
    queue(&s, calm.url());
    let mut w = worker(&s, calm.url(), logs);
    assert!(w.wait().unwrap().success());
    let (reference, statuses) = results(&calm.location);
    assert_eq!(reference.len(), 24);
    assert!(statuses.iter().all(|s| *s == RunStatus::Done));

    queue(&s, chaos.url());
    let empty = tempfile::tempdir().unwrap();
    let mut broken = worker_on(empty.path(), chaos.url(), logs);
    let mut workers: Vec<Child> = (0..4).map(|_| worker(&s, chaos.url(), logs)).collect();
    let (mut kills, mut restarted) = (0, false);
    let started = Instant::now();
    let mut rng = 0x9e3779b97f4a7c15_u64;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the sweep did not finish in 10 min:\n{}",
            diagnosis(&chaos.location, logs)
        );
        std::thread::sleep(Duration::from_millis(100));
        let (_, statuses) = results(&chaos.location);
        let done = statuses.iter().filter(|s| **s == RunStatus::Done).count();
        if done == 24 {
            break;
        }
        assert!(
            statuses
                .iter()
                .all(|s| !s.finished() || *s == RunStatus::Done),
            "a run ended other than done:\n{}",
            diagnosis(&chaos.location, logs)
        );
        // Only a worker holding a run is killed: the kills happen before the runs can end,
        // however fast the machine.
        let holding = holders(&chaos.location, &workers);
        if kills < 12 && !holding.is_empty() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let victim = &mut workers[holding[(rng % holding.len() as u64) as usize]];
            victim.kill().unwrap(); // SIGKILL
            victim.wait().unwrap();
            kills += 1;
        }
        if kills == 6 && !restarted {
            restart_server();
            restarted = true;
        }
        // As a scheduler would: every worker that ended (killed, or out of work while others'
        // runs wait for their lease to lapse) is replaced while runs remain.
        for w in &mut workers {
            if w.try_wait().unwrap().is_some() {
                *w = worker(&s, chaos.url(), logs);
            }
        }
    }
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert_eq!((kills, restarted), (12, true));
    let stopped = broken.wait().unwrap();
    assert_eq!(stopped.code(), Some(69), "the broken worker: {stopped:?}");
    let (metrics, statuses) = results(&chaos.location);
    assert!(
        statuses.iter().all(|s| *s == RunStatus::Done),
        "{}",
        diagnosis(&chaos.location, logs)
    );
    assert_eq!(
        metrics, reference,
        "same results as the undisturbed sweep, epochs 1..E once"
    );
    println!(
        "chaos: {kills} kills, one server restart, 24/24 runs done in {:?}",
        started.elapsed()
    );
}

/// Workers whose clocks run ten minutes fast and ten minutes slow share a sweep with a 15 s lease:
/// liveness is decided by the server's clock, so neither requeues the other's live run.
#[test]
fn skewed_worker_clocks_neither_requeue_live_runs_nor_lose_their_own() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup(
        "layers = [3, 4]\nfilters = 16\nepochs = 4\nbatch_size = 16\n",
        2000,
        16,
    );
    let t = stores::postgres();
    let url = t.url();
    queue(&s, url);
    let skewed = |offset: &str| {
        let mut c = Command::new(common::shallow_bin());
        c.args(["worker", "--threads", "1", "--offline", "--lease", LEASE])
            .arg("--data-dir")
            .arg(&s.data)
            .env("SHALLOW_DB", url)
            .env("SHALLOW_CLOCK_OFFSET", offset)
            .stderr(Stdio::null());
        c.spawn().unwrap()
    };
    let workers = [skewed("600"), skewed("-600")];
    for mut w in workers {
        assert!(w.wait().unwrap().success());
    }
    let runs = store::open_reader(&t.location).unwrap().runs().unwrap();
    assert_eq!(runs.len(), 4);
    for r in &runs {
        assert_eq!(
            (r.status, r.attempts, r.epochs_recorded),
            (RunStatus::Done, 1, 4),
            "{}",
            r.id
        );
    }
}
