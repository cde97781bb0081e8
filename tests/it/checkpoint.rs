//! Checkpoints: a run resumed from any epoch's checkpoint goes on bit for bit as the run that
//! never stopped (every optimizer, the schedule, the stopping rule and its best weights, the
//! augmentation), and a checkpoint that is not whole, or is of other settings or code, is
//! refused.
use crate::common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::stores::TestStore;
use common::sweeps::{Setup, queue_only, setup};
use common::{real_data, run_config, shallow_bin};
use shallow::data::{self, Holdout, Tensors};
use shallow::model::{Layout, Pool};
use shallow::sweep::store::{self, Location};
use shallow::train::augment::Augment;
use shallow::train::optim::{Optimizer, Schedule};
use shallow::train::stopping::StopRule;
use shallow::train::{self, Checkpoint, EpochMetrics, Observer, RunConfig, RunResult};
use tch::Device;

/// Keeps every checkpoint it is offered.
#[derive(Default)]
struct Keep(Vec<Checkpoint>);

impl Observer for Keep {
    fn wants_checkpoint(&mut self, _epoch: usize) -> bool {
        true
    }
    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        self.0.push(checkpoint.clone());
        Ok(())
    }
}

/// A small MNIST net with a held-out split, the plateau rule (its best weights restored) and
/// the plateau schedule.
fn config(layout: Layout, edit: impl FnOnce(&mut RunConfig)) -> RunConfig {
    let mut cfg = RunConfig {
        layers: 2,
        filters: 4,
        pool: Pool::Max2,
        batchnorm: true,
        epochs: 5,
        train_limit: Some(600),
        val_limit: Some(200),
        holdout: Some(Holdout::Count(200)),
        stop: StopRule::Plateau,
        patience: 3,
        min_delta: 0.0,
        schedule: Schedule::Plateau,
        lr_patience: 0,
        lr_factor: 0.5,
        ..run_config(data::MNIST, layout)
    };
    edit(&mut cfg);
    cfg
}

fn tensors(cfg: &RunConfig) -> Tensors {
    let raw = data::load(&real_data(), data::MNIST).unwrap();
    data::prepare(&raw, &cfg.selection(), Device::Cpu).unwrap()
}

/// Everything a run records but its timings.
fn without_times(r: &RunResult) -> RunResult {
    let mut r = r.clone();
    for m in &mut r.epochs {
        (m.seconds, m.images_per_second) = (0.0, 0.0);
    }
    (r.train_seconds, r.total_seconds) = (0.0, 0.0);
    if let Some(c) = &mut r.convergence {
        c.seconds_to_best = 0.0;
    }
    r
}

/// A change to the base config.
type Edit = fn(&mut RunConfig);

#[test]
fn a_run_resumed_from_any_epoch_equals_the_run_that_never_stopped() {
    let variants: [(&str, Edit); 4] = [
        ("adam, crop augmentation", |c| c.augment = Augment::Crop),
        ("sgd with momentum", |c| {
            (c.optimizer, c.lr, c.momentum) = (Optimizer::Sgd, 0.05, 0.9)
        }),
        ("adamw", |c| c.optimizer = Optimizer::Adamw),
        ("l-bfgs", |c| {
            (c.optimizer, c.lr, c.batch_size) = (Optimizer::Lbfgs, 0.5, 300);
            c.lbfgs_iterations = 3;
        }),
    ];
    for (what, edit) in variants {
        let cfg = config(Layout::Parallel, edit);
        let data = tensors(&cfg);
        let mut kept = Keep::default();
        let whole = train::train(&cfg, &data, Device::Cpu, &mut kept).unwrap();
        assert!(kept.0.len() >= 2, "{what}: {} checkpoints", kept.0.len());
        for checkpoint in &kept.0 {
            let stored = Checkpoint::from_bytes(checkpoint.bytes().to_vec()).unwrap();
            let mut silent = train::Silent;
            let resumed =
                train::train_from(&cfg, &data, Device::Cpu, &mut silent, Some(&stored)).unwrap();
            assert_eq!(
                without_times(&resumed),
                without_times(&whole),
                "{what}: resumed after epoch {}",
                checkpoint.epoch()
            );
        }
    }
}

#[test]
fn a_checkpoint_not_whole_or_of_other_settings_or_code_is_refused() {
    let cfg = config(Layout::Sequential, |_| {});
    let data = tensors(&cfg);
    let mut kept = Keep::default();
    train::train(
        &RunConfig {
            epochs: 2,
            ..cfg.clone()
        },
        &data,
        Device::Cpu,
        &mut kept,
    )
    .unwrap();
    let bytes = kept.0[0].bytes().to_vec();
    for cut in [bytes.len() - 1, bytes.len() / 2, 3] {
        let err = Checkpoint::from_bytes(bytes[..cut].to_vec()).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a whole checkpoint"),
            "{err:#}"
        );
    }
    let code = train::checkpoint::CODE.as_bytes();
    let at = bytes.windows(code.len()).position(|w| w == code).unwrap();
    let mut other = bytes.clone();
    other[at..at + code.len()].fill(b'0');
    let err = Checkpoint::from_bytes(other).unwrap_err();
    assert!(format!("{err:#}").contains("training code"), "{err:#}");
    let seed = RunConfig {
        seed: 7,
        epochs: 2,
        ..cfg
    };
    let err = train::train_from(
        &seed,
        &data,
        Device::Cpu,
        &mut train::Silent,
        Some(&kept.0[0]),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("other settings"), "{err:#}");
}

/// A worker on `db` with a checkpoint after every epoch, fusing up to `fuse` runs.
fn worker(s: &Setup, db: &str, fuse: &str) -> Command {
    let mut c = Command::new(shallow_bin());
    c.args(["worker", "--db", db, "--threads", "1", "--offline"])
        .args(["--fuse", fuse, "--checkpoint-every", "0"])
        .arg("--data-dir")
        .arg(&s.data)
        .env("SHALLOW_LOG", "info");
    c
}

/// Every run's epochs (without their timings), by run id.
fn epochs(location: &Location) -> BTreeMap<String, Vec<EpochMetrics>> {
    let store = store::open(location).unwrap();
    let mut all = BTreeMap::new();
    for row in store.epochs().unwrap() {
        let mut m = row.metrics;
        (m.seconds, m.images_per_second) = (0.0, 0.0);
        all.entry(row.run_id).or_insert_with(Vec::new).push(m);
    }
    all
}

/// Waits until a run of `ids` has a checkpoint after at least epoch 2 (while `worker` is still
/// training).
fn wait_for_checkpoints(location: &Location, ids: &[String], worker: &mut Child) {
    let mut store = store::open(location).unwrap();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoints"
        );
        if let Some(status) = worker.try_wait().unwrap() {
            let mut log = String::new();
            worker
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut log)
                .unwrap();
            panic!("the worker ended ({status}) before its checkpoints: {log}");
        }
        let epochs: Vec<Option<usize>> = ids
            .iter()
            .map(|id| {
                let stored = store.checkpoint(id).unwrap()?;
                Some(stored.open().unwrap().epoch())
            })
            .collect();
        if epochs.iter().any(|e| e.is_some_and(|e| e >= 2)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Trains the grid of `runs_toml` once through, and once killed with `signal` after its runs'
/// second checkpoints and resumed by a second worker: every epoch of every run is the same bit
/// for bit, the second worker said it resumed, and no checkpoint is left.
fn killed_and_resumed_equals_uninterrupted(
    target: TestStore,
    signal: i32,
    runs_toml: &str,
    fuse: &str,
) {
    let s = setup(runs_toml, 3000, 16);
    let reference = common::stores::sqlite();
    let db = |t: &TestStore| String::from(t.location.clone());
    queue_only(&s, &db(&reference));
    let whole = worker(&s, &db(&reference), fuse).output().unwrap();
    assert!(whole.status.success(), "{whole:?}");
    let expected = epochs(&reference.location);

    queue_only(&s, &db(&target));
    let ids: Vec<String> = expected.keys().cloned().collect();
    let mut first = worker(&s, &db(&target), fuse)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoints(&target.location, &ids, &mut first);
    // SAFETY: signals the worker this test started.
    unsafe { libc::kill(first.id() as i32, signal) };
    let out = first.wait_with_output().unwrap();
    if signal == libc::SIGKILL {
        if let Location::Postgres(_) = target.location {
            // The dead worker's lease expires (as it would after --lease seconds).
            common::stores::execute(&target.location, "UPDATE runs SET lease_renewed_at = 0");
        }
    } else {
        assert!(out.status.success(), "{out:?}");
    }
    let mut store = store::open(&target.location).unwrap();
    let kept: Vec<&String> = ids
        .iter()
        .filter(|id| store.checkpoint(id).unwrap().is_some())
        .collect();
    assert!(!kept.is_empty());
    let second = worker(&s, &db(&target), fuse).output().unwrap();
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{log}");
    for id in kept {
        assert!(
            log.contains(&format!("run {id} resumes after epoch")),
            "{log}"
        );
    }
    assert_eq!(epochs(&target.location), expected, "{log}");
    for id in &ids {
        assert!(
            store.checkpoint(id).unwrap().is_none(),
            "{id} kept its checkpoint"
        );
    }
}

const SOLO: &str = "layers = 3\nfilters = 8\nepochs = 6\nbatch_size = 16\nholdout = 500\n\
                    stop = \"plateau\"\npatience = 3\n";

#[test]
fn a_killed_worker_s_run_resumes_bit_for_bit_on_sqlite() {
    killed_and_resumed_equals_uninterrupted(common::stores::sqlite(), libc::SIGKILL, SOLO, "1");
    killed_and_resumed_equals_uninterrupted(common::stores::sqlite(), libc::SIGTERM, SOLO, "1");
}

#[test]
fn a_killed_worker_s_run_resumes_bit_for_bit_on_postgres() {
    killed_and_resumed_equals_uninterrupted(common::stores::postgres(), libc::SIGKILL, SOLO, "1");
    killed_and_resumed_equals_uninterrupted(common::stores::postgres(), libc::SIGTERM, SOLO, "1");
}

/// Two runs (seeds 0 and 1) trained as one fused array; the plateau rule may stop one first.
const FUSED: &str = "layout = \"parallel\"\nlayers = 3\nfilters = 8\nepochs = 6\nbatch_size = 16\n\
                     holdout = 500\nstop = \"plateau\"\npatience = 2\nseed = [0, 1]\n";

#[test]
fn a_killed_worker_s_fused_runs_resume_bit_for_bit_on_both_backends() {
    killed_and_resumed_equals_uninterrupted(common::stores::sqlite(), libc::SIGKILL, FUSED, "2");
    killed_and_resumed_equals_uninterrupted(common::stores::postgres(), libc::SIGTERM, FUSED, "2");
}

#[test]
fn a_fused_group_resumed_from_any_epoch_equals_the_group_that_never_stopped() {
    // lr 0.5 stops (or diverges) early, and its member is frozen while the other trains on.
    let cfgs: Vec<RunConfig> = [(1e-3, 0), (0.5, 1)]
        .map(|(lr, seed)| {
            config(Layout::Parallel, |c| {
                (c.lr, c.seed, c.schedule, c.patience, c.epochs) =
                    (lr, seed, Schedule::Constant, 1, 6);
                c.min_delta = 0.02;
            })
        })
        .to_vec();
    let data = tensors(&cfgs[0]);
    let mut kept = [Keep::default(), Keep::default()];
    let whole = {
        let [a, b] = &mut kept;
        let mut observers: Vec<&mut dyn Observer> = vec![a, b];
        train::train_fused(&cfgs, &data, Device::Cpu, &mut observers, &[None, None]).unwrap()
    };
    let lengths: Vec<usize> = whole.iter().map(|r| r.epochs.len()).collect();
    assert!(
        lengths[1] < lengths[0],
        "one member stops first: {lengths:?}"
    );
    for (a, b) in kept[0].0.iter().zip(&kept[1].0) {
        let resumes = [Some(a.clone()), Some(b.clone())];
        let mut silent = [train::Silent, train::Silent];
        let [x, y] = &mut silent;
        let mut observers: Vec<&mut dyn Observer> = vec![x, y];
        let resumed =
            train::train_fused(&cfgs, &data, Device::Cpu, &mut observers, &resumes).unwrap();
        for (got, want) in resumed.iter().zip(&whole) {
            assert_eq!(
                without_times(got),
                without_times(want),
                "after epoch {}",
                a.epoch()
            );
        }
    }
}
