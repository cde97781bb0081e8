//! Worker processes that die: a zombie is dead at once, `status` labels its run, the sweep
//! replaces a killed worker and still ends every run exactly once, and the summary counts only
//! what this invocation trained; a failed store write puts the run back rather than failing it;
//! a worker whose environment is broken leaves every run as it was and stops.
use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::run_config;
use common::sweeps::{count, query, setup, sweep_command};
use shallow::model::Layout;
use shallow::sweep::inspect;
use shallow::sweep::store::identity::RunSpec;
use shallow::sweep::store::{Location, SqliteStore, Store, WorkerInfo};

#[test]
fn a_zombie_worker_is_dead_at_once_and_status_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    let mut store = SqliteStore::open(&db).unwrap();
    let config = run_config("mnist", Layout::Sequential);
    let spec = RunSpec::of(config);
    store.add_runs("z", "", &[spec]).unwrap();
    // A child that exits and is not reaped: a zombie, which `kill(pid, 0)` still finds.
    let mut child = Command::new("true").spawn().unwrap();
    let started = Instant::now();
    let stat = format!("/proc/{}/stat", child.id());
    while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never became a zombie"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut worker = WorkerInfo::this_process(1);
    worker.pid = child.id();
    worker.id = format!("{}:{}:0", worker.host, worker.pid);
    store.register_worker(&worker).unwrap();
    assert!(store.claim(&worker).unwrap().is_some());
    let lease = shallow::sweep::store::DEFAULT_LEASE;
    let status = inspect::status_text(&Location::Sqlite(db.clone()), lease).unwrap();
    assert!(status.contains("abandoned (its worker is gone"), "{status}");
    // Its heartbeat is fresh, yet it is recognised dead without waiting for staleness.
    let requeued = store
        .requeue_abandoned(Duration::from_secs(3600), 3)
        .unwrap();
    assert_eq!(requeued, 1);
    child.wait().unwrap();
}

#[test]
fn a_killed_worker_is_replaced_and_every_run_ends_exactly_once() {
    let s = setup(
        "layers = [1, 2, 3]\nfilters = 8\nepochs = 2\nbatch_size = 16\n",
        1500,
        16,
    );
    let sweep = sweep_command(&s, 1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let victim = loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no run started"
        );
        std::thread::sleep(Duration::from_millis(200));
        if !s.db.exists() {
            continue;
        }
        let pids: Vec<i64> = query(
            &s.db,
            "SELECT w.pid FROM runs r JOIN workers w ON w.id = r.worker WHERE r.status = 'running'",
        );
        if let Some(&pid) = pids.first() {
            break pid;
        }
    };
    // SAFETY: SIGKILL to the worker process the sweep started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let out = sweep.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("died along the way and were replaced"),
        "{stderr}"
    );
    let runs = 6;
    assert_eq!(
        count(&s.db, "SELECT COUNT(*) FROM runs WHERE status = 'done'"),
        runs
    );
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM epochs"), runs * 2);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("trained now 6 done"), "{stdout}");

    // Run again: nothing left to train, and the summary says so.
    let out = sweep_command(&s, 1).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("trained now 0 done, 0 diverged, 0 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("in the database 6 done"), "{stdout}");
}

/// Waits until a run is mid-way (an epoch recorded, not finished).
fn wait_until_mid_run(db: &std::path::Path) {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no run got going"
        );
        std::thread::sleep(Duration::from_millis(100));
        if db.exists()
            && count(
                db,
                "SELECT COUNT(*) FROM runs r WHERE status = 'running'
                 AND EXISTS (SELECT 1 FROM epochs e WHERE e.run_id = r.id)",
            ) > 0
        {
            return;
        }
    }
}

/// Sends SIGTERM and returns the exit code and how long the process took to end.
fn terminate(mut child: std::process::Child) -> (Option<i32>, Duration) {
    let sent = Instant::now();
    // SAFETY: signals the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    (status.code(), sent.elapsed())
}

/// What Slurm and Kubernetes send before SIGKILL: a worker hands its run back within seconds
/// (pending again, partial epochs gone, the attempt not counted) and exits 0; a sweep passes it
/// on to its workers and leaves nothing running.
#[test]
fn sigterm_hands_the_run_back_and_exits() {
    let s = setup(
        "layers = [4, 5]\nfilters = 16\nepochs = 20\nbatch_size = 16\n",
        3000,
        16,
    );
    let queued = sweep_command(&s, 1).arg("--no-train").output().unwrap();
    assert!(queued.status.success(), "{queued:?}");
    let worker = Command::new(common::shallow_bin())
        .args([
            "worker",
            "--db",
            s.db.to_str().unwrap(),
            "--threads",
            "1",
            "--offline",
        ])
        .arg("--data-dir")
        .arg(&s.data)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_mid_run(&s.db);
    let (code, took) = terminate(worker);
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(
        count(&s.db, "SELECT COUNT(*) FROM runs WHERE status = 'pending'"),
        4
    );
    assert_eq!(
        count(&s.db, "SELECT COUNT(*) FROM runs WHERE attempts > 0"),
        0
    );
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM epochs"), 0);

    let sweep = sweep_command(&s, 2)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_mid_run(&s.db);
    let (code, took) = terminate(sweep);
    assert_eq!(
        code,
        Some(1),
        "runs remain: a sweep stopped early is not complete"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(
        count(&s.db, "SELECT COUNT(*) FROM runs WHERE status = 'running'"),
        0
    );
    assert_eq!(
        count(
            &s.db,
            "SELECT COUNT(*) FROM epochs e JOIN runs r ON r.id = e.run_id
                      WHERE r.status = 'pending'"
        ),
        0
    );
}

/// A store write that fails mid-run (a trigger refuses the second epoch of every run's first
/// attempt) is the store's failure, not the run's: the worker puts the runs back, attempt
/// counted, and trains them again — alone and as fused arrays.
#[test]
fn a_failed_epoch_write_puts_the_run_back_instead_of_failing_it() {
    for fuse in ["1", "4"] {
        let s = setup(
            "layers = 2\nfilters = 4\nlr = [0.001, 0.002]\nseed = [0, 1]\nepochs = 3\nbatch_size = 16\n",
            300,
            8,
        );
        let queued = sweep_command(&s, 1).arg("--no-train").output().unwrap();
        assert!(queued.status.success(), "{queued:?}");
        rusqlite::Connection::open(&s.db)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER fail_once BEFORE INSERT ON epochs
                 WHEN NEW.epoch = 2 AND (SELECT attempts FROM runs WHERE id = NEW.run_id) = 1
                 BEGIN SELECT RAISE(ABORT, 'injected write failure'); END;",
            )
            .unwrap();
        let out = Command::new(common::shallow_bin())
            .args(["worker", "--db", s.db.to_str().unwrap(), "--threads", "1"])
            .args(["--offline", "--fuse", fuse, "--data-dir"])
            .arg(&s.data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let rows: Vec<String> = query(
            &s.db,
            "SELECT status || ' ' || attempts || ' ' || COALESCE(error, '-') || ' '
                 || (SELECT COUNT(*) FROM epochs e WHERE e.run_id = runs.id) FROM runs",
        );
        assert_eq!(rows, vec!["done 2 - 3"; 8], "--fuse {fuse}");
    }
}

/// Every run's status and attempts.
fn statuses(db: &std::path::Path) -> Vec<String> {
    query(
        db,
        "SELECT status || ' ' || attempts FROM runs ORDER BY seq",
    )
}

/// A worker with `args` on the setup's database: its exit code and standard error.
fn broken_worker(s: &common::sweeps::Setup, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(common::shallow_bin())
        .args(["worker", "--threads", "1", "--offline"])
        .args(args)
        .env("SHALLOW_DB", &s.db)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A wrong data directory, a device the machine lacks and an unreachable store are the worker's
/// environment, not the runs': every run stays pending with its attempts unchanged, and the
/// worker exits 69 naming the cause. A pool of such workers is not replaced, and says why.
#[test]
fn a_broken_environment_leaves_every_run_pending_and_stops_the_worker() {
    let s = setup("layers = [1, 2, 3]\nfilters = 4\nepochs = 1\n", 200, 8);
    let queued = sweep_command(&s, 1).arg("--no-train").output().unwrap();
    assert!(queued.status.success(), "{queued:?}");
    let untouched = vec!["pending 0"; 6];
    assert_eq!(statuses(&s.db), untouched);
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap();

    let (code, stderr) = broken_worker(&s, &["--data-dir", empty]);
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("data unavailable"), "{stderr}");
    assert!(stderr.contains("tiny"), "names the dataset: {stderr}");
    assert_eq!(statuses(&s.db), untouched);

    let data = s.data.to_str().unwrap();
    if tch::Cuda::is_available() {
        eprintln!("this machine has CUDA: the missing-device case is not exercised here");
    } else {
        let (code, stderr) = broken_worker(&s, &["--data-dir", data, "--device", "cuda"]);
        assert_eq!(code, Some(69), "{stderr}");
        assert!(stderr.contains("device unavailable"), "{stderr}");
        assert_eq!(statuses(&s.db), untouched);
    }

    for db in [
        "postgres://shallow:secret@127.0.0.1:1/none",
        "/nonexistent-folder/r.db",
    ] {
        let out = Command::new(common::shallow_bin())
            .args(["worker", "--offline", "--data-dir", data, "--db", db])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{stderr}");
        assert!(stderr.contains("results store unavailable"), "{stderr}");
        assert!(!stderr.contains("secret"), "{stderr}");
    }
    assert_eq!(statuses(&s.db), untouched);

    // A pool: both workers stop on the fault, neither is replaced, the command says why.
    let out = Command::new(common::shallow_bin())
        .args(["worker", "--workers", "2", "--threads", "1", "--offline"])
        .args(["--data-dir", empty])
        .env("SHALLOW_DB", &s.db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("data unavailable"), "{stderr}");
    assert!(stderr.contains("no worker was started again"), "{stderr}");
    assert_eq!(statuses(&s.db), untouched);
    let log = std::fs::read_to_string(s.db.with_extension("workers.log")).unwrap();
    assert_eq!(log.matches("data unavailable").count(), 2, "{log}");
}

/// A fused group too large for the worker's memory (a data limit of 2.5 GB, where one member
/// needs about 1.2 GB) is not the runs' fault: the group is handed back and claimed again at half
/// the size until it fits, and every run ends done on its first counted attempt.
#[test]
fn a_fused_group_out_of_memory_is_claimed_again_at_half_the_size() {
    let s = setup(
        "layout = \"parallel\"\nlayers = 4\nfilters = 32\nbatch_size = 512\nepochs = 1\n\
         val_limit = 256\nlr = [0.001, 0.002]\nseed = [0, 1]\n",
        1024,
        28,
    );
    let queued = sweep_command(&s, 1).arg("--no-train").output().unwrap();
    assert!(queued.status.success(), "{queued:?}");
    let out = Command::new("prlimit")
        .arg("--data=2500000000")
        .arg(common::shallow_bin())
        .args(["worker", "--threads", "1", "--offline", "--fuse", "4"])
        .arg("--data-dir")
        .arg(&s.data)
        .env("SHALLOW_DB", &s.db)
        .env("SHALLOW_LOG", "info")
        .output()
        .expect("util-linux `prlimit` limits the worker's memory: install util-linux");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("a fused group of 4 ran out of memory"),
        "{stderr}"
    );
    assert_eq!(statuses(&s.db), vec!["done 1"; 4], "{stderr}");
}
